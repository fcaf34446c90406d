//! ACPI tables for Linux guests: hardware-reduced ACPI, as on a modern
//! virtual server without legacy firmware.
//!
//! Why ACPI at all: an x86 Linux without ACPI has no way to power off (it
//! halts forever, and with an in-kernel local APIC a halted vCPU never exits
//! to us), and no reset register. With a hardware-reduced FADT, `poweroff`
//! writes SLP_TYP|SLP_EN to the sleep control register and `reboot` writes
//! the reset value to the reset register: two port writes the hypervisor
//! turns into "powered off" and "reboot". The MADT describes the vCPUs
//! (this is how SMP is announced; no MP table) and the I/O APIC.
//!
//! The DSDT describes the devices Linux cannot probe: one `LNRO0005`
//! (virtio-mmio) device per used slot of [`pvabi::virtio`], as Firecracker
//! describes its virtio-mmio devices on x86, and the Generic Event Device
//! (`ACPI0013`) with the power button (`PNP0C0C`) it notifies when the host
//! asks for a shutdown (see [`crate::devices::ged`]).
//!
//! Tables (built with rust-vmm's acpi_tables) are placed in the reserved
//! BIOS area at [`ACPI_BASE`]; the RSDP address is passed to Linux in
//! boot_params / hvm_start_info, so no scanning is needed.

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::{aml, Aml};
use pvabi::ports::{COM1, COM1_IRQ, COM1_LEN, ACPI_RESET, ACPI_RESET_VALUE, ACPI_S5_SLP_TYP, ACPI_SLEEP_CONTROL, ACPI_SLEEP_STATUS};

/// Where the tables go: inside the reserved 0x9fc00..0x100000 hole.
pub const ACPI_BASE: u64 = 0xe_0000;
/// Room for the tables.
pub const ACPI_MAX: u64 = 0x2_0000;
/// The I/O APIC's address, as on a PC.
pub const IOAPIC_ADDR: u32 = pvabi::layout::IOAPIC_MMIO_BASE as u32;
/// The local APIC's address.
pub const LAPIC_ADDR: u32 = pvabi::layout::LAPIC_MMIO_BASE as u32;

const OEM_ID: [u8; 6] = *b"SPLTPV";
const OEM_TABLE: [u8; 8] = *b"SPLITPV ";
const OEM_REVISION: u32 = 1;

/// Offset of the MADT's flags (after the 36-byte header and the local
/// APIC address).
const MADT_FLAGS: usize = 40;
/// MADT flag: the machine also has dual 8259 PICs. KVM's in-kernel irqchip
/// does, and they see every ISA interrupt too; without the flag Linux
/// leaves them unprogrammed and unmasked, and serial interrupts arrive as
/// garbage through LINT0.
const PCAT_COMPAT: u32 = 1;

