//! The guest's command line: space-separated `key=value` options.
//!
//! Known keys: `workload` and `iterations`. A later occurrence of a key
//! overrides an earlier one. Unknown keys are reported and ignored (the
//! hypervisor or a user may pass options meant for someone else); a bad
//! value of a known key is an error.

/// Iterations of the compute workload when the command line names none.
pub const DEFAULT_ITERATIONS: u64 = 100_000_000;

/// What the guest does after booting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Banner,
    Compute,
    TripleFault,
    InvalidOpcode,
    UnbackedMmio,
    PageFault,
    Smp,
    PvBasic,
    PvHostile,
    PvConsole,
    PvPoweroff,
    PvReboot,
    PvCrash,
    PvPaging,
    PvPagingHostile,
}

impl Workload {
    const ALL: [(&'static str, Workload); 15] = [
        ("banner", Workload::Banner),
        ("compute", Workload::Compute),
        ("triple-fault", Workload::TripleFault),
        ("invalid-opcode", Workload::InvalidOpcode),
        ("unbacked-mmio", Workload::UnbackedMmio),
        ("page-fault", Workload::PageFault),
        ("smp", Workload::Smp),
        ("pv-basic", Workload::PvBasic),
        ("pv-hostile", Workload::PvHostile),
        ("pv-console", Workload::PvConsole),
        ("pv-poweroff", Workload::PvPoweroff),
        ("pv-reboot", Workload::PvReboot),
        ("pv-crash", Workload::PvCrash),
        ("pv-paging", Workload::PvPaging),
        ("pv-paging-hostile", Workload::PvPagingHostile),
    ];

    fn from_name(name: &[u8]) -> Option<Workload> {
        Self::ALL.iter().find(|(known, _)| known.as_bytes() == name).map(|&(_, workload)| workload)
    }

}

/// Displays the list of workload names, for error messages.
pub struct WorkloadNames;

impl core::fmt::Display for WorkloadNames {
    fn fmt(&self, out: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (index, (name, _)) in Workload::ALL.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(out, "{separator}{name}")?;
        }
        Ok(())
    }
}

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    pub workload: Workload,
    pub iterations: u64,
    /// The last option with an unknown key, to report.
    pub ignored: Option<&'a [u8]>,
    /// How many options were ignored.
    pub ignored_count: usize,
}

/// A command line the guest cannot act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    UnknownWorkload(&'a [u8]),
    BadIterations(&'a [u8]),
}

/// Parses `cmdline`.
pub fn parse(cmdline: &[u8]) -> Result<Options<'_>, CmdlineError<'_>> {
    let mut options = Options { workload: Workload::Banner, iterations: DEFAULT_ITERATIONS, ignored: None, ignored_count: 0 };
    let tokens = cmdline.split(|byte| byte.is_ascii_whitespace()).filter(|token| !token.is_empty());
    for token in tokens {
        let (key, value) = match token.iter().position(|&byte| byte == b'=') {
            Some(equals) => (&token[..equals], &token[equals + 1..]),
            None => (token, &token[token.len()..]),
        };
        match key {
            b"workload" => options.workload = Workload::from_name(value).ok_or(CmdlineError::UnknownWorkload(value))?,
            b"iterations" => options.iterations = parse_count(value).ok_or(CmdlineError::BadIterations(value))?,
            _ => {
                options.ignored = Some(token);
                options.ignored_count += 1;
            }
        }
    }
    Ok(options)
}

/// Parses a count: decimal digits, optionally grouped with `_`, optionally
/// followed by a decimal exponent (`1e8`, `25E6`). `None` if malformed or
/// above `u64::MAX`.
pub fn parse_count(text: &[u8]) -> Option<u64> {
    let (mantissa, exponent) = match text.iter().position(|&byte| byte == b'e' || byte == b'E') {
        Some(e) => (&text[..e], Some(&text[e + 1..])),
        None => (text, None),
    };
    let mut value = parse_decimal(mantissa)?;
    if let Some(exponent) = exponent {
        for _ in 0..parse_decimal(exponent)? {
            value = value.checked_mul(10)?;
            if value == 0 {
                break;
            }
        }
    }
    Some(value)
}

/// Decimal digits with optional `_` between them.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.first().is_none_or(|&first| !first.is_ascii_digit()) || text.last() == Some(&b'_') {
        return None;
    }
    text.iter().filter(|&&byte| byte != b'_').try_fold(0u64, |value, &byte| {
        let digit = (byte as char).to_digit(10)?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}
