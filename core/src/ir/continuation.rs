//! Continuations: code that takes a frame's state at one site and runs the rest of the function
//! from right after it.
//!
//! Built on a unit's copy of the instrumented module, from the function's base body:
//!
//! ```text
//!  f(args) { ...; %r = call @g(...) ["deopt"(site, %a, %b)]; rest }
//!     ==>
//!  f.osr(ptr %buf):
//!    osr.entry: slot_a = alloca; slot_b = alloca; slot_r = alloca
//!               store (load %buf[0]) → slot_a; store (load %buf[1]) → slot_b; store (load %buf[2]) → slot_r
//!               br resume
//!    ...        (f's blocks; every use of %a, %b, %r loads its slot, every definition stores it)
//!    pre:       ...; %r = call @g(...) ["deopt"(site, load slot_a, load slot_b)]; store %r → slot_r; br resume
//!    resume:    rest
//! ```
//!
//! `mem2reg` then rebuilds SSA form, and unreachable blocks (the original entry and whatever only
//! it reached) go away. The continuation keeps every site of `f` (with the same ids and state
//! layout), so a frame running it can be transferred again; it returns what `f` returns, to
//! `f`'s caller, and `f` itself stays a declaration that calls reach through its newest entry.
//!
//! A function that records its machine frame in its shadow-stack frame (shadow discovery)
//! records it again at the continuation's entry: the continuation runs in a machine frame of
//! its own (at the same address after a lazy transfer, but nothing here relies on that).

use llvm_sys::core as llc;
use llvm_sys::prelude::LLVMModuleRef;

use super::instrument::{FRAME_ADDRESS, SHADOW_PUSH};
use super::llvm::{self as l, Builder, Value};
use crate::error::{Error, Result};
use crate::types::{SiteId, ValueKind};

