//! The `disk = [ 'DISKSPEC', ... ]` specification strings, following xl's
//! disk syntax (xl-disk-configuration(5)): comma-separated positional
//! fields `target, format, vdev, access`, `key=value` parameters, flags,
//! the deprecated `file:`/`phy:`/`raw:` … prefixes, and `target=` which
//! takes the rest of the string.
//!
//! What dom0 cannot do (other formats, CD-ROMs, scripts, driver domains…)
//! is refused by name rather than ignored.

use super::error::{show, DResult, Diag, Pos};
use super::lexer::StrLit;
use super::suggest::did_you_mean;

/// One parsed disk, before its target is made into an absolute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedDisk {
    pub target: String,
    pub target_pos: Pos,
    pub vdev: String,
    pub vdev_pos: Pos,
    pub index: u32,
    pub read_only: bool,
}

/// The `key=value` parameters we understand (for suggestions).
const KNOWN_PARAMS: &[&str] = &[
    "target",
    "format",
    "vdev",
    "access",
    "devtype",
    "specification",
];

/// xl parameters and flags that dom0 does not implement.
const UNSUPPORTED_PARAMS: &[&str] = &[
    "backend",
    "backendtype",
    "script",
    "colo-host",
    "colo-port",
    "colo-export",
    "active-disk",
    "hidden-disk",
    "grant_usage",
];
const UNSUPPORTED_FLAGS: &[&str] = &[
    "direct-io-safe",
    "discard",
    "no-discard",
    "colo",
    "no-colo",
    "trusted",
    "untrusted",
];

/// Deprecated prefixes that xl strips and ignores.
const IGNORED_PREFIXES: &[&str] = &["tapdisk", "tap2", "tap", "aio", "ioemu", "file", "phy"];
/// Deprecated prefixes that name a format.
const FORMAT_PREFIXES: &[&str] = &["raw", "qcow2", "qcow", "vhd"];
/// Deprecated prefixes that name a block script.
const SCRIPT_PREFIXES: &[&str] = &["iscsi", "nbd", "enbd", "drbd"];

/// Largest disk index per vdev family, as libxl allows: 2^20 xvd disks,
/// four IDE disks (hda-hdd) and sixteen SCSI disks (sda-sdp). `vd` (virtio
/// naming, our addition) shares xvd's range.
const VDEV_FAMILIES: &[(&str, u32)] = &[
    ("xvd", (1 << 20) - 1),
    ("vd", (1 << 20) - 1),
    ("sd", 15),
    ("hd", 3),
];

struct Parse<'a> {
    lit: &'a StrLit,
    target: Option<(String, usize)>,
    vdev: Option<(String, usize)>,
    /// Whether a format was given (it can only be raw: others are refused
    /// on sight). Decides what the second positional field means.
    format_set: bool,
    access: Option<bool>,
    had_prefix: bool,
}

/// Parses one disk specification.
pub(crate) fn parse_disk(lit: &StrLit) -> DResult<ParsedDisk> {
    let mut p = Parse {
        lit,
        target: None,
        vdev: None,
        format_set: false,
        access: None,
        had_prefix: false,
    };
    let text = lit.text.as_str();
    let len = text.len();
    let mut i = 0;
    while i < len {
        // Whitespace before a parameter is ignored.
        let skipped = text[i..].len() - text[i..].trim_start_matches([' ', '\t', '\n']).len();
        i += skipped;
        if i == len {
            break;
        }
        let rest = &text[i..];
        if let Some(value) = rest.strip_prefix("target=") {
            // Takes the rest of the string, commas and all (so it comes
            // last); like xl, one trailing comma is dropped.
            let value = value.strip_suffix(',').unwrap_or(value);
            p.save_target(value, i + "target=".len())?;
            break;
        }
        if let Some(consumed) = p.prefix(rest, i)? {
            i += consumed;
            continue;
        }
        let end = rest.find(',').map_or(len, |e| i + e);
        let piece = text[i..end].trim_end();
        p.piece(piece, i)?;
        i = if end < len { end + 1 } else { len };
    }
    p.finish()
}

