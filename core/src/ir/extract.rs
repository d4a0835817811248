//! The C++ side of the IR layer (`extract.cpp`, built by `build.rs`): lazily loaded bodies and
//! function extraction, which LLVM's C API does not offer.

use std::ffi::{CStr, CString, c_char, c_int};

use llvm_sys::core as llc;
use llvm_sys::prelude::{LLVMModuleRef, LLVMValueRef};

unsafe extern "C" {
    fn uppercut_materialize(v: LLVMValueRef) -> *mut c_char;
    fn uppercut_materialize_all(m: LLVMModuleRef) -> *mut c_char;
    fn uppercut_extract(
        src: LLVMModuleRef,
        name: *const c_char,
        keep: *const *const c_char,
        keep_count: usize,
        available: *const *const c_char,
        available_count: usize,
        globals: c_int,
        error: *mut *mut c_char,
    ) -> LLVMModuleRef;
}

/// Takes an LLVM-allocated message.
pub(super) fn take_message(message: *mut c_char) -> Option<String> {
    if message.is_null() {
        return None;
    }
    // SAFETY: a non-null message from the shim is a NUL-terminated string made by
    // `LLVMCreateMessage`, owned by the caller, disposed of once here.
    unsafe {
        let out = CStr::from_ptr(message).to_string_lossy().into_owned();
        llc::LLVMDisposeMessage(message);
        Some(out)
    }
}

/// Reads the body of `f` if its module was loaded lazily and has not read it yet.
pub(crate) fn materialize(f: LLVMValueRef) -> Result<(), String> {
    // SAFETY: `f` is a live global value of a module that owns its bitcode buffer (or was not
    // loaded lazily: then there is nothing to read).
    take_message(unsafe { uppercut_materialize(f) }).map_or(Ok(()), Err)
}

/// Reads every body of a lazily loaded module.
pub(crate) fn materialize_all(m: LLVMModuleRef) -> Result<(), String> {
    // SAFETY: `m` is a live module that owns its bitcode buffer.
    take_message(unsafe { uppercut_materialize_all(m) }).map_or(Ok(()), Err)
}

/// A new module in `src`'s context defining `keep` (with their linkage), `available` as
/// `available_externally` bodies, and with `globals` every global variable of `src`;
/// everything else it refers to is declared. The caller owns (and disposes of) the module.
pub(crate) fn extract(
    src: LLVMModuleRef,
    name: &str,
    keep: &[String],
    available: &[String],
    globals: bool,
) -> Result<LLVMModuleRef, String> {
    let c = |s: &str| CString::new(s).map_err(|_| format!("a name holds a NUL: {s:?}"));
    let name = c(name)?;
    let keep: Vec<CString> = keep.iter().map(|s| c(s)).collect::<Result<_, _>>()?;
    let available: Vec<CString> = available.iter().map(|s| c(s)).collect::<Result<_, _>>()?;
    let keep_ptrs: Vec<*const c_char> = keep.iter().map(|s| s.as_ptr()).collect();
    let available_ptrs: Vec<*const c_char> = available.iter().map(|s| s.as_ptr()).collect();
    let mut error = std::ptr::null_mut();
    // SAFETY: `src` is live; every pointer array holds `len` NUL-terminated strings that
    // outlive the call; `error` is written only on failure.
    let m = unsafe {
        uppercut_extract(
            src,
            name.as_ptr(),
            keep_ptrs.as_ptr(),
            keep_ptrs.len(),
            available_ptrs.as_ptr(),
            available_ptrs.len(),
            c_int::from(globals),
            &mut error,
        )
    };
    match take_message(error) {
        Some(message) => Err(message),
        None if m.is_null() => Err("the extraction made no module".to_owned()),
        None => Ok(m),
    }
}
