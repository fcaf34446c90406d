//! The ACPI Generic Event Device: how the host asks a guest to shut down.
//!
//! One read-to-clear event register at [`pvabi::power::GED_MMIO_BASE`]
//! and an edge interrupt on GSI [`pvabi::power::GED_IRQ`]. Linux finds
//! the device in the DSDT (`ACPI0013`, see [`crate::boot::acpi`]): its
//! `_EVT` method reads the register and notifies the power button
//! (`PNP0C0C`) with 0x80, which a Linux userspace turns into a clean
//! poweroff. A guest without an interrupt controller polls the register.

use pvabi::power::EVENT_POWER_BUTTON;
use vmm_sys_util::eventfd::EventFd;

use super::bus::{BusDevice, BusRequest};

/// See the module documentation.
pub struct Ged {
    pending: u32,
    interrupt: EventFd,
    presses: u64,
}

impl Ged {
    /// A device raising `interrupt` (an irqfd on the GED GSI, or an
    /// eventfd nobody listens to when the guest polls).
    pub fn new(interrupt: EventFd) -> Ged {
        Ged { pending: 0, interrupt, presses: 0 }
    }

    /// Presses the power button: sets the event bit and raises the
    /// interrupt.
    pub fn press_power_button(&mut self) {
        self.pending |= EVENT_POWER_BUTTON;
        self.presses += 1;
        if let Err(e) = self.interrupt.write(1) {
            tracing::warn!("raising the power button interrupt failed: {e}");
        }
    }

    /// How often the button was pressed.
    pub fn presses(&self) -> u64 {
        self.presses
    }
}

impl BusDevice for Ged {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 && !data.is_empty() {
            // The events fit in the first byte (the DSDT reads one byte).
            data[0] = self.pending as u8;
            self.pending = 0;
        }
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> BusRequest {
        BusRequest::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_button_is_read_once() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut ged = Ged::new(irq.try_clone().unwrap());
        let mut b = [0u8; 4];
        ged.read(0, &mut b);
        assert_eq!(b, [0; 4]);
        ged.press_power_button();
        assert_eq!(irq.read().unwrap(), 1, "the interrupt is raised");
        let mut other = [0xffu8; 1];
        ged.read(1, &mut other);
        assert_eq!(other, [0], "other offsets read zero and do not clear");
        ged.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), EVENT_POWER_BUTTON);
        ged.read(0, &mut b);
        assert_eq!(b, [0; 4], "read to clear");
        assert_eq!(ged.write(0, &[1]), BusRequest::None);
        assert_eq!(ged.presses(), 1);
    }
}
