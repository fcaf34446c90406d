//! virtio-blk on a raw image file.
//!
//! [`parse`] turns a descriptor chain into a checked [`Plan`] (pure logic);
//! [`Disk::execute`] carries a plan out with `pread`/`pwrite` at offsets.
//! Data goes through a bounce buffer (aligned for `O_DIRECT`), so guest
//! memory is only ever touched through vm-memory's checked accessors.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

use super::chain::{self, ChainError, Piece, Walk};
use super::queue::{self, Counters, Outcome, QueueError, Step};
use super::Mem;

/// Bytes per virtio-blk sector.
pub const SECTOR_SIZE: u64 = 512;
/// Most data descriptors in one request (config `seg_max`).
pub const SEG_MAX: u32 = 126;
/// Largest data descriptor (config `size_max`).
pub const SIZE_MAX: u32 = 64 * 1024;
/// Most data bytes in one request: what `seg_max` × `size_max` allows.
pub const MAX_DATA: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Most descriptors in one request: data plus a header and a status
/// descriptor, plus two for drivers that split them.
pub const MAX_DESCRIPTORS: usize = SEG_MAX as usize + 4;
/// The request header: type, reserved, sector.
const HEADER_LEN: usize = 16;
/// Alignment of the bounce buffer (and what O_DIRECT needs at most).
const BOUNCE_ALIGN: usize = 4096;

/// An open disk image.
#[derive(Debug)]
pub(crate) struct Disk {
    file: File,
    /// A second, page-cache handle on the same file for requests O_DIRECT
    /// refuses (alignment the host file system does not support).
    buffered: Option<File>,
    capacity_sectors: u64,
    read_only: bool,
    serial: [u8; VIRTIO_BLK_ID_BYTES as usize],
    /// The bounce buffer, grown to the largest request seen.
    bounce: Mutex<Vec<u8>>,
}

