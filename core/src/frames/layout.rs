//! The x86-64 System V frame layout every JIT frame has (the engine compiles with
//! `"frame-pointer"="all"`), and the shape of the call-frame information a frame must have for
//! its callee-saved registers to be found.
//!
//! ```text
//!   higher addresses
//!   │ return address into the caller │ <- CFA - 8  = fp + 8
//!   │ caller's rbp                   │ <- CFA - 16 = fp
//!   │ callee-saved registers         │ <- CFA - 24 … (where the CFI says)
//!   │ locals, spill slots            │
//!   ├────────────────────────────────┤ <- sp at a return address
//!   │ return address (callee's slot) │ <- sp - 8
//! ```

use uppercut_stackmaps::{DwarfReg, FrameInfo, RegisterRule};

/// `[fp]` holds the next older frame's frame pointer.
pub const NEXT_OLDER_FP_FROM_FP_OFFSET: u64 = 0;
/// `[fp + 8]` holds the return address into the next older frame.
pub const NEXT_OLDER_RA_FROM_FP_OFFSET: u64 = 8;
/// The next older frame's stack pointer at that return address: `fp + 16` (this frame's CFA).
pub const NEXT_OLDER_SP_FROM_FP_OFFSET: u64 = 16;
/// A frame suspended at a return address finds that address at `sp - 8` (the callee's slot).
pub const RA_SLOT_BELOW_SP: u64 = 8;
/// Frame pointers of well-formed frames are aligned to this.
pub const FP_ALIGN: u64 = 16;
/// The CFA of a frame with a frame pointer: `fp + 16`.
pub const CFA_FROM_FP_OFFSET: u64 = 16;
/// The caller's `rbp` is saved at `CFA - 16`.
pub const SAVED_FP_FROM_CFA: i64 = -16;
/// The return address into the caller is at `CFA - 8`.
pub const RA_FROM_CFA: i64 = -8;

/// The callee-saved registers besides `rbp`, in [`CalleeSaves`] order.
pub const CALLEE_SAVED: [DwarfReg; 5] = [
    DwarfReg::RBX,
    DwarfReg::R12,
    DwarfReg::R13,
    DwarfReg::R14,
    DwarfReg::R15,
];

/// Where a frame saved the callee-saved registers it uses, as CFA offsets in [`CALLEE_SAVED`]
/// order; 0 for a register the frame left alone (its value is still the caller's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CalleeSaves(pub [i32; 5]);

impl CalleeSaves {
    /// The saved registers and their CFA offsets.
    pub fn iter(&self) -> impl Iterator<Item = (DwarfReg, i32)> + '_ {
        CALLEE_SAVED
            .iter()
            .zip(self.0)
            .filter(|(_, offset)| *offset != 0)
            .map(|(reg, offset)| (*reg, offset))
    }

    /// Checks that the CFI row at a return address has the shape a frame walk and a transfer
    /// rely on (CFA = rbp + 16, return address at CFA - 8, caller's rbp at CFA - 16, every
    /// other callee-saved register unchanged or in a CFA slot) and collects the save slots.
    pub fn from_cfi(info: &FrameInfo) -> Result<CalleeSaves, String> {
        if info.cfa.register != DwarfReg::RBP || info.cfa.offset != CFA_FROM_FP_OFFSET as i64 {
            return Err(format!(
                "the CFA is {} + {}, not rbp + 16 (no frame pointer at the call)",
                info.cfa.register, info.cfa.offset
            ));
        }
        if info.return_address != RegisterRule::AtCfaOffset(RA_FROM_CFA) {
            return Err(format!(
                "the return address is {:?}, not at CFA - 8",
                info.return_address
            ));
        }
        if info.rule(DwarfReg::RBP) != Some(RegisterRule::AtCfaOffset(SAVED_FP_FROM_CFA)) {
            return Err(format!(
                "the caller's rbp is {:?}, not at CFA - 16",
                info.rule(DwarfReg::RBP)
            ));
        }
        let mut saves = CalleeSaves::default();
        for (slot, reg) in saves.0.iter_mut().zip(CALLEE_SAVED) {
            match info.rule(reg) {
                Some(RegisterRule::Unchanged) | None => {}
                Some(RegisterRule::AtCfaOffset(offset)) if (-4096..=-24).contains(&offset) => {
                    *slot = offset as i32;
                }
                Some(rule) => {
                    return Err(format!("{reg} is {rule:?}, not unchanged or in a CFA slot"));
                }
            }
        }
        Ok(saves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uppercut_stackmaps::{Cfa, SavedRegister};

    fn frame_info(cfa: Cfa, rules: [RegisterRule; 6]) -> FrameInfo {
        FrameInfo {
            address: 0x1000,
            function: 0x1000..0x1100,
            cfa,
            return_address: RegisterRule::AtCfaOffset(-8),
            callee_saved: std::array::from_fn(|i| SavedRegister {
                register: DwarfReg::CALLEE_SAVED[i],
                rule: rules[i],
            }),
        }
    }

    #[test]
    fn callee_saves_follow_the_cfi() {
        use RegisterRule::{AtCfaOffset, Unchanged};
        let rbp16 = Cfa {
            register: DwarfReg::RBP,
            offset: 16,
        };
        // rbx, rbp, r12, r13, r14, r15
        let info = frame_info(
            rbp16,
            [
                AtCfaOffset(-40),
                AtCfaOffset(-16),
                Unchanged,
                Unchanged,
                AtCfaOffset(-32),
                AtCfaOffset(-24),
            ],
        );
        let saves = CalleeSaves::from_cfi(&info).unwrap();
        assert_eq!(saves.0, [-40, 0, 0, -32, -24]);
        assert_eq!(saves.iter().count(), 3);

        let rsp8 = Cfa {
            register: DwarfReg::RSP,
            offset: 8,
        };
        let info = frame_info(
            rsp8,
            [
                Unchanged, Unchanged, Unchanged, Unchanged, Unchanged, Unchanged,
            ],
        );
        assert!(
            CalleeSaves::from_cfi(&info)
                .unwrap_err()
                .contains("not rbp + 16")
        );

        let info = frame_info(
            rbp16,
            [
                RegisterRule::InRegister(DwarfReg::RAX),
                AtCfaOffset(-16),
                Unchanged,
                Unchanged,
                Unchanged,
                Unchanged,
            ],
        );
        assert!(CalleeSaves::from_cfi(&info).is_err());
    }
}
