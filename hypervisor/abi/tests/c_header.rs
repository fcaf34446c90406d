//! Keeps the C header `guest-patches/include/splitpv/abi.h` in step with this
//! crate, the one source of truth of the guest ABI.
//!
//! Three layers, so that neither side can drift silently:
//! 1. `src/lib.rs` is parsed (a small Rust lexer plus an item parser that
//!    follows `pub mod` nesting) to list every public integer constant, every
//!    variant of every public enum and every public struct with its fields.
//!    That list must equal the tables below ([`rust_constants`],
//!    [`rust_layouts`]), whose values come from the compiled crate. A new
//!    constant, variant, struct or field therefore fails this test until it
//!    is added to a table, and the table entry fails until the header has it.
//! 2. A generated C program includes the header and prints every expected
//!    macro's value and type, every struct's size and alignment, and every
//!    field's offset, size and element type; each must match Rust.
//! 3. The header is compiled on its own with warnings as errors in each of
//!    its three modes: freestanding C, the Linux kernel (`__KERNEL__`, with a
//!    stub `<linux/types.h>` and `-nostdinc`, as the kernel builds) and
//!    assembly.
//!
//! What the parser deliberately does not mirror: functions (`hypercall::stub`,
//! `hypercall::name`, `HostBackend::from_u32`/`name`: behaviour, documented in
//! the header's comments) and private items (`const _` size assertions,
//! `mod tests`). Non-integer constants (arrays, strings, tuples, ...) are not
//! compared generically: each one must be listed in [`NON_INTEGER`] with the
//! check that covers its C form, so a new one fails until someone decides how
//! C sees it. Public items the header cannot express yet (unions, statics,
//! type aliases, re-exports, associated consts, tuple structs, data-carrying
//! enums, `repr(packed)`) make the parser fail rather than be skipped.
//!
//! A C compiler is required: `$CC` (which may carry flags) or `cc`. Without
//! one the tests fail; CI installs build-essential.

use std::collections::{BTreeMap, BTreeSet};
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The source the tables must cover.
const LIB_RS: &str = include_str!("../src/lib.rs");

/// The include directory the guest patches use (`-I` this, then
/// `#include <splitpv/abi.h>`).
fn include_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-patches/include")
}

fn header_path() -> PathBuf {
    include_dir().join("splitpv/abi.h")
}

// ---------------------------------------------------------------------------
// The tables: what the crate says, as Rust expressions.

/// `c!(pvabi::a::B)` is `("pvabi::a::B", pvabi::a::B as i128)`; writing the
/// path once means name and value cannot disagree.
macro_rules! c {
    ($p:path) => {
        (stringify!($p), $p as i128)
    };
}

/// Every integer constant and enum variant of `pvabi`, with its value.
fn rust_constants() -> Vec<(&'static str, i128)> {
    vec![
        c!(pvabi::ABI_VERSION_MAJOR),
        c!(pvabi::ABI_VERSION_MINOR),
        c!(pvabi::cpuid::LEAF_SIGNATURE),
        c!(pvabi::cpuid::LEAF_VERSION),
        c!(pvabi::cpuid::LEAF_FEATURES),
        c!(pvabi::cpuid::LEAF_MAX),
        c!(pvabi::cpuid::KVM_LEAF_BASE),
        c!(pvabi::cpuid::LEAF1_ECX_HYPERVISOR),
        c!(pvabi::cpuid::features::HOST_PVM),
        c!(pvabi::cpuid::features::HYPERCALL_PAGE),
        c!(pvabi::cpuid::features::DIRECT_PAGING),
        c!(pvabi::cpuid::features::CONSOLE_IRQ),
        c!(pvabi::cpuid::features::PAGING_DIRECT),
        c!(pvabi::cpuid::HostBackend::Unknown),
        c!(pvabi::cpuid::HostBackend::Vmx),
        c!(pvabi::cpuid::HostBackend::Svm),
        c!(pvabi::cpuid::HostBackend::Pvm),
        c!(pvabi::pvm::MSR_VIF),
        c!(pvabi::pvm::MSR_SIGNATURE),
        c!(pvabi::pvm::SIGNATURE_VALUE),
        c!(pvabi::pvm::MSR_TSC_KHZ),
        c!(pvabi::pvm::PTE_USER),
        c!(pvabi::ports::COM1),
        c!(pvabi::ports::COM1_LEN),
        c!(pvabi::ports::COM1_IRQ),
        c!(pvabi::ports::CMOS_INDEX),
        c!(pvabi::ports::I8042_COMMAND),
        c!(pvabi::ports::I8042_RESET),
        c!(pvabi::ports::ACPI_PM_BASE),
        c!(pvabi::ports::ACPI_PM_LEN),
        c!(pvabi::ports::ACPI_SLEEP_CONTROL),
        c!(pvabi::ports::ACPI_SLEEP_STATUS),
        c!(pvabi::ports::ACPI_RESET),
        c!(pvabi::ports::ACPI_RESET_VALUE),
        c!(pvabi::ports::ACPI_S5_SLP_TYP),
        c!(pvabi::ports::ACPI_SLP_EN),
        c!(pvabi::ports::DEBUG_EXIT),
        c!(pvabi::exit_status::SUCCESS),
        c!(pvabi::exit_status::FAILURE),
        c!(pvabi::exit_status::EXCEPTION_BASE),
        c!(pvabi::exit_status::MAX_GUEST_STATUS),
        c!(pvabi::exit_status::EXIT_CODE_CRASHED),
        c!(pvabi::exit_status::EXIT_CODE_TIMEOUT),
        c!(pvabi::exit_status::EXIT_CODE_STOPPED),
        c!(pvabi::exit_status::EXIT_CODE_HOST_ERROR),
        c!(pvabi::boot::BOOT_GDT),
        c!(pvabi::boot::BOOT_TSS),
        c!(pvabi::boot::BOOT_PML4),
        c!(pvabi::boot::START_INFO),
        c!(pvabi::boot::MEMMAP),
        c!(pvabi::boot::MEMMAP_MAX_ENTRIES),
        c!(pvabi::boot::CMDLINE),
        c!(pvabi::boot::CMDLINE_MAX),
        c!(pvabi::boot::LOAD_MIN),
        c!(pvabi::boot::BOOT_MAP_SIZE),
        c!(pvabi::boot::START_INFO_MAGIC),
        c!(pvabi::boot::START_INFO_VERSION),
        c!(pvabi::boot::MEMMAP_RAM),
        c!(pvabi::boot::MEMMAP_RESERVED),
        c!(pvabi::layout::MMIO_HOLE_START),
        c!(pvabi::layout::MMIO_HOLE_END),
        c!(pvabi::layout::UNBACKED_MMIO_PROBE),
        c!(pvabi::layout::SHADOW_SYNC_GPA),
        c!(pvabi::layout::IOAPIC_MMIO_BASE),
        c!(pvabi::layout::LAPIC_MMIO_BASE),
        c!(pvabi::layout::APIC_MMIO_LEN),
        c!(pvabi::virtio::MMIO_BASE),
        c!(pvabi::virtio::MMIO_STRIDE),
        c!(pvabi::virtio::MAX_DEVICES),
        c!(pvabi::virtio::IRQ_BASE),
        c!(pvabi::power::GED_MMIO_BASE),
        c!(pvabi::power::GED_MMIO_LEN),
        c!(pvabi::power::GED_IRQ),
        c!(pvabi::power::EVENT_POWER_BUTTON),
        c!(pvabi::hypercall::MSR_HYPERCALL_PAGE),
        c!(pvabi::hypercall::HYPERCALL_PORT),
        c!(pvabi::hypercall::STUB_SIZE),
        c!(pvabi::hypercall::STUB_COUNT),
        c!(pvabi::hypercall::MMU_UPDATE),
        c!(pvabi::hypercall::MEMORY_OP),
        c!(pvabi::hypercall::MULTICALL),
        c!(pvabi::hypercall::VERSION),
        c!(pvabi::hypercall::CONSOLE_IO),
        c!(pvabi::hypercall::MMUEXT_OP),
        c!(pvabi::hypercall::SCHED_OP),
        c!(pvabi::hypercall::MULTICALL_MAX),
        c!(pvabi::DOMID_SELF),
        c!(pvabi::errno::EPERM),
        c!(pvabi::errno::ENOENT),
        c!(pvabi::errno::E2BIG),
        c!(pvabi::errno::EAGAIN),
        c!(pvabi::errno::ENOMEM),
        c!(pvabi::errno::EFAULT),
        c!(pvabi::errno::EBUSY),
        c!(pvabi::errno::EINVAL),
        c!(pvabi::errno::ENOSYS),
        c!(pvabi::errno::EOVERFLOW),
        c!(pvabi::version::VERSION),
        c!(pvabi::version::EXTRAVERSION),
        c!(pvabi::version::EXTRAVERSION_LEN),
        c!(pvabi::console::WRITE),
        c!(pvabi::console::READ),
        c!(pvabi::console::MAX_CHUNK),
        c!(pvabi::console::IRQ),
        c!(pvabi::sched::YIELD),
        c!(pvabi::sched::BLOCK),
        c!(pvabi::sched::SHUTDOWN),
        c!(pvabi::sched::REASON_POWEROFF),
        c!(pvabi::sched::REASON_REBOOT),
        c!(pvabi::sched::REASON_CRASH),
        c!(pvabi::memory::INCREASE_RESERVATION),
        c!(pvabi::memory::DECREASE_RESERVATION),
        c!(pvabi::memory::CURRENT_RESERVATION),
        c!(pvabi::memory::MAXIMUM_RESERVATION),
        c!(pvabi::memory::MEMORY_MAP),
        c!(pvabi::mm::MMU_NORMAL_PT_UPDATE),
        c!(pvabi::mm::MMU_MACHPHYS_UPDATE),
        c!(pvabi::mm::MMU_PT_UPDATE_PRESERVE_AD),
        c!(pvabi::mm::MMUEXT_PIN_L1_TABLE),
        c!(pvabi::mm::MMUEXT_PIN_L2_TABLE),
        c!(pvabi::mm::MMUEXT_PIN_L3_TABLE),
        c!(pvabi::mm::MMUEXT_PIN_L4_TABLE),
        c!(pvabi::mm::MMUEXT_UNPIN_TABLE),
        c!(pvabi::mm::MMUEXT_NEW_BASEPTR),
        c!(pvabi::mm::MMUEXT_TLB_FLUSH_LOCAL),
        c!(pvabi::mm::MMUEXT_INVLPG_LOCAL),
        c!(pvabi::mm::MMUEXT_TLB_FLUSH_MULTI),
        c!(pvabi::mm::MMUEXT_INVLPG_MULTI),
        c!(pvabi::mm::MMUEXT_TLB_FLUSH_ALL),
        c!(pvabi::mm::MMUEXT_INVLPG_ALL),
        c!(pvabi::mm::MAX_BATCH),
    ]
}

