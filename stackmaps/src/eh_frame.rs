//! `.eh_frame` queries: for a code address, where the caller's frame starts (the CFA) and where
//! the return address and the callee-saved registers were saved.
//!
//! gimli parses and evaluates the CFI; this module keeps its types inside and answers with
//! [`FrameInfo`]. The FDEs are indexed once, sorted by start address, so a query is a binary
//! search plus running one FDE's instructions.
//!
//! ```text
//!   higher addresses
//!   ┌──────────────────────┐
//!   │ caller's frame ...   │
//!   ├──────────────────────┤ <- CFA  (rsp before the call pushed the return address)
//!   │ return address       │    CFA - 8   return_address = AtCfaOffset(-8)
//!   │ saved rbp            │    CFA - 16  rbp = AtCfaOffset(-16)   (frame pointer: CFA = rbp + 16)
//!   │ saved r15, r14, ...  │    CFA - 24 ...
//!   │ locals, spill slots  │
//!   └──────────────────────┘ <- rsp
//!   lower addresses
//! ```

use std::borrow::Cow;
use std::ops::Range;

use gimli::{BaseAddresses, CieOrFde, EhFrame, EhFrameOffset, LittleEndian, UnwindSection};

use crate::error::{Error, Result};
use crate::ids::{DwarfReg, ReturnAddress};

type Reader<'a> = gimli::EndianSlice<'a, LittleEndian>;

/// An `.eh_frame` section at a known address, with its FDEs indexed by address.
///
/// Built from raw section bytes as a JIT memory manager captures them (FDE addresses already
/// relocated) with [`EhFrameSection::new`], or from an object file with
/// [`EhFrameSection::from_object`].
#[derive(Clone, Debug)]
pub struct EhFrameSection<'data> {
    bytes: Cow<'data, [u8]>,
    address: u64,
    /// FDEs sorted by start address.
    fdes: Vec<FdeEntry>,
}

#[derive(Clone, Copy, Debug)]
struct FdeEntry {
    start: u64,
    end: u64,
    offset: usize,
}

/// How to find the canonical frame address: `register + offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cfa {
    /// The base register (`rsp` or `rbp` on x86-64).
    pub register: DwarfReg,
    /// The offset added to it.
    pub offset: i64,
}

impl Cfa {
    /// The CFA, given the value of [`Cfa::register`].
    pub fn value(&self, register_value: u64) -> u64 {
        register_value.wrapping_add_signed(self.offset)
    }
}

/// Where the caller's value of a register is, at some address in the callee.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterRule {
    /// The register still holds the caller's value (not saved, because not yet or never
    /// modified). For callee-saved registers this is also what "no rule" means.
    Unchanged,
    /// The caller's value cannot be recovered (for the return address: the outermost frame).
    Undefined,
    /// Saved in memory at `CFA + offset`.
    AtCfaOffset(i64),
    /// Held in another register.
    InRegister(DwarfReg),
}

impl RegisterRule {
    /// The address of the save slot, given the CFA, for [`RegisterRule::AtCfaOffset`].
    pub fn slot(&self, cfa: u64) -> Option<u64> {
        match *self {
            RegisterRule::AtCfaOffset(offset) => Some(cfa.wrapping_add_signed(offset)),
            _ => None,
        }
    }
}

/// A callee-saved register and its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SavedRegister {
    /// The register.
    pub register: DwarfReg,
    /// Where the caller's value is.
    pub rule: RegisterRule,
}

/// The call frame information at one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// The address whose CFI row this is.
    pub address: u64,
    /// The code range of the FDE that covers it (normally the whole function).
    pub function: Range<u64>,
    /// How to compute the CFA.
    pub cfa: Cfa,
    /// Where the return address is (`AtCfaOffset(-8)` on x86-64).
    pub return_address: RegisterRule,
    /// The x86-64 System V callee-saved registers ([`DwarfReg::CALLEE_SAVED`]: rbx, rbp,
    /// r12–r15), in that order.
    pub callee_saved: [SavedRegister; 6],
}

impl FrameInfo {
    /// The rule for `register`: a callee-saved one or [`DwarfReg::RA`].
    pub fn rule(&self, register: DwarfReg) -> Option<RegisterRule> {
        if register == DwarfReg::RA {
            return Some(self.return_address);
        }
        self.callee_saved
            .iter()
            .find(|saved| saved.register == register)
            .map(|saved| saved.rule)
    }
}

impl<'data> EhFrameSection<'data> {
    /// Indexes the FDEs of `.eh_frame` bytes loaded at `address` (the section's own address:
    /// PC-relative FDE addresses are relative to it).
    pub fn new(bytes: impl Into<Cow<'data, [u8]>>, address: u64) -> Result<Self> {
        let bytes = bytes.into();
        let fdes = index_fdes(&bytes, address)?;
        Ok(EhFrameSection {
            bytes,
            address,
            fdes,
        })
    }

