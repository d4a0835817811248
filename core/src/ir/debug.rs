//! Units that debuggers, profilers and the process's unwinder can see (`debug.cpp`, built by
//! `build.rs`): each unit's object is registered with GDB's JIT interface for as long as the
//! unit lives, and fed to LLVM's perf listener for a jitdump when asked (both as `jit.cpp`
//! loads it); its `.eh_frame` is registered with the process's unwinder ([`crate::unwind`]) for
//! as long too.

use std::ffi::{CString, c_char, c_int};
use std::sync::atomic::{AtomicU64, Ordering};

use llvm_sys::prelude::LLVMValueRef;

use super::UnitMemory;
use crate::unwind::EhFrameRegistration;

unsafe extern "C" {
    fn uppercut_debug_forget(key: u64);
    fn uppercut_debug_rename(f: LLVMValueRef, name: *const c_char) -> c_int;
}

/// What each unit is shown to.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DebugTargets {
    /// GDB's JIT interface.
    pub(crate) gdb: bool,
    /// LLVM's perf listener (a jitdump).
    pub(crate) jitdump: bool,
}

/// Keys of registered objects: unique in the process, since GDB's registry is.
static KEYS: AtomicU64 = AtomicU64::new(1);

/// A unit's key with the debugger while it is being compiled: the object is registered under
/// it as it loads ([`super::jit`]); [`Listener::finish`] hands the registration to the unit, and
/// a listener dropped unfinished (the unit failed) takes it back.
pub(crate) struct Listener {
    key: u64,
    gdb: bool,
}

/// A new key for the unit about to be compiled, shown to `targets`.
pub(crate) fn attach(targets: DebugTargets) -> Listener {
    Listener {
        key: KEYS.fetch_add(1, Ordering::Relaxed),
        gdb: targets.gdb,
    }
}

/// Whether this LLVM was built with its perf listener (what a jitdump needs).
pub(crate) fn has_perf_listener() -> bool {
    // SAFETY: returns LLVM's process-wide perf listener, or null when it was not built.
    !unsafe { llvm_sys::execution_engine::LLVMCreatePerfJITEventListener() }.is_null()
}

impl Listener {
    /// The unit's key.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// The unit is compiled: it stays registered while the result lives.
    pub(crate) fn finish(mut self) -> Registration {
        let registration = Registration {
            key: self.gdb.then_some(self.key),
            unwind: None,
        };
        self.gdb = false;
        registration
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.gdb {
            // SAFETY: deregistering a key that GDB's listener may hold; unknown keys are ignored.
            unsafe { uppercut_debug_forget(self.key) };
        }
    }
}

/// A unit's registration with GDB and with the process's unwinder: dropped (deregistered)
/// before the unit's memory is freed.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    key: Option<u64>,
    /// The unit's `.eh_frame`, registered for exceptions (dropped after the GDB key).
    unwind: Option<EhFrameRegistration>,
}

impl Registration {
    /// Registers the unit's `.eh_frame` section (if it has one) with the process's unwinder
    /// until `self` is dropped; `unit` names it in the error.
    ///
    /// # Safety
    ///
    /// `memory` must be the unit's finalised memory, and `self` must be dropped before it.
    pub(crate) unsafe fn register_unwind_info(
        &mut self,
        memory: &UnitMemory,
        unit: &str,
    ) -> crate::error::Result<()> {
        let Some((_, section)) = memory.section(".eh_frame") else {
            return Ok(());
        };
        // SAFETY: the section and the code it describes are the unit's finalised memory, which
        // the caller keeps until `self` (and so the registration) is dropped.
        self.unwind = unsafe { EhFrameRegistration::register(section) }.map_err(|e| {
            crate::error::Error::Codegen {
                unit: unit.to_owned(),
                message: e.to_string(),
            }
        })?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // SAFETY: deregistering a key that GDB's listener may hold; unknown keys are ignored.
            unsafe { uppercut_debug_forget(key) };
        }
    }
}

/// Names `f`'s frames `name` in debuggers, when `f` has debug info of its own.
pub(crate) fn rename(f: LLVMValueRef, name: &str) {
    let Ok(name) = CString::new(name) else {
        return;
    };
    // SAFETY: `f` is a live function; the name is copied into its context.
    unsafe { uppercut_debug_rename(f, name.as_ptr()) };
}
