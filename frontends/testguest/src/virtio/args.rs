//! The options of the virtio workloads, as parsed from the command line
//! (see cmdline.rs for the keys).

/// Who answers in the virtio-net workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetRole {
    /// Sends `net.count` frames and waits for each echo.
    Ping,
    /// Echoes every test frame back to its sender.
    Pong,
}

/// The virtio-bench request type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    Read,
    Write,
}

/// Options of the virtio workloads, with their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioArgs<'a> {
    /// `virtio.eventidx` / `bench.eventidx`: negotiate
    /// VIRTIO_RING_F_EVENT_IDX if the device offers it.
    pub event_idx: bool,
    /// `virtio.timeout-ms`: how long one request may take.
    pub timeout_ms: u64,
    /// `blk.disk`: use the Nth blk device (in slot order).
    pub blk_disk: u64,
    /// `blk.write`: write the pattern of this seed.
    pub blk_write: Option<u64>,
    /// `blk.verify`: check the pattern of this seed.
    pub blk_verify: Option<u64>,
    /// `blk.sectors`: how many sectors from 0 the pattern covers.
    pub blk_sectors: u64,
    /// `blk.expect-ro`: writes must fail with IOERR.
    pub blk_expect_ro: bool,
    pub net_role: NetRole,
    /// `net.peer`: where pings go (broadcast by default).
    pub net_peer: [u8; 6],
    pub net_count: u64,
    /// `net.wait-ms`: how long to wait for the peer's first frame.
    pub net_wait_ms: u64,
    /// `console.name`: the name in the hello line.
    pub console_name: &'a [u8],
    /// `console.wait-ms`: how long to wait for an input line.
    pub console_wait_ms: u64,
    /// `hostile.wait-ms`: how long to wait for an answer to a hostile
    /// request.
    pub hostile_wait_ms: u64,
    pub bench_size: u64,
    pub bench_batch: u64,
    pub bench_count: u64,
    pub bench_op: BenchOp,
}

impl VirtioArgs<'_> {
    pub const DEFAULT: VirtioArgs<'static> = VirtioArgs {
        event_idx: true,
        timeout_ms: 5000,
        blk_disk: 0,
        blk_write: None,
        blk_verify: None,
        blk_sectors: 64,
        blk_expect_ro: false,
        net_role: NetRole::Ping,
        net_peer: [0xff; 6],
        net_count: 10,
        net_wait_ms: 30_000,
        console_name: b"testguest",
        console_wait_ms: 30_000,
        hostile_wait_ms: 1000,
        bench_size: 4096,
        bench_batch: 16,
        bench_count: 10_000,
        bench_op: BenchOp::Read,
    };
}

impl Default for VirtioArgs<'static> {
    fn default() -> Self {
        VirtioArgs::DEFAULT
    }
}
