//! The `vif = [ 'VIFSPEC', ... ]` specification strings: comma-separated
//! `key=value` pairs as in xl-network-configuration(5), plus our `switch=`.

use super::error::{show, DResult, Diag, Pos};
use super::lexer::StrLit;
use super::spec::{MacAddr, VifLink};
use super::suggest::did_you_mean;

/// One parsed vif, before a MAC is generated for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedVif {
    pub mac: Option<(MacAddr, Pos)>,
    pub link: VifLink,
    pub vifname: Option<(String, Pos)>,
}

const KNOWN_KEYS: &[&str] = &["mac", "bridge", "switch", "vifname", "model", "type"];

/// xl vif keys that dom0 does not implement.
const UNSUPPORTED_KEYS: &[&str] = &[
    "gatewaydev",
    "netdev",
    "script",
    "ip",
    "backend",
    "rate",
    "devid",
    "mtu",
    "forwarddev",
    "trusted",
    "untrusted",
];

/// Longest Linux interface name (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;
/// Longest switch name, as long as a domain name.
const MAX_SWITCH_NAME: usize = 64;

/// Parses one vif specification.
pub(crate) fn parse_vif(lit: &StrLit) -> DResult<ParsedVif> {
    let text = lit.text.as_str();
    let err = |offset: usize, msg: String| Diag::new(lit.pos_at(offset), msg);
    let mut mac = None;
    let mut bridge: Option<(String, usize)> = None;
    let mut switch: Option<(String, usize)> = None;
    let mut vifname: Option<(String, usize)> = None;
    let mut seen: Vec<&str> = Vec::new();

    let mut start = 0;
    for piece in text.split(',') {
        let piece_at = start;
        start += piece.len() + 1;
        let lead = piece.len() - piece.trim_start().len();
        let item = piece.trim();
        let at = piece_at + lead;
        if item.is_empty() {
            // xl accepts empty items, such as the whole of '' or a trailing
            // comma.
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(err(
                at,
                format!(
                    "the vif parameter {} is not of the form key=value",
                    show(item)
                ),
            ));
        };
        let key = key.trim_end();
        let value = value.trim_start();
        let value_at = at + item.len() - value.len();
        if seen.contains(&key) {
            return Err(err(at, format!("the vif key {} is given twice", show(key))));
        }
        seen.push(key);
        match key {
            "mac" => {
                let m = MacAddr::parse_at(value).map_err(|(off, msg)| err(value_at + off, msg))?;
                if m.is_multicast() {
                    return Err(err(
                        value_at,
                        format!("the MAC address {m} is a multicast address (lowest bit of the first byte set); an interface needs a unicast one"),
                    ));
                }
                if m.0 == [0; 6] {
                    return Err(err(
                        value_at,
                        "the MAC address 00:00:00:00:00:00 cannot be used by an interface".into(),
                    ));
                }
                mac = Some((m, lit.pos_at(value_at)));
            }
            "bridge" | "switch" => {
                let (other_key, other) = if key == "bridge" {
                    ("switch", &switch)
                } else {
                    ("bridge", &bridge)
                };
                if let Some((_, other_at)) = other {
                    return Err(err(
                        at,
                        format!(
                            "{key}= cannot be combined with {other_key}= (column {}): a vif connects either to a Linux bridge or to dom0's switch",
                            lit.pos_at(*other_at).col
                        ),
                    ));
                }
                if key == "bridge" {
                    check_ifname(value, "bridge").map_err(|(off, msg)| err(value_at + off, msg))?;
                    bridge = Some((value.to_owned(), at));
                } else {
                    check_switch_name(value).map_err(|(off, msg)| err(value_at + off, msg))?;
                    switch = Some((value.to_owned(), at));
                }
            }
            "vifname" => {
                check_ifname(value, "vifname").map_err(|(off, msg)| err(value_at + off, msg))?;
                vifname = Some((value.to_owned(), at));
            }
            "model" => match value {
                "virtio" | "virtio-net" => {}
                _ => {
                    return Err(err(
                        value_at,
                        format!("the vif model {} is not supported: dom0 gives guests virtio-net only (model=virtio)", show(value)),
                    ));
                }
            },
            "type" => match value {
                // xl's "paravirtualised device only", which ours is.
                "vif" => {}
                "ioemu" => {
                    return Err(err(
                        value_at,
                        "the vif type 'ioemu' (an emulated NIC) is not supported: dom0 gives guests virtio-net (type=vif)".into(),
                    ));
                }
                _ => {
                    return Err(err(
                        value_at,
                        format!("unknown vif type {} (expected vif)", show(value)),
                    ))
                }
            },
            _ if UNSUPPORTED_KEYS.contains(&key) => {
                return Err(err(
                    at,
                    format!("the vif key {} is not supported by dom0", show(key)),
                ));
            }
            _ => {
                return Err(err(
                    at,
                    format!(
                        "unknown vif key {}{}",
                        show(key),
                        did_you_mean(key, KNOWN_KEYS)
                    ),
                ));
            }
        }
    }

    let link = match (bridge, switch) {
        (Some((b, _)), None) => VifLink::Bridge(b),
        (None, Some((s, _))) => VifLink::Switch(s),
        _ => {
            return Err(Diag::new(
                lit.pos,
                "the vif says neither bridge=NAME nor switch=NAME; dom0 has no default network (xl would assume bridge=xenbr0)",
            ));
        }
    };
    if let (VifLink::Switch(_), Some((_, at))) = (&link, &vifname) {
        return Err(err(
            *at,
            "vifname= names the host tap device, which exists only with bridge=".into(),
        ));
    }
    Ok(ParsedVif {
        mac,
        link,
        vifname: vifname.map(|(n, at)| (n, lit.pos_at(at))),
    })
}

