//! Domain configuration files in the xl.cfg format.
//!
//! A configuration is read in two steps. [`Settings`] holds the `KEY = VALUE`
//! settings of a file as written, and takes `KEY=VALUE` overrides from the
//! command line on top (as `xl create FILE KEY=VALUE…` does); then
//! [`Settings::resolve`] checks every key and value and produces a
//! [`DomainSpec`] with all defaults applied and all paths absolute.
//! [`parse_str`], [`parse_file`] and [`parse_file_with_overrides`] do both.
//!
//! Every error is a [`ConfigError`] that displays as `FILE:LINE:COLUMN:
//! message`. docs/dom0.md ("Configuration files") lists the keys and
//! how they compare with xl.

mod disk;
mod error;
mod lexer;
mod parser;
mod render;
mod spec;
mod suggest;
mod vif;

use std::path::{Path, PathBuf};

pub use error::ConfigError;
pub use spec::{Action, DiskSpec, DomainSpec, MacAddr, PagingMode, VifLink, VifSpec, ViolationPolicy};

use error::{show, DResult, Diag, Pos};
use lexer::StrLit;
use parser::{Op, RawSetting, Value};
use suggest::did_you_mean;

/// RAM when `memory` is not set, MiB. libxl's own fallback is 32 MiB, too
/// little for a current Linux kernel and initramfs; 128 MiB boots one.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
// The limits are the hypervisor's: a configuration dom0 accepts must be one
// the `hypervisor` process can build.
pub use hypervisor::config::{MAX_MEMORY_MIB, MAX_NAME_LEN, MAX_VCPUS, MIN_MEMORY_MIB};
/// Longest kernel command line in bytes: the boot protocols keep it
/// NUL-terminated in a `pvabi::boot::CMDLINE_MAX`-byte area.
pub const MAX_CMDLINE_LEN: usize = pvabi::boot::CMDLINE_MAX - 1;
/// The pseudo file name of command-line overrides in error messages.
pub const COMMAND_LINE: &str = "<command line>";

/// The keys dom0 accepts.
const KEYS: &[&str] = &[
    "name",
    "type",
    "memory",
    "maxmem",
    "vcpus",
    "kernel",
    "ramdisk",
    "cmdline",
    "extra",
    "root",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "disk",
    "vif",
    "paging",
    "paging_violation",
];

/// xl.cfg keys that dom0 does not implement: named as such rather than as
/// unknown, so that a config written for xl gets a straight answer.
const XL_UNSUPPORTED_KEYS: &[&str] = &[
    "builder",
    "pool",
    "maxvcpus",
    "cpus",
    "cpus_soft",
    "cpu_weight",
    "cap",
    "vnuma",
    "on_watchdog",
    "on_soft_reset",
    "firmware",
    "bootloader",
    "bootloader_args",
    "pvshim",
    "pvshim_path",
    "pvshim_cmdline",
    "pvshim_extra",
    "uuid",
    "seclabel",
    "init_seclabel",
    "max_grant_frames",
    "max_maptrack_frames",
    "nomigrate",
    "driver_domain",
    "device_tree",
    "e820_host",
    "pci",
    "vfb",
    "vkb",
    "channel",
    "usbctrl",
    "usbdev",
    "vtpm",
    "p9",
    "pvcalls",
    "vdispl",
    "vsnd",
    "dtdev",
    "iomem",
    "ioports",
    "irqs",
    "serial",
    "vnc",
    "sdl",
    "localtime",
    "rtc_timeoffset",
    "tsc_mode",
    "claim_mode",
    "max_event_channels",
    "device_model_version",
    "device_model_override",
    "gfx_passthru",
    "viridian",
    "hap",
    "nestedhvm",
    "shadow_memory",
    "acpi",
    "apic",
    "pae",
    "boot",
];

/// The xl actions for `on_*` that dom0 does not implement.
const UNSUPPORTED_ACTIONS: &[&str] = &[
    "rename-restart",
    "coredump-destroy",
    "coredump-restart",
    "soft-reset",
];

/// Which layer a setting comes from: the file, or the command line on top.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layer {
    File,
    CommandLine,
}

#[derive(Clone, Debug)]
struct Source {
    name: String,
    /// Where relative paths in this source are taken from (absolute).
    base_dir: PathBuf,
    /// Just past the last character: where a missing key is reported.
    end: Pos,
}

