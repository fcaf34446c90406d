//! Turns fuzzer bytes into a domain configuration and a list of steps.
//!
//! The bytes steer a generator biased toward requests that mean something
//! (small frame numbers, mostly present entries with ordinary flags), so
//! that random input reaches deep validation rather than the first flag
//! check; every value can still come out raw.

use super::harness::{Harness, Op};
use crate::entry::{
    PTE_A, PTE_AVAIL, PTE_D, PTE_G, PTE_NX, PTE_P, PTE_PAT_PS, PTE_PCD, PTE_PWT, PTE_RW, PTE_US,
};
use crate::frame::FrameClass;
use crate::ops::{ext_cmd, MmuExtOp, MmuUpdate};
use crate::table::Config;

/// Most steps decoded from one input, to bound the time one input takes.
const MAX_STEPS: usize = 64;

struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }
}

struct Gen<'a> {
    b: Bytes<'a>,
    nr_frames: u64,
}

impl Gen<'_> {
    /// A frame number, sometimes just outside the table.
    fn frame(&mut self) -> u64 {
        match self.b.u8() {
            b if b % 16 == 0 => self.nr_frames + u64::from(b % 2),
            b => u64::from(b) % self.nr_frames,
        }
    }

    /// A vCPU, rarely one that does not exist.
    fn vcpu(&mut self) -> usize {
        match self.b.u8() % 16 {
            15 => 2,
            b => usize::from(b % 2),
        }
    }

    /// An entry index: mostly the first few, sometimes the last few.
    fn index(&mut self) -> u64 {
        match self.b.u8() {
            b @ 0..=249 => u64::from(b % 4),
            b => 508 + u64::from(b % 4),
        }
    }

    /// A page-table entry.
    fn entry(&mut self) -> u64 {
        let w = self.b.u16();
        if w == u16::MAX {
            return self.b.u64();
        }
        let mut e = self.frame() << 12;
        let bit = |n: u16, flag: u64| if w & (1 << n) != 0 { flag } else { 0 };
        if w & 0b111 != 0 {
            e |= PTE_P;
        }
        // US is almost always set: some configurations require it.
        let us = if w & (0b11 << 4) != 0 { PTE_US } else { 0 };
        e |= bit(3, PTE_RW) | us | bit(6, PTE_A) | bit(7, PTE_D) | bit(12, PTE_NX);
        e |= match (w >> 8) % 16 {
            1 => PTE_G,
            2 => PTE_PAT_PS,
            3 => PTE_PWT,
            4 => PTE_PCD,
            5 => PTE_AVAIL,
            6 => 1 << 52,
            7 => 1 << 62,
            _ => 0,
        };
        e
    }

    /// Bits to invert in an existing entry: one right, presence, a frame
    /// bit, or anything.
    fn flip(&mut self) -> u64 {
        match self.b.u8() % 8 {
            0 | 1 => PTE_RW,
            2 => PTE_P,
            3 => PTE_A | PTE_D,
            4 => 1 << (12 + self.b.u8() % 4),
            5 => PTE_NX | PTE_US,
            6 => PTE_G,
            _ => self.b.u64(),
        }
    }

    fn update(&mut self) -> MmuUpdate {
        let cmd = match self.b.u8() % 16 {
            0..=11 => 0,
            12 | 13 => 2,
            14 => 1,
            c => u64::from(c % 8),
        };
        MmuUpdate {
            ptr: (self.frame() << 12) | (self.index() << 3) | cmd,
            val: self.entry(),
        }
    }

    /// A raw `struct mmuext_op`: command word (with padding), arg1, arg2.
    fn raw_ext(&mut self) -> [u64; 3] {
        let cmd = u64::from(self.b.u8() % 14);
        let padding = if self.b.u8() == 0xff {
            0xdead_0000_0000
        } else {
            0
        };
        let arg1 = match cmd as u32 {
            ext_cmd::INVLPG_LOCAL | ext_cmd::INVLPG_MULTI | ext_cmd::INVLPG_ALL => {
                match self.b.u8() % 4 {
                    0 => 0xffff_8000_0000_0000 | u64::from(self.b.u16()) << 12,
                    1 => 0x0000_8000_0000_0000,
                    _ => u64::from(self.b.u16()) << 12,
                }
            }
            _ => self.frame(),
        };
        [cmd | padding, arg1, u64::from(self.b.u8())]
    }

    fn count(&mut self, len: usize) -> u64 {
        match self.b.u8() % 16 {
            0 => len as u64 + 1 + u64::from(self.b.u8() % 4),
            1 => u64::from(self.b.u8()) << 4,
            2 => u64::from(self.b.u16()) << 4,
            3 => u64::MAX,
            _ => len as u64,
        }
    }
}

