//! Units that debuggers, profilers and the process's unwinder can see (`debug.cpp`, built by
//! `build.rs`): each unit's object is registered with GDB's JIT interface for as long as the
//! unit lives, and fed to LLVM's perf listener for a jitdump when asked; its `.eh_frame` is
//! registered with the process's unwinder ([`crate::unwind`]) for as long too.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use llvm_sys::execution_engine::LLVMExecutionEngineRef;
use llvm_sys::prelude::LLVMValueRef;

use super::UnitMemory;
use crate::unwind::EhFrameRegistration;

unsafe extern "C" {
    fn uppercut_debug_attach(
        ee: LLVMExecutionEngineRef,
        key: u64,
        gdb: c_int,
        perf: c_int,
    ) -> *mut c_void;
    fn uppercut_debug_detach(listener: *mut c_void);
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

/// The listener of one unit's execution engine, until the engine is destroyed.
pub(crate) struct Listener {
    raw: *mut c_void,
    key: u64,
    gdb: bool,
}

/// Replaces `ee`'s default GDB listener by one that keeps the unit registered until the
/// [`Registration`] made by [`Listener::finish`] is dropped. Must be called before the object is
/// emitted (the first address lookup).
pub(crate) fn attach(ee: LLVMExecutionEngineRef, targets: DebugTargets) -> Listener {
    let key = KEYS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `ee` is a live MCJIT execution engine that has not emitted its object yet; the
    // listener stays alive until it is dropped, after the engine is destroyed.
    let raw = unsafe {
        uppercut_debug_attach(
            ee,
            key,
            c_int::from(targets.gdb),
            c_int::from(targets.jitdump),
        )
    };
    Listener {
        raw,
        key,
        gdb: targets.gdb,
    }
}

/// Whether this LLVM was built with its perf listener (what a jitdump needs).
pub(crate) fn has_perf_listener() -> bool {
    // SAFETY: returns LLVM's process-wide perf listener, or null when it was not built.
    !unsafe { llvm_sys::execution_engine::LLVMCreatePerfJITEventListener() }.is_null()
}

impl Listener {
    /// Frees the listener once its execution engine is destroyed; the unit stays registered
    /// while the result lives.
    pub(crate) fn finish(self) -> Registration {
        let registration = Registration {
            key: self.gdb.then_some(self.key),
            unwind: None,
        };
        drop(self);
        registration
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // SAFETY: made by `uppercut_debug_attach`, freed once; the engine that called it is gone
        // (callers drop the listener after the engine, or on an error path before any object).
        unsafe { uppercut_debug_detach(self.raw) };
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