    /// The section's address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The section's bytes (relocated, for an object file).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The code ranges that FDEs cover, sorted by start.
    pub fn fde_ranges(&self) -> impl ExactSizeIterator<Item = Range<u64>> + '_ {
        self.fdes.iter().map(|fde| fde.start..fde.end)
    }

    /// The code range of the FDE covering `address`.
    pub fn fde_range(&self, address: u64) -> Result<Range<u64>> {
        self.find(address).map(|fde| fde.start..fde.end)
    }

    /// The CFI row at `address`: the state before the instruction at `address` executes.
    pub fn frame_info(&self, address: u64) -> Result<FrameInfo> {
        let entry = self.find(address)?;
        let section = EhFrame::new(&self.bytes, LittleEndian);
        let bases = self.bases();
        let gimli_error = |error| Error::EhFrame {
            offset: entry.offset as u64,
            error,
        };
        let fde = section
            .fde_from_offset(
                &bases,
                EhFrameOffset(entry.offset),
                EhFrame::cie_from_offset,
            )
            .map_err(gimli_error)?;
        let mut context = gimli::UnwindContext::new();
        let row = match fde.unwind_info_for_address(&section, &bases, &mut context, address) {
            Ok(row) => row,
            Err(gimli::Error::NoUnwindInfoForAddress) => {
                return Err(Error::NoFdeForAddress { address });
            }
            Err(error) => return Err(gimli_error(error)),
        };

        let cfa = match *row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => Cfa {
                register: register.into(),
                offset,
            },
            gimli::CfaRule::Expression(_) => return Err(Error::UnsupportedCfaRule { address }),
        };
        let rule = |register: DwarfReg, no_rule: RegisterRule| -> Result<RegisterRule> {
            Ok(match row.register(register.to_gimli()) {
                gimli::RegisterRule::Undefined => no_rule,
                gimli::RegisterRule::SameValue => RegisterRule::Unchanged,
                gimli::RegisterRule::Offset(offset) => RegisterRule::AtCfaOffset(offset),
                gimli::RegisterRule::Register(other) => RegisterRule::InRegister(other.into()),
                _ => return Err(Error::UnsupportedRegisterRule { address, register }),
            })
        };
        let mut callee_saved = DwarfReg::CALLEE_SAVED.map(|register| SavedRegister {
            register,
            rule: RegisterRule::Unchanged,
        });
        for saved in &mut callee_saved {
            // gimli reports "no rule" as Undefined; for callee-saved registers the ABI's
            // meaning is "unchanged".
            saved.rule = rule(saved.register, RegisterRule::Unchanged)?;
        }
        Ok(FrameInfo {
            address,
            function: entry.start..entry.end,
            cfa,
            return_address: rule(DwarfReg::RA, RegisterRule::Undefined)?,
            callee_saved,
        })
    }

    /// The CFI row for a frame suspended at a call, given the call's return address: the row
    /// of the call instruction itself (at `return_address - 1`), which is right even when the
    /// call is the last instruction of its function.
    pub fn frame_info_for_return_address(
        &self,
        return_address: ReturnAddress,
    ) -> Result<FrameInfo> {
        let address = return_address
            .0
            .checked_sub(1)
            .ok_or(Error::NoFdeForAddress { address: 0 })?;
        self.frame_info(address)
    }

    fn bases(&self) -> BaseAddresses {
        BaseAddresses::default().set_eh_frame(self.address)
    }

    fn find(&self, address: u64) -> Result<FdeEntry> {
        let after = self.fdes.partition_point(|fde| fde.start <= address);
        after
            .checked_sub(1)
            .and_then(|i| self.fdes.get(i))
            .filter(|fde| address < fde.end)
            .copied()
            .ok_or(Error::NoFdeForAddress { address })
    }
}

/// Parses every CIE and FDE once and returns the FDEs sorted by start address.
fn index_fdes(bytes: &[u8], address: u64) -> Result<Vec<FdeEntry>> {
    let section = EhFrame::new(bytes, LittleEndian);
    let bases = BaseAddresses::default().set_eh_frame(address);
    let mut entries = section.entries(&bases);
    let mut fdes = Vec::new();
    let mut last_offset = 0u64;
    loop {
        let entry = entries.next().map_err(|error| Error::EhFrame {
            offset: last_offset,
            error,
        })?;
        match entry {
            None => break,
            Some(CieOrFde::Cie(cie)) => last_offset = cie.offset() as u64,
            Some(CieOrFde::Fde(partial)) => {
                let fde = partial
                    .parse(|section: &EhFrame<Reader<'_>>, bases, offset| {
                        section.cie_from_offset(bases, offset)
                    })
                    .map_err(|error| Error::EhFrame {
                        offset: last_offset,
                        error,
                    })?;
                last_offset = fde.offset() as u64;
                fdes.push(FdeEntry {
                    start: fde.initial_address(),
                    end: fde.initial_address().saturating_add(fde.len()),
                    offset: fde.offset(),
                });
            }
        }
    }
    fdes.sort_unstable_by_key(|fde| (fde.start, fde.end));
    Ok(fdes)
}
