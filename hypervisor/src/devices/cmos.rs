//! The CMOS real-time clock (MC146818) at ports 0x70/0x71: the host's UTC
//! time in BCD, never "update in progress", plus the CMOS RAM bytes.
//!
//! Linux reads the wall clock here at boot; without it, it waits seconds
//! for an update-in-progress flag that never clears.

use std::time::{SystemTime, UNIX_EPOCH};

use super::bus::{BusDevice, BusRequest};

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;
/// Register A: 32.768 kHz time base, 1024 Hz rate, UIP clear.
const REG_A_VALUE: u8 = 0x26;
/// Register B: 24-hour mode, BCD.
const REG_B_VALUE: u8 = 0x02;
/// Register D: valid RAM and time.
const REG_D_VALUE: u8 = 0x80;

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// Civil date from days since 1970-01-01 (proleptic Gregorian).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The RTC register `reg` at `unix_seconds`.
pub fn clock_register(reg: u8, unix_seconds: u64) -> Option<u8> {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    Some(match reg {
        REG_SECONDS => bcd(secs % 60),
        REG_MINUTES => bcd(secs / 60 % 60),
        REG_HOURS => bcd(secs / 3600),
        REG_WEEKDAY => bcd(((days + 4).rem_euclid(7) + 1) as u64),
        REG_DAY => bcd(u64::from(day)),
        REG_MONTH => bcd(u64::from(month)),
        REG_YEAR => bcd(year as u64 % 100),
        REG_CENTURY => bcd(year as u64 / 100),
        REG_A => REG_A_VALUE,
        REG_B => REG_B_VALUE,
        REG_C => 0,
        REG_D => REG_D_VALUE,
        _ => return None,
    })
}

/// Ports 0x70 (index, bit 7 = NMI mask) and 0x71 (data).
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
}

impl Default for Cmos {
    fn default() -> Self {
        Cmos { index: 0, ram: [0; 128] }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        data[0] = if offset == 0 {
            self.index
        } else {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            clock_register(self.index, now).unwrap_or(self.ram[usize::from(self.index)])
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusRequest {
        let Some(&v) = data.first() else { return BusRequest::None };
        if offset == 0 {
            self.index = v & 0x7f;
        } else if clock_register(self.index, 0).is_none() {
            self.ram[usize::from(self.index)] = v;
        }
        BusRequest::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_time_in_bcd() {
        // 2026-11-21 18:31:57 UTC, a Saturday.
        let t = 1_795_285_917;
        assert_eq!(clock_register(REG_YEAR, t), Some(0x26));
        assert_eq!(clock_register(REG_CENTURY, t), Some(0x20));
        assert_eq!(clock_register(REG_MONTH, t), Some(0x11));
        assert_eq!(clock_register(REG_DAY, t), Some(0x21));
        assert_eq!(clock_register(REG_HOURS, t), Some(0x18));
        assert_eq!(clock_register(REG_MINUTES, t), Some(0x31));
        assert_eq!(clock_register(REG_SECONDS, t), Some(0x57));
        assert_eq!(clock_register(REG_WEEKDAY, t), Some(0x07));
        assert_eq!(clock_register(REG_A, t).unwrap() & 0x80, 0, "never update-in-progress");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn cmos_ram_is_kept() {
        let mut c = Cmos::default();
        c.write(0, &[0x80 | 0x40]);
        c.write(1, &[0xab]);
        let mut b = [0u8];
        c.read(1, &mut b);
        assert_eq!(b[0], 0xab, "NMI mask bit ignored in the index");
    }
}
