//! Properties of the configuration parser: it never panics, every error
//! points inside the text, and a rendered spec parses back to itself.

use std::path::{Path, PathBuf};

use dom0::config::{
    parse_str, Action, DiskSpec, DomainSpec, MacAddr, PagingMode, Settings, VifLink, VifSpec,
    ViolationPolicy,
};
use proptest::prelude::*;

/// Checks that an error position is inside `src` (or just past its end, for
/// a missing key).
fn check_position(src: &str, line: u32, column: u32) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = src.split('\n').collect();
    prop_assert!(
        line >= 1 && (line as usize) <= lines.len(),
        "line {line} of {}",
        lines.len()
    );
    let len = lines[line as usize - 1].chars().count();
    prop_assert!(
        column >= 1 && (column as usize) <= len + 1,
        "column {column} of {len} on line {line}"
    );
    Ok(())
}

fn check_parse(src: &str) -> Result<(), TestCaseError> {
    match parse_str(src, "f.cfg", Path::new("/base")) {
        Ok(spec) => {
            prop_assert!(spec.kernel.is_absolute());
            prop_assert!(spec.disks.iter().all(|d| d.path.is_absolute()));
        }
        Err(e) => {
            prop_assert_eq!(e.file.as_str(), "f.cfg");
            prop_assert!(!e.message.is_empty());
            check_position(src, e.line, e.column)?;
        }
    }
    Ok(())
}

/// Text made mostly of the characters that matter to the syntax.
fn configish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        "([a-z_]{1,8}|[ \t]|=|\\+=|\\[|\\]|,|;|#|'|\"|\\\\|\n|[0-9]{1,3}|0x|-|:|/|\u{e9})*",
    )
    .expect("valid regex")
}

const SNIPPETS: &[&str] = &[
    "'", "\"", "[", "]", ",", "=", "+=", "\n", "#", "\\", ";", "x", "0x", "-", "\\x", "\t", "\r",
    "é", "\u{0}", "target=", ":", "xvda", "mac=", "bridge=", "switch=",
];

/// A valid configuration with one random edit.
fn mutated() -> impl Strategy<Value = String> {
    (
        spec(),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0usize..6,
        prop::sample::select(SNIPPETS),
    )
        .prop_map(|(spec, at, len, del, snippet)| {
            let text: Vec<char> = spec.to_config().chars().collect();
            let at = at.index(text.len() + 1);
            let end = (at + del.min(len.index(4) + 1)).min(text.len());
            let mut out: String = text[..at].iter().collect();
            out.push_str(snippet);
            out.extend(&text[end..]);
            out
        })
}

fn path() -> impl Strategy<Value = PathBuf> {
    // Commas, '=', quotes, backslashes, '#', tabs and spaces all survive.
    proptest::collection::vec("[A-Za-z0-9 ,=._'\"\\\\#\t-]{1,10}", 1..4)
        .prop_map(|parts| PathBuf::from(format!("/{}", parts.join("/"))))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Destroy),
        Just(Action::Restart),
        Just(Action::Preserve)
    ]
}

/// The vdev name of disk `index` in one of the families that can name it.
fn vdev_name(index: u32, family: u8) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    let prefix = match family % 4 {
        0 if index < 4 => "hd",
        1 if index < 16 => "sd",
        2 => "vd",
        _ => "xvd",
    };
    format!("{prefix}{}", String::from_utf8(letters).unwrap())
}

fn disks() -> impl Strategy<Value = Vec<DiskSpec>> {
    proptest::collection::btree_map(0u32..1000, (path(), any::<u8>(), any::<bool>()), 0..5)
        .prop_map(|m| {
            m.into_iter()
                .map(|(index, (path, family, read_only))| DiskSpec {
                    path,
                    vdev: vdev_name(index, family),
                    index,
                    read_only,
                })
                .collect()
        })
}

fn vif() -> impl Strategy<Value = VifSpec> {
    let link = prop_oneof![
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}".prop_map(VifLink::Bridge),
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}".prop_map(VifLink::Switch),
    ];
    (
        any::<[u8; 6]>(),
        link,
        proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}"),
    )
        .prop_map(|(mut mac, link, vifname)| {
            mac[0] &= 0xfe;
            mac[5] |= 1;
            let vifname = if matches!(link, VifLink::Bridge(_)) {
                vifname
            } else {
                None
            };
            VifSpec {
                devid: 0,
                mac: MacAddr(mac),
                link,
                vifname,
            }
        })
}

fn vifs() -> impl Strategy<Value = Vec<VifSpec>> {
    proptest::collection::vec(vif(), 0..4)
        .prop_map(|mut v| {
            for (i, vif) in v.iter_mut().enumerate() {
                vif.devid = i as u32;
            }
            v
        })
        .prop_filter("distinct MACs and tap names", |v| {
            v.iter().enumerate().all(|(i, a)| {
                v[..i]
                    .iter()
                    .all(|b| a.mac != b.mac && (a.vifname.is_none() || a.vifname != b.vifname))
            })
        })
}

prop_compose! {
    fn spec()(
        name in "[A-Za-z_][A-Za-z0-9_.-]{0,40}",
        (memory_mib, maxmem_mib) in (8u64..=1 << 20).prop_flat_map(|m| (Just(m), m..=1 << 20)),
        vcpus in 1u32..=255,
        kernel in path(),
        ramdisk in proptest::option::of(path()),
        cmdline in "[ -~]{0,80}",
        on_poweroff in action(),
        on_reboot in action(),
        on_crash in action(),
        disks in disks(),
        vifs in vifs(),
        paging in prop_oneof![Just(PagingMode::Native), Just(PagingMode::Direct)],
        paging_violation in prop_oneof![Just(ViolationPolicy::Report), Just(ViolationPolicy::Kill)],
    ) -> DomainSpec {
        DomainSpec {
            name, memory_mib, maxmem_mib, vcpus, kernel, ramdisk, cmdline,
            on_poweroff, on_reboot, on_crash, disks, vifs, paging, paging_violation,
        }
    }
}

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(src in any::<String>()) {
        check_parse(&src)?;
    }

    #[test]
    fn never_panics_on_config_like_text(src in configish()) {
        check_parse(&src)?;
    }

    #[test]
    fn never_panics_on_a_damaged_config(src in mutated()) {
        check_parse(&src)?;
    }

    #[test]
    fn overrides_never_panic(o in configish()) {
        let mut s = Settings::parse("name = 'a'\nkernel = '/k'\n", "f.cfg", Path::new("/")).unwrap();
        match s.apply_override(&o, Path::new("/cwd")) {
            Ok(()) => {
                if let Err(e) = s.resolve() {
                    if e.file == "<command line>" {
                        check_position(&o, e.line, e.column)?;
                    }
                }
            }
            Err(e) => {
                prop_assert_eq!(e.file.as_str(), "<command line>");
                check_position(&o, e.line, e.column)?;
            }
        }
    }

    #[test]
    fn a_rendered_spec_parses_back(spec in spec()) {
        let text = spec.to_config();
        let back = parse_str(&text, "r.cfg", Path::new("/elsewhere"))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &spec);
        let json = serde_json::to_string(&spec).unwrap();
        prop_assert_eq!(serde_json::from_str::<DomainSpec>(&json).unwrap(), spec);
    }
}
