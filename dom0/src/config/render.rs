//! Writing a [`DomainSpec`] back as a configuration file that parses to the
//! same spec (what `dom0` will show for a running domain, like
//! `xl list -l` does, and what a saved domain is restarted from).

use std::fmt::Write as _;
use std::path::Path;

use super::spec::{DomainSpec, VifLink};

/// `s` in double quotes, with the escapes the lexer reads back.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl DomainSpec {
    /// This spec as an xl.cfg-style configuration: every key written out,
    /// defaults included (except an empty command line and a `maxmem`
    /// equal to `memory`), generated MAC addresses made explicit.
    pub fn to_config(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            let _ = writeln!(out, "{key} = {value}");
        };
        line("name", quote(&self.name));
        line("memory", self.memory_mib.to_string());
        if self.maxmem_mib != self.memory_mib {
            line("maxmem", self.maxmem_mib.to_string());
        }
        line("vcpus", self.vcpus.to_string());
        line("kernel", quote(&path_str(&self.kernel)));
        if let Some(r) = &self.ramdisk {
            line("ramdisk", quote(&path_str(r)));
        }
        if !self.cmdline.is_empty() {
            line("cmdline", quote(&self.cmdline));
        }
        line("on_poweroff", quote(self.on_poweroff.as_str()));
        line("on_reboot", quote(self.on_reboot.as_str()));
        line("on_crash", quote(self.on_crash.as_str()));
        line("paging", quote(self.paging.name()));
        line("paging_violation", quote(self.paging_violation.name()));
        if !self.disks.is_empty() {
            let mut list = String::from("[\n");
            for d in &self.disks {
                // target= goes last and takes the rest of the string, so any
                // path survives; the parser drops one trailing comma, so a
                // path ending in a comma gets one more.
                let path = path_str(&d.path);
                let comma = if path.ends_with(',') { "," } else { "" };
                let access = if d.read_only { "ro" } else { "rw" };
                let spec = format!(
                    "format=raw, vdev={}, access={access}, target={path}{comma}",
                    d.vdev
                );
                let _ = writeln!(list, "    {},", quote(&spec));
            }
            list.push(']');
            line("disk", list);
        }
        if !self.vifs.is_empty() {
            let mut list = String::from("[\n");
            for v in &self.vifs {
                let mut spec = format!("mac={}", v.mac);
                match &v.link {
                    VifLink::Bridge(b) => {
                        let _ = write!(spec, ", bridge={b}");
                    }
                    VifLink::Switch(s) => {
                        let _ = write!(spec, ", switch={s}");
                    }
                }
                if let Some(n) = &v.vifname {
                    let _ = write!(spec, ", vifname={n}");
                }
                let _ = writeln!(list, "    {},", quote(&spec));
            }
            list.push(']');
            line("vif", list);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\n\x01é"), r#""a\"b\\c\n\x01é""#);
    }
}
