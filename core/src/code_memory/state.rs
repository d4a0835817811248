//! The W^X state machine of a region: publishing code, freezing data, and the scoped writable
//! step that makes a published region writable (and not executable) for a moment.

use std::fmt;

use super::{CodeMemoryError, CodeRegion, RegionKind};
use crate::sys::Prot;

/// The protection state of a region. None is both writable and executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegionState {
    /// `rw-`: being filled (or patched), or read-write data.
    Writable,
    /// `r-x`: published code.
    Executable,
    /// `r--`: frozen data.
    ReadOnly,
}

impl RegionState {
    pub(super) fn prot(self) -> Prot {
        match self {
            RegionState::Writable => Prot::ReadWrite,
            RegionState::Executable => Prot::ReadExec,
            RegionState::ReadOnly => Prot::Read,
        }
    }
}

impl fmt::Display for RegionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionState::Writable => "writable (rw-)",
            RegionState::Executable => "executable (r-x)",
            RegionState::ReadOnly => "read-only (r--)",
        })
    }
}

impl CodeRegion {
    /// Publishes a code region: writable (`rw-`) to executable (`r-x`).
    ///
    /// No cache maintenance is needed on x86-64 (see the type's documentation).
    pub fn publish(&mut self) -> Result<(), CodeMemoryError> {
        self.expect_kind(RegionKind::Code, "publish")?;
        self.expect_state(RegionState::Writable)?;
        self.set_state(RegionState::Executable)
    }

    /// Freezes a data region: writable (`rw-`) to read-only (`r--`).
    pub fn make_read_only(&mut self) -> Result<(), CodeMemoryError> {
        self.expect_kind(RegionKind::Data, "make read-only")?;
        self.expect_state(RegionState::Writable)?;
        self.set_state(RegionState::ReadOnly)
    }

    /// The scoped writable step: makes the region writable and not executable (`rw-`), runs `f`
    /// on its bytes, and puts it back into the state it was in (`r-x` or `r--`), whatever `f`
    /// returns and even if it panics. A region already writable stays so.
    ///
    /// `f`'s own errors travel in `T`; the outer error is about the protection changes.
    pub fn with_writable<T>(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> T,
    ) -> Result<T, CodeMemoryError> {
        let back = self.state;
        if back != RegionState::Writable {
            self.set_state(RegionState::Writable)?;
        }
        let guard = Restore {
            region: self,
            to: back,
            armed: back != RegionState::Writable,
        };
        let out = f(guard.region.as_mut_slice()?);
        guard.finish()?;
        Ok(out)
    }

    /// The one place a region's protection changes. The state is updated only once the kernel
    /// has agreed, so it always tells the truth.
    fn set_state(&mut self, to: RegionState) -> Result<(), CodeMemoryError> {
        let prot = to.prot();
        debug_assert!(
            !(self.kind == RegionKind::Data && to == RegionState::Executable),
            "data made executable"
        );
        let pages = self.pages_mut();
        if pages.prot() == prot {
            self.state = to;
            return Ok(());
        }
        pages
            .protect(prot)
            .map_err(|source| CodeMemoryError::Protect {
                addr: pages.addr(),
                len: pages.len(),
                to,
                source,
            })?;
        self.state = to;
        Ok(())
    }
}

/// Puts a region back into its previous state at the end of a scoped writable step, even when
/// the step panics.
struct Restore<'a> {
    region: &'a mut CodeRegion,
    to: RegionState,
    armed: bool,
}