/// The non-integer constants of `pvabi` and where their C form is checked.
const NON_INTEGER: &[(&str, &str)] = &[
    (
        "cpuid::SIGNATURE",
        "SPV_CPUID_SIGNATURE (string) and SPV_CPUID_SIGNATURE_E{B,C,D}X, compared in c_header_matches_rust",
    ),
    (
        "hypercall::ALL",
        "the X-macro SPV_HYPERCALL_ALL, expanded and compared in c_header_matches_rust",
    ),
];

/// `SPV_` macros of the header that are not the mapping of an integer
/// constant. Each is exercised by c_header_matches_rust.
const HEADER_ONLY: &[&str] = &[
    "SPV_U",   // through the constants written with it
    "SPV_ULL", // likewise
    "SPV_CPUID_SIGNATURE",
    "SPV_CPUID_SIGNATURE_EBX",
    "SPV_CPUID_SIGNATURE_ECX",
    "SPV_CPUID_SIGNATURE_EDX",
    "SPV_HYPERCALL_STUB_OFFSET",
    "SPV_HYPERCALL_ALL",
];

/// Rust's view of one struct.
struct Layout {
    path: String,
    size: usize,
    align: usize,
    /// Name, offset, size.
    fields: Vec<(&'static str, usize, usize)>,
}

/// The size of the field a projection closure points at.
fn field_size<S, F>(_: fn(&S) -> &F) -> usize {
    size_of::<F>()
}

/// `layout!(pvabi::m::S { a, b })`: size, alignment and each field's offset
/// and size, measured on the compiled crate.
macro_rules! layout {
    ($t:path { $($f:ident),* $(,)? }) => {
        Layout {
            path: norm_path(stringify!($t)),
            size: size_of::<$t>(),
            align: align_of::<$t>(),
            fields: vec![$((stringify!($f), offset_of!($t, $f), field_size(|s: &$t| &s.$f))),*],
        }
    };
}

/// Every struct of `pvabi`, fields in declaration order.
fn rust_layouts() -> Vec<Layout> {
    vec![
        layout!(pvabi::pvm::Vif {
            interrupt_flag,
            pending,
            reserved,
            cr2
        }),
        layout!(pvabi::boot::StartInfo {
            magic,
            version,
            vcpu_count,
            flags,
            ram_bytes,
            cmdline_gpa,
            cmdline_len,
            memmap_gpa,
            memmap_entries,
        }),
        layout!(pvabi::boot::MemMapEntry {
            addr,
            size,
            kind,
            reserved
        }),
        layout!(pvabi::hypercall::MulticallEntry { op, result, args }),
        layout!(pvabi::sched::Shutdown { reason }),
        layout!(pvabi::memory::Reservation {
            extent_start,
            nr_extents,
            extent_order,
            mem_flags,
            domid,
            pad
        }),
        layout!(pvabi::memory::MemoryMap {
            nr_entries,
            pad,
            buffer
        }),
        layout!(pvabi::mm::MmuUpdate { ptr, val }),
        layout!(pvabi::mm::MmuextOp {
            cmd,
            pad,
            arg1,
            arg2
        }),
    ]
}

/// `"pvabi :: a :: B"` (however stringify! spaced it) to `"a::B"`.
fn norm_path(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    s.strip_prefix("pvabi::").unwrap_or(&s).to_string()
}

// ---------------------------------------------------------------------------
// Naming: Rust path to C name.

/// `HostBackend` -> `host_backend`; ALL_CAPS segments stay as they are
/// (lowercased), so `E2BIG` does not become `e2_big`.
fn snake(seg: &str) -> String {
    if !seg.chars().any(|c| c.is_ascii_lowercase()) {
        return seg.to_ascii_lowercase();
    }
    let cs: Vec<char> = seg.chars().collect();
    let mut out = String::new();
    for (i, &ch) in cs.iter().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            let prev = cs[i - 1];
            let next_lower = cs.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

/// `hypercall::MMU_UPDATE` -> `SPV_HYPERCALL_MMU_UPDATE`,
/// `cpuid::HostBackend::Vmx` -> `SPV_CPUID_HOST_BACKEND_VMX`.
fn c_macro(path: &str) -> String {
    let mut s = String::from("SPV");
    for seg in path.split("::") {
        s.push('_');
        s.push_str(&snake(seg).to_ascii_uppercase());
    }
    s
}

/// `mm::MmuextOp` -> `spv_mm_mmuext_op`.
fn c_struct(path: &str) -> String {
    let mut s = String::from("spv");
    for seg in path.split("::") {
        s.push('_');
        s.push_str(&snake(seg));
    }
    s
}

// ---------------------------------------------------------------------------
// A Rust lexer, just enough for lib.rs: comments, strings and char literals
// are consumed whole so that a brace inside them cannot confuse the nesting.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// Number, string or char literal, as written.
    Lit(String),
}

fn lex(src: &str) -> Vec<Tok> {
    let cs: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let at = |i: usize| cs.get(i).copied().unwrap_or('\0');
    while i < cs.len() {
        let ch = cs[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            // Rust block comments nest.
            let mut depth = 0;
            loop {
                assert!(i < cs.len(), "unterminated block comment");
                if cs[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if cs[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' || (ch == 'b' && at(i + 1) == '"') {
            let start = i;
            i += if ch == 'b' { 2 } else { 1 };
            while at(i) != '"' {
                assert!(i < cs.len(), "unterminated string");
                i += if cs[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            toks.push(Tok::Lit(cs[start..i].iter().collect()));
        } else if (ch == 'r' || (ch == 'b' && at(i + 1) == 'r')) && {
            // r"..", r#".."#, br"..": count the hashes, then require a quote
            // (otherwise this is an identifier such as `repr` or `r#type`).
            let mut j = i + if ch == 'b' { 2 } else { 1 };
            while at(j) == '#' {
                j += 1;
            }
            at(j) == '"'
        } {
            let start = i;
            i += if ch == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while cs[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                assert!(i < cs.len(), "unterminated raw string");
                if cs[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            toks.push(Tok::Lit(cs[start..i].iter().collect()));
        } else if ch == '\'' || (ch == 'b' && at(i + 1) == '\'') {
            // A char literal is 'x' or '\..'; anything else after a quote is
            // a lifetime ('static), lexed as a quote and an identifier.
            let q = if ch == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                let start = i;
                i = q + 1;
                while at(i) != '\'' {
                    assert!(i < cs.len(), "unterminated char literal");
                    i += if cs[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                toks.push(Tok::Lit(cs[start..i].iter().collect()));
            } else if at(q + 2) == '\'' {
                toks.push(Tok::Lit(cs[i..q + 3].iter().collect()));
                i = q + 3;
            } else if ch == 'b' {
                // `b` followed by a lifetime cannot occur; treat `b` as a name.
                toks.push(Tok::Ident("b".into()));
                i += 1;
            } else {
                toks.push(Tok::Punct('\''));
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' {
            let start = i;
            while at(i).is_ascii_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            toks.push(Tok::Ident(cs[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            let start = i;
            while at(i).is_ascii_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            toks.push(Tok::Lit(cs[start..i].iter().collect()));
        } else {
            toks.push(Tok::Punct(ch));
            i += 1;
        }
    }
    toks
}

// ---------------------------------------------------------------------------
// An item parser over those tokens. It walks module bodies item by item and
// descends into `pub mod x { .. }`, so the module path of every item is the
// chain of `pub mod`s (brace depth) around it. Bodies it does not mirror
// (functions, impls, private modules) are skipped as balanced groups.

/// What may stand between `pub` and `fn`, or be `fn` itself.
const FN_QUALIFIERS: &[&str] = &["fn", "unsafe", "extern", "async"];

const INT_TYPES: &[&str] = &[
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
];

fn int_size(ty: &str) -> usize {
    match ty {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" => 4,
        "u64" | "i64" => 8,
        "u128" | "i128" => 16,
        "usize" | "isize" => size_of::<usize>(),
        _ => panic!("not an integer type: {ty}"),
    }
}

#[derive(Debug, PartialEq)]
struct ConstItem {
    /// `module::NAME`, without `pvabi::`.
    path: String,
    /// The type as written, tokens joined by spaces.
    ty: String,
}

#[derive(Debug, PartialEq)]
struct FieldItem {
    name: String,
    /// Integer type of the field, or of its elements for an array.
    elem: String,
    /// Whether the field is an array `[elem; N]`.
    array: bool,
}

#[derive(Debug, PartialEq)]
struct StructItem {
    path: String,
    fields: Vec<FieldItem>,
}

#[derive(Debug, Default, PartialEq)]
struct Abi {
    int_consts: Vec<ConstItem>,
    other_consts: Vec<ConstItem>,
    structs: Vec<StructItem>,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Tok {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .unwrap_or_else(|| panic!("lib.rs ended unexpectedly"));
        self.pos += 1;
        t
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == s)
    }

    fn expect_punct(&mut self, c: char, what: &str) {
        let t = self.next();
        assert_eq!(t, Tok::Punct(c), "lib.rs: expected `{c}` {what}");
    }

    fn ident(&mut self, what: &str) -> String {
        match self.next() {
            Tok::Ident(s) => s,
            t => panic!("lib.rs: expected an identifier ({what}), found {t:?}"),
        }
    }

    /// At an opening `(`, `[` or `{`: the tokens up to its partner,
    /// exclusive, consuming both delimiters.
    fn group(&mut self) -> Vec<Tok> {
        let start = self.pos;
        let mut depth = 0usize;
        loop {
            match self.next() {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => {
                    depth -= 1;
                    if depth == 0 {
                        return self.toks[start + 1..self.pos - 1].to_vec();
                    }
                }
                _ => {}
            }
        }
    }

    /// Tokens up to (not including) `stop` at nesting depth 0; groups are
    /// taken whole.
    fn until(&mut self, stop: char) -> Vec<Tok> {
        let mut out = Vec::new();
        while let Some(t) = self.peek() {
            match t {
                Tok::Punct(c) if *c == stop => break,
                Tok::Punct(open @ ('(' | '[' | '{')) => {
                    let (open, close) = (*open, closer(*open));
                    out.push(Tok::Punct(open));
                    out.extend(self.group());
                    out.push(Tok::Punct(close));
                }
                _ => out.push(self.next()),
            }
        }
        out
    }

    /// The rest of an item that ends in a `{ .. }` body or a `;` (functions,
    /// impls, traits, macros); returns the body if there was one.
    fn skip_item(&mut self) -> Vec<Tok> {
        loop {
            match self.peek() {
                Some(Tok::Punct(';')) => {
                    self.pos += 1;
                    return Vec::new();
                }
                Some(Tok::Punct('{')) => return self.group(),
                Some(Tok::Punct('(' | '[')) => {
                    self.group();
                }
                Some(_) => self.pos += 1,
                None => panic!("lib.rs: item runs off the end"),
            }
        }
    }

    /// `#[..]` and `#![..]`: the tokens inside each.
    fn attrs(&mut self) -> Vec<Vec<Tok>> {
        let mut out = Vec::new();
        while self.is_punct('#') {
            self.pos += 1;
            if self.is_punct('!') {
                self.pos += 1;
            }
            out.push(self.group());
        }
        out
    }

    /// Consumes `pub`, `pub(crate)`, ...; true only for plain `pub`.
    fn visibility(&mut self) -> bool {
        if !self.is_ident("pub") {
            return false;
        }
        self.pos += 1;
        if self.is_punct('(') {
            self.group();
            return false;
        }
        true
    }

    /// Items of one module body, up to its `}` (consumed) or the end of file.
    fn module(&mut self, path: &[String], abi: &mut Abi) {
        loop {
            let attrs = self.attrs();
            match self.peek() {
                None => return,
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    return;
                }
                _ => {}
            }
            let public = self.visibility();
            let kw = self.ident("item keyword");
            let at = |name: &str| join(path, name);
            match kw.as_str() {
                "mod" => {
                    let name = self.ident("module name");
                    assert!(
                        !self.is_punct(';'),
                        "lib.rs: `mod {name};` is in a file this test does not read"
                    );
                    if public {
                        self.expect_punct('{', "after a module name");
                        let mut sub = path.to_vec();
                        sub.push(name);
                        self.module(&sub, abi);
                    } else {
                        self.group();
                    }
                }
                "const" if FN_QUALIFIERS.iter().any(|q| self.is_ident(q)) => {
                    self.skip_item();
                }
                "const" => {
                    let name = self.ident("constant name");
                    self.expect_punct(':', "after a constant name");
                    let ty = self.until('=');
                    self.until(';');
                    self.expect_punct(';', "after a constant");
                    if public && name != "_" {
                        let item = ConstItem {
                            path: at(&name),
                            ty: tokens_text(&ty),
                        };
                        match ty.as_slice() {
                            [Tok::Ident(t)] if INT_TYPES.contains(&t.as_str()) => {
                                abi.int_consts.push(item)
                            }
                            _ => abi.other_consts.push(item),
                        }
                    }
                }
                "struct" => {
                    let name = self.ident("struct name");
                    if !public {
                        self.skip_item();
                        continue;
                    }
                    if !self.is_punct('{') {
                        unmirrored(format!(
                            "pub struct {} is generic, a tuple or unit struct",
                            at(&name)
                        ));
                    }
                    check_repr_c(&at(&name), &attrs);
                    let body = self.group();
                    abi.structs.push(StructItem {
                        path: at(&name),
                        fields: parse_fields(&at(&name), body),
                    });
                }
                "enum" => {
                    let name = self.ident("enum name");
                    if !public {
                        self.skip_item();
                        continue;
                    }
                    let repr_ty = match repr(&attrs) {
                        Some([Tok::Ident(t)]) if INT_TYPES.contains(&t.as_str()) => t.clone(),
                        _ => {
                            unmirrored(format!("pub enum {} has no #[repr(<integer>)]", at(&name)))
                        }
                    };
                    if !self.is_punct('{') {
                        unmirrored(format!("pub enum {} is generic", at(&name)));
                    }
                    let body = self.group();
                    for v in parse_variants(&at(&name), body) {
                        abi.int_consts.push(ConstItem {
                            path: format!("{}::{v}", at(&name)),
                            ty: repr_ty.clone(),
                        });
                    }
                }
                "impl" => {
                    let body = self.skip_item();
                    // An associated const is reachable as pvabi::m::Type::NAME
                    // and would be ABI, but has no place in the naming rule.
                    for w in body.windows(4) {
                        if let [Tok::Ident(p), Tok::Ident(c), Tok::Ident(n), Tok::Punct(':')] = w {
                            if p == "pub" && c == "const" {
                                unmirrored(format!(
                                    "associated `pub const {n}` in {}",
                                    join(path, "")
                                ));
                            }
                        }
                    }
                }
                // Private: not ABI.
                "trait" | "macro_rules" | "use" | "static" | "type" | "union" if !public => {
                    self.skip_item();
                }
                // Behaviour, not data: the header documents it in prose.
                kw if FN_QUALIFIERS.contains(&kw) => {
                    self.skip_item();
                }
                other => unmirrored(format!("`pub {other}` in {}", join(path, ""))),
            }
        }
    }
}

/// Fails the parse on a public item whose C form nobody has decided yet.
fn unmirrored(what: String) -> ! {
    panic!(
        "lib.rs: {what}: the C header does not mirror this yet; extend tests/c_header.rs and abi.h"
    )
}

fn closer(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

fn join(path: &[String], name: &str) -> String {
    let mut v: Vec<&str> = path.iter().map(String::as_str).collect();
    if !name.is_empty() {
        v.push(name);
    }
    if v.is_empty() {
        "the crate root".into()
    } else {
        v.join("::")
    }
}

fn tokens_text(toks: &[Tok]) -> String {
    toks.iter()
        .map(|t| match t {
            Tok::Ident(s) | Tok::Lit(s) => s.clone(),
            Tok::Punct(c) => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Only `repr(C)` (optionally with `align(N)`) has a C equivalent we mirror.
/// What `#[repr(..)]` says, without the parentheses.
fn repr(attrs: &[Vec<Tok>]) -> Option<&[Tok]> {
    attrs.iter().find_map(|a| match a.as_slice() {
        [Tok::Ident(r), Tok::Punct('('), inner @ .., Tok::Punct(')')] if r == "repr" => Some(inner),
        _ => None,
    })
}

fn check_repr_c(path: &str, attrs: &[Vec<Tok>]) {
    let repr = repr(attrs).unwrap_or_else(|| {
        panic!("lib.rs: pub struct {path} has no #[repr(C)]; its layout is not ABI")
    });
    let has = |s: &str| repr.contains(&Tok::Ident(s.into()));
    assert!(has("C"), "lib.rs: pub struct {path} is not #[repr(C)]");
    assert!(
        !has("packed"),
        "lib.rs: pub struct {path} is packed; the C header does not mirror packing yet"
    );
}

fn parse_fields(path: &str, body: Vec<Tok>) -> Vec<FieldItem> {
    let mut p = Parser { toks: body, pos: 0 };
    let mut fields = Vec::new();
    while p.peek().is_some() {
        p.attrs();
        p.visibility();
        let name = p.ident("field name");
        p.expect_punct(':', "after a field name");
        let ty = p.until(',');
        if p.is_punct(',') {
            p.pos += 1;
        }
        let field = match ty.as_slice() {
            [Tok::Ident(t)] if INT_TYPES.contains(&t.as_str()) => FieldItem { name, elem: t.clone(), array: false },
            [Tok::Punct('['), Tok::Ident(t), Tok::Punct(';'), .., Tok::Punct(']')] if INT_TYPES.contains(&t.as_str()) => {
                FieldItem { name, elem: t.clone(), array: true }
            }
            _ => panic!("lib.rs: field {path}::{name} has type `{}`; only integers and arrays of them are mirrored", tokens_text(&ty)),
        };
        fields.push(field);
    }
    fields
}

fn parse_variants(path: &str, body: Vec<Tok>) -> Vec<String> {
    let mut p = Parser { toks: body, pos: 0 };
    let mut out = Vec::new();
    while p.peek().is_some() {
        p.attrs();
        let name = p.ident("variant name");
        assert!(
            !p.is_punct('(') && !p.is_punct('{'),
            "lib.rs: {path}::{name} carries data; only fieldless enums are mirrored"
        );
        p.until(',');
        if p.is_punct(',') {
            p.pos += 1;
        }
        out.push(name);
    }
    out
}

fn parse_abi(src: &str) -> Abi {
    let mut p = Parser {
        toks: lex(src),
        pos: 0,
    };
    let mut abi = Abi::default();
    p.module(&[], &mut abi);
    assert!(
        p.peek().is_none(),
        "lib.rs: unbalanced `}}` at the crate root"
    );
    abi
}

// ---------------------------------------------------------------------------
// Source versus tables.

/// lib.rs parsed and checked against the tables; panics listing every
/// difference.
struct Expected {
    abi: Abi,
    consts: Vec<(String, i128)>,
    layouts: Vec<Layout>,
}

fn expected() -> Expected {
    let abi = parse_abi(LIB_RS);
    let consts: Vec<(String, i128)> = rust_constants()
        .into_iter()
        .map(|(p, v)| (norm_path(p), v))
        .collect();
    let layouts = rust_layouts();
    let mut errors = Vec::new();

    let mut seen = BTreeSet::new();
    for (p, _) in &consts {
        if !seen.insert(p.as_str()) {
            errors.push(format!("rust_constants() lists {p} twice"));
        }
    }
    let in_source: BTreeSet<&str> = abi.int_consts.iter().map(|c| c.path.as_str()).collect();
    for c in &abi.int_consts {
        if !seen.contains(c.path.as_str()) {
            errors.push(format!(
                "lib.rs has `{}: {}` but rust_constants() in tests/c_header.rs does not: add it there and {} to abi.h",
                c.path,
                c.ty,
                c_macro(&c.path)
            ));
        }
    }
    for p in &seen {
        if !in_source.contains(p) {
            errors.push(format!("rust_constants() lists {p}, which the parser did not find as a pub integer constant or enum variant in lib.rs"));
        }
    }

    let known: BTreeSet<&str> = NON_INTEGER.iter().map(|(p, _)| *p).collect();
    let others: BTreeSet<&str> = abi.other_consts.iter().map(|c| c.path.as_str()).collect();
    for c in &abi.other_consts {
        if !known.contains(c.path.as_str()) {
            errors.push(format!(
                "lib.rs has the non-integer constant `{}: {}`: decide its C form in abi.h, check it, and list it in NON_INTEGER",
                c.path, c.ty
            ));
        }
    }
    for p in known.difference(&others) {
        errors.push(format!(
            "NON_INTEGER lists {p}, which lib.rs no longer has as a non-integer pub constant"
        ));
    }

    let table: BTreeMap<&str, &Layout> = layouts.iter().map(|l| (l.path.as_str(), l)).collect();
    for s in &abi.structs {
        let Some(l) = table.get(s.path.as_str()) else {
            errors.push(format!("lib.rs has pub struct {} but rust_layouts() does not: add it there and struct {} to abi.h", s.path, c_struct(&s.path)));
            continue;
        };
        let src: Vec<&str> = s.fields.iter().map(|f| f.name.as_str()).collect();
        let tab: Vec<&str> = l.fields.iter().map(|f| f.0).collect();
        if src != tab {
            errors.push(format!(
                "{}: lib.rs has fields {src:?}, rust_layouts() lists {tab:?}",
                s.path
            ));
        }
        // Explicit padding only: then the C struct, of the same size with
        // every Rust field at the same offset and size, has no room for
        // anything else, and no byte handed to the hypervisor is undefined.
        let used: usize = l.fields.iter().map(|f| f.2).sum();
        if used != l.size {
            errors.push(format!(
                "{}: fields cover {used} of {} bytes; ABI structs must spell out their padding as `pad`/`reserved` fields",
                s.path, l.size
            ));
        }
    }
    let src_structs: BTreeSet<&str> = abi.structs.iter().map(|s| s.path.as_str()).collect();
    for l in &layouts {
        if !src_structs.contains(l.path.as_str()) {
            errors.push(format!(
                "rust_layouts() lists {}, which is not a pub struct in lib.rs",
                l.path
            ));
        }
    }

    assert!(
        errors.is_empty(),
        "lib.rs and the tables of tests/c_header.rs disagree:\n  {}",
        errors.join("\n  ")
    );
    Expected {
        abi,
        consts,
        layouts,
    }
}

#[test]
fn tables_cover_every_abi_item_of_lib_rs() {
    // Both directions are checked, so a parser that found nothing would fail
    // here too: every table entry would be reported as not in lib.rs.
    expected();
}

#[test]
fn parser_follows_modules_and_ignores_braces_in_comments_and_literals() {
    let src = r##"
        //! crate doc with a { brace
        #![no_std]
        pub const TOP: i64 = -1;
        /* a block /* nested } */ comment { */
        pub mod a {
            /// doc } brace
            pub const X: u32 = 0x1_0000 >> 4;
            pub const S: &str = "}{\"";
            pub const R: &str = r#"}"#;
            pub const CH: char = '}';
            pub const ESC: u8 = b'\'';
            pub const fn f() -> [u8; 2] { [0; 2] }
            const PRIVATE: u32 = 2;
            pub(crate) const RESTRICTED: u32 = 3;
            const _: () = assert!(X > 0);
            pub mod b { pub const Y: u64 = { 1 + 1 }; }
            impl Foo { fn g(&self) -> &'static str { "}" } }
            #[repr(C, align(8))]
            pub struct S2 { /// x
                pub x: u32, pub y: [u16; N] }
            #[repr(u8)]
            pub enum E { A = 1, B }
            pub const AFTER: usize = 4;
        }
        mod hidden { pub const Z: u8 = 0; }
    "##;
    let abi = parse_abi(src);
    let ints: Vec<(&str, &str)> = abi
        .int_consts
        .iter()
        .map(|c| (c.path.as_str(), c.ty.as_str()))
        .collect();
    assert_eq!(
        ints,
        [
            ("TOP", "i64"),
            ("a::X", "u32"),
            ("a::ESC", "u8"),
            ("a::b::Y", "u64"),
            ("a::E::A", "u8"),
            ("a::E::B", "u8"),
            ("a::AFTER", "usize")
        ]
    );
    let others: Vec<&str> = abi.other_consts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(others, ["a::S", "a::R", "a::CH"]);
    // Literals come out whole, whatever quotes they contain.
    let lit = |s: &str| Tok::Lit(s.into());
    assert_eq!(
        lex(r##"b'\'' '\\' 'x' "a\"}" r#"}"# &'static"##),
        [
            lit(r"b'\''"),
            lit(r"'\\'"),
            lit("'x'"),
            lit(r#""a\"}""#),
            lit(r##"r#"}"#"##),
            Tok::Punct('&'),
            Tok::Punct('\''),
            Tok::Ident("static".into()),
        ]
    );
    assert_eq!(
        abi.structs,
        [StructItem {
            path: "a::S2".into(),
            fields: vec![
                FieldItem {
                    name: "x".into(),
                    elem: "u32".into(),
                    array: false
                },
                FieldItem {
                    name: "y".into(),
                    elem: "u16".into(),
                    array: true
                },
            ],
        }]
    );
}

#[test]
#[should_panic(expected = "associated `pub const N` in m")]
fn parser_refuses_associated_consts() {
    parse_abi("pub mod m { impl T { pub const N: u32 = 1; } }");
}

#[test]
fn naming_rule() {
    assert_eq!(c_macro("hypercall::MMU_UPDATE"), "SPV_HYPERCALL_MMU_UPDATE");
    assert_eq!(
        c_macro("cpuid::features::HOST_PVM"),
        "SPV_CPUID_FEATURES_HOST_PVM"
    );
    assert_eq!(c_macro("errno::E2BIG"), "SPV_ERRNO_E2BIG");
    assert_eq!(c_macro("DOMID_SELF"), "SPV_DOMID_SELF");
    assert_eq!(
        c_macro("cpuid::HostBackend::Vmx"),
        "SPV_CPUID_HOST_BACKEND_VMX"
    );
    assert_eq!(
        c_struct("hypercall::MulticallEntry"),
        "spv_hypercall_multicall_entry"
    );
    assert_eq!(c_struct("mm::MmuextOp"), "spv_mm_mmuext_op");
    assert_eq!(c_struct("boot::MemMapEntry"), "spv_boot_mem_map_entry");
    assert_eq!(c_struct("pvm::Vif"), "spv_pvm_vif");
}

// ---------------------------------------------------------------------------
// The C side.

/// A directory under the system temp dir, removed when dropped (also when
/// the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "pvabi-c-header-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the C compiler (`$CC`, which may carry flags, else `cc`) with
/// `args` and returns its standard output; panics with its output if it
/// fails, or if there is no compiler.
fn cc(what: &str, args: &[&str]) -> String {
    let cc = std::env::var("CC")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "cc".into());
    let mut words = cc.split_whitespace();
    let prog = words.next().unwrap();
    let out = Command::new(prog).args(words).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run the C compiler `{cc}` ({e}). The C header check needs one: install build-essential \
             (apt-get install build-essential) or set CC"
        )
    });
    check_ok(&format!("{cc} ({what})"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A value in decimal and, as most of the ABI is written, in hex.
fn show(v: i128) -> String {
    if v < 0 {
        v.to_string()
    } else {
        format!("{v} ({v:#x})")
    }
}

fn header_text() -> String {
    std::fs::read_to_string(header_path())
        .unwrap_or_else(|e| panic!("reading {}: {e}", header_path().display()))
}

/// Type names the probe's `_Generic` reports for the header's typedefs,
/// spelled like the Rust types they mirror.
const C_TYPE_NAMES: &str = "spv_u8: \"u8\", spv_u16: \"u16\", spv_u32: \"u32\", spv_u64: \"u64\", \
                            spv_s32: \"i32\", spv_s64: \"i64\", default: \"other\"";

/// Checks beyond the plain constants: C expressions whose value follows from
/// `pvabi` (the signature registers and the stub offsets).
fn derived_values() -> Vec<(String, i128)> {
    let sig = pvabi::cpuid::SIGNATURE;
    let reg = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]) as i128;
    let mut v = vec![
        ("SPV_CPUID_SIGNATURE_EBX".to_string(), reg(0)),
        ("SPV_CPUID_SIGNATURE_ECX".to_string(), reg(4)),
        ("SPV_CPUID_SIGNATURE_EDX".to_string(), reg(8)),
    ];
    // "The stub for number n is at offset n * STUB_SIZE" (lib.rs), for every
    // hypercall and both ends of the page.
    let nrs = pvabi::hypercall::ALL
        .iter()
        .map(|(n, _)| *n as usize)
        .chain([0, pvabi::hypercall::STUB_COUNT - 1]);
    for n in nrs {
        v.push((
            format!("SPV_HYPERCALL_STUB_OFFSET({n})"),
            (n * pvabi::hypercall::STUB_SIZE) as i128,
        ));
    }
    v
}

/// The probe program: prints one line per fact.
///   const NAME VALUE SIZEOF SIGNED   (or `missing NAME`)
///   struct NAME SIZEOF ALIGNOF
///   field STRUCT FIELD OFFSET SIZEOF ELEMTYPE
///   sig HEXBYTES
///   all NR NAME
fn probe_source(e: &Expected) -> String {
    let mut s = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <splitpv/abi.h>\n\n\
         static void spv_const(const char *name, int neg, long long sv, unsigned long long uv, size_t size, int is_signed)\n{\n\
         \tif (neg)\n\t\tprintf(\"const %s %lld %zu %d\\n\", name, sv, size, is_signed);\n\
         \telse\n\t\tprintf(\"const %s %llu %zu %d\\n\", name, uv, size, is_signed);\n}\n\n\
         /* Value (sign first, so that both halves of the range print), size and\n\
          * signedness of the type of a constant expression. */\n\
         #define SPV_CONST(label, x) spv_const(label, (x) < 0, (long long)(x), (unsigned long long)(x), sizeof(x), ((x) * 0 - 1) < 0)\n",
    );
    s += &format!("#define SPV_TYPE(x) _Generic((x), {C_TYPE_NAMES})\n\n");
    s += "int main(void)\n{\n";
    let names = e
        .consts
        .iter()
        .map(|(p, _)| c_macro(p))
        .chain(derived_values().into_iter().map(|(n, _)| n));
    for name in names {
        // An absent macro is reported (all of them, not just the first), not
        // a compile error.
        let guard = name.split('(').next().unwrap();
        s += &format!("#ifdef {guard}\n\tSPV_CONST(\"{name}\", {name});\n#else\n\tputs(\"missing {name}\");\n#endif\n");
    }
    for l in &e.layouts {
        let cs = c_struct(&l.path);
        s += &format!(
            "\tprintf(\"struct {cs} %zu %zu\\n\", sizeof(struct {cs}), _Alignof(struct {cs}));\n"
        );
        let src = e.abi.structs.iter().find(|x| x.path == l.path).unwrap();
        for f in &src.fields {
            let m = format!("((struct {cs} *)0)->{}", f.name);
            let elem = if f.array {
                format!("{m}[0]")
            } else {
                m.clone()
            };
            s += &format!(
                "\tprintf(\"field {cs} {} %zu %zu %s\\n\", offsetof(struct {cs}, {}), sizeof({m}), SPV_TYPE({elem}));\n",
                f.name, f.name
            );
        }
    }
    s += "#ifdef SPV_CPUID_SIGNATURE\n\tfputs(\"sig \", stdout);\n\
          \tfor (size_t i = 0; i < sizeof(SPV_CPUID_SIGNATURE) - 1; i++)\n\
          \t\tprintf(\"%02x\", (unsigned char)SPV_CPUID_SIGNATURE[i]);\n\tputs(\"\");\n\
          #else\n\tputs(\"missing SPV_CPUID_SIGNATURE\");\n#endif\n";
    s += "#ifdef SPV_HYPERCALL_ALL\n#define SPV_PRINT_ONE(nr, name) printf(\"all %lld %s\\n\", (long long)(nr), name);\n\
          \tSPV_HYPERCALL_ALL(SPV_PRINT_ONE)\n#else\n\tputs(\"missing SPV_HYPERCALL_ALL\");\n#endif\n";
    s += "\treturn 0;\n}\n";
    s
}

/// `#define SPV_*` names and `struct spv_* {` definitions in the header,
/// read as text (our header keeps one definition per line).
fn header_definitions(h: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut macros = BTreeSet::new();
    let mut structs = BTreeSet::new();
    for line in h.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('#') {
            if let Some(def) = rest.trim_start().strip_prefix("define") {
                let name = ident(def.trim_start());
                if name.starts_with("SPV_") {
                    macros.insert(name);
                }
            }
        } else if let Some(rest) = t.strip_prefix("struct spv_") {
            let name = format!("spv_{}", ident(rest));
            if rest[name.len() - 4..].trim_start().starts_with('{') {
                structs.insert(name);
            }
        }
    }
    (macros, structs)
}

#[test]
fn c_header_matches_rust() {
    let e = expected();
    let header = header_text();
    let mut errors = Vec::new();

    // What the header defines that the ABI does not have: stale names left
    // behind by a rename or removal in lib.rs.
    let (macros, structs) = header_definitions(&header);
    let want_macros: BTreeSet<String> = e
        .consts
        .iter()
        .map(|(p, _)| c_macro(p))
        .chain(HEADER_ONLY.iter().map(|s| s.to_string()))
        .collect();
    for m in macros.difference(&want_macros) {
        errors.push(format!(
            "abi.h defines {m}, which is neither a pvabi constant nor in HEADER_ONLY"
        ));
    }
    for m in HEADER_ONLY {
        if !macros.contains(*m) {
            errors.push(format!("abi.h lacks {m} (HEADER_ONLY)"));
        }
    }
    let want_structs: BTreeSet<String> = e.layouts.iter().map(|l| c_struct(&l.path)).collect();
    for s in structs.difference(&want_structs) {
        errors.push(format!(
            "abi.h defines struct {s}, which is not a pvabi struct"
        ));
    }

    // The stub bytes are documented, not defined: keep the example honest.
    let stub = pvabi::hypercall::stub(pvabi::hypercall::SCHED_OP);
    let example: Vec<String> = stub[..8].iter().map(|b| format!("{b:02x}")).collect();
    let example = example.join(" ");
    if !header.contains(&example) {
        errors.push(format!(
            "abi.h's stub example should read `{example}` (pvabi::hypercall::stub(SCHED_OP))"
        ));
    }

    let dir = TempDir::new("probe");
    let src = dir.write("probe.c", &probe_source(&e));
    let exe = dir.0.join("probe");
    let inc = include_dir();
    cc(
        "probe",
        &[
            "-std=c11",
            "-I",
            inc.to_str().unwrap(),
            "-o",
            exe.to_str().unwrap(),
            src.to_str().unwrap(),
        ],
    );
    let out = Command::new(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    check_ok("the probe program", &out);
    let stdout = String::from_utf8(out.stdout).unwrap();

    let mut consts: BTreeMap<String, (i128, usize, bool)> = BTreeMap::new();
    let mut c_structs: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut fields: BTreeMap<(String, String), (usize, usize, String)> = BTreeMap::new();
    let mut sig = None;
    let mut all = Vec::new();
    for line in stdout.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| w[i].parse::<usize>().unwrap();
        match w[0] {
            "const" => {
                consts.insert(w[1].into(), (w[2].parse().unwrap(), num(3), w[4] == "1"));
            }
            "missing" => errors.push(format!("abi.h does not define {}", w[1])),
            "struct" => {
                c_structs.insert(w[1].into(), (num(2), num(3)));
            }
            "field" => {
                fields.insert((w[1].into(), w[2].into()), (num(3), num(4), w[5].into()));
            }
            "sig" => sig = Some(w[1].to_string()),
            "all" => all.push((w[1].parse::<i128>().unwrap(), w[2].to_string())),
            _ => panic!("unexpected probe output: {line}"),
        }
    }

    let rust_ty: BTreeMap<&str, &str> = e
        .abi
        .int_consts
        .iter()
        .map(|c| (c.path.as_str(), c.ty.as_str()))
        .collect();
    for (path, value) in &e.consts {
        let name = c_macro(path);
        let Some(&(c_value, c_size, c_signed)) = consts.get(&name) else {
            continue;
        };
        if c_value != *value {
            errors.push(format!(
                "{name} = {} in abi.h, but pvabi::{path} = {}",
                show(c_value),
                show(*value)
            ));
        }
        // Types: C promotes everything to at least int, so only two things
        // can go wrong. A signed Rust value (errno) as an unsigned C constant
        // breaks `-SPV_ERRNO_X`; an unsigned C constant narrower than the
        // Rust type breaks `~X` (0xC0000000 is a 32-bit unsigned int).
        let ty = rust_ty[path.as_str()];
        if ty.starts_with('i') && !c_signed {
            errors.push(format!("{name} has an unsigned type in C but pvabi::{path} is {ty}: -{name} would not be negative"));
        } else if !c_signed && c_size < int_size(ty) {
            errors.push(format!(
                "{name} is a {c_size}-byte unsigned constant in C but pvabi::{path} is {ty}: write it with SPV_ULL()"
            ));
        }
    }
    for (name, value) in derived_values() {
        if let Some(&(c_value, _, _)) = consts.get(&name) {
            if c_value != value {
                errors.push(format!(
                    "{name} = {} in abi.h, but pvabi says {}",
                    show(c_value),
                    show(value)
                ));
            }
        }
    }

    for l in &e.layouts {
        let cs = c_struct(&l.path);
        let &(size, align) = c_structs
            .get(&cs)
            .expect("every struct is printed (a missing one fails to compile)");
        if (size, align) != (l.size, l.align) {
            errors.push(format!(
                "struct {cs}: sizeof {size}, alignof {align} in C; pvabi::{} has {}, {}",
                l.path, l.size, l.align
            ));
        }
        let src = e.abi.structs.iter().find(|x| x.path == l.path).unwrap();
        for (f, &(name, offset, fsize)) in src.fields.iter().zip(&l.fields) {
            let (c_off, c_size, c_ty) = &fields[&(cs.clone(), name.to_string())];
            if (*c_off, *c_size) != (offset, fsize) {
                errors.push(format!(
                    "struct {cs}.{name}: offset {c_off}, size {c_size} in C; pvabi::{}::{name} has offset {offset}, size {fsize}",
                    l.path
                ));
            }
            if *c_ty != f.elem {
                let what = if f.array { "element type" } else { "type" };
                errors.push(format!(
                    "struct {cs}.{name}: {what} is {c_ty} in C but {} in pvabi::{} (use the spv_ typedefs)",
                    f.elem, l.path
                ));
            }
        }
    }

    let want_sig: String = pvabi::cpuid::SIGNATURE
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(sig) = sig {
        if sig != want_sig {
            errors.push(format!("SPV_CPUID_SIGNATURE is the bytes {sig} in C; pvabi::cpuid::SIGNATURE is {want_sig}"));
        }
    }
    let want_all: Vec<(i128, String)> = pvabi::hypercall::ALL
        .iter()
        .map(|(n, s)| (*n as i128, s.to_string()))
        .collect();
    if all != want_all {
        errors.push(format!(
            "SPV_HYPERCALL_ALL expands to {all:?}; pvabi::hypercall::ALL is {want_all:?}"
        ));
    }

    assert!(
        errors.is_empty(),
        "abi.h disagrees with pvabi ({} problems):\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
}

#[test]
fn c_header_compiles_in_every_mode() {
    let e = expected();
    let dir = TempDir::new("modes");
    let inc = include_dir();
    let inc = inc.to_str().unwrap();
    let strict = ["-Wall", "-Wextra", "-Werror", "-fsyntax-only"];

    // Freestanding C11 as a boot stub or test guest would build it. Included
    // twice: a broken include guard redefines the structs and fails. Every
    // constant is also compared in `#if`, where kernel code uses them too:
    // this fails on a cast, sizeof or enum in a macro.
    let mut tu =
        String::from("#include <splitpv/abi.h>\n#include <splitpv/abi.h>\nint spv_unused;\n");
    for (p, v) in &e.consts {
        let name = c_macro(p);
        let v = if *v > i64::MAX as i128 {
            format!("{v}U")
        } else {
            v.to_string()
        };
        tu += &format!("#if ({name}) != {v}\n#error {name} is not {v} in #if\n#endif\n");
    }
    let tu = dir.write("freestanding.c", &tu);
    let mut args = vec!["-std=c11", "-pedantic-errors", "-ffreestanding", "-I", inc];
    args.extend(strict);
    args.push(tu.to_str().unwrap());
    cc("freestanding C11", &args);

    // The kernel branch, as Kbuild compiles it: gnu11, -nostdinc (so a
    // stray <stdint.h> fails), types from <linux/types.h>. The stub gives
    // those types the kernel's own definitions on x86-64.
    dir.write(
        "kinc/linux/types.h",
        "#ifndef _LINUX_TYPES_H\n#define _LINUX_TYPES_H\n#define SPV_TEST_STUB_TYPES\n\
         typedef unsigned char __u8;\ntypedef unsigned short __u16;\ntypedef unsigned int __u32;\n\
         typedef unsigned long long __u64;\ntypedef signed int __s32;\ntypedef signed long long __s64;\n#endif\n",
    );
    let tu = dir.write(
        "kernel.c",
        "#include <splitpv/abi.h>\n\
         #ifndef SPV_TEST_STUB_TYPES\n#error the kernel branch did not include <linux/types.h>\n#endif\n\
         _Static_assert(_Generic((spv_u64)0, __u64: 1, default: 0), \"spv_u64 is __u64 in the kernel\");\n\
         _Static_assert(_Generic((spv_s64)0, __s64: 1, default: 0), \"spv_s64 is __s64 in the kernel\");\n",
    );
    let kinc = dir.0.join("kinc");
    let mut args = vec![
        "-std=gnu11",
        "-nostdinc",
        "-D__KERNEL__",
        "-I",
        kinc.to_str().unwrap(),
        "-I",
        inc,
    ];
    args.extend(strict);
    args.push(tu.to_str().unwrap());
    cc("kernel mode", &args);

    // Assembly: every constant must assemble, as in a kernel .S file.
    let mut asm = String::from("#include <splitpv/abi.h>\n\t.data\n");
    for (p, _) in &e.consts {
        asm += &format!("\t.quad {}\n", c_macro(p));
    }
    asm +=
        "\t.ascii SPV_CPUID_SIGNATURE\n\t.quad SPV_HYPERCALL_STUB_OFFSET(SPV_HYPERCALL_SCHED_OP)\n";
    asm +=
        "#define SPV_ASM_ONE(nr, name) .quad nr; .asciz name;\n\tSPV_HYPERCALL_ALL(SPV_ASM_ONE)\n";
    let s = dir.write("asm.S", &asm);
    let obj = dir.0.join("asm.o");
    cc(
        "assembly",
        &[
            "-D__ASSEMBLY__",
            "-I",
            inc,
            "-Werror",
            "-c",
            "-o",
            obj.to_str().unwrap(),
            s.to_str().unwrap(),
        ],
    );
    // binutils 2.40 happens to accept C suffixes (1U, 1ULL); older
    // assemblers and other toolchains do not, so look at what the
    // preprocessor hands the assembler.
    let pre = cc(
        "assembly, preprocessed",
        &["-E", "-P", "-D__ASSEMBLY__", "-I", inc, s.to_str().unwrap()],
    );
    let suffixed: Vec<&str> = pre
        .lines()
        .filter(|l| l.trim_start().starts_with(".quad"))
        .filter(|l| {
            l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| {
                    w.starts_with(|c: char| c.is_ascii_digit())
                        && w.trim_start_matches("0x")
                            .ends_with(|c: char| "uUlL".contains(c))
                })
        })
        .collect();
    assert!(
        suffixed.is_empty(),
        "abi.h hands C integer suffixes to the assembler:\n{}",
        suffixed.join("\n")
    );
}