impl Parse<'_> {
    fn err(&self, offset: usize, msg: impl Into<String>) -> Diag {
        Diag::new(self.lit.pos_at(offset), msg)
    }

    /// A deprecated `prefix:` at the start of a parameter: returns how many
    /// bytes it took.
    fn prefix(&mut self, rest: &str, at: usize) -> DResult<Option<usize>> {
        let word_len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
            .unwrap_or(rest.len());
        let word = &rest[..word_len];
        if word.is_empty()
            || !word.starts_with(|c: char| c.is_ascii_lowercase())
            || !rest[word_len..].starts_with(':')
        {
            return Ok(None);
        }
        let after = rest[word_len + 1..].chars().next();
        if IGNORED_PREFIXES.contains(&word) {
            self.had_prefix = true;
        } else if FORMAT_PREFIXES.contains(&word) {
            self.had_prefix = true;
            self.set_format(word, at)?;
        } else if SCRIPT_PREFIXES.contains(&word) {
            return Err(self.err(
                at,
                format!("the disk prefix '{word}:' selects the block-{word} script, which dom0 does not support"),
            ));
        } else if after.is_none_or(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit())) {
            // Shaped like a prefix but not one (`qed:/x`): xl refuses these.
            return Err(self.err(at, format!("unknown disk prefix '{word}:'")));
        } else {
            // `hdc:cdrom` and the like: a positional field with a colon.
            return Ok(None);
        }
        Ok(Some(word_len + 1))
    }

    /// One comma-separated parameter (not `target=`, not a prefix).
    fn piece(&mut self, piece: &str, at: usize) -> DResult<()> {
        if let Some((key, value)) = piece.split_once('=') {
            return self.keyword(key, value, at, at + key.len() + 1);
        }
        if piece == "cdrom" {
            return Err(self.err(
                at,
                "CD-ROM drives are not supported; dom0 attaches disks only",
            ));
        }
        if UNSUPPORTED_FLAGS.contains(&piece) {
            return Err(self.err(
                at,
                format!("the disk flag '{piece}' is not supported by dom0"),
            ));
        }
        self.positional(piece, at)
    }

    fn keyword(&mut self, key: &str, value: &str, at: usize, value_at: usize) -> DResult<()> {
        match key {
            "format" => self.set_format(value, value_at),
            "vdev" => self.save_vdev(value, value_at),
            "access" => self.set_access(value, value_at),
            "devtype" => match value {
                "disk" => Ok(()),
                "cdrom" => Err(self.err(value_at, "CD-ROM drives are not supported; dom0 attaches disks only")),
                _ => Err(self.err(value_at, format!("unknown devtype {} (dom0 supports devtype=disk)", show(value)))),
            },
            // Newer xl chooses between Xen PV and virtio disks; ours are
            // always virtio.
            "specification" => match value {
                "virtio" => Ok(()),
                "xen" => Err(self.err(
                    value_at,
                    "specification=xen is not supported: dom0 gives guests virtio disks (specification=virtio)",
                )),
                _ => Err(self.err(value_at, format!("unknown disk specification {} (dom0 supports virtio)", show(value)))),
            },
            _ if UNSUPPORTED_PARAMS.contains(&key) => {
                Err(self.err(at, format!("the disk parameter '{key}' is not supported by dom0")))
            }
            _ if key.starts_with(|c: char| c.is_ascii_lowercase())
                && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') =>
            {
                Err(self.err(at, format!("unknown disk parameter '{key}'{}", did_you_mean(key, KNOWN_PARAMS))))
            }
            _ => Err(self.err(
                at,
                format!(
                    "bad disk syntax near {}: a positional field cannot contain '='; give a path with '=' or ',' as target=PATH, last",
                    show(&format!("{key}={value}"))
                ),
            )),
        }
    }

    /// The next unset positional field, in xl's order. The format slot is
    /// skipped once a format is known or a deprecated prefix was used, which
    /// is how xl reads the old `phy:/dev/x,xvda,w` form.
    fn positional(&mut self, piece: &str, at: usize) -> DResult<()> {
        if self.target.is_none() {
            return self.save_target(piece, at);
        }
        if !self.had_prefix && !self.format_set {
            let target_empty = self.target.as_ref().is_some_and(|(t, _)| t.is_empty());
            if target_empty && piece.contains(':') {
                // xl's `,hdc:cdrom,r`: an empty CD-ROM drive.
                return Err(self.err(
                    at,
                    "empty CD-ROM drives are not supported; dom0 attaches disks only",
                ));
            }
            return self.set_format(piece, at);
        }
        if self.vdev.is_none() {
            let vdev = match piece.rsplit_once(':') {
                None => piece,
                Some((vdev, "disk")) => vdev,
                Some((_, "cdrom")) => {
                    return Err(self.err(
                        at,
                        "CD-ROM drives are not supported; dom0 attaches disks only",
                    ));
                }
                Some((_, other)) => {
                    return Err(self.err(
                        at,
                        format!(
                            "unknown device type {} after the vdev (expected disk)",
                            show(other)
                        ),
                    ));
                }
            };
            return self.save_vdev(vdev, at);
        }
        if self.access.is_none() {
            return self.set_access(piece, at);
        }
        Err(self.err(
            at,
            format!(
                "too many positional fields at {} (they are target, format, vdev, access)",
                show(piece)
            ),
        ))
    }

    fn save_target(&mut self, value: &str, at: usize) -> DResult<()> {
        // An empty earlier value may be replaced, as in xl.
        if let Some((old, _)) = &self.target {
            if !old.is_empty() {
                return Err(self.err(at, "the disk target is given twice"));
            }
        }
        self.target = Some((value.to_owned(), at));
        Ok(())
    }

    fn save_vdev(&mut self, value: &str, at: usize) -> DResult<()> {
        if let Some((old, _)) = &self.vdev {
            if !old.is_empty() {
                return Err(self.err(at, "the disk vdev is given twice"));
            }
        }
        self.vdev = Some((value.to_owned(), at));
        Ok(())
    }

    fn set_format(&mut self, value: &str, at: usize) -> DResult<()> {
        match value {
            // An empty format means the default, raw.
            "" | "raw" => {
                self.format_set = true;
                Ok(())
            }
            "qcow" | "qcow2" | "vhd" | "qed" => Err(self.err(
                at,
                format!("disk format '{value}' is not supported: dom0 serves raw images only"),
            )),
            "empty" => Err(self.err(
                at,
                "disk format 'empty' (an empty CD-ROM drive) is not supported",
            )),
            _ => {
                let hint = if vdev_index(value).is_ok() {
                    format!(
                        " (the positional fields are target, format, vdev, access: leave the format empty, as in 'PATH,,{value}')"
                    )
                } else {
                    " (dom0 supports raw)".to_owned()
                };
                Err(self.err(at, format!("unknown disk format {}{hint}", show(value))))
            }
        }
    }

    fn set_access(&mut self, value: &str, at: usize) -> DResult<()> {
        let read_only = match value {
            "r" | "ro" => true,
            // Empty means the default, read-write.
            "" | "w" | "rw" => false,
            _ => {
                return Err(self.err(
                    at,
                    format!(
                        "unknown disk access {} (expected r, ro, w or rw)",
                        show(value)
                    ),
                ));
            }
        };
        if self.access.is_some_and(|old| old != read_only) {
            return Err(self.err(at, "the disk access is given twice"));
        }
        self.access = Some(read_only);
        Ok(())
    }

    fn finish(self) -> DResult<ParsedDisk> {
        let (target, target_at) = match self.target {
            Some((t, at)) if !t.is_empty() => (t, at),
            _ => {
                return Err(Diag::new(
                    self.lit.pos,
                    "the disk specification has no target (the image file)",
                ));
            }
        };
        let (vdev, vdev_at) = match self.vdev {
            Some((v, at)) if !v.is_empty() => (v, at),
            _ => {
                return Err(Diag::new(
                    self.lit.pos,
                    "the disk specification has no vdev (the disk name the guest sees, such as xvda)",
                ));
            }
        };
        let vdev_pos = self.lit.pos_at(vdev_at);
        let index = vdev_index(&vdev).map_err(|msg| Diag::new(vdev_pos, msg))?;
        Ok(ParsedDisk {
            target,
            target_pos: self.lit.pos_at(target_at),
            vdev,
            vdev_pos,
            index,
            read_only: self.access.unwrap_or(false),
        })
    }
}