impl Disk {
    /// Opens `path` read-write or read-only, with O_DIRECT if `direct`.
    pub fn open(path: &Path, read_only: bool, direct: bool, serial: &str) -> io::Result<Disk> {
        let serial_bytes = serial.as_bytes();
        if serial_bytes.len() > VIRTIO_BLK_ID_BYTES as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the disk serial {serial:?} is longer than 20 bytes"),
            ));
        }
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        id[..serial_bytes.len()].copy_from_slice(serial_bytes);
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(!read_only);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(path)
        };
        let file = open(direct)?;
        let buffered = if direct { Some(open(false)?) } else { None };
        let meta = file.metadata()?;
        let size = if meta.file_type().is_block_device() {
            // A block device's metadata says 0 bytes; its end is its size.
            // Only for sizing: all I/O uses pread/pwrite at offsets.
            (&file).seek(SeekFrom::End(0))?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is neither a regular file nor a block device",
            ));
        };
        Ok(Disk {
            file,
            buffered,
            // A tail shorter than a sector is not addressable.
            capacity_sectors: size / SECTOR_SIZE,
            read_only,
            serial: id,
            bounce: Mutex::new(Vec::new()),
        })
    }

    /// The device feature bits (virtio-blk part).
    pub fn features(&self) -> u64 {
        let mut f =
            1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_SIZE_MAX | 1 << VIRTIO_BLK_F_FLUSH;
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    /// The device configuration space (struct virtio_blk_config, up to and
    /// including `num_queues`).
    pub fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 36];
        c[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[34..36].copy_from_slice(&1u16.to_le_bytes());
        c
    }

    /// Serves the request queue.
    pub fn process_queue(
        &self,
        q: &mut Queue,
        mem: &Mem,
        counters: &Counters,
    ) -> Result<Outcome, QueueError> {
        queue::run(q, mem, |c| {
            let walk = chain::walk(mem, c, MAX_DESCRIPTORS);
            Step::Used(self.handle(mem, &walk, counters))
        })
    }

    /// Handles one request; returns the bytes written into the chain.
    fn handle(&self, mem: &Mem, walk: &Walk, counters: &Counters) -> u32 {
        Counters::add(&counters.requests, 1);
        let (status_at, code, used) = match parse(mem, walk, self.capacity_sectors) {
            Ok(plan) => {
                let (code, data_len) = self.execute(mem, &plan);
                if code == VIRTIO_BLK_S_OK as u8 {
                    Counters::add(&counters.bytes, chain::total(&plan.data) as u64);
                } else {
                    counters.error();
                }
                (Some(plan.status), code, data_len + 1)
            }
            Err(bad) => {
                tracing::debug!(head = walk.head, error = %bad.error, "refusing a virtio-blk request");
                counters.error();
                (bad.status, bad.code, 1)
            }
        };
        complete(mem, status_at, code, used, counters)
    }

    /// Carries out a checked plan; returns the status and the data bytes
    /// written into the chain.
    pub fn execute(&self, mem: &Mem, plan: &Plan) -> (u8, usize) {
        const OK: u8 = VIRTIO_BLK_S_OK as u8;
        const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
        match plan.op {
            Op::Read { offset } => {
                let len = chain::total(&plan.data);
                self.with_bounce(len, |buf| {
                    if let Err(e) = self.read_at(buf, offset) {
                        tracing::warn!(offset, len, error = %e, "disk read failed");
                        return (IOERR, 0);
                    }
                    match chain::scatter(mem, &plan.data, buf) {
                        Ok(n) => (OK, n),
                        Err(_) => (IOERR, 0),
                    }
                })
            }
            Op::Write { offset } => {
                if self.read_only {
                    return (IOERR, 0);
                }
                let len = chain::total(&plan.data);
                self.with_bounce(len, |buf| {
                    if chain::gather(mem, &plan.data, buf).is_err() {
                        return (IOERR, 0);
                    }
                    if let Err(e) = self.write_at(buf, offset) {
                        tracing::warn!(offset, len, error = %e, "disk write failed");
                        return (IOERR, 0);
                    }
                    (OK, 0)
                })
            }
            Op::Flush => {
                if self.read_only {
                    return (IOERR, 0);
                }
                match self.file.sync_data() {
                    Ok(()) => (OK, 0),
                    Err(e) => {
                        tracing::warn!(error = %e, "disk flush failed");
                        (IOERR, 0)
                    }
                }
            }
            Op::GetId => match chain::scatter(mem, &plan.data, &self.serial) {
                Ok(n) => (OK, n),
                Err(_) => (IOERR, 0),
            },
            Op::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP as u8, 0),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.file.read_exact_at(buf, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.buffered.is_some() => self
                .buffered
                .as_ref()
                .expect("checked")
                .read_exact_at(buf, offset),
            r => r,
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.file.write_all_at(buf, offset) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.buffered.is_some() => self
                .buffered
                .as_ref()
                .expect("checked")
                .write_all_at(buf, offset),
            r => r,
        }
    }
}

impl Disk {
    /// Runs `f` on a `len`-byte buffer that starts on a [`BOUNCE_ALIGN`]
    /// boundary. The buffer is kept for the next request (one worker
    /// thread per device, so the lock is never contended).
    fn with_bounce<R>(&self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.bounce.lock().unwrap_or_else(|e| e.into_inner());
        if buf.len() < len + BOUNCE_ALIGN {
            buf.resize(len + BOUNCE_ALIGN, 0);
        }
        let misalign = buf.as_ptr() as usize % BOUNCE_ALIGN;
        let start = (BOUNCE_ALIGN - misalign) % BOUNCE_ALIGN;
        f(&mut buf[start..start + len])
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read into the data pieces from this byte offset.
    Read {
        offset: u64,
    },
    /// Write the data pieces at this byte offset.
    Write {
        offset: u64,
    },
    Flush,
    /// Write the serial into the data pieces.
    GetId,
    /// A request type we do not implement.
    Unsupported(u32),
}

/// A checked request: every piece inside guest RAM and of the right
/// direction, the sector range inside the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub op: Op,
    pub data: Vec<Piece>,
    pub status: GuestAddress,
}

/// A request that cannot be carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    /// Where the status byte goes, if the chain has one.
    pub status: Option<GuestAddress>,
    pub code: u8,
    pub error: RequestError,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RequestError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("sectors {sector}..+{sectors} lie beyond the end of the disk ({capacity} sectors)")]
    OutOfRange {
        sector: u64,
        sectors: u64,
        capacity: u64,
    },
    #[error("the request has no device-writable status byte")]
    NoStatus,
    #[error("guest memory could not be read: {0}")]
    Memory(String),
}

