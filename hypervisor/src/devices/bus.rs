//! An address bus: ranges of port or MMIO addresses mapped to devices.

use std::sync::{Arc, Mutex};

use thiserror::Error;

/// What a device asks of the vCPU after an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusRequest {
    /// Resume the guest.
    None,
    /// End the domain with this guest exit status (debug-exit port).
    GuestExit(u32),
    /// The guest powered off (ACPI S5).
    Poweroff,
    /// The guest reset the machine.
    Reset,
}

/// A device on a bus. `offset` is relative to the start of its range.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest;
}

/// A range could not be added.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// Empty or wrapping range.
    #[error("the range at {base:#x} with length {len:#x} is empty or wraps around")]
    BadRange {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
    /// Overlaps a range already on the bus.
    #[error("the range at {base:#x} with length {len:#x} overlaps a device already on the bus")]
    Overlap {
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// A set of non-overlapping ranges, each served by one device.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Bus {
        Bus::default()
    }

    /// Serves `[base, base + len)` with `device`.
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn BusDevice>>) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0).ok_or(BusError::BadRange { base, len })?;
        if self.entries.iter().any(|e| base < e.base + e.len && e.base < end) {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    /// The device and offset serving an access of `len` bytes at `addr`;
    /// an access that runs off the end of a device's range finds nothing.
    fn find(&self, addr: u64, len: usize) -> Option<(&Entry, u64)> {
        let idx = self.entries.partition_point(|e| e.base <= addr).checked_sub(1)?;
        let e = &self.entries[idx];
        let offset = addr - e.base;
        (offset.checked_add(len as u64)? <= e.len).then_some((e, offset))
    }

    /// Reads from the device at `addr`; `false` if no device serves it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, offset)) => {
                lock(&e.device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Writes to the device at `addr`; `None` if no device serves it.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<BusRequest> {
        self.find(addr, data.len()).map(|(e, offset)| lock(&e.device).write(offset, data))
    }
}

/// A device whose lock was poisoned by a panic elsewhere still has
/// consistent register state (every access is a single call), so keep
/// serving it rather than taking the whole domain down.
fn lock<'a>(m: &'a Mutex<dyn BusDevice + 'static>) -> std::sync::MutexGuard<'a, dyn BusDevice + 'static> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }
    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest {
            self.writes.push((offset, data.to_vec()));
            BusRequest::None
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let mut bus = Bus::new();
        let a = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b[0], 5);
        assert_eq!(bus.write(0x3f8, &[0x41]), Some(BusRequest::None));
        assert_eq!(a.lock().unwrap().writes, vec![(0, vec![0x41])]);
        assert!(!bus.read(0x3f7, &mut b));
        assert!(!bus.read(0x400, &mut b));
        assert_eq!(bus.write(0x3ff, &[0, 0]), None, "straddles the end");
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let d = || Arc::new(Mutex::new(Recorder::default())) as Arc<Mutex<dyn BusDevice>>;
        bus.insert(0x100, 0x10, d()).unwrap();
        assert_eq!(bus.insert(0x10f, 1, d()), Err(BusError::Overlap { base: 0x10f, len: 1 }));
        assert_eq!(bus.insert(0xf8, 0x9, d()), Err(BusError::Overlap { base: 0xf8, len: 9 }));
        assert!(bus.insert(0x110, 1, d()).is_ok());
        assert_eq!(bus.insert(0x200, 0, d()), Err(BusError::BadRange { base: 0x200, len: 0 }));
        assert_eq!(bus.insert(u64::MAX, 2, d()), Err(BusError::BadRange { base: u64::MAX, len: 2 }));
    }
}
