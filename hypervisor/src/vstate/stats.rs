//! KVM binary statistics (KVM_GET_STATS_FD): exits, io_exits,
//! insn_emulation and every other counter KVM keeps for a vCPU.
//!
//! The file format is parsed by pure functions so it is tested without
//! /dev/kvm; see Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD".

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT, KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK};
use thiserror::Error;
use vmm_sys_util::ioctl::ioctl;

mod ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::ioctl_io_nr;
    // _IO(KVMIO, 0xce), include/uapi/linux/kvm.h.
    ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);
}
use ioctls::KVM_GET_STATS_FD;

const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// Bounds on what a (buggy) kernel could make us allocate.
const MAX_DESCRIPTORS: u32 = 4096;
const MAX_NAME_SIZE: u32 = 1024;

/// The statistics could not be read.
#[derive(Debug, Error)]
pub enum StatsError {
    /// The ioctl failed (kernels before 5.14 lack it).
    #[error("KVM_GET_STATS_FD failed: {0}")]
    Ioctl(std::io::Error),
    /// Reading the file failed.
    #[error("reading the KVM statistics file failed: {0}")]
    Read(#[from] std::io::Error),
    /// The file does not follow the documented layout.
    #[error("the KVM statistics file is malformed: {0}")]
    Malformed(&'static str),
}

/// One statistic's descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatDesc {
    /// Its name, such as `insn_emulation`.
    pub name: String,
    /// KVM_STATS_TYPE_* | unit | base.
    pub flags: u32,
    /// Number of u64 values.
    pub size: u16,
    /// Offset of its values in the data block.
    pub offset: u32,
}

/// The layout read from a stats file's header and descriptor block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsLayout {
    /// Descriptors.
    pub descs: Vec<StatDesc>,
    /// Where the data block starts.
    pub data_offset: u32,
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Parses the header; returns (name_size, num_desc, desc_offset, data_offset).
pub fn parse_header(h: &[u8]) -> Result<(u32, u32, u32, u32), StatsError> {
    if h.len() < HEADER_LEN {
        return Err(StatsError::Malformed("the header is short"));
    }
    let (name_size, num_desc, desc_offset, data_offset) = (le_u32(h, 4), le_u32(h, 8), le_u32(h, 16), le_u32(h, 20));
    if num_desc > MAX_DESCRIPTORS || name_size == 0 || name_size > MAX_NAME_SIZE {
        return Err(StatsError::Malformed("the header announces an implausible descriptor table"));
    }
    Ok((name_size, num_desc, desc_offset, data_offset))
}

/// Parses a descriptor block of `num_desc` entries of `16 + name_size` bytes.
pub fn parse_descriptors(block: &[u8], name_size: u32, num_desc: u32) -> Result<Vec<StatDesc>, StatsError> {
    let stride = DESC_FIXED_LEN + name_size as usize;
    if block.len() < stride * num_desc as usize {
        return Err(StatsError::Malformed("the descriptor block is short"));
    }
    Ok(block
        .chunks_exact(stride)
        .take(num_desc as usize)
        .map(|d| {
            let name = &d[DESC_FIXED_LEN..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            StatDesc {
                name: String::from_utf8_lossy(&name[..end]).into_owned(),
                flags: le_u32(d, 0),
                size: u16::from_le_bytes([d[6], d[7]]),
                offset: le_u32(d, 8),
            }
        })
        .collect())
}

/// A vCPU's (or VM's) statistics file.
pub struct StatsFd {
    file: File,
    layout: StatsLayout,
}

impl StatsFd {
    /// Opens the statistics of a KVM vCPU or VM file descriptor.
    pub fn open(kvm_fd: &impl AsRawFd) -> Result<StatsFd, StatsError> {
        struct Fd(i32);
        impl AsRawFd for Fd {
            fn as_raw_fd(&self) -> i32 {
                self.0
            }
        }
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file
        // descriptor or -1; the fd we pass is a live KVM fd borrowed for
        // the call.
        let ret = unsafe { ioctl(&Fd(kvm_fd.as_raw_fd()), KVM_GET_STATS_FD()) };
        if ret < 0 {
            return Err(StatsError::Ioctl(std::io::Error::last_os_error()));
        }
        // SAFETY: the ioctl returned a new descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(ret) };
        let mut h = [0u8; HEADER_LEN];
        file.read_exact_at(&mut h, 0)?;
        let (name_size, num_desc, desc_offset, data_offset) = parse_header(&h)?;
        let mut block = vec![0u8; (DESC_FIXED_LEN + name_size as usize) * num_desc as usize];
        file.read_exact_at(&mut block, u64::from(desc_offset))?;
        let descs = parse_descriptors(&block, name_size, num_desc)?;
        Ok(StatsFd { file, layout: StatsLayout { descs, data_offset } })
    }

    /// Reads the current value of every single-valued statistic
    /// (cumulative, instant, peak), in the kernel's order.
    pub fn read(&self) -> Result<Vec<(String, u64)>, StatsError> {
        let mut out = Vec::with_capacity(self.layout.descs.len());
        for d in &self.layout.descs {
            let kind = d.flags & KVM_STATS_TYPE_MASK;
            if d.size != 1 || ![KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT, KVM_STATS_TYPE_PEAK].contains(&kind) {
                continue;
            }
            let mut v = [0u8; 8];
            self.file.read_exact_at(&mut v, u64::from(self.layout.data_offset) + u64::from(d.offset))?;
            out.push((d.name.clone(), u64::from_le_bytes(v)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(name: &str, flags: u32, size: u16, offset: u32, name_size: usize) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&0i16.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&offset.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut n = name.as_bytes().to_vec();
        n.resize(name_size, 0);
        d.extend_from_slice(&n);
        d
    }

    #[test]
    fn parses_header_and_descriptors() {
        let mut h = vec![0u8; 24];
        h[4..8].copy_from_slice(&48u32.to_le_bytes());
        h[8..12].copy_from_slice(&2u32.to_le_bytes());
        h[16..20].copy_from_slice(&64u32.to_le_bytes());
        h[20..24].copy_from_slice(&192u32.to_le_bytes());
        assert_eq!(parse_header(&h).unwrap(), (48, 2, 64, 192));
        let mut block = desc("exits", KVM_STATS_TYPE_CUMULATIVE, 1, 0, 48);
        block.extend(desc("insn_emulation", KVM_STATS_TYPE_CUMULATIVE, 1, 8, 48));
        let d = parse_descriptors(&block, 48, 2).unwrap();
        assert_eq!(d[1], StatDesc { name: "insn_emulation".into(), flags: 0, size: 1, offset: 8 });
    }

    #[test]
    fn rejects_malformed_files() {
        assert!(parse_header(&[0u8; 10]).is_err());
        let mut h = vec![0u8; 24];
        h[4..8].copy_from_slice(&48u32.to_le_bytes());
        h[8..12].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(parse_header(&h).is_err(), "absurd descriptor count");
        assert!(parse_descriptors(&[0u8; 10], 48, 1).is_err());
    }
}