#[derive(Clone, Debug)]
struct Entry {
    key: String,
    /// Where the key was first set in its current layer.
    key_pos: Pos,
    value: Value,
    layer: Layer,
}

/// The settings of one configuration file plus command-line overrides, as
/// written, before their meaning is checked.
#[derive(Clone, Debug)]
pub struct Settings {
    sources: Vec<Source>,
    /// One entry per key, in order of first appearance.
    entries: Vec<Entry>,
    /// Lines taken so far by overrides: the N-th single-line override is
    /// line N of `<command line>`.
    override_lines: u32,
}

/// Parses a configuration held in memory and resolves it.
///
/// `file_name` is used in error messages only; relative paths in the file
/// are taken relative to `base_dir` (normally the file's directory; a
/// relative `base_dir` is taken from the current directory).
pub fn parse_str(
    source: &str,
    file_name: &str,
    base_dir: &Path,
) -> Result<DomainSpec, ConfigError> {
    Settings::parse(source, file_name, base_dir)?.resolve()
}

/// Reads, parses and resolves a configuration file; relative paths in it
/// are relative to the file's directory.
pub fn parse_file(path: impl AsRef<Path>) -> Result<DomainSpec, ConfigError> {
    Settings::read(path)?.resolve()
}

/// As `xl create FILE KEY=VALUE…`: reads a configuration file, applies each
/// override in turn (each in config syntax, e.g. `vcpus=2` or
/// `name="web2"`), and resolves the result. Relative paths in overrides are
/// relative to `cwd`.
pub fn parse_file_with_overrides<S: AsRef<str>>(
    path: impl AsRef<Path>,
    overrides: &[S],
    cwd: &Path,
) -> Result<DomainSpec, ConfigError> {
    let mut settings = Settings::read(path)?;
    for o in overrides {
        settings.apply_override(o.as_ref(), cwd)?;
    }
    settings.resolve()
}

/// `dir` made absolute against the current directory.
fn absolute_dir(dir: &Path, file_name: &str) -> Result<PathBuf, ConfigError> {
    if dir.is_absolute() {
        return Ok(dir.to_owned());
    }
    let cwd = std::env::current_dir().map_err(|e| {
        ConfigError::whole_file(
            file_name,
            format!("cannot resolve relative paths: the current directory is unknown ({e})"),
        )
    })?;
    Ok(if dir.as_os_str().is_empty() {
        cwd
    } else {
        cwd.join(dir)
    })
}

/// The position just past the end of `text`, whose first line is
/// `first_line`.
fn end_pos(text: &str, src: u32, first_line: u32) -> Pos {
    let newlines = text.matches('\n').count();
    let last = text.rsplit('\n').next().unwrap_or("");
    Pos {
        src,
        line: first_line.saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX)),
        col: u32::try_from(last.chars().count())
            .unwrap_or(u32::MAX)
            .saturating_add(1),
    }
}

impl Settings {
    /// Parses the text of a configuration file.
    pub fn parse(source: &str, file_name: &str, base_dir: &Path) -> Result<Settings, ConfigError> {
        let base_dir = absolute_dir(base_dir, file_name)?;
        let mut settings = Settings {
            sources: vec![Source {
                name: file_name.to_owned(),
                base_dir,
                // The lexer skips a byte order mark without counting it.
                end: end_pos(source.strip_prefix('\u{feff}').unwrap_or(source), 0, 1),
            }],
            entries: Vec::new(),
            override_lines: 0,
        };
        let raw = parser::parse(source, 0, 1).map_err(|d| settings.error(d))?;
        settings
            .merge(raw, Layer::File)
            .map_err(|d| settings.error(d))?;
        Ok(settings)
    }

    /// Reads and parses a configuration file; its directory is the base of
    /// relative paths.
    pub fn read(path: impl AsRef<Path>) -> Result<Settings, ConfigError> {
        let path = path.as_ref();
        let file_name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::whole_file(
                &file_name,
                format!("cannot read the configuration file: {e}"),
            )
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let good = std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid prefix");
            let at = end_pos(good, 0, 1);
            ConfigError {
                file: file_name.clone(),
                line: at.line,
                column: at.col,
                message: "the file is not valid UTF-8 text".into(),
            }
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Settings::parse(text, &file_name, dir)
    }

