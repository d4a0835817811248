//! The process's unwinder and JIT code: what a C++ `throw` (and anything else that unwinds with
//! libgcc's `_Unwind_RaiseException`, `_Unwind_Backtrace`) needs to step through guest frames.
//!
//! libgcc finds the unwind information of code that no loaded ELF object covers only in the
//! `.eh_frame` sections registered with `__register_frame`. On x86-64 glibc that call takes the
//! start of a whole `.eh_frame` section (CIEs and FDEs, ended by a zero length word) and
//! registers every FDE in it; `__deregister_frame` with the same address takes it back, and
//! aborts the process for an address that was never registered. MCJIT registers each object's
//! section when it finalises it, but deregisters it when its execution engine is destroyed,
//! which Uppercut does right after linking a unit: so every unit's kept section is registered
//! again here ([`EhFrameRegistration`]), for as long as the unit's memory lives.
//!
//! ```text
//!  .eh_frame:  [len|CIE ...] [len|FDE pc_begin pc_range ...] ... [0u32]
//!              ^ the address __register_frame / __deregister_frame take
//! ```

use std::fmt;

use crate::frames::CalleeSaves;
use crate::frames::layout::{CFA_FROM_FP_OFFSET, RA_FROM_CFA, SAVED_FP_FROM_CFA};
use uppercut_stackmaps::DwarfReg;

unsafe extern "C" {
    /// libgcc: registers every FDE of the `.eh_frame` section starting at `begin`.
    fn __register_frame(begin: *const u8);
    /// libgcc: takes back a section registered by `__register_frame`.
    fn __deregister_frame(begin: *const u8);
}

/// Why a section cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionError {
    /// An entry's length runs past the end of the section (at this offset).
    Truncated(usize),
    /// No zero length word ends the section: the unwinder would read past it.
    Unterminated,
    /// A save slot that no DWARF rule of a built section can express (not a multiple of 8
    /// below the CFA).
    SaveSlot(DwarfReg, i32),
}

impl fmt::Display for SectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionError::Truncated(at) => {
                write!(
                    f,
                    "the .eh_frame entry at offset {at} runs past the section's end"
                )
            }
            SectionError::Unterminated => f.write_str("the .eh_frame section has no terminator"),
            SectionError::SaveSlot(reg, offset) => {
                write!(f, "{reg} saved at CFA{offset:+} cannot be described")
            }
        }
    }
}

impl std::error::Error for SectionError {}

