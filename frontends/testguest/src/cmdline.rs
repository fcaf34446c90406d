//! The guest's command line: space-separated `key=value` options.
//!
//! Known keys: `workload`, `iterations` and the options of the virtio
//! workloads (`virtio.*`, `blk.*`, `net.*`, `console.*`, `hostile.*`,
//! `bench.*`; see [`parse_virtio_option`]). A later occurrence of a key
//! overrides an earlier one. Unknown keys are reported and ignored (the
//! hypervisor or a user may pass options meant for someone else); a bad
//! value of a known key is an error.

use crate::virtio::args::{BenchOp, NetRole, VirtioArgs};
use crate::virtio::net::{parse_mac, BROADCAST};

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
    PvConsoleEcho,
    PvPoweroff,
    PvReboot,
    PvCrash,
    PvPaging,
    PvPagingHostile,
    PvPagingCr3Native,
    PvPagingWpOff,
    PvPagingWpSpin,
    PvPagingLoop,
    PvPagingCr3Unpin,
    VirtioProbe,
    VirtioBlk,
    VirtioNet,
    VirtioConsole,
    VirtioHostile,
    VirtioBench,
    IoLoop,
    PvNull,
    PvPagingBench,
    PowerButton,
}

impl Workload {
    const ALL: [(&'static str, Workload); 31] = [
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
        ("pv-console-echo", Workload::PvConsoleEcho),
        ("pv-poweroff", Workload::PvPoweroff),
        ("pv-reboot", Workload::PvReboot),
        ("pv-crash", Workload::PvCrash),
        ("pv-paging", Workload::PvPaging),
        ("pv-paging-hostile", Workload::PvPagingHostile),
        ("pv-paging-cr3-native", Workload::PvPagingCr3Native),
        ("pv-paging-wp-off", Workload::PvPagingWpOff),
        ("pv-paging-wp-spin", Workload::PvPagingWpSpin),
        ("pv-paging-loop", Workload::PvPagingLoop),
        ("pv-paging-cr3-unpin", Workload::PvPagingCr3Unpin),
        ("virtio-probe", Workload::VirtioProbe),
        ("virtio-blk", Workload::VirtioBlk),
        ("virtio-net", Workload::VirtioNet),
        ("virtio-console", Workload::VirtioConsole),
        ("virtio-hostile", Workload::VirtioHostile),
        ("virtio-bench", Workload::VirtioBench),
        ("io-loop", Workload::IoLoop),
        ("pv-null", Workload::PvNull),
        ("pv-paging-bench", Workload::PvPagingBench),
        ("power-button", Workload::PowerButton),
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
    /// Options of the virtio workloads.
    pub virtio: VirtioArgs<'a>,
}

/// A command line the guest cannot act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError<'a> {
    UnknownWorkload(&'a [u8]),
    BadIterations(&'a [u8]),
    /// A known key with a value it cannot take; `expected` says what it
    /// takes.
    BadValue { key: &'a [u8], value: &'a [u8], expected: &'static str },
}

/// Parses `cmdline`.
pub fn parse(cmdline: &[u8]) -> Result<Options<'_>, CmdlineError<'_>> {
    let mut options = Options {
        workload: Workload::Banner,
        iterations: DEFAULT_ITERATIONS,
        ignored: None,
        ignored_count: 0,
        virtio: VirtioArgs::DEFAULT,
    };
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
                if !parse_virtio_option(&mut options.virtio, key, value, token.len() == key.len())? {
                    options.ignored = Some(token);
                    options.ignored_count += 1;
                }
            }
        }
    }
    Ok(options)
}

/// Sets the virtio option `key` (if it is one: returns whether it was) to
/// `value`; `bare` is true for a key without `=`, which flags take as 1.
///
/// | key | value | default |
/// |---|---|---|
/// | `virtio.eventidx`, `bench.eventidx` | `0` or `1`: negotiate VIRTIO_RING_F_EVENT_IDX if offered | 1 |
/// | `virtio.timeout-ms` | how long one request may take | 5000 |
/// | `blk.disk` | use the Nth virtio-blk device, in slot order | 0 |
/// | `blk.write` | seed: write the pattern | none |
/// | `blk.verify` | seed: check the pattern | none |
/// | `blk.sectors` | sectors from 0 the pattern covers | 64 |
/// | `blk.expect-ro` | flag (or `0`/`1`): a write must fail with IOERR | 0 |
/// | `net.role` | `ping` or `pong` | ping |
/// | `net.peer` | a MAC (`52:54:00:12:34:56`) or `broadcast` | broadcast |
/// | `net.count` | frames to exchange | 10 |
/// | `net.wait-ms` | wait for the peer's first frame | 30000 |
/// | `console.name` | name in the hello line | testguest |
/// | `console.wait-ms` | wait for a line of input | 30000 |
/// | `hostile.wait-ms` | wait for an answer to a hostile request | 1000 |
/// | `bench.size` | bytes per request (multiple of 512) | 4096 |
/// | `bench.batch` | requests per kick | 16 |
/// | `bench.count` | requests in all | 10000 |
/// | `bench.op` | `read` or `write` | read |
pub fn parse_virtio_option<'a>(args: &mut VirtioArgs<'a>, key: &'a [u8], value: &'a [u8], bare: bool) -> Result<bool, CmdlineError<'a>> {
    let bad = |expected| CmdlineError::BadValue { key, value, expected };
    let count = || parse_count(value).ok_or(bad("a count"));
    let flag = || match value {
        b"1" => Ok(true),
        b"0" => Ok(false),
        _ if bare => Ok(true),
        _ => Err(bad("0 or 1")),
    };
    match key {
        b"virtio.eventidx" | b"bench.eventidx" => args.event_idx = flag()?,
        b"virtio.timeout-ms" => args.timeout_ms = count()?,
        b"blk.disk" => args.blk_disk = count()?,
        b"blk.write" => args.blk_write = Some(count()?),
        b"blk.verify" => args.blk_verify = Some(count()?),
        b"blk.sectors" => args.blk_sectors = count()?,
        b"blk.expect-ro" => args.blk_expect_ro = flag()?,
        b"net.role" => {
            args.net_role = match value {
                b"ping" => NetRole::Ping,
                b"pong" => NetRole::Pong,
                _ => return Err(bad("ping or pong")),
            }
        }
        b"net.peer" => {
            args.net_peer = match value {
                b"broadcast" => BROADCAST,
                _ => parse_mac(value).ok_or(bad("a MAC address (aa:bb:cc:dd:ee:ff) or broadcast"))?,
            }
        }
        b"net.count" => args.net_count = count()?,
        b"net.wait-ms" => args.net_wait_ms = count()?,
        b"console.name" => args.console_name = value,
        b"console.wait-ms" => args.console_wait_ms = count()?,
        b"hostile.wait-ms" => args.hostile_wait_ms = count()?,
        b"bench.size" => args.bench_size = count()?,
        b"bench.batch" => args.bench_batch = count()?,
        b"bench.count" => args.bench_count = count()?,
        b"bench.op" => {
            args.bench_op = match value {
                b"read" => BenchOp::Read,
                b"write" => BenchOp::Write,
                _ => return Err(bad("read or write")),
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
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