    /// Applies one command-line override, in config syntax (`vcpus=2`,
    /// `name="web2"`, `extra+=" debug"`, or several separated by `;`).
    ///
    /// `=` replaces the file's value of the key; `+=` appends to it, as in
    /// xl. Setting the same key twice on the command line is an error like
    /// a duplicate key in a file. Errors name the pseudo file
    /// `<command line>`, whose line N is the N-th override. Relative paths
    /// are relative to `cwd`.
    ///
    /// On error the settings are left as they were.
    pub fn apply_override(&mut self, setting: &str, cwd: &Path) -> Result<(), ConfigError> {
        // Work on a copy so that an override that fails halfway changes
        // nothing; configurations are small.
        let mut next = self.clone();
        next.apply_override_inner(setting, cwd)?;
        *self = next;
        Ok(())
    }

    fn apply_override_inner(&mut self, setting: &str, cwd: &Path) -> Result<(), ConfigError> {
        let src = u32::try_from(self.sources.len()).expect("fewer than 2^32 overrides");
        let first_line = self.override_lines.saturating_add(1);
        self.sources.push(Source {
            name: COMMAND_LINE.to_owned(),
            base_dir: absolute_dir(cwd, COMMAND_LINE)?,
            end: end_pos(
                setting.strip_prefix('\u{feff}').unwrap_or(setting),
                src,
                first_line,
            ),
        });
        self.override_lines = self
            .override_lines
            .saturating_add(u32::try_from(setting.matches('\n').count()).unwrap_or(u32::MAX))
            .saturating_add(1);
        let raw = parser::parse(setting, src, first_line).map_err(|d| self.error(d))?;
        self.merge(raw, Layer::CommandLine)
            .map_err(|d| self.error(d))
    }

    /// Checks every setting and builds the domain specification.
    pub fn resolve(&self) -> Result<DomainSpec, ConfigError> {
        self.resolve_inner().map_err(|d| self.error(d))
    }

    fn error(&self, d: Diag) -> ConfigError {
        ConfigError {
            file: self.sources[d.pos.src as usize].name.clone(),
            line: d.pos.line,
            column: d.pos.col,
            message: d.msg,
        }
    }

    /// "line 3" for a position in the same file as `from`, else "FILE:3".
    fn describe_line(&self, at: Pos, from: Pos) -> String {
        let (a, f) = (
            &self.sources[at.src as usize].name,
            &self.sources[from.src as usize].name,
        );
        if a == f {
            format!("line {}", at.line)
        } else {
            format!("{a}:{}", at.line)
        }
    }

    /// "line 3, column 7" or "FILE:3:7".
    fn describe_pos(&self, at: Pos, from: Pos) -> String {
        let (a, f) = (
            &self.sources[at.src as usize].name,
            &self.sources[from.src as usize].name,
        );
        if a == f {
            format!("line {}, column {}", at.line, at.col)
        } else {
            format!("{a}:{}:{}", at.line, at.col)
        }
    }

    fn merge(&mut self, raw: Vec<RawSetting>, layer: Layer) -> DResult<()> {
        for s in raw {
            if s.op == Op::Add {
                if let Value::Int { .. } = s.value {
                    return Err(Diag::new(s.op_pos, "'+=' cannot be used with a number"));
                }
            }
            let Some(i) = self.entries.iter().position(|e| e.key == s.key) else {
                self.entries.push(Entry {
                    key: s.key,
                    key_pos: s.key_pos,
                    value: s.value,
                    layer,
                });
                continue;
            };
            let first = self.entries[i].key_pos;
            match s.op {
                Op::Set if self.entries[i].layer == layer => {
                    return Err(Diag::new(
                        s.key_pos,
                        format!(
                            "duplicate key '{}' (first set at {})",
                            s.key,
                            self.describe_line(first, s.key_pos)
                        ),
                    ));
                }
                Op::Set => {
                    // A command-line override replaces the file's value.
                    self.entries[i] = Entry {
                        key: s.key,
                        key_pos: s.key_pos,
                        value: s.value,
                        layer,
                    };
                }
                Op::Add => {
                    let entry = &mut self.entries[i];
                    let old = std::mem::replace(
                        &mut entry.value,
                        Value::List {
                            items: Vec::new(),
                            pos: first,
                        },
                    );
                    match append(old, s.value) {
                        Ok(v) => entry.value = v,
                        Err(pair) => {
                            let (old, new) = *pair;
                            let msg = format!(
                                "'+=' cannot add {} to '{}', which is {} (set at {})",
                                new.kind(),
                                s.key,
                                old.kind(),
                                self.describe_line(first, s.key_pos)
                            );
                            self.entries[i].value = old;
                            return Err(Diag::new(new.pos(), msg));
                        }
                    }
                    let entry = &mut self.entries[i];
                    if entry.layer != layer {
                        entry.layer = layer;
                        entry.key_pos = s.key_pos;
                    }
                }
            }
        }
        Ok(())
    }

