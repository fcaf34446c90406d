//! Just enough of the i8042 keyboard controller: the "pulse reset line"
//! command resets the machine (Linux's `reboot=k` and a fallback of the
//! default reboot path), and the status port reads as all ones, which makes
//! Linux give up probing for a keyboard quickly.

use pvabi::ports::I8042_RESET;

use super::bus::{BusDevice, BusRequest};

/// At [`pvabi::ports::I8042_COMMAND`].
#[derive(Default)]
pub struct I8042;

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> BusRequest {
        if data.first() == Some(&I8042_RESET) {
            BusRequest::Reset
        } else {
            BusRequest::None
        }
    }
}
