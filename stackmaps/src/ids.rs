//! Newtypes for the numbers that a stack map is made of: ids, offsets, indices, addresses and
//! DWARF register numbers, so that one cannot be passed where another is meant.

use std::fmt;

/// A DWARF register number, as stack maps and `.eh_frame` use them.
///
/// On x86-64 the numbering is the System V psABI's, which [`gimli::X86_64`] names: `R#7` in an
/// `llvm-readobj` dump is [`DwarfReg::RSP`], `R#6` is [`DwarfReg::RBP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DwarfReg(pub u16);

impl DwarfReg {
    /// `rax`.
    pub const RAX: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RAX);
    /// `rdx`.
    pub const RDX: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RDX);
    /// `rcx`.
    pub const RCX: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RCX);
    /// `rbx` (callee-saved).
    pub const RBX: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RBX);
    /// `rsi`.
    pub const RSI: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RSI);
    /// `rdi`.
    pub const RDI: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RDI);
    /// `rbp` (callee-saved; the frame pointer).
    pub const RBP: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RBP);
    /// `rsp` (the stack pointer).
    pub const RSP: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RSP);
    /// `r12` (callee-saved).
    pub const R12: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::R12);
    /// `r13` (callee-saved).
    pub const R13: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::R13);
    /// `r14` (callee-saved).
    pub const R14: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::R14);
    /// `r15` (callee-saved).
    pub const R15: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::R15);
    /// The return address column of x86-64 CFI (number 16, which `.eh_frame` uses for `rip`).
    pub const RA: DwarfReg = DwarfReg::from_gimli(gimli::X86_64::RA);

    /// The registers that the x86-64 System V ABI makes callee-saved, in DWARF order.
    pub const CALLEE_SAVED: [DwarfReg; 6] = [
        DwarfReg::RBX,
        DwarfReg::RBP,
        DwarfReg::R12,
        DwarfReg::R13,
        DwarfReg::R14,
        DwarfReg::R15,
    ];

    /// The same number as gimli's register type.
    pub const fn to_gimli(self) -> gimli::Register {
        gimli::Register(self.0)
    }

    /// The DWARF register number of a gimli register.
    pub const fn from_gimli(register: gimli::Register) -> Self {
        DwarfReg(register.0)
    }

    /// The x86-64 name of this register (`"rsp"`, `"xmm0"`, `"RA"` for 16), if it has one.
    pub fn x86_64_name(self) -> Option<&'static str> {
        gimli::X86_64::register_name(self.to_gimli())
    }
}

impl From<gimli::Register> for DwarfReg {
    fn from(register: gimli::Register) -> Self {
        DwarfReg::from_gimli(register)
    }
}

impl From<DwarfReg> for gimli::Register {
    fn from(register: DwarfReg) -> Self {
        register.to_gimli()
    }
}

/// Prints the x86-64 name when there is one (`rbp`), else `R#n` as `llvm-readobj` does.
impl fmt::Display for DwarfReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.x86_64_name() {
            Some(name) => f.write_str(name),
            None => write!(f, "R#{}", self.0),
        }
    }
}

/// The ID that the program gave a call site: the first operand of `llvm.experimental.stackmap`,
/// `patchpoint` or `gc.statepoint` (or the `"statepoint-id"` attribute). Several records may share
/// one ID (after unrolling or inlining, say); the return address is the key that is unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatchpointId(pub u64);

impl fmt::Display for PatchpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Offset of a record's instruction from the start of its function, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CodeOffset(pub u32);

impl fmt::Display for CodeOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An absolute code address that a record describes: function address plus instruction offset.
/// For a call site (statepoint, patchpoint doing a call) it is the call's return address, the
/// value a stack walk finds in the callee's frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReturnAddress(pub u64);

impl fmt::Display for ReturnAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Index of a function in a stack map's function table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FunctionIndex(pub u32);

/// Index of a call-site record in a stack map, in section order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordIndex(pub u32);

/// Index of a large constant in a stack map's constant pool (what a `ConstantIndex` location
/// holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConstantIndex(pub u32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_psabi() {
        assert_eq!(DwarfReg::RSP, DwarfReg(7));
        assert_eq!(DwarfReg::RBP, DwarfReg(6));
        assert_eq!(DwarfReg::RBX, DwarfReg(3));
        assert_eq!(DwarfReg::RA, DwarfReg(16));
        assert_eq!(DwarfReg::CALLEE_SAVED.map(|r| r.0), [3, 6, 12, 13, 14, 15]);
    }

    #[test]
    fn names_and_display() {
        assert_eq!(DwarfReg(7).x86_64_name(), Some("rsp"));
        assert_eq!(DwarfReg(17).to_string(), "xmm0");
        assert_eq!(DwarfReg(1000).to_string(), "R#1000");
        assert_eq!(gimli::Register::from(DwarfReg::R12), gimli::X86_64::R12);
        assert_eq!(ReturnAddress(0x40).to_string(), "0x40");
    }
}