    fn base_dir(&self, pos: Pos) -> &Path {
        &self.sources[pos.src as usize].base_dir
    }

    fn resolve_inner(&self) -> DResult<DomainSpec> {
        let mut r = Resolved::default();
        for e in &self.entries {
            self.resolve_entry(e, &mut r)?;
        }
        let file_end = self.sources[0].end;
        let missing = |key: &str, example: &str| {
            Diag::new(
                file_end,
                format!("the required key '{key}' is not set (add {key} = {example})"),
            )
        };
        let cmdline = self.cmdline(&r)?;
        let name = r.name.ok_or_else(|| missing("name", "\"NAME\""))?;
        let kernel = r
            .kernel
            .ok_or_else(|| missing("kernel", "\"/path/to/kernel\""))?;
        let (memory_mib, memory_pos) = r
            .memory
            .map_or((DEFAULT_MEMORY_MIB, None), |(m, p)| (m, Some(p)));
        let maxmem_mib = match r.maxmem {
            None => memory_mib,
            Some((max, pos)) if max < memory_mib => {
                let memory_from = match memory_pos {
                    Some(p) => format!("set at {}", self.describe_line(p, pos)),
                    None => "the default".to_owned(),
                };
                return Err(Diag::new(
                    pos,
                    format!("maxmem ({max} MiB) must be at least memory ({memory_mib} MiB, {memory_from})"),
                ));
            }
            Some((max, _)) => max,
        };

        let mut vifs = Vec::with_capacity(r.vifs.len());
        for (devid, (v, spec_pos)) in r.vifs.into_iter().enumerate() {
            let devid = u32::try_from(devid).expect("list shorter than 2^32");
            let (mac, mac_pos) = match v.mac {
                Some((m, p)) => (m, p),
                None => (MacAddr::generated(&name, devid), spec_pos),
            };
            if let Some(prev) = vifs.iter().position(|p: &VifSpec| p.mac == mac) {
                return Err(Diag::new(
                    mac_pos,
                    format!("the MAC address {mac} is already used by vif {prev}"),
                ));
            }
            if let Some((n, p)) = &v.vifname {
                if vifs
                    .iter()
                    .any(|o: &VifSpec| o.vifname.as_deref() == Some(n))
                {
                    return Err(Diag::new(
                        *p,
                        format!("the vifname '{n}' is already used by another vif"),
                    ));
                }
            }
            vifs.push(VifSpec {
                devid,
                mac,
                link: v.link,
                vifname: v.vifname.map(|(n, _)| n),
            });
        }

        Ok(DomainSpec {
            name,
            memory_mib,
            maxmem_mib,
            vcpus: u32::try_from(r.vcpus.unwrap_or(1)).expect("checked range"),
            kernel,
            ramdisk: r.ramdisk,
            cmdline,
            on_poweroff: r.on_poweroff.unwrap_or(Action::Destroy),
            on_reboot: r.on_reboot.unwrap_or(Action::Restart),
            on_crash: r.on_crash.unwrap_or(Action::Destroy),
            disks: r.disks.into_iter().map(|(d, _)| d).collect(),
            vifs,
            paging: r.paging.unwrap_or_default(),
            paging_violation: r.paging_violation.unwrap_or_default(),
        })
    }

