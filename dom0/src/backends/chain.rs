//! Descriptor chains as checked lists of guest buffers: pure logic shared by
//! every device.
//!
//! virtio-queue's chain iterator already refuses to follow a loop, a `next`
//! index outside the table, an unreadable descriptor or a bad indirect table,
//! but it does so by ending the iteration early, which looks like a chain
//! that ended normally. [`walk`] tells the two apart (a chain ends properly
//! only on a descriptor without `VIRTQ_DESC_F_NEXT`), bounds the number of
//! descriptors and checks every buffer against guest RAM.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use super::Mem;

/// The chain type every device handles: descriptors over our guest memory.
pub(crate) type Chain<'a> = virtio_queue::DescriptorChain<&'a Mem>;

/// One descriptor of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (`VIRTQ_DESC_F_WRITE`).
    pub writable: bool,
    /// Whether `[addr, addr + len)` lies inside guest RAM.
    pub in_ram: bool,
}

/// How a walk over a chain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// On a descriptor without `NEXT`: the chain is complete.
    Complete,
    /// The chain is broken: empty, looping, longer than the queue, a `next`
    /// index out of range, an unreadable descriptor or indirect table, or
    /// more than 4 GiB in total.
    Broken,
    /// The chain has more descriptors than the device accepts.
    TooMany,
}

/// A descriptor chain taken apart.
#[derive(Clone, Debug)]
pub(crate) struct Walk {
    pub head: u16,
    pub segments: Vec<Segment>,
    pub end: End,
}

/// Why a chain cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChainError {
    #[error("the descriptor chain is broken (empty, looping, longer than the queue, or with an invalid next index or indirect table)")]
    Broken,
    #[error("the descriptor chain has more than {0} descriptors")]
    TooManyDescriptors(usize),
    #[error("the descriptor chain carries more than {0} bytes")]
    TooLong(u64),
    #[error("descriptor {index} ({len} bytes at {addr:#x}) lies outside guest RAM")]
    OutsideRam { index: usize, addr: u64, len: u32 },
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    #[error("the request needs {0} buffers but the chain has a descriptor of the other direction")]
    WrongDirection(&'static str),
    #[error("the request is too short: {0}")]
    TooShort(&'static str),
    #[error("the data length {0} is not a multiple of 512 bytes")]
    Unaligned(u64),
    #[error("a descriptor of {0} bytes exceeds the segment size limit")]
    SegmentTooLarge(u32),
}

impl Walk {
    /// Total bytes of the device-readable and device-writable parts.
    pub fn lengths(&self) -> (u64, u64) {
        let mut r = 0u64;
        let mut w = 0u64;
        for s in &self.segments {
            if s.writable {
                w += u64::from(s.len);
            } else {
                r += u64::from(s.len);
            }
        }
        (r, w)
    }

    /// Checks what every device needs: a complete chain, every buffer in
    /// RAM, device-readable descriptors before device-writable ones, and at
    /// most `max_total` bytes.
    pub fn check(&self, max_total: u64) -> Result<(), ChainError> {
        match self.end {
            End::Complete => {}
            End::Broken => return Err(ChainError::Broken),
            End::TooMany => return Err(ChainError::TooManyDescriptors(self.segments.len())),
        }
        if let Some((index, s)) = self.segments.iter().enumerate().find(|(_, s)| !s.in_ram) {
            return Err(ChainError::OutsideRam {
                index,
                addr: s.addr.0,
                len: s.len,
            });
        }
        let mut seen_writable = false;
        for s in &self.segments {
            if s.writable {
                seen_writable = true;
            } else if seen_writable {
                return Err(ChainError::ReadableAfterWritable);
            }
        }
        let (r, w) = self.lengths();
        if r + w > max_total {
            return Err(ChainError::TooLong(max_total));
        }
        Ok(())
    }

    /// [`Walk::check`], and every descriptor in one direction: all
    /// device-writable (`writable`, a receive buffer) or all device-readable
    /// (a transmit buffer), as single-direction queues need.
    pub fn check_one_direction(&self, max_total: u64, writable: bool) -> Result<(), ChainError> {
        self.check(max_total)?;
        if self.segments.iter().any(|s| s.writable != writable) {
            return Err(ChainError::WrongDirection(if writable {
                "device-writable"
            } else {
                "device-readable"
            }));
        }
        Ok(())
    }

    /// The device-readable part as pieces.
    pub fn readable(&self) -> Vec<Piece> {
        self.pieces(false)
    }

    /// The device-writable part as pieces.
    pub fn writable(&self) -> Vec<Piece> {
        self.pieces(true)
    }

    fn pieces(&self, writable: bool) -> Vec<Piece> {
        self.segments
            .iter()
            .filter(|s| s.writable == writable && s.len > 0)
            .map(|s| Piece {
                addr: s.addr,
                len: s.len as usize,
            })
            .collect()
    }

    /// The address of the last byte of the chain if the chain ended
    /// properly on a device-writable descriptor inside RAM: where a status
    /// byte can go even when the rest of the request is unusable.
    pub fn status_byte(&self) -> Option<GuestAddress> {
        if self.end != End::Complete {
            return None;
        }
        let last = self.segments.last()?;
        if !last.writable || !last.in_ram || last.len == 0 {
            return None;
        }
        last.addr
            .0
            .checked_add(u64::from(last.len) - 1)
            .map(GuestAddress)
    }
}

/// Walks `chain`, reading at most `max_descriptors` descriptors.
pub(crate) fn walk(mem: &Mem, chain: Chain<'_>, max_descriptors: usize) -> Walk {
    let head = chain.head_index();
    let mut segments = Vec::new();
    // An empty chain (head index out of range, unreadable head) is broken.
    let mut last_has_next = true;
    for desc in chain {
        if segments.len() == max_descriptors {
            return Walk {
                head,
                segments,
                end: End::TooMany,
            };
        }
        segments.push(Segment {
            addr: desc.addr(),
            len: desc.len(),
            writable: desc.is_write_only(),
            in_ram: in_ram(mem, desc.addr(), desc.len()),
        });
        last_has_next = desc.has_next();
    }
    let end = if last_has_next {
        End::Broken
    } else {
        End::Complete
    };
    Walk {
        head,
        segments,
        end,
    }
}

fn in_ram(mem: &Mem, addr: GuestAddress, len: u32) -> bool {
    if len == 0 {
        return true;
    }
    addr.0.checked_add(u64::from(len)).is_some() && mem.check_range(addr, len as usize)
}

/// A byte range of guest memory (already checked to be inside RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub addr: GuestAddress,
    pub len: usize,
}