/// Builds `name(ptr buf)` from `function`'s body in `m`, resuming after `site`. Afterwards
/// `function` is a declaration.
pub(crate) fn build(m: LLVMModuleRef, function: &str, site: SiteId, name: &str) -> Result<()> {
    let no_site = |why: &str| Error::NoSuchSite {
        function: function.to_owned(),
        site,
        reason: why.to_owned(),
    };
    let c = std::ffi::CString::new(function).map_err(|_| no_site("bad function name"))?;
    // SAFETY: `m` is live and `c` NUL-terminated.
    let f = unsafe { llc::LLVMGetNamedFunction(m, c.as_ptr()) };
    if f.is_null() || l::is_declaration(f) {
        return Err(no_site("the function has no body in this unit"));
    }
    let call = l::blocks(f)
        .into_iter()
        .flat_map(l::instructions)
        .find(|&i| {
            l::is_call(i)
                && l::deopt_operands(i)
                    .and_then(|ops| ops.first().copied())
                    .and_then(l::const_int_value)
                    == Some(u64::from(site.0))
        })
        .ok_or_else(|| no_site("no call of the function carries it"))?;
    let state = l::deopt_operands(call).unwrap_or_default();
    let machine_frame = machine_frame_slot(f);
    let mut demoted: Vec<(Value, ValueKind)> = Vec::new();
    for &v in &state[1..] {
        let kind = l::value_kind(l::type_of(v)).ok_or_else(|| no_site("a value has no kind"))?;
        demoted.push((v, kind));
    }
    let result_kind = match l::type_kind(l::type_of(call)) {
        llvm_sys::LLVMTypeKind::LLVMVoidTypeKind => None,
        _ => {
            Some(l::value_kind(l::type_of(call)).ok_or_else(|| no_site("the result has no kind"))?)
        }
    };
    let ctx = l::context_of(m);
    let ptr = l::ptr_type(ctx);

    // The continuation's signature: `f`'s return type (and return attributes, which the ABI
    // may depend on), one pointer parameter; `f`'s function attributes and GC.
    let f_ty = l::function_type(f);
    let ret = l::return_type(f_ty);
    let cont_ty = {
        let mut params = [ptr];
        // SAFETY: builds `ret (ptr)` in `ctx`.
        unsafe { llc::LLVMFunctionType(ret, params.as_mut_ptr(), 1, 0) }
    };
    let cont = l::declare_function(m, name, cont_ty);
    // SAFETY: both are live functions of `m`; attributes are copied within one context.
    unsafe {
        llc::LLVMSetFunctionCallConv(cont, llc::LLVMGetFunctionCallConv(f));
        for index in [
            llvm_sys::LLVMAttributeFunctionIndex,
            llvm_sys::LLVMAttributeReturnIndex,
        ] {
            let count = llc::LLVMGetAttributeCountAtIndex(f, index);
            let mut attrs = vec![std::ptr::null_mut(); count as usize];
            if count > 0 {
                llc::LLVMGetAttributesAtIndex(f, index, attrs.as_mut_ptr());
            }
            for a in attrs {
                llc::LLVMAddAttributeAtIndex(cont, index, a);
            }
        }
        let gc = llc::LLVMGetGC(f);
        if !gc.is_null() {
            llc::LLVMSetGC(cont, gc);
        }
    }

    // Split the call's block right after the call's result is stored (below): blocks that
    // branched to it now branch to `pre`, which holds its phis and head and falls into it.
    let block = l::parent(call);
    let pre = l::insert_block_before(ctx, block, "osr.pre");
    l::redirect_branches(f, block, pre);
    let builder = Builder::new(ctx);
    builder.at_end(pre);
    for i in l::instructions(block) {
        l::move_to(&builder, i);
        if i == call {
            break;
        }
    }

    // Move the body into the continuation; `f` becomes a declaration.
    for b in l::blocks(f) {
        // SAFETY: `b` is a live block of `f`, detached then appended to `cont` in order.
        unsafe {
            llc::LLVMRemoveBasicBlockFromParent(b);
            llc::LLVMAppendExistingBasicBlock(cont, b);
        }
    }
    let first = l::blocks(cont)[0];
    let entry = l::insert_block_before(ctx, first, "osr.entry");
    let at_entry = Builder::new(ctx);
    at_entry.at_end(entry);
    let buf = l::params(cont)[0];
    l::set_name(buf, "osr.state");

    let mut all: Vec<(Value, ValueKind)> = demoted;
    if let Some(kind) = result_kind {
        all.push((call, kind));
    }
    let i64t = l::int_type(ctx, 64);
    let mut slots = Vec::new();
    for (n, &(v, kind)) in all.iter().enumerate() {
        let ty = l::type_of(v);
        let slot = at_entry.alloca(ty, "osr.slot");
        // Every use reads the slot: at the use, or for a phi at the end of the incoming block.
        let reader = Builder::new(ctx);
        for (user, index) in l::uses(v) {
            if !l::is_instruction(user) {
                continue;
            }
            if l::is_phi(user) {
                let (_, from) = l::incoming(user)[index as usize];
                let t = l::terminator(from).expect("a predecessor has a terminator");
                reader.before(t);
            } else {
                reader.before(user);
            }
            let loaded = reader.load(ty, slot, "");
            l::set_operand(user, index, loaded);
        }
        slots.push((v, slot, kind, n));
    }
    // Every definition writes its slot; arguments are only defined by the state.
    for &(v, slot, _, _) in &slots {
        if l::is_argument(v) {
            continue;
        }
        let writer = Builder::new(ctx);
        let after = if l::is_phi(v) {
            l::instructions(l::parent(v))
                .into_iter()
                .find(|&i| !l::is_phi(i))
        } else {
            // SAFETY: `v` is a live instruction; null when it ends its block (only the site's
            // call, at the end of `pre`, which has no terminator yet).
            let next = unsafe { llc::LLVMGetNextInstruction(v) };
            (!next.is_null()).then_some(next)
        };
        match after {
            Some(i) => writer.before(i),
            None => writer.at_end(l::parent(v)),
        }
        writer.store(v, slot);
    }
    // `pre` ends after the store of the call's result; `block` (the resume point) follows.
    builder.at_end(pre);
    builder.br(block);
    // Arguments that are not live at the site are only used where the continuation never goes.
    for p in l::params(f) {
        if slots.iter().any(|&(v, ..)| v == p) {
            continue;
        }
        l::replace_all_uses(p, l::poison(l::type_of(p)));
    }
    for (v, slot, kind, n) in &slots {
        let at = at_entry.gep_i8(ctx, buf, (*n as u64) * 8, "");
        let bits = at_entry.load(i64t, at, "");
        // SAFETY: `slot` is a live alloca.
        let ty = unsafe { llc::LLVMGetAllocatedType(*slot) };
        let value = at_entry.bits_to_value(bits, *kind, ty, "");
        at_entry.store(value, *slot);
        if let Some((frame, offset, fa_ty, fa)) = machine_frame
            && frame == *v
        {
            let address = at_entry.call(
                fa_ty,
                fa,
                &mut [l::const_int(l::int_type(ctx, 32), 0)],
                "osr.machine_frame",
            );
            let word = at_entry.gep_i8(ctx, value, offset, "osr.machine_frame.slot");
            at_entry.store(address, word);
        }
    }
    at_entry.br(block);
    Ok(())
}

/// Where `f` records its machine frame, if it does (instrumentation stores
/// `llvm.frameaddress(0)` into its shadow-stack frame in its entry block): the frame, the
/// word's offset, and the intrinsic with its type.
fn machine_frame_slot(f: Value) -> Option<(Value, u64, l::Type, Value)> {
    let entry = *l::blocks(f).first()?;
    let named = |call: Value, name: &str| {
        l::is_instruction(call)
            && l::is_call(call)
            && l::called_function(call).is_some_and(|c| super::value_name(c) == name)
    };
    l::instructions(entry).into_iter().find_map(|i| {
        if l::opcode(i) != llvm_sys::LLVMOpcode::LLVMStore {
            return None;
        }
        let [value, pointer] = l::operands(i)[..] else {
            return None;
        };
        if !named(value, FRAME_ADDRESS)
            || !l::is_instruction(pointer)
            || l::opcode(pointer) != llvm_sys::LLVMOpcode::LLVMGetElementPtr
        {
            return None;
        }
        let [frame, index] = l::operands(pointer)[..] else {
            return None;
        };
        if !named(frame, SHADOW_PUSH) {
            return None;
        }
        let offset = l::const_int_value(index)?;
        let intrinsic = l::called_function(value)?;
        Some((frame, offset, l::function_type(intrinsic), intrinsic))
    })
}