    fn resolve_entry<'a>(&self, e: &'a Entry, r: &mut Resolved<'a>) -> DResult<()> {
        let v = &e.value;
        match e.key.as_str() {
            "name" => r.name = Some(check_name(expect_str(e, "a quoted string")?)?),
            "type" => {
                let lit = expect_str(e, "a quoted string")?;
                match lit.text.as_str() {
                    "pv" => {}
                    "pvh" | "hvm" => {
                        return Err(Diag::new(
                            lit.pos,
                            format!("type '{}' is not supported: dom0 runs paravirtualized domains only (type = \"pv\")", lit.text),
                        ));
                    }
                    other => {
                        return Err(Diag::new(
                            lit.pos,
                            format!("unknown guest type {} (expected pv)", show(other)),
                        ));
                    }
                }
            }
            "memory" => {
                let m = expect_int(
                    e,
                    "an integer number of MiB",
                    MIN_MEMORY_MIB..=MAX_MEMORY_MIB,
                    " MiB",
                )?;
                r.memory = Some((m, v.pos()));
            }
            "maxmem" => {
                let m = expect_int(
                    e,
                    "an integer number of MiB",
                    MIN_MEMORY_MIB..=MAX_MEMORY_MIB,
                    " MiB",
                )?;
                r.maxmem = Some((m, v.pos()));
            }
            "vcpus" => r.vcpus = Some(expect_int(e, "an integer", 1..=u64::from(MAX_VCPUS), "")?),
            "kernel" => r.kernel = Some(self.path(expect_str(e, "a quoted path")?, "kernel")?),
            "ramdisk" => r.ramdisk = Some(self.path(expect_str(e, "a quoted path")?, "ramdisk")?),
            "cmdline" => r.cmdline = Some((e.key_pos, expect_str(e, "a quoted string")?)),
            "extra" => r.extra = Some((e.key_pos, expect_str(e, "a quoted string")?)),
            "root" => r.root = Some((e.key_pos, expect_str(e, "a quoted string")?)),
            "on_poweroff" => r.on_poweroff = Some(action(e)?),
            "on_reboot" => r.on_reboot = Some(action(e)?),
            "on_crash" => r.on_crash = Some(action(e)?),
            "paging" => {
                let modes = PagingMode::ALL.map(|m| (m.name(), m));
                r.paging = Some(choice(e, &modes)?);
            }
            "paging_violation" => {
                let policies = ViolationPolicy::ALL.map(|p| (p.name(), p));
                r.paging_violation = Some(choice(e, &policies)?);
            }
            "disk" => {
                for item in expect_list(
                    e,
                    "a list of disk specifications, as in disk = [ '/path/disk.img,raw,xvda,rw' ]",
                )? {
                    let lit = expect_item(item, "disk")?;
                    let d = disk::parse_disk(lit)?;
                    if let Some((prev, prev_pos)) = r.disks.iter().find(|(p, _)| p.index == d.index)
                    {
                        let same = if prev.vdev == d.vdev {
                            format!("the vdev '{}' is already used", d.vdev)
                        } else {
                            format!(
                                "the vdev '{}' is the same disk (index {}) as '{}'",
                                d.vdev, d.index, prev.vdev
                            )
                        };
                        return Err(Diag::new(
                            d.vdev_pos,
                            format!("{same} at {}", self.describe_pos(*prev_pos, d.vdev_pos)),
                        ));
                    }
                    let path = self.join(&d.target, d.target_pos)?;
                    let spec = DiskSpec {
                        path,
                        vdev: d.vdev,
                        index: d.index,
                        read_only: d.read_only,
                    };
                    r.disks.push((spec, d.vdev_pos));
                }
            }
            "vif" => {
                for item in expect_list(
                    e,
                    "a list of vif specifications, as in vif = [ 'bridge=br0' ]",
                )? {
                    let lit = expect_item(item, "vif")?;
                    r.vifs.push((vif::parse_vif(lit)?, lit.pos));
                }
            }
            key if XL_UNSUPPORTED_KEYS.contains(&key) => {
                return Err(Diag::new(
                    e.key_pos,
                    format!("the xl key '{key}' is not supported by dom0"),
                ));
            }
            key => {
                return Err(Diag::new(
                    e.key_pos,
                    format!("unknown key '{key}'{}", did_you_mean(key, KEYS)),
                ));
            }
        }
        Ok(())
    }

    /// A path from a string value, made absolute against its source's
    /// directory.
    fn path(&self, lit: &StrLit, key: &str) -> DResult<PathBuf> {
        if lit.text.is_empty() {
            return Err(Diag::new(lit.pos, format!("{key} must not be empty")));
        }
        self.join(&lit.text, lit.pos)
    }

    fn join(&self, path: &str, pos: Pos) -> DResult<PathBuf> {
        let joined = self.base_dir(pos).join(path);
        // Only a non-UTF-8 base directory can get here; refuse it so that
        // every DomainSpec serializes.
        if joined.to_str().is_none() {
            return Err(Diag::new(
                pos,
                format!("the path {} is not valid UTF-8", joined.display()),
            ));
        }
        Ok(joined)
    }

    /// The kernel command line, as xl builds it: `cmdline` alone, or
    /// `root=ROOT EXTRA` from whichever of `root` and `extra` are set.
    ///
    /// xl ignores `root` and `extra` (with a warning) when `cmdline` is set;
    /// that is almost always a mistake, so here it is an error instead,
    /// unless they are empty (which lets `extra=""` on the command line drop
    /// a file's `extra` when overriding `cmdline`).
    fn cmdline(&self, r: &Resolved<'_>) -> DResult<String> {
        for (_, lit) in [&r.cmdline, &r.root, &r.extra].into_iter().flatten() {
            if let Some((off, c)) = lit.text.char_indices().find(|(_, c)| c.is_ascii_control()) {
                return Err(Diag::new(
                    lit.pos_at(off),
                    format!(
                        "the kernel command line cannot contain control characters (found U+{:04X}); the guest receives printable text only",
                        c as u32
                    ),
                ));
            }
        }
        let (line, last) = if let Some((cmdline_key, cmdline)) = r.cmdline {
            for (key, set) in [("root", &r.root), ("extra", &r.extra)] {
                if let Some((pos, lit)) = set {
                    if !lit.text.is_empty() {
                        return Err(Diag::new(
                            *pos,
                            format!(
                                "{key} cannot be combined with cmdline (set at {}): xl would ignore {key}; put the whole command line in cmdline",
                                self.describe_line(cmdline_key, *pos)
                            ),
                        ));
                    }
                }
            }
            (cmdline.text.clone(), cmdline)
        } else {
            match (r.root, r.extra) {
                (Some((_, root)), Some((_, extra))) => {
                    (format!("root={} {}", root.text, extra.text), extra)
                }
                (Some((_, root)), None) => (format!("root={}", root.text), root),
                (None, Some((_, extra))) => (extra.text.clone(), extra),
                (None, None) => return Ok(String::new()),
            }
        };
        if line.len() > MAX_CMDLINE_LEN {
            return Err(Diag::new(
                last.pos,
                format!(
                    "the kernel command line is {} bytes long; at most {MAX_CMDLINE_LEN} fit",
                    line.len()
                ),
            ));
        }
        Ok(line)
    }
}

