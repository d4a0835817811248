//! Code generation and loading of a unit (`jit.cpp`, built by `build.rs`): LLVM's code
//! generator into an object in memory, then RuntimeDyld into the unit's memory manager, with one
//! target machine per level kept for the whole guest instead of an MCJIT engine per unit.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::ptr::NonNull;

use inkwell::memory_manager::McjitMemoryManager;
use llvm_sys::execution_engine::{self as llee, LLVMMCJITMemoryManagerRef};
use llvm_sys::prelude::{LLVMBool, LLVMModuleRef, LLVMValueRef};

use super::debug::DebugTargets;
use super::extract::take_message;
use crate::types::OptLevel;

/// The C++ side's code generator (opaque).
#[repr(C)]
struct UppercutCodegen {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn uppercut_codegen_new(error: *mut *mut c_char) -> *mut UppercutCodegen;
    fn uppercut_codegen_dispose(codegen: *mut UppercutCodegen);
    fn uppercut_codegen_emit(
        codegen: *mut UppercutCodegen,
        m: LLVMModuleRef,
        level: c_uint,
        optimize_regalloc: c_int,
        mm: LLVMMCJITMemoryManagerRef,
        mapped: *const LLVMValueRef,
        addresses: *const u64,
        mapped_count: usize,
        lookup: *const LLVMValueRef,
        lookup_count: usize,
        found: *mut u64,
        key: u64,
        gdb: c_int,
        perf: c_int,
    ) -> *mut c_char;
}

/// The guest's code generator: a target machine per level, made when first needed and kept.
/// Used by one compilation at a time (the engine compiles under its IR lock).
pub(crate) struct Codegen(NonNull<UppercutCodegen>);

// SAFETY: the code generator (its target machines) is not tied to a thread; the engine uses it
// from one thread at a time, under the lock that guards the guest's IR.
unsafe impl Send for Codegen {}

/// What one unit's code generation is asked to do besides compiling the module.
pub(crate) struct Emit<'a> {
    /// The level of code generation.
    pub(crate) opt: OptLevel,
    /// Take LLVM's optimising register allocator even at O0 (statepoints need it there).
    pub(crate) optimize_regalloc: bool,
    /// Each declaration of the module the engine resolved, with its address.
    pub(crate) mapped: &'a [(LLVMValueRef, u64)],
    /// Definitions whose addresses the caller wants.
    pub(crate) lookup: &'a [LLVMValueRef],
    /// The unit's key with debuggers.
    pub(crate) key: u64,
    /// Who sees the object.
    pub(crate) debug: DebugTargets,
}

impl Codegen {
    /// A code generator for the host.
    pub(crate) fn new() -> Result<Codegen, String> {
        let mut error = std::ptr::null_mut();
        // SAFETY: `error` is written only on failure, with a message the caller disposes of.
        let raw = unsafe { uppercut_codegen_new(&mut error) };
        match (NonNull::new(raw), take_message(error)) {
            (Some(raw), None) => Ok(Codegen(raw)),
            (_, message) => Err(message.unwrap_or_else(|| "no code generator".to_owned())),
        }
    }

