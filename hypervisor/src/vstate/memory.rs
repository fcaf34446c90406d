//! Guest RAM in a memfd, mapped through vm-memory.
//!
//! A memfd (rather than anonymous memory) is what lets dom0 map the same
//! RAM later to serve virtio queues: the file descriptor is passed over a
//! socket and mapped at the same offsets. Its size is sealed so that no
//! process holding it can shrink it under a mapping (which would turn guest
//! accesses into SIGBUS in the other processes).

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsRawFd;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use thiserror::Error;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::layout::{ram_ranges, RamRange};

/// Guest memory could not be set up.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// memfd_create failed.
    #[error("creating the memory file for guest RAM failed: {0}")]
    Memfd(nix::Error),
    /// ftruncate failed.
    #[error("sizing the memory file to {bytes} bytes failed: {source}")]
    Size {
        /// Requested size.
        bytes: u64,
        /// Cause.
        source: std::io::Error,
    },
    /// Sealing failed.
    #[error("sealing the size of the memory file failed: {0}")]
    Seal(nix::Error),
    /// Duplicating the file failed.
    #[error("duplicating the memory file descriptor failed: {0}")]
    Dup(std::io::Error),
    /// Mapping failed.
    #[error("mapping guest RAM failed: {0}")]
    Map(#[from] vm_memory::mmap::FromRangesError),
}

/// The RAM of one domain.
pub struct GuestRam {
    file: File,
    memory: GuestMemoryMmap,
    ranges: Vec<RamRange>,
}

impl GuestRam {
    /// Creates `bytes` of RAM laid out by [`ram_ranges`].
    pub fn new(name: &CStr, bytes: u64) -> Result<GuestRam, MemoryError> {
        let fd = memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING)
            .map_err(MemoryError::Memfd)?;
        let file = File::from(fd);
        file.set_len(bytes).map_err(|source| MemoryError::Size { bytes, source })?;
        fcntl(
            file.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL),
        )
        .map_err(MemoryError::Seal)?;
        let ranges = ram_ranges(bytes);
        let mut regions = Vec::with_capacity(ranges.len());
        for r in &ranges {
            let dup = file.try_clone().map_err(MemoryError::Dup)?;
            let len = usize::try_from(r.len).expect("RAM ranges fit in the address space of a 64-bit host");
            regions.push((GuestAddress(r.gpa), len, Some(FileOffset::new(dup, r.file_offset))));
        }
        let memory = GuestMemoryMmap::from_ranges_with_files(regions)?;
        Ok(GuestRam { file, memory, ranges })
    }

    /// The guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The memory file, to share with another process.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where RAM is.
    pub fn ranges(&self) -> &[RamRange] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn guest_writes_are_visible_through_the_file() {
        let ram = GuestRam::new(c"test-ram", 16 << 20).unwrap();
        ram.memory().write_obj(0xdead_beef_u32, GuestAddress(0x12_3400)).unwrap();
        let mut b = [0u8; 4];
        ram.file().read_exact_at(&mut b, 0x12_3400).unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xdead_beef);
        assert_eq!(ram.memory().num_regions(), 1);
    }

    #[test]
    fn the_size_is_sealed() {
        let ram = GuestRam::new(c"test-ram", 8 << 20).unwrap();
        assert!(ram.file().set_len(4 << 20).is_err(), "shrinking must be refused");
        assert!(ram.file().set_len(16 << 20).is_err(), "growing must be refused");
    }
}