/// The disk index a vdev name stands for: `xvda`, `vda`, `sda` and `hda`
/// are all disk 0, `xvdb` disk 1, `xvdz` 25, `xvdaa` 26 (letters count in
/// bijective base 26, as libxl decodes them).
pub(crate) fn vdev_index(vdev: &str) -> Result<u32, String> {
    let shown = show(vdev);
    let not_a_disk =
        || format!("{shown} is not a disk name: use xvdX, vdX, sdX or hdX (for example xvda)");
    let Some(&(family, max)) = VDEV_FAMILIES.iter().find(|(f, _)| vdev.starts_with(f)) else {
        return Err(not_a_disk());
    };
    let rest = &vdev[family.len()..];
    let letters_len = rest
        .find(|c: char| !c.is_ascii_lowercase())
        .unwrap_or(rest.len());
    let (letters, tail) = rest.split_at(letters_len);
    if letters.is_empty() {
        return Err(not_a_disk());
    }
    let out_of_range = || match family {
        "hd" => format!("{shown} is out of range: IDE disks go from hda to hdd"),
        "sd" => format!("{shown} is out of range: SCSI disks go from sda to sdp"),
        _ => format!(
            "{shown} is out of range: at most {} {family} disks can be named",
            u64::from(max) + 1
        ),
    };
    let mut index: u64 = 0;
    for (n, c) in letters.bytes().enumerate() {
        let digit = u64::from(c - b'a');
        index = if n == 0 {
            digit
        } else {
            (index + 1) * 26 + digit
        };
        if index > u64::from(max) {
            return Err(out_of_range());
        }
    }
    if !tail.is_empty() {
        if tail.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "{shown} names a partition; dom0 attaches whole disks (use '{family}{letters}')"
            ));
        }
        return Err(not_a_disk());
    }
    Ok(u32::try_from(index).expect("bounded by 2^20"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::lexer::{Lexer, Tok};

    fn lit(spec: &str) -> StrLit {
        let quoted = format!("'{spec}'");
        match Lexer::new(&quoted, 0, 1).next_token().unwrap().tok {
            Tok::Str(l) => l,
            other => panic!("{other:?}"),
        }
    }

    fn ok(spec: &str) -> (String, String, u32, bool) {
        let d = parse_disk(&lit(spec)).unwrap_or_else(|e| panic!("{spec}: {}", e.msg));
        (d.target, d.vdev, d.index, d.read_only)
    }

    /// Column (1-based, within the spec text) and message of the error.
    fn err(spec: &str) -> (u32, String) {
        let e = parse_disk(&lit(spec)).unwrap_err();
        (e.pos.col - 1, e.msg)
    }

    #[test]
    fn equivalent_forms() {
        let want = ("/img".to_owned(), "hda".to_owned(), 0, false);
        for spec in [
            "/img,,hda",
            "/img,raw,hda,rw",
            "format=raw, vdev=hda, access=rw, target=/img",
            "raw:/img,hda,w",
            "file:/img,hda,w",
            "phy:/img,hda",
            "tap:aio:/img,hda",
            "/img,raw,hda:disk,",
            "vdev=hda,/img",
            "format=raw,/img,hda",
            " /img , , hda , rw ",
            "/img,,hda,,devtype=disk,specification=virtio",
        ] {
            assert_eq!(ok(spec), want, "{spec}");
        }
    }

    #[test]
    fn access_and_target_rules() {
        assert!(ok("/img,raw,xvdb,r").3);
        assert!(ok("/img,raw,xvdb,ro").3);
        assert_eq!(ok("vdev=xvdc,target=/a,b=c,").0, "/a,b=c");
        assert_eq!(ok("vdev=xvdc,target=/a b ").0, "/a b ");
        assert_eq!(ok(",,xvda,target=/late").0, "/late");
        assert_eq!(ok("img.raw,,xvda").0, "img.raw");
    }

    #[test]
    fn errors_point_into_the_spec() {
        assert_eq!(err("/img,xvda,w"), (6, "unknown disk format 'xvda' (the positional fields are target, format, vdev, access: leave the format empty, as in 'PATH,,xvda')".into()));
        assert_eq!(err("/img,qcow2,xvda").0, 6);
        assert!(err("/img,qcow2,xvda").1.contains("raw images only"));
        assert_eq!(err("qcow2:/img,xvda").0, 1);
        assert_eq!(
            err("/img,,xvda,rx"),
            (
                12,
                "unknown disk access 'rx' (expected r, ro, w or rw)".into()
            )
        );
        assert_eq!(err("/img,,xvda,w,x").0, 14);
        assert_eq!(
            err("vdev=xvda, acess=r, target=/x"),
            (
                12,
                "unknown disk parameter 'acess' (did you mean 'access'?)".into()
            )
        );
        assert_eq!(err("/img,,xvda,cdrom").0, 12);
        assert_eq!(err("/img,,hdc:cdrom").0, 7);
        assert_eq!(err("/img,,xvda,script=x").0, 12);
        assert_eq!(err("/img,,xvda,discard").0, 12);
        assert_eq!(err("iscsi:/x,,xvda").0, 1);
        assert_eq!(err("foo:/x,,xvda").0, 1);
        assert_eq!(err("/img,,xvda1").0, 7);
        assert!(err("/img,,xvda1").1.contains("partition"));
        assert_eq!(
            err("/img,,hde").1,
            "'hde' is out of range: IDE disks go from hda to hdd"
        );
        assert_eq!(
            err("/img,,nvme0n1"),
            (
                7,
                "'nvme0n1' is not a disk name: use xvdX, vdX, sdX or hdX (for example xvda)".into()
            )
        );
        assert_eq!(
            err("/img"),
            (
                0,
                "the disk specification has no vdev (the disk name the guest sees, such as xvda)"
                    .into()
            )
        );
        assert_eq!(err(",,xvda").0, 0);
        assert_eq!(err("vdev=xvda,vdev=xvdb,target=/x").0, 16);
        assert_eq!(
            err("target=/x,y").1,
            "the disk specification has no vdev (the disk name the guest sees, such as xvda)"
        );
        assert!(err("/a=b,,xvda").1.contains("target=PATH"));
        assert_eq!(err(",hdc:cdrom,r").0, 2);
    }

    #[test]
    fn vdev_indices() {
        for (v, i) in [
            ("xvda", 0),
            ("xvdb", 1),
            ("xvdz", 25),
            ("xvdaa", 26),
            ("xvdab", 27),
            ("xvdba", 52),
            ("vdc", 2),
            ("sdp", 15),
            ("hdd", 3),
        ] {
            assert_eq!(vdev_index(v), Ok(i), "{v}");
        }
        for v in [
            "xvd", "sdq", "hde", "xvda0", "xvdA", "nvme0n1", "d0p0", "1", "xvdzzzzz",
        ] {
            assert!(vdev_index(v).is_err(), "{v}");
        }
        // The largest xvd index libxl accepts, 2^20 - 1.
        assert_eq!(vdev_index("xvdbgqcv"), Ok((1 << 20) - 1));
        assert_eq!(
            vdev_index("xvdbgqcw"),
            Err("'xvdbgqcw' is out of range: at most 1048576 xvd disks can be named".into())
        );
    }
}