/// Whether `section` is a sequence of length-prefixed entries ended by a zero length word, as
/// `__register_frame` reads it; `Ok(false)` for a section with no entry at all (nothing to
/// register: libgcc ignores such a section).
pub fn check_section(section: &[u8]) -> Result<bool, SectionError> {
    let word = |at: usize| -> Option<u32> {
        let bytes = section.get(at..at + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let mut at = 0usize;
    loop {
        let Some(length) = word(at) else {
            return Err(SectionError::Unterminated);
        };
        if length == 0 {
            return Ok(at > 0);
        }
        let next = if length == u32::MAX {
            // A 64-bit length follows.
            let bytes = section
                .get(at + 4..at + 12)
                .ok_or(SectionError::Truncated(at))?;
            let long = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            usize::try_from(long)
                .ok()
                .and_then(|l| (at + 12).checked_add(l))
        } else {
            (at + 4).checked_add(length as usize)
        };
        match next {
            Some(next) if next <= section.len() => at = next,
            _ => return Err(SectionError::Truncated(at)),
        }
    }
}

/// `DW_CFA_def_cfa`.
const DW_CFA_DEF_CFA: u8 = 0x0c;
/// `DW_CFA_offset` (the register in the low six bits).
const DW_CFA_OFFSET: u8 = 0x80;
/// `DW_CFA_nop`, which pads entries.
const DW_CFA_NOP: u8 = 0x00;
/// The CIE's data alignment factor: save slots are 8-byte words below the CFA.
const DATA_ALIGN: i64 = -8;
/// The return-address column of x86-64.
const RA_COLUMN: u8 = 16;

/// Builds an `.eh_frame` section of one FDE covering `start..start + len` whose row is that of
/// a JIT frame suspended at a call (the layout of [`crate::frames::layout`]): CFA = `rbp + 16`,
/// the return address at CFA - 8, the caller's `rbp` at CFA - 16, and the other callee-saved
/// registers where `saves` says. Addresses are absolute (`DW_EH_PE_absptr`).
///
/// This is the unwind information of code that stands for such a frame without being its
/// function: a transfer thunk that a moved frame's callee returns into. An unwinder looks a
/// return address `ra` up as `ra - 1`, so a thunk at `t` is described by `start = t - 1`.
pub fn frame_section(start: u64, len: u64, saves: &CalleeSaves) -> Result<Vec<u8>, SectionError> {
    fn uleb(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn sleb(out: &mut Vec<u8>, mut v: i64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
            if done {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    /// Pads an entry's body so that the entry (with its length word) is 8-byte aligned, then
    /// writes its length in front.
    fn close(out: &mut Vec<u8>, entry_start: usize) {
        while (out.len() - entry_start) % 8 != 0 {
            out.push(DW_CFA_NOP);
        }
        let length = (out.len() - entry_start - 4) as u32;
        out[entry_start..entry_start + 4].copy_from_slice(&length.to_le_bytes());
    }
    let offset_rule = |out: &mut Vec<u8>, reg: DwarfReg, offset: i64| {
        if offset >= 0 || offset % DATA_ALIGN != 0 || reg.0 > 0x3f {
            return Err(SectionError::SaveSlot(reg, offset as i32));
        }
        out.push(DW_CFA_OFFSET | reg.0 as u8);
        uleb(out, (offset / DATA_ALIGN) as u64);
        Ok(())
    };

    let mut out = Vec::with_capacity(96);
    // The CIE: version 1, augmentation "zR" with absolute FDE addresses, no initial rules.
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&0u32.to_le_bytes()); // CIE id
    out.push(1); // version
    out.extend_from_slice(b"zR\0");
    uleb(&mut out, 1); // code alignment factor
    sleb(&mut out, DATA_ALIGN);
    out.push(RA_COLUMN);
    uleb(&mut out, 1); // augmentation data: the FDE pointer encoding
    out.push(0x00); // DW_EH_PE_absptr
    close(&mut out, 0);

    // The FDE: the frame's row from its first byte.
    let fde = out.len();
    out.extend_from_slice(&[0; 4]);
    let cie_pointer = (fde + 4) as u32; // back from this field to the CIE at 0
    out.extend_from_slice(&cie_pointer.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    uleb(&mut out, 0); // no augmentation data
    out.push(DW_CFA_DEF_CFA);
    uleb(&mut out, u64::from(DwarfReg::RBP.0));
    uleb(&mut out, CFA_FROM_FP_OFFSET);
    offset_rule(&mut out, DwarfReg(u16::from(RA_COLUMN)), RA_FROM_CFA)?;
    offset_rule(&mut out, DwarfReg::RBP, SAVED_FP_FROM_CFA)?;
    for (reg, offset) in saves.iter() {
        offset_rule(&mut out, reg, i64::from(offset))?;
    }
    close(&mut out, fde);
    out.extend_from_slice(&0u32.to_le_bytes()); // the terminator
    Ok(out)
}

/// One `.eh_frame` section registered with the process's unwinder; dropping it deregisters it.
/// Drop it before the section's memory, or the code it describes, is freed or reused.
#[derive(Debug)]
pub struct EhFrameRegistration {
    begin: *const u8,
}

// SAFETY: the registration is an address; libgcc's registry is process-wide and locked, so it
// may be deregistered from any thread.
unsafe impl Send for EhFrameRegistration {}
// SAFETY: as above; a shared reference allows nothing.
unsafe impl Sync for EhFrameRegistration {}

impl EhFrameRegistration {
    /// Registers the `.eh_frame` section `section` (checked with [`check_section`]); `Ok(None)`
    /// when it has no entry.
    ///
    /// # Safety
    ///
    /// `section` must stay mapped and unchanged, and the code its FDEs describe must stay
    /// mapped, until the result is dropped; its FDEs' addresses must already be the final ones
    /// (relocated).
    pub unsafe fn register(section: &[u8]) -> Result<Option<Self>, SectionError> {
        if !check_section(section)? {
            return Ok(None);
        }
        let begin = section.as_ptr();
        // SAFETY: `section` is a complete, terminated `.eh_frame` section that the caller keeps
        // alive until the registration is dropped; libgcc copies nothing but reads it lazily.
        unsafe { __register_frame(begin) };
        Ok(Some(EhFrameRegistration { begin }))
    }
}

impl Drop for EhFrameRegistration {
    fn drop(&mut self) {
        // SAFETY: `begin` was registered by `register` and is deregistered exactly once, while
        // the section is still mapped (the caller's contract).
        unsafe { __deregister_frame(self.begin) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uppercut_stackmaps::{EhFrameSection, RegisterRule};

    #[test]
    fn a_built_section_describes_the_frame_it_stands_for() {
        let saves = CalleeSaves([-24, 0, -32, 0, -40]);
        let start = 0x7f00_1234_5678u64;
        let section = frame_section(start, 24, &saves).unwrap();
        assert_eq!(check_section(&section), Ok(true));
        assert_eq!(
            section.len() % 8,
            4,
            "entries 8-aligned, then the terminator"
        );
        let parsed = EhFrameSection::new(section.clone(), 0x1000).unwrap();
        assert_eq!(parsed.fde_range(start + 1).unwrap(), start..start + 24);
        for at in [start, start + 1, start + 23] {
            let info = parsed.frame_info(at).unwrap();
            assert_eq!(info.cfa.register, DwarfReg::RBP);
            assert_eq!(info.cfa.offset, 16);
            assert_eq!(info.return_address, RegisterRule::AtCfaOffset(-8));
            assert_eq!(CalleeSaves::from_cfi(&info), Ok(saves), "at {at:#x}");
        }
        assert!(parsed.frame_info(start + 24).is_err());
    }

    #[test]
    fn save_slots_off_the_word_grid_are_refused() {
        let saves = CalleeSaves([-20, 0, 0, 0, 0]);
        assert_eq!(
            frame_section(0x1000, 24, &saves),
            Err(SectionError::SaveSlot(DwarfReg::RBX, -20))
        );
    }

    #[test]
    fn sections_must_end_with_a_zero_word() {
        assert_eq!(check_section(&[0, 0, 0, 0]), Ok(false));
        let mut one = vec![4, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(check_section(&one), Err(SectionError::Unterminated));
        one.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(check_section(&one), Ok(true));
        assert_eq!(
            check_section(&[9, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(SectionError::Truncated(0))
        );
        assert_eq!(check_section(&[]), Err(SectionError::Unterminated));
    }
}