    /// Compiles `m` (which stays the caller's) and loads the object into `manager`'s memory,
    /// finalised; returns the address of each of `emit.lookup` (0 where the object does not
    /// define it), or the first error code generation or loading reported.
    pub(crate) fn emit<M: McjitMemoryManager>(
        &self,
        m: LLVMModuleRef,
        manager: &mut M,
        emit: &Emit<'_>,
    ) -> Result<Vec<u64>, String> {
        let (mapped, addresses): (Vec<LLVMValueRef>, Vec<u64>) =
            emit.mapped.iter().copied().unzip();
        let mut found = vec![0u64; emit.lookup.len()];
        let mm = adapter(manager);
        // SAFETY: `m` is a live module of a context no other thread uses meanwhile; `mm` is a
        // memory manager made just above over `manager`, which outlives it (disposed below);
        // every array holds as many elements as its count says and outlives the call; the
        // mapped and looked-up values are global values of `m`.
        let error = unsafe {
            let error = uppercut_codegen_emit(
                self.0.as_ptr(),
                m,
                c_uint::from(emit.opt.as_u8()),
                c_int::from(emit.optimize_regalloc),
                mm,
                mapped.as_ptr(),
                addresses.as_ptr(),
                mapped.len(),
                emit.lookup.as_ptr(),
                emit.lookup.len(),
                found.as_mut_ptr(),
                emit.key,
                c_int::from(emit.debug.gdb),
                c_int::from(emit.debug.jitdump),
            );
            llee::LLVMDisposeMCJITMemoryManager(mm);
            error
        };
        match take_message(error) {
            Some(message) => Err(message),
            None => Ok(found),
        }
    }
}

impl Drop for Codegen {
    fn drop(&mut self) {
        // SAFETY: made by `uppercut_codegen_new`, disposed once.
        unsafe { uppercut_codegen_dispose(self.0.as_ptr()) }
    }
}

/// LLVM's callback memory manager over `manager` (which must outlive it): its sections come
/// from `manager`'s methods.
fn adapter<M: McjitMemoryManager>(manager: &mut M) -> LLVMMCJITMemoryManagerRef {
    // SAFETY: the callbacks below cast the opaque pointer back to `M`, which the caller keeps
    // alive and does not touch until the manager is disposed.
    unsafe {
        llee::LLVMCreateSimpleMCJITMemoryManager(
            (manager as *mut M).cast(),
            allocate_code::<M>,
            allocate_data::<M>,
            finalize::<M>,
            Some(destroy),
        )
    }
}

/// The section name LLVM passes, as text.
///
/// # Safety
///
/// `name` is null or a NUL-terminated string live for the call.
unsafe fn section_name<'a>(name: *const c_char) -> &'a str {
    if name.is_null() {
        return "";
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("")
}

extern "C" fn allocate_code<M: McjitMemoryManager>(
    opaque: *mut c_void,
    size: libc::uintptr_t,
    alignment: c_uint,
    section_id: c_uint,
    name: *const c_char,
) -> *mut u8 {
    // SAFETY: `opaque` is the `M` that `adapter` was given, live and not otherwise borrowed
    // while LLVM calls back; `name` is LLVM's section name for the call.
    unsafe {
        let manager = &mut *opaque.cast::<M>();
        manager.allocate_code_section(size, alignment, section_id, section_name(name))
    }
}

extern "C" fn allocate_data<M: McjitMemoryManager>(
    opaque: *mut c_void,
    size: libc::uintptr_t,
    alignment: c_uint,
    section_id: c_uint,
    name: *const c_char,
    read_only: LLVMBool,
) -> *mut u8 {
    // SAFETY: as for `allocate_code`.
    unsafe {
        let manager = &mut *opaque.cast::<M>();
        manager.allocate_data_section(
            size,
            alignment,
            section_id,
            section_name(name),
            read_only != 0,
        )
    }
}

extern "C" fn finalize<M: McjitMemoryManager>(
    opaque: *mut c_void,
    error: *mut *mut c_char,
) -> LLVMBool {
    // SAFETY: as for `allocate_code`.
    let manager = unsafe { &mut *opaque.cast::<M>() };
    match manager.finalize_memory() {
        Ok(()) => 0,
        Err(message) => {
            if !error.is_null() {
                let text = std::ffi::CString::new(message.replace('\0', " ")).unwrap_or_default();
                // SAFETY: LLVM frees the message with `free`: it is copied into `malloc`ed
                // memory (`strdup`), and `error` is LLVM's out-pointer for the call.
                unsafe { *error = libc::strdup(text.as_ptr()) };
            }
            1
        }
    }
}

extern "C" fn destroy(_opaque: *mut c_void) {}