/// Total length of `pieces`.
pub(crate) fn total(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.len).sum()
}

/// Splits `pieces` after `at` bytes (`at` at most their total length).
pub(crate) fn split_at(pieces: &[Piece], mut at: usize) -> (Vec<Piece>, Vec<Piece>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    for p in pieces {
        if at >= p.len {
            head.push(*p);
            at -= p.len;
        } else if at > 0 {
            head.push(Piece {
                addr: p.addr,
                len: at,
            });
            tail.push(Piece {
                addr: GuestAddress(p.addr.0 + at as u64),
                len: p.len - at,
            });
            at = 0;
        } else {
            tail.push(*p);
        }
    }
    (head, tail)
}

/// Copies guest memory from `pieces` into `out` (up to `out.len()` bytes).
pub(crate) fn gather(mem: &Mem, pieces: &[Piece], out: &mut [u8]) -> Result<(), GuestMemoryError> {
    let mut done = 0;
    for p in pieces {
        if done == out.len() {
            break;
        }
        let n = p.len.min(out.len() - done);
        mem.read_slice(&mut out[done..done + n], p.addr)?;
        done += n;
    }
    Ok(())
}

/// Copies `data` into guest memory at `pieces` (as much as fits); returns
/// the number of bytes written.
pub(crate) fn scatter(mem: &Mem, pieces: &[Piece], data: &[u8]) -> Result<usize, GuestMemoryError> {
    let mut done = 0;
    for p in pieces {
        if done == data.len() {
            break;
        }
        let n = p.len.min(data.len() - done);
        mem.write_slice(&data[done..done + n], p.addr)?;
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_pieces() {
        let p = |a: u64, l: usize| Piece {
            addr: GuestAddress(a),
            len: l,
        };
        let pieces = [p(0x1000, 10), p(0x2000, 6)];
        assert_eq!(split_at(&pieces, 0), (vec![], pieces.to_vec()));
        assert_eq!(
            split_at(&pieces, 4),
            (vec![p(0x1000, 4)], vec![p(0x1004, 6), p(0x2000, 6)])
        );
        assert_eq!(
            split_at(&pieces, 10),
            (vec![p(0x1000, 10)], vec![p(0x2000, 6)])
        );
        assert_eq!(
            split_at(&pieces, 15),
            (vec![p(0x1000, 10), p(0x2000, 5)], vec![p(0x2005, 1)])
        );
        assert_eq!(split_at(&pieces, 16), (pieces.to_vec(), vec![]));
        assert_eq!(total(&pieces), 16);
    }
}