/// `old += new` for strings and lists, as xl does; otherwise both back
/// (boxed: the error path is rare and the pair is large).
fn append(old: Value, new: Value) -> Result<Value, Box<(Value, Value)>> {
    match (old, new) {
        (Value::Str(a), Value::Str(b)) => Ok(Value::Str(a.concat(b))),
        (Value::List { mut items, pos }, Value::List { items: more, .. }) => {
            items.extend(more);
            Ok(Value::List { items, pos })
        }
        (old, new) => Err(Box::new((old, new))),
    }
}

/// What the keys said, before defaults and cross-checks.
#[derive(Default)]
struct Resolved<'a> {
    name: Option<String>,
    memory: Option<(u64, Pos)>,
    maxmem: Option<(u64, Pos)>,
    vcpus: Option<u64>,
    kernel: Option<PathBuf>,
    ramdisk: Option<PathBuf>,
    /// With the position of the key.
    cmdline: Option<(Pos, &'a StrLit)>,
    extra: Option<(Pos, &'a StrLit)>,
    root: Option<(Pos, &'a StrLit)>,
    on_poweroff: Option<Action>,
    on_reboot: Option<Action>,
    on_crash: Option<Action>,
    paging: Option<PagingMode>,
    paging_violation: Option<ViolationPolicy>,
    /// With the position of the vdev, for duplicate messages.
    disks: Vec<(DiskSpec, Pos)>,
    /// With the position of the specification string.
    vifs: Vec<(vif::ParsedVif, Pos)>,
}

fn type_error(e: &Entry, what: &str) -> Diag {
    let mut msg = format!("{} must be {what}, found {}", e.key, e.value.kind());
    match &e.value {
        Value::Str(s)
            if what.starts_with("an integer")
                && !s.text.is_empty()
                && s.text.chars().all(|c| c.is_ascii_digit()) =>
        {
            msg.push_str(&format!(" (write {} = {}, without quotes)", e.key, s.text));
        }
        Value::Int { value, .. } if what.starts_with("a quoted") => {
            msg.push_str(&format!(" (write {} = \"{value}\")", e.key));
        }
        Value::Str(s) if what.starts_with("a list") => {
            msg.push_str(&format!(" (write {} = [ {} ])", e.key, show(&s.text)));
        }
        _ => {}
    }
    Diag::new(e.value.pos(), msg)
}

fn expect_str<'a>(e: &'a Entry, what: &str) -> DResult<&'a StrLit> {
    match &e.value {
        Value::Str(s) => Ok(s),
        _ => Err(type_error(e, what)),
    }
}

