//! Uppercut's site convention, written and read in one place.
//!
//! Every call that can reach a hypercall carries a `"deopt"` operand bundle whose operand 0 is
//! the site id (an `i64` constant) and whose other operands are the base program's values live
//! right after the call, in a fixed order. LLVM's `rewrite-statepoints-for-gc` turns the call
//! into a statepoint, and the statepoint's stack-map record at the call's return address lists
//! where each of those operands lives in that version's frame:
//!
//! ```text
//!   IR:      call @g(...) [ "deopt"(i64 7, %i, %sum, %p) ]          written by `SiteState::bundle`
//!   record:  cc, flags, 4 (deopt count),  7, [rbp-24], [rsp+8], 0,  (gc pairs)...
//!            ^-- statepoint header --^    ^ site  ^-- values --^     read by `SiteState::decode`
//! ```
//!
//! [`SiteState`] is the one type of that convention: `SiteState<V>` with `V` an IR value when
//! the instrumentation writes it, a [`RecordValue`] when a frame's record is read back.

use uppercut_stackmaps::{DwarfReg, Location};

use crate::frames::Refusal;
use crate::types::SiteId;

/// The operand bundle tag of a site's state.
pub const DEOPT_BUNDLE: &str = "deopt";

/// Statepoint flags LLVM defines (`GCTransition`, `DeoptLiveIn`).
const STATEPOINT_FLAGS: u64 = 3;

/// A site's state: its id and its live values, in the order the instrumentation wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteState<V> {
    /// The site.
    pub site: SiteId,
    /// Its live values (IR values when written, [`RecordValue`]s when read from a record).
    pub values: Vec<V>,
}

/// Where one live value of a suspended frame is, at its return address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordValue {
    /// In memory at `[base + offset]`, `size` bytes.
    Stack {
        /// The register the offset is from.
        base: FrameBase,
        /// The offset.
        offset: i32,
        /// The slot's size in bytes.
        size: u16,
    },
    /// A constant (sign-extended to 64 bits for a small one): the value's bits.
    Constant(u64),
    /// In a callee-saved register, by its index in [`CALLEE_SAVED`](super::layout::CALLEE_SAVED)
    /// (a statepoint whose values are live-ins: the value stays where the code keeps it). At the
    /// return address the register holds it again, so an inner frame that used the register
    /// saved it ([`SavedAt`](super::cursor::SavedAt)), and the callee's return brings it back.
    Register(usize),
}

/// The register a stack slot is addressed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameBase {
    /// The frame's stack pointer at its return address.
    Sp,
    /// The frame's frame pointer.
    Fp,
}

impl RecordValue {
    /// The slot's address in a frame with these stack and frame pointers (`None` for a
    /// constant or a register: a register's save slot depends on the inner frames).
    pub fn address(&self, sp: u64, fp: u64) -> Option<u64> {
        match *self {
            RecordValue::Stack { base, offset, .. } => {
                let base = match base {
                    FrameBase::Sp => sp,
                    FrameBase::Fp => fp,
                };
                Some(base.wrapping_add_signed(i64::from(offset)))
            }
            RecordValue::Constant(_) | RecordValue::Register(_) => None,
        }
    }
}

impl<V: Copy> SiteState<V> {
    /// The operands of the site's `"deopt"` bundle: the site id made by `constant`, then the
    /// values.
    pub(crate) fn bundle(&self, constant: impl FnOnce(u64) -> V) -> (&'static str, Vec<V>) {
        let mut operands = Vec::with_capacity(self.values.len() + 1);
        operands.push(constant(u64::from(self.site.0)));
        operands.extend(self.values.iter().copied());
        (DEOPT_BUNDLE, operands)
    }

    /// A site's state from its bundle's operands, given a reader of the site-id constant.
    pub(crate) fn from_bundle(
        operands: &[V],
        constant: impl FnOnce(V) -> Option<u64>,
    ) -> Option<Self> {
        let (&first, values) = operands.split_first()?;
        let site = SiteId(u32::try_from(constant(first)?).ok()?);
        Some(SiteState {
            site,
            values: values.to_vec(),
        })
    }
}

