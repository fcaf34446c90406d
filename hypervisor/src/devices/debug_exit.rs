//! The debug-exit port: the guest writes its exit status and the domain ends.

use super::bus::{BusDevice, BusRequest};

/// See [`pvabi::ports::DEBUG_EXIT`].
#[derive(Default)]
pub struct DebugExit;

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> BusRequest {
        let mut status = [0u8; 4];
        let n = data.len().min(4);
        status[..n].copy_from_slice(&data[..n]);
        BusRequest::GuestExit(u32::from_le_bytes(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_writes_are_zero_extended() {
        assert_eq!(DebugExit.write(0, &[0x26]), BusRequest::GuestExit(0x26));
        assert_eq!(DebugExit.write(0, &[1, 2, 0, 0]), BusRequest::GuestExit(0x201));
    }
}