/// Decodes a configuration and steps from fuzzer input.
pub fn ops_from_bytes(data: &[u8]) -> (Config, Vec<Op>) {
    let mut b = Bytes { data };
    let c = b.u8();
    let mut config = Config::new(4 + u64::from(c >> 3) % 13, 2);
    config.allow_cache_attrs = c & 1 != 0;
    config.required_bits = if c & 6 == 6 { PTE_US } else { 0 };
    let mut g = Gen {
        b,
        nr_frames: config.nr_frames,
    };
    let mut ops = Vec::new();
    // Often an I/O range just past the table, where `frame` lands one time
    // in sixteen, so that entries map device frames.
    if c % 4 != 3 {
        ops.push(Op::AddIoRange {
            first: config.nr_frames,
            count: 1 + u64::from(c >> 7),
        });
    }
    while !g.b.data.is_empty() && ops.len() < MAX_STEPS {
        let n = 1 + usize::from(g.b.u8() % 6);
        let op = match g.b.u8() % 16 {
            0..=2 => Op::GuestWrite {
                gfn: g.frame(),
                idx: g.index() as u16,
                val: g.entry(),
            },
            3..=6 => {
                let flip = g.b.u8() % 2 == 0;
                Op::UpdateTable {
                    sel: g.b.u8(),
                    idx: g.index() as u16,
                    val: if flip { g.flip() } else { g.entry() },
                    flip,
                    cmd: if g.b.u8() % 4 == 0 { 2 } else { 0 },
                }
            }
            7 => Op::MmuUpdate((0..n).map(|_| g.update()).collect()),
            8 => {
                let list_gfn = g.frame();
                let reqs: Vec<MmuUpdate> = (0..n).map(|_| g.update()).collect();
                let count = g.count(reqs.len());
                Op::MmuUpdateInGuest {
                    list_gfn,
                    reqs,
                    count,
                }
            }
            9..=11 => Op::MmuExt {
                vcpu: g.vcpu(),
                ops: (0..n)
                    .filter_map(|_| {
                        let [cmd, a1, a2] = g.raw_ext();
                        MmuExtOp::decode(cmd as u32, a1, a2).ok()
                    })
                    .collect(),
            },
            12 => {
                let vcpu = g.vcpu();
                let list_gfn = g.frame();
                let ops: Vec<[u64; 3]> = (0..n).map(|_| g.raw_ext()).collect();
                let count = g.count(ops.len());
                Op::MmuExtInGuest {
                    vcpu,
                    list_gfn,
                    ops,
                    count,
                }
            }
            13 if g.b.u8() % 4 == 0 => Op::AddIoRange {
                first: g.frame(),
                count: u64::from(g.b.u8() % 3),
            },
            13 => Op::SetClass {
                gfn: g.frame(),
                class: FrameClass::ALL[usize::from(g.b.u8() % 5)],
            },
            14 => Op::NoteFlushed,
            _ if g.b.u8() % 4 == 0 => Op::Teardown,
            _ => Op::GuestWrite {
                gfn: g.frame(),
                idx: g.index() as u16,
                val: g.entry(),
            },
        };
        ops.push(op);
    }
    (config, ops)
}

/// The fuzz target's body: runs the steps decoded from `data` through a
/// [`Harness`] and panics at the first disagreement or broken invariant.
/// Also checks that teardown leaves every count at zero.
pub fn fuzz_batches(data: &[u8]) {
    let (config, ops) = ops_from_bytes(data);
    let mut h = Harness::new(config);
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = h.step(op) {
            panic!("step {i} ({op:x?}) failed: {e}\nsteps: {ops:#x?}");
        }
    }
    if let Err(e) = h.finish() {
        panic!("teardown failed: {e}\nsteps: {ops:#x?}");
    }
}
