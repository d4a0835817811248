//! What C++ guests compiled by clang++ need of the module before any unit is built.
//!
//! A C++ translation unit refers to `__dso_handle`, the address that identifies "this shared
//! object" to `__cxa_atexit` (static destructors), `__cxa_thread_atexit` (`thread_local`
//! destructors) and `__cxa_finalize`. The static linker defines it in `crtbegin.o`, hidden, so
//! no process symbol can stand for it, and the guest addresses it PC-relatively (hidden
//! visibility), so it must lie near the guest's code. As LLVM's ORC platforms do for each JIT
//! dylib, the guest gets one of its own: the declaration becomes a definition, placed with the
//! guest's other globals.

use llvm_sys::core as llc;
use llvm_sys::prelude::LLVMModuleRef;

/// The symbol that identifies a shared object to the C++ ABI's exit-time registrations.
pub(crate) const DSO_HANDLE: &str = "__dso_handle";

/// Defines `__dso_handle` in `m` when the guest declares it without defining it.
pub(super) fn define_dso_handle(m: LLVMModuleRef) {
    let name = std::ffi::CString::new(DSO_HANDLE).expect("no NUL");
    // SAFETY: `m` is the live prepared module; the name is NUL-terminated.
    let g = unsafe { llc::LLVMGetNamedGlobal(m, name.as_ptr()) };
    // SAFETY: `g`, when not null, is a global variable of `m`.
    if g.is_null() || unsafe { llc::LLVMIsDeclaration(g) } == 0 {
        return;
    }
    // SAFETY: `g` is a declared global variable of `m`; giving it a zero initialiser of its
    // own value type makes it a definition, external so that every unit links to it.
    unsafe {
        let ty = llc::LLVMGlobalGetValueType(g);
        llc::LLVMSetInitializer(g, llc::LLVMConstNull(ty));
        llc::LLVMSetLinkage(g, llvm_sys::LLVMLinkage::LLVMExternalLinkage);
        llc::LLVMSetVisibility(g, llvm_sys::LLVMVisibility::LLVMDefaultVisibility);
        llc::LLVMSetGlobalConstant(g, 1);
    }
}