impl SiteState<RecordValue> {
    /// Decodes a statepoint record by the convention. Returns the site when the record names
    /// one (deopt location 0 is a constant), and the state or why the record cannot be used.
    pub fn decode(locations: &[Location]) -> (Option<SiteId>, Result<Self, Refusal>) {
        let not_site = |reason: &'static str| Err(Refusal::NotASite { reason });
        let constant = |i: usize| match locations.get(i) {
            Some(l @ (Location::Constant { .. } | Location::ConstantIndex { .. })) => l.constant(),
            _ => None,
        };
        let (Some(_cc), Some(flags), Some(count)) = (constant(0), constant(1), constant(2)) else {
            return (
                None,
                not_site("its first three locations are not constants (not a statepoint)"),
            );
        };
        if flags & !STATEPOINT_FLAGS != 0 {
            return (None, not_site("its flags are not statepoint flags"));
        }
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let Some(rest) = locations.len().checked_sub(3).filter(|&r| count <= r) else {
            return (
                None,
                not_site("it has fewer locations than its deopt count"),
            );
        };
        if (rest - count) % 2 != 0 {
            return (
                None,
                not_site("the locations after the deopt state are not (base, derived) pairs"),
            );
        }
        if count == 0 {
            return (None, not_site("it has no deopt state"));
        }
        let site = match constant(3).map(u32::try_from) {
            Some(Ok(id)) => SiteId(id),
            _ => return (None, not_site("deopt location 0 is not a constant site id")),
        };
        let mut values = Vec::with_capacity(count - 1);
        for (index, location) in locations[4..3 + count].iter().enumerate() {
            let unsupported = |location: String| Refusal::UnsupportedLocation {
                site,
                index,
                location,
            };
            let value = match *location {
                Location::Indirect { reg, offset, size } => {
                    let base = match reg {
                        DwarfReg::RSP => FrameBase::Sp,
                        DwarfReg::RBP => FrameBase::Fp,
                        _ => return (Some(site), Err(unsupported(format!("[{reg} + {offset}]")))),
                    };
                    RecordValue::Stack { base, offset, size }
                }
                Location::Constant { value, .. } => RecordValue::Constant(i64::from(value) as u64),
                Location::ConstantIndex { value, .. } => RecordValue::Constant(value),
                Location::Register { reg, .. } => {
                    match super::layout::CALLEE_SAVED.iter().position(|&r| r == reg) {
                        Some(index) => RecordValue::Register(index),
                        // A call clobbers every other register: a record cannot mean one.
                        None => {
                            return (
                                Some(site),
                                Err(unsupported(format!("register {reg} (not callee-saved)"))),
                            );
                        }
                    }
                }
                Location::Direct { reg, offset, .. } => {
                    return (
                        Some(site),
                        Err(unsupported(format!("{reg} + {offset} (a frame address)"))),
                    );
                }
            };
            values.push(value);
        }
        (Some(site), Ok(SiteState { site, values }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A statepoint record's header: calling convention, flags, deopt count.
    pub(crate) fn header(count: i32) -> Vec<Location> {
        [0, 0, count]
            .into_iter()
            .map(|value| Location::Constant { value, size: 8 })
            .collect()
    }

    #[test]
    fn the_bundle_written_is_the_state_read() {
        let state = SiteState {
            site: SiteId(9),
            values: vec![11u64, 12, 13],
        };
        let (tag, operands) = state.bundle(|id| id + 1000);
        assert_eq!(tag, DEOPT_BUNDLE);
        assert_eq!(operands, [1009, 11, 12, 13]);
        let back = SiteState::from_bundle(&operands, |c| c.checked_sub(1000)).unwrap();
        assert_eq!(back, state);
        assert_eq!(SiteState::<u64>::from_bundle(&[], Some), None);
    }

    #[test]
    fn records_decode_by_the_convention() {
        let mut locations = header(3);
        locations.push(Location::Constant { value: 7, size: 8 });
        locations.push(Location::Indirect {
            reg: DwarfReg::RSP,
            offset: 8,
            size: 8,
        });
        locations.push(Location::Constant { value: -1, size: 4 });
        let (site, state) = SiteState::decode(&locations);
        assert_eq!(site, Some(SiteId(7)));
        let state = state.unwrap();
        assert_eq!(
            state.values,
            [
                RecordValue::Stack {
                    base: FrameBase::Sp,
                    offset: 8,
                    size: 8
                },
                RecordValue::Constant(u64::MAX)
            ]
        );
        assert_eq!(state.values[0].address(0x1000, 0x2000), Some(0x1008));

        let in_register = |reg| {
            let mut locations = header(2);
            locations.push(Location::Constant { value: 7, size: 8 });
            locations.push(Location::Register { reg, size: 8 });
            SiteState::decode(&locations)
        };
        let (site, state) = in_register(DwarfReg::R13);
        assert_eq!(site, Some(SiteId(7)));
        assert_eq!(state.unwrap().values, [RecordValue::Register(2)]);
        let (_, state) = in_register(DwarfReg::RAX);
        assert!(matches!(
            state,
            Err(Refusal::UnsupportedLocation { index: 0, .. })
        ));

        assert!(matches!(
            SiteState::decode(&header(0)),
            (None, Err(Refusal::NotASite { .. }))
        ));
        assert!(matches!(
            SiteState::decode(&header(5)),
            (None, Err(Refusal::NotASite { .. }))
        ));
    }
}