impl Restore<'_> {
    fn finish(mut self) -> Result<(), CodeMemoryError> {
        self.armed = false;
        self.region.set_state(self.to)
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Unwinding from the closure: nowhere to report a failure, and the region's state
            // stays truthful (`Writable`) if the kernel refuses.
            let _ = self.region.set_state(self.to);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use crate::code_memory::testing::*;
    use crate::code_memory::*;

    #[test]
    fn code_region_is_never_writable_and_executable() {
        let arena = arena(16 << 20);
        let mut region = arena.allocate(RegionRequest::code(3 * page())).unwrap();
        assert_perms(&region, ARENA_RW);
        region.as_mut_slice().unwrap()[..6].copy_from_slice(&MOV_EAX_42_RET);

        region.publish().unwrap();
        assert_eq!(region.state(), RegionState::Executable);
        assert_perms(&region, ARENA_RX);

        let pages = pages_of(&region);
        let during = region
            .with_writable(|buf| {
                buf[1] = 7;
                (
                    perms_of(pages.clone()),
                    writable_executable_mappings().unwrap(),
                )
            })
            .unwrap();
        assert!(during.0.iter().all(|p| *p == ARENA_RW), "{during:?}");
        assert_eq!(during.1, vec![]);
        assert_eq!(region.state(), RegionState::Executable);
        assert_perms(&region, ARENA_RX);
        assert_eq!(region.as_slice()[1], 7);

        drop(region);
        assert_eq!(perms_of(pages), vec![ARENA_NONE]);
        assert_eq!(writable_executable_mappings().unwrap(), vec![]);
    }

    #[test]
    fn data_regions_are_read_write_or_read_only() {
        let arena = arena(16 << 20);
        let mut rw = arena.allocate(RegionRequest::data(100)).unwrap();
        rw.as_mut_slice().unwrap()[0] = 1;
        assert_perms(&rw, ARENA_RW);
        // Scoped step on a writable region: nothing changes.
        rw.with_writable(|buf| buf[1] = 2).unwrap();
        assert_eq!(rw.state(), RegionState::Writable);
        assert_perms(&rw, ARENA_RW);

        let mut ro = arena.allocate(RegionRequest::data(100)).unwrap();
        ro.as_mut_slice().unwrap()[..3].copy_from_slice(b"abc");
        ro.make_read_only().unwrap();
        assert_eq!(ro.state(), RegionState::ReadOnly);
        assert_perms(&ro, ARENA_R);
        ro.patch(1, b"B").unwrap();
        assert_eq!(&ro.as_slice()[..3], b"aBc");
        assert_eq!(ro.state(), RegionState::ReadOnly);
        assert_perms(&ro, ARENA_R);
    }

    #[test]
    fn state_machine_rejects_wrong_steps() {
        let arena = arena(16 << 20);
        let mut code = arena.allocate(RegionRequest::code(16)).unwrap();
        assert!(matches!(
            code.make_read_only(),
            Err(CodeMemoryError::WrongKind {
                kind: RegionKind::Code,
                ..
            })
        ));
        code.publish().unwrap();
        assert!(matches!(
            code.publish(),
            Err(CodeMemoryError::WrongState {
                state: RegionState::Executable,
                expected: RegionState::Writable,
                ..
            })
        ));
        assert!(matches!(
            code.as_mut_slice(),
            Err(CodeMemoryError::WrongState { .. })
        ));
        assert_perms(&code, ARENA_RX);

        let mut data = arena.allocate(RegionRequest::data(16)).unwrap();
        let err = data.publish().unwrap_err();
        assert!(matches!(err, CodeMemoryError::WrongKind { .. }));
        assert!(
            err.to_string().contains("cannot publish the data region"),
            "{err}"
        );
        assert_perms(&data, ARENA_RW);
        data.make_read_only().unwrap();
        assert!(matches!(
            data.make_read_only(),
            Err(CodeMemoryError::WrongState { .. })
        ));
        assert!(data.as_mut_slice().is_err());
        assert_perms(&data, ARENA_R);
    }

    #[test]
    fn scoped_writable_step_restores_after_error_and_panic() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);

        let out = f
            .with_writable(|buf| -> Result<(), &str> {
                buf[1] = 1;
                Err("half-written patch")
            })
            .unwrap();
        assert_eq!(out, Err("half-written patch"));
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);
        assert_eq!(call(&f), 1);

        let caught = catch_unwind(AssertUnwindSafe(|| {
            f.with_writable(|buf| {
                buf[1] = 2;
                panic!("patcher panicked");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);
        assert_eq!(call(&f), 2);
    }
}
