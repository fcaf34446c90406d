//! The hardware-reduced ACPI power-management block the FADT points at:
//! sleep control, sleep status and reset registers.

use pvabi::ports::{ACPI_PM_BASE, ACPI_RESET, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL, ACPI_SLP_EN};

use super::bus::{BusDevice, BusRequest};

const SLEEP_CONTROL: u64 = (ACPI_SLEEP_CONTROL - ACPI_PM_BASE) as u64;
const RESET: u64 = (ACPI_RESET - ACPI_PM_BASE) as u64;
/// SLP_TYP sits in bits 2..4 of the sleep control register.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// See [`pvabi::ports::ACPI_PM_BASE`].
#[derive(Default)]
pub struct AcpiPm;

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: never "woken"; the other registers read as zero.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest {
        let Some(&v) = data.first() else { return BusRequest::None };
        match offset {
            SLEEP_CONTROL if v & ACPI_SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & SLP_TYP_MASK == ACPI_S5_SLP_TYP => BusRequest::Poweroff,
            RESET if v == ACPI_RESET_VALUE => BusRequest::Reset,
            _ => BusRequest::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_reset_resets() {
        let mut pm = AcpiPm;
        assert_eq!(pm.write(SLEEP_CONTROL, &[(ACPI_S5_SLP_TYP << 2) | ACPI_SLP_EN]), BusRequest::Poweroff);
        assert_eq!(pm.write(SLEEP_CONTROL, &[ACPI_S5_SLP_TYP << 2]), BusRequest::None, "no SLP_EN");
        assert_eq!(pm.write(SLEEP_CONTROL, &[(3 << 2) | ACPI_SLP_EN]), BusRequest::None, "S3 is not supported");
        assert_eq!(pm.write(RESET, &[ACPI_RESET_VALUE]), BusRequest::Reset);
        assert_eq!(pm.write(RESET, &[0]), BusRequest::None);
    }
}