/// Sets PCAT_COMPAT in a MADT (acpi_tables has no setter for the flags)
/// and fixes its checksum.
fn set_pcat_compat(madt: &mut [u8]) {
    let flags = u32::from_le_bytes(madt[MADT_FLAGS..MADT_FLAGS + 4].try_into().expect("4 bytes")) | PCAT_COMPAT;
    madt[MADT_FLAGS..MADT_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
    madt[9] = 0;
    let sum = madt.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    madt[9] = sum.wrapping_neg();
}

/// The serial port as an ACPI device (PNP0501 with its ports and IRQ).
///
/// Why it must be in the DSDT: with a hardware-reduced FADT Linux installs
/// no legacy PIC driver, so `nr_legacy_irqs()` is 0 and ISA IRQs 0-15 are
/// not preallocated. The 8250 driver's built-in COM1 (I/O 0x3f8, IRQ 4)
/// then fails `request_irq(4)` when the port is opened: the kernel's
/// printk still goes out (it polls), but /dev/console cannot be opened and
/// user space has no console. Described here, the port is claimed by
/// 8250_pnp, whose IRQ goes through acpi_register_gsi() and gets mapped
/// (edge-triggered, active high) like any other GSI. Cloud Hypervisor and
/// Firecracker describe their UART the same way.
fn com1_device() -> Vec<u8> {
    let hid = aml::EISAName::new("PNP0501");
    let uid = aml::ONE;
    let io = aml::IO::new(COM1, COM1, 1, COM1_LEN as u8);
    let irq = aml::Interrupt::new(true, true, false, false, COM1_IRQ);
    let crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let name_hid = aml::Name::new("_HID".into(), &hid);
    let name_uid = aml::Name::new("_UID".into(), &uid);
    let name_crs = aml::Name::new("_CRS".into(), &crs);
    let dev = aml::Device::new("COM1".into(), vec![&name_hid, &name_uid, &name_crs]);
    bytes(&aml::Scope::new("\\_SB_".into(), vec![&dev]))
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

fn align16(x: u64) -> u64 {
    (x + 15) & !15
}

/// A virtio-mmio device: `_HID` LNRO0005, `_UID` its slot, its register
/// page and its interrupt (edge-triggered, active high, exclusive).
fn virtio_device(slot: u32) -> Vec<u8> {
    let path = format!("_SB_.V{slot:03}");
    let base = u32::try_from(crate::devices::virtio_mmio::slot_address(slot)).expect("the slots are below 4 GiB");
    let mem = aml::Memory32Fixed::new(true, base, pvabi::virtio::MMIO_STRIDE as u32);
    let irq = aml::Interrupt::new(true, true, false, false, crate::devices::virtio_mmio::slot_gsi(slot));
    let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
    bytes(&aml::Device::new(
        path.as_str().into(),
        vec![&aml::Name::new("_HID".into(), &"LNRO0005"), &aml::Name::new("_UID".into(), &slot), &aml::Name::new("_CRS".into(), &crs)],
    ))
}

/// The power button and the Generic Event Device whose `_EVT` reads the
/// event register and notifies the button (as cloud-hypervisor does).
fn power_devices() -> Vec<u8> {
    use pvabi::power::{EVENT_POWER_BUTTON, GED_IRQ, GED_MMIO_BASE};
    let mut out = bytes(&aml::Device::new(
        "_SB_.PWRB".into(),
        vec![&aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C")), &aml::Name::new("_UID".into(), &aml::ZERO)],
    ));
    let irq = aml::Interrupt::new(true, true, false, false, GED_IRQ);
    let crs = aml::ResourceTemplate::new(vec![&irq]);
    let base = GED_MMIO_BASE as usize;
    let region = aml::OpRegion::new("GDST".into(), aml::OpRegionSpace::SystemMemory, &base, &1usize);
    let field = aml::Field::new(
        "GDST".into(),
        aml::FieldAccessType::Byte,
        aml::FieldLockRule::NoLock,
        aml::FieldUpdateRule::WriteAsZeroes,
        vec![aml::FieldEntry::Named(*b"GDAT", 8)],
    );
    let button = EVENT_POWER_BUTTON as usize;
    let gdat = aml::Path::new("GDAT");
    let read = aml::Store::new(&aml::Local(0), &gdat);
    let mask = aml::And::new(&aml::Local(1), &aml::Local(0), &button);
    let pressed = aml::Equal::new(&aml::Local(1), &button);
    let pwrb = aml::Path::new("\\_SB_.PWRB");
    let notify = aml::Notify::new(&pwrb, &0x80usize);
    let then = aml::If::new(&pressed, vec![&notify]);
    let evt = aml::Method::new("_EVT".into(), 1, true, vec![&read, &mask, &then]);
    out.extend(bytes(&aml::Device::new(
        "_SB_.GED_".into(),
        vec![
            &aml::Name::new("_HID".into(), &"ACPI0013"),
            &aml::Name::new("_UID".into(), &aml::ZERO),
            &aml::Name::new("_CRS".into(), &crs),
            &region,
            &field,
            &evt,
        ],
    )));
    out
}

/// The tables laid out from [`ACPI_BASE`]: (guest-physical address, bytes),
/// RSDP first. `virtio_slots` are the virtio-mmio slots with a device.
pub fn build(vcpu_count: u32, virtio_slots: &[u32]) -> Vec<(u64, Vec<u8>)> {
    // DSDT: the _S5_ object, the virtio-mmio devices, the power button
    // and its event device.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE, OEM_REVISION);
    let s5 = aml::Name::new("_S5_".into(), &aml::Package::new(vec![&ACPI_S5_SLP_TYP]));
    dsdt.append_slice(&bytes(&s5));
    for &slot in virtio_slots {
        dsdt.append_slice(&virtio_device(slot));
    }
    dsdt.append_slice(&power_devices());
    dsdt.append_slice(&com1_device());

    let mut madt = MADT::new(OEM_ID, OEM_TABLE, OEM_REVISION, LocalInterruptController::Address(LAPIC_ADDR));
    for i in 0..vcpu_count {
        madt.add_structure(ProcessorLocalApic::new(i as u8, i as u8, EnabledStatus::Enabled));
    }
    // The I/O APIC gets the next free APIC ID.
    madt.add_structure(IoApic::new(vcpu_count as u8, IOAPIC_ADDR, 0));

    let rsdp_len = Rsdp::len() as u64;
    let xsdt_addr = align16(ACPI_BASE + rsdp_len);
    // The XSDT has three entries: its size is known before the others.
    let xsdt_len = 36 + 3 * 8;
    let dsdt_addr = align16(xsdt_addr + xsdt_len);
    let dsdt_bytes = dsdt.as_slice().to_vec();
    let fadt_addr = align16(dsdt_addr + dsdt_bytes.len() as u64);

    let io8 = |port: u16| GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, u64::from(port));
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = io8(ACPI_RESET);
    fadt.reset_value = ACPI_RESET_VALUE;
    fadt.sleep_control_reg = io8(ACPI_SLEEP_CONTROL);
    fadt.sleep_status_reg = io8(ACPI_SLEEP_STATUS);
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"SPLITPV\0").into();
    let fadt_bytes = bytes(&fadt.finalize());
    let madt_addr = align16(fadt_addr + fadt_bytes.len() as u64);
    let mut madt_bytes = bytes(&madt);
    set_pcat_compat(&mut madt_bytes);

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, OEM_REVISION);
    for a in [fadt_addr, madt_addr, dsdt_addr] {
        // The DSDT is reached through the FADT; listing it in the XSDT too
        // is harmless and some tools expect it.
        if a != dsdt_addr {
            xsdt.add_entry(a);
        }
    }
    let xsdt_bytes = bytes(&xsdt);
    let rsdp_bytes = bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    vec![
        (ACPI_BASE, rsdp_bytes),
        (xsdt_addr, xsdt_bytes),
        (dsdt_addr, dsdt_bytes),
        (fadt_addr, fadt_bytes),
        (madt_addr, madt_bytes),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn tables_are_well_formed() {
        let t = build(4, &[0, 1, 2]);
        let (rsdp_at, rsdp) = &t[0];
        assert_eq!(*rsdp_at, ACPI_BASE);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP v1 checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let find = |sig: &[u8]| t.iter().find(|(_, b)| &b[..4] == sig).unwrap().clone();
        assert_eq!(find(b"XSDT").0, xsdt_addr);
        for sig in [b"XSDT", b"FACP", b"DSDT", b"APIC"] {
            let (addr, b) = find(sig);
            assert_eq!(sum(&b), 0, "{} checksum", String::from_utf8_lossy(sig));
            assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize, b.len(), "length field");
            assert_eq!(addr % 16, 0);
            assert!(addr + b.len() as u64 <= ACPI_BASE + ACPI_MAX);
        }
        // The XSDT lists the FADT and the MADT.
        let (_, x) = find(b"XSDT");
        let entries: Vec<u64> = x[36..].chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(entries, vec![find(b"FACP").0, find(b"APIC").0]);
        // The FADT is hardware-reduced and points at the DSDT and our ports.
        let (_, f) = find(b"FACP");
        let flags = u32::from_le_bytes(f[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
        assert_eq!(u64::from_le_bytes(f[140..148].try_into().unwrap()), find(b"DSDT").0, "X_DSDT");
        assert_eq!(u64::from_le_bytes(f[120..128].try_into().unwrap()), u64::from(ACPI_RESET), "RESET_REG address");
        assert_eq!(f[128], ACPI_RESET_VALUE);
        assert_eq!(u64::from_le_bytes(f[248..256].try_into().unwrap()), u64::from(ACPI_SLEEP_CONTROL), "SLEEP_CONTROL_REG address");
        // One local APIC per vCPU.
        let (_, m) = find(b"APIC");
        let mut off = 44;
        let mut lapics = 0;
        while off < m.len() {
            if m[off] == 0 {
                lapics += 1;
            }
            off += m[off + 1] as usize;
        }
        assert_eq!(lapics, 4);
        assert_eq!(u32::from_le_bytes(m[MADT_FLAGS..MADT_FLAGS + 4].try_into().unwrap()) & PCAT_COMPAT, PCAT_COMPAT);
        // _S5_ is in the DSDT.
        let (_, d) = find(b"DSDT");
        assert!(d.windows(4).any(|w| w == b"_S5_"));
        // COM1 is a PNP0501 device (EISA ID 0x0105d041 little-endian).
        assert!(d.windows(4).any(|w| w == b"COM1"));
        assert!(d.windows(4).any(|w| w == [0x41, 0xd0, 0x05, 0x01]), "PNP0501 _HID");
    }

    fn count(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len()).filter(|w| *w == needle).count()
    }

    /// Memory32Fixed (read/write) and Extended Interrupt (consumer, edge,
    /// active high, exclusive) descriptors, as ACPI encodes them.
    fn descriptors(base: u32, len: u32, gsi: u32) -> (Vec<u8>, Vec<u8>) {
        let mut mem = vec![0x86, 9, 0, 1];
        mem.extend(base.to_le_bytes());
        mem.extend(len.to_le_bytes());
        let mut irq = vec![0x89, 6, 0, 0b0011, 1];
        irq.extend(gsi.to_le_bytes());
        (mem, irq)
    }

    #[test]
    fn the_dsdt_describes_the_used_virtio_slots() {
        let t = build(1, &[0, 5]);
        let (_, d) = t.iter().find(|(_, b)| &b[..4] == b"DSDT").unwrap().clone();
        assert_eq!(sum(&d), 0);
        assert_eq!(count(&d, b"LNRO0005\0"), 2, "one device per used slot");
        for slot in 0..pvabi::virtio::MAX_DEVICES {
            let base = (pvabi::virtio::MMIO_BASE + u64::from(slot) * pvabi::virtio::MMIO_STRIDE) as u32;
            let (mem, irq) = descriptors(base, 0x1000, pvabi::virtio::IRQ_BASE + slot);
            let used = [0, 5].contains(&slot);
            assert_eq!(count(&d, &mem), usize::from(used), "slot {slot} registers");
            assert_eq!(count(&d, &irq), usize::from(used), "slot {slot} interrupt");
            assert_eq!(count(&d, format!("V{slot:03}").as_bytes()), usize::from(used), "slot {slot} device name");
        }
        // A device without slots has no virtio devices, and still the power button.
        let (_, d0) = build(1, &[]).into_iter().find(|(_, b)| &b[..4] == b"DSDT").unwrap();
        assert_eq!(count(&d0, b"LNRO0005"), 0);
        assert_eq!(count(&d0, b"ACPI0013"), 1);
    }

    #[test]
    fn the_dsdt_has_the_power_button_and_its_event_device() {
        let (_, d) = build(2, &[]).into_iter().find(|(_, b)| &b[..4] == b"DSDT").unwrap();
        assert_eq!(count(&d, b"ACPI0013\0"), 1);
        assert_eq!(count(&d, &bytes(&aml::EISAName::new("PNP0C0C"))), 1);
        let (_, irq) = descriptors(0, 0, pvabi::power::GED_IRQ);
        assert_eq!(count(&d, &irq), 1, "the GED interrupt");
        assert_eq!(count(&d, &(pvabi::power::GED_MMIO_BASE as u32).to_le_bytes()), 1, "the event register's address");
        for name in [b"_EVT", b"GDAT", b"PWRB", b"GED_"] {
            assert!(count(&d, name) >= 1, "{}", String::from_utf8_lossy(name));
        }
        // Notify (opcode 0x86) of \_SB_.PWRB with 0x80 (a byte constant).
        let mut notify = vec![0x86, b'\\', 0x2e];
        notify.extend(b"_SB_PWRB");
        notify.extend([0x0a, 0x80]);
        assert_eq!(count(&d, &notify), 1, "_EVT notifies the power button");
    }
}