/// Writes a request's status byte and returns the used length of its
/// chain (`used`, status included). With nowhere to put a status the
/// request is dropped: the chain goes back to the driver with nothing
/// written, and the drop is counted. Shared by every virtio-blk-compatible
/// device (this one and the null device).
pub(crate) fn complete(
    mem: &Mem,
    status_at: Option<GuestAddress>,
    code: u8,
    used: usize,
    counters: &Counters,
) -> u32 {
    match status_at {
        Some(addr) if mem.write_obj(code, addr).is_ok() => used as u32,
        _ => {
            Counters::add(&counters.dropped, 1);
            0
        }
    }
}

/// Parses and checks the request in `walk` against a disk of
/// `capacity_sectors` sectors.
pub(crate) fn parse(mem: &Mem, walk: &Walk, capacity_sectors: u64) -> Result<Plan, Refused> {
    let status = walk.status_byte();
    let refuse = |error: RequestError| Refused {
        status,
        code: VIRTIO_BLK_S_IOERR as u8,
        error,
    };
    walk.check(MAX_DATA + HEADER_LEN as u64 + 1)
        .map_err(|e| refuse(e.into()))?;
    let status = status.ok_or_else(|| refuse(RequestError::NoStatus))?;

    let readable = walk.readable();
    let writable = walk.writable();
    if chain::total(&readable) < HEADER_LEN {
        return Err(refuse(
            ChainError::TooShort("no 16-byte request header").into(),
        ));
    }
    let (header_pieces, out_data) = chain::split_at(&readable, HEADER_LEN);
    let mut header = [0u8; HEADER_LEN];
    chain::gather(mem, &header_pieces, &mut header)
        .map_err(|e| refuse(RequestError::Memory(e.to_string())))?;
    let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    // Everything writable but the status byte.
    let (in_data, _) = chain::split_at(&writable, chain::total(&writable) - 1);

    let data_segment_check = |pieces: &[Piece]| -> Result<(), Refused> {
        if pieces.len() > SEG_MAX as usize {
            return Err(refuse(
                ChainError::TooManyDescriptors(SEG_MAX as usize).into(),
            ));
        }
        if let Some(p) = pieces.iter().find(|p| p.len > SIZE_MAX as usize) {
            return Err(refuse(ChainError::SegmentTooLarge(p.len as u32).into()));
        }
        Ok(())
    };
    let range_check = |len: usize| -> Result<u64, Refused> {
        let len = len as u64;
        if len % SECTOR_SIZE != 0 {
            return Err(refuse(ChainError::Unaligned(len).into()));
        }
        let sectors = len / SECTOR_SIZE;
        match sector.checked_add(sectors) {
            Some(end) if end <= capacity_sectors => Ok(sector * SECTOR_SIZE),
            _ => Err(refuse(RequestError::OutOfRange {
                sector,
                sectors,
                capacity: capacity_sectors,
            })),
        }
    };

    let (op, data) = match kind {
        VIRTIO_BLK_T_IN => {
            if !out_data.is_empty() {
                return Err(refuse(ChainError::WrongDirection("device-writable").into()));
            }
            data_segment_check(&in_data)?;
            let offset = range_check(chain::total(&in_data))?;
            (Op::Read { offset }, in_data)
        }
        VIRTIO_BLK_T_OUT => {
            if !in_data.is_empty() {
                return Err(refuse(ChainError::WrongDirection("device-readable").into()));
            }
            data_segment_check(&out_data)?;
            let offset = range_check(chain::total(&out_data))?;
            (Op::Write { offset }, out_data)
        }
        VIRTIO_BLK_T_FLUSH => {
            if !out_data.is_empty() || !in_data.is_empty() {
                return Err(refuse(ChainError::WrongDirection("no data").into()));
            }
            (Op::Flush, Vec::new())
        }
        VIRTIO_BLK_T_GET_ID => {
            if !out_data.is_empty() {
                return Err(refuse(ChainError::WrongDirection("device-writable").into()));
            }
            let (id, _) = chain::split_at(&in_data, VIRTIO_BLK_ID_BYTES as usize);
            (Op::GetId, id)
        }
        other => (Op::Unsupported(other), Vec::new()),
    };
    Ok(Plan { op, data, status })
}

#[cfg(test)]
mod tests;