/// Characters allowed in bridge, tap and switch names: enough for any sane
/// name, and nothing that a shell, `ip` or the vif syntax would read
/// differently.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A Linux interface name: 1 to 15 bytes, not `.` or `..`; we also keep to
/// [`name_char`] and refuse a leading `-` (it would read as an option).
fn check_ifname(name: &str, what: &str) -> Result<(), (usize, String)> {
    if name.is_empty() {
        return Err((0, format!("{what}= needs an interface name")));
    }
    if let Some((off, c)) = name.char_indices().find(|&(_, c)| !name_char(c)) {
        return Err((
            off,
            format!(
                "the {what} name {} contains {c:?}; use A-Z, a-z, 0-9, '_', '.' and '-'",
                show(name)
            ),
        ));
    }
    if name.len() > MAX_IFNAME {
        return Err((
            MAX_IFNAME,
            format!(
                "the {what} name {} is longer than Linux's {MAX_IFNAME} characters",
                show(name)
            ),
        ));
    }
    if name == "." || name == ".." || name.starts_with('-') {
        return Err((0, format!("{} cannot be an interface name", show(name))));
    }
    Ok(())
}

/// A switch name follows the domain-name rules.
fn check_switch_name(name: &str) -> Result<(), (usize, String)> {
    if name.is_empty() {
        return Err((0, "switch= needs a switch name".into()));
    }
    if let Some((off, c)) = name.char_indices().find(|&(_, c)| !name_char(c)) {
        return Err((
            off,
            format!(
                "the switch name {} contains {c:?}; use A-Z, a-z, 0-9, '_', '.' and '-'",
                show(name)
            ),
        ));
    }
    if name.len() > MAX_SWITCH_NAME {
        return Err((
            MAX_SWITCH_NAME,
            format!("the switch name is longer than {MAX_SWITCH_NAME} characters"),
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err((
            0,
            format!(
                "the switch name {} cannot start with '.' or '-'",
                show(name)
            ),
        ));
    }
    Ok(())
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

    fn err(spec: &str) -> (u32, String) {
        let e = parse_vif(&lit(spec)).unwrap_err();
        (e.pos.col - 1, e.msg)
    }

    #[test]
    fn good_specs() {
        let v = parse_vif(&lit(
            "mac=00:16:3E:74:3d:76, model=virtio, bridge=xenbr0, vifname=web-eth0,",
        ))
        .unwrap();
        assert_eq!(v.mac.unwrap().0.to_string(), "00:16:3e:74:3d:76");
        assert_eq!(v.link, VifLink::Bridge("xenbr0".into()));
        assert_eq!(v.vifname.unwrap().0, "web-eth0");
        let v = parse_vif(&lit("switch=lan,type=vif")).unwrap();
        assert_eq!(v.link, VifLink::Switch("lan".into()));
        assert_eq!(v.mac, None);
    }

    #[test]
    fn errors_point_into_the_spec() {
        assert_eq!(err("bridge=br0,mac=00:16:3e:74:3d"), (30, "'00:16:3e:74:3d' is not a MAC address: expected six pairs of hex digits separated by ':', as in 02:16:3e:12:34:56".into()));
        assert_eq!(err("bridge=br0, mac=01:16:3e:74:3d:76").0, 17);
        assert!(err("bridge=br0, mac=01:16:3e:74:3d:76")
            .1
            .contains("multicast"));
        assert_eq!(err("bridge=br0,mac=00:00:00:00:00:00").0, 16);
        assert_eq!(err("bridge=br0, switch=lan"), (13, "switch= cannot be combined with bridge= (column 2): a vif connects either to a Linux bridge or to dom0's switch".into()));
        assert_eq!(err("switch=lan,bridge=br0").0, 12);
        assert_eq!(
            err("brige=br0"),
            (1, "unknown vif key 'brige' (did you mean 'bridge'?)".into())
        );
        assert_eq!(err("bridge=br0,ip=10.0.0.2").0, 12);
        assert_eq!(err("bridge=br0,model=e1000").0, 18);
        assert_eq!(err("bridge=br0,type=ioemu").0, 17);
        assert_eq!(
            err("bridge=br0,mac"),
            (
                12,
                "the vif parameter 'mac' is not of the form key=value".into()
            )
        );
        assert_eq!(err("bridge=a/b").0, 9);
        assert_eq!(err("bridge=abcdefghijklmnopq").0, 23);
        assert_eq!(err("bridge=-x").0, 8);
        assert_eq!(err("bridge=").0, 8);
        assert_eq!(err("switch=lan,vifname=tap0").0, 12);
        assert_eq!(err("bridge=a,bridge=b").0, 10);
        assert_eq!(err("").0, 0);
        assert_eq!(err("mac=02:00:00:00:00:01").0, 0);
    }
}
