//! The machine-level half of frame transfer, per architecture.
//!
//! Each architecture provides: the frame-pointer layout the walker follows, the shape of the
//! call-frame information a transfer accepts ([`CalleeSaves`]), the thunk a patched return
//! address points at, and the transfer stub with its Rust half. Elsewhere, a fallback makes
//! every transfer fail closed ([`crate::Error::Unsupported`]) so the crate still builds.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use unsupported::*;

#[cfg(not(target_arch = "x86_64"))]
mod unsupported {
    use uppercut_stackmaps::{DwarfReg, FrameInfo};

    pub(crate) const NEXT_OLDER_FP_FROM_FP_OFFSET: u64 = 0;
    pub(crate) const NEXT_OLDER_RA_FROM_FP_OFFSET: u64 = 8;
    pub(crate) const NEXT_OLDER_SP_FROM_FP_OFFSET: u64 = 16;
    pub(crate) const RA_SLOT_BELOW_SP: u64 = 8;
    pub(crate) const FP_ALIGN: u64 = 16;
    pub(crate) const CFA_FROM_FP_OFFSET: u64 = 16;
    pub(crate) const SAVED_FP_FROM_CFA: i64 = -16;
    pub(crate) const THUNK_SIZE: usize = 32;
    pub(crate) const RESTORED: [DwarfReg; 0] = [];

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub(crate) struct CalleeSaves(pub(crate) [i32; 0]);

    impl CalleeSaves {
        pub(crate) fn iter(&self) -> impl Iterator<Item = (DwarfReg, i32)> + '_ {
            std::iter::empty()
        }
    }

    pub(crate) fn callee_saves(_: &FrameInfo) -> Result<CalleeSaves, String> {
        Err("frame transfer is not implemented for this architecture".to_owned())
    }

    pub(crate) fn encode_thunk(_: u64, _: u64) -> [u8; THUNK_SIZE] {
        [0; THUNK_SIZE]
    }

    pub(crate) fn decode_thunk(_: &[u8], _: u64, _: u64) -> Option<u64> {
        None
    }

    pub(crate) fn stub_address() -> u64 {
        0
    }
}