fn expect_int(
    e: &Entry,
    what: &str,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> DResult<u64> {
    match e.value {
        Value::Int { value, pos } => {
            if range.contains(&value) {
                Ok(value)
            } else {
                Err(Diag::new(
                    pos,
                    format!(
                        "{} must be between {} and {}{unit}, found {value}",
                        e.key,
                        range.start(),
                        range.end()
                    ),
                ))
            }
        }
        _ => Err(type_error(e, what)),
    }
}

fn expect_list<'a>(e: &'a Entry, what: &str) -> DResult<&'a [Value]> {
    match &e.value {
        Value::List { items, .. } => Ok(items),
        _ => Err(type_error(e, what)),
    }
}

/// A list item that must be a specification string.
fn expect_item<'a>(item: &'a Value, key: &str) -> DResult<&'a StrLit> {
    match item {
        Value::Str(s) => Ok(s),
        other => Err(Diag::new(
            other.pos(),
            format!(
                "each {key} entry must be a quoted specification string, found {}",
                other.kind()
            ),
        )),
    }
}

fn action(e: &Entry) -> DResult<Action> {
    let lit = expect_str(e, "a quoted action (destroy, restart or preserve)")?;
    let candidates = ["destroy", "restart", "preserve"];
    match lit.text.as_str() {
        "destroy" => Ok(Action::Destroy),
        "restart" => Ok(Action::Restart),
        "preserve" => Ok(Action::Preserve),
        a if UNSUPPORTED_ACTIONS.contains(&a) => Err(Diag::new(
            lit.pos,
            format!(
                "the {} action '{a}' is not supported: dom0 supports destroy, restart and preserve",
                e.key
            ),
        )),
        a => Err(Diag::new(
            lit.pos,
            format!(
                "unknown {} action {} (expected destroy, restart or preserve){}",
                e.key,
                show(a),
                did_you_mean(a, &candidates)
            ),
        )),
    }
}

/// A string value that must be one of `choices` (name, value), such as
/// `paging = "direct"`.
fn choice<T: Copy>(e: &Entry, choices: &[(&str, T)]) -> DResult<T> {
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let listed = match names.as_slice() {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    };
    let lit = expect_str(e, &format!("a quoted string ({listed})"))?;
    match choices.iter().find(|(n, _)| *n == lit.text) {
        Some((_, v)) => Ok(*v),
        None => Err(Diag::new(
            lit.pos,
            format!(
                "unknown {} {} (expected {listed}){}",
                e.key,
                show(&lit.text),
                did_you_mean(&lit.text, &names)
            ),
        )),
    }
}

/// A domain name: 1 to 64 of `A-Za-z0-9_.-`, not starting with `.` or `-`
/// (as the hypervisor requires: names end up in file names), and not all
/// digits (the CLI takes a name or a numeric domain ID).
fn check_name(lit: &StrLit) -> DResult<String> {
    let name = lit.text.as_str();
    if name.is_empty() {
        return Err(Diag::new(lit.pos, "the domain name must not be empty"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if let Some((off, c)) = name.char_indices().find(|&(_, c)| !ok(c)) {
        return Err(Diag::new(
            lit.pos_at(off),
            format!("the domain name cannot contain {c:?}; use A-Z, a-z, 0-9, '_', '.' and '-'"),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Diag::new(
            lit.pos_at(MAX_NAME_LEN),
            format!(
                "the domain name is {} characters long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ),
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(Diag::new(
            lit.pos_at(0),
            "the domain name cannot start with '.' or '-'",
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(Diag::new(
            lit.pos_at(0),
            "the domain name cannot be all digits: it would be taken for a domain ID",
        ));
    }
    Ok(name.to_owned())
}
