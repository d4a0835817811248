//! Continuations: code that takes a frame's state at a site and runs the rest of the function
//! from right after it.
//!
//! Built on a unit's copy of the instrumented module, from the function's base body. A
//! *per-site* continuation resumes after one site ([`build`]):
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
//! A *multi-entry* continuation resumes after any of the function's sites ([`build_multi`]):
//! one body that dispatches on the site, and one thin entry per site with the per-site calling
//! convention, so that a transfer enters either kind the same way:
//!
//! ```text
//!  f.osr.all(ptr %buf, i32 %site)                      noinline
//!    osr.entry:    slots of every value live at some site, and of every site's result
//!                  switch %site [S1 → osr.load.S1, S2 → osr.load.S2, ...], default unreachable
//!    osr.load.S1:  store (load %buf[i]) → S1's slot i, ...; br resume.S1   (S1's buffer layout)
//!    osr.load.S2:  ...; br resume.S2
//!    ...           (f's blocks, each site's call ending its block, as above)
//!  f.osr.S1(ptr %buf):  %r = tail call f.osr.all(%buf, S1); ret %r   (a `jmp` once compiled)
//!  f.osr.S2(ptr %buf):  ...
//! ```
//!
//! The body's own stack slots (loop counts, locals that stay in the machine frame) are allocated
//! in the new entry and started with the constants the body's entry stores into them; a local
//! that a site's state carries (as a load of it right before the call) is filled from it.
//!
//! `mem2reg` then rebuilds SSA form, and unreachable blocks (the original entry and whatever only
//! it reached) go away. A continuation keeps every site of `f` (with the same ids and state
//! layout), so a frame running it can be transferred again; it returns what `f` returns, to
//! `f`'s caller, and `f` itself stays a declaration that calls reach through its newest entry.
//!
//! Why the demotion is sound with several resume points: a value that some path from a resume
//! point uses before defining it is live after that site, so it is in that site's state and
//! that site's dispatch block fills its slot. Values live at no site keep their SSA form: every
//! path from a resume point to a use passes their definition.
//!
//! A function that records its machine frame in its shadow-stack frame (shadow discovery)
//! records it again at the continuation's entry: the continuation runs in a machine frame of
//! its own (at the same address after a lazy transfer, but nothing here relies on that).

use std::collections::HashMap;

use llvm_sys::core as llc;
use llvm_sys::prelude::LLVMModuleRef;

use super::instrument::{FRAME_ADDRESS, SHADOW_PUSH};
use super::llvm::{self as l, Block, Builder, Type, Value};
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
    let f = body_of(m, function).map_err(no_site)?;
    let call = site_calls(f)
        .into_iter()
        .find(|&(id, _)| id == site)
        .map(|(_, call)| call)
        .ok_or_else(|| no_site("no call of the function carries it"))?;
    let state = ResumeState::of(site, call).map_err(no_site)?;
    let machine = machine_frame_slot(f);
    let ptr = l::ptr_type(l::context_of(m));
    let cont = declare_like(m, f, name, &[ptr], true);
    let (entry, resumes) = rebuild(m, f, cont, std::slice::from_ref(&state));
    let at_entry = Builder::new(l::context_of(m));
    at_entry.at_end(entry);
    let buf = l::params(cont)[0];
    l::set_name(buf, "osr.state");
    let (resume, slots) = &resumes[0];
    load_state(m, &at_entry, buf, slots, machine_frame_at(machine, &state));
    at_entry.br(*resume);
    Ok(())
}

/// Builds the multi-entry continuation of `function` in `m`: `body(ptr buf, i32 site)`, which
/// resumes after whichever of `entries`' sites `site` names, and for each `(site, name)` of
/// `entries` a function `name(ptr buf)` that tail-calls `body(buf, site)`. Afterwards
/// `function` is a declaration.
///
/// Every site in `entries` must be one whose call carries OSR state (a `"deopt"` bundle);
/// sites the instrumentation refused have no such call and must not be asked for.
pub(crate) fn build_multi(
    m: LLVMModuleRef,
    function: &str,
    body: &str,
    entries: &[(SiteId, String)],
) -> Result<()> {
    let no_site = |site: SiteId, why: &str| Error::NoSuchSite {
        function: function.to_owned(),
        site,
        reason: why.to_owned(),
    };
    let f = body_of(m, function).map_err(|why| Error::Osr(format!("`{function}`: {why}")))?;
    if entries.is_empty() {
        return Err(Error::Osr(format!(
            "`{function}` has no site a continuation can resume after"
        )));
    }
    let calls: HashMap<SiteId, Value> = site_calls(f).into_iter().collect();
    let mut states = Vec::with_capacity(entries.len());
    for &(site, _) in entries {
        let call = *calls
            .get(&site)
            .ok_or_else(|| no_site(site, "no call of the function carries it"))?;
        states.push(ResumeState::of(site, call).map_err(|why| no_site(site, why))?);
    }
    let machine = machine_frame_slot(f);
    let ctx = l::context_of(m);
    let ptr = l::ptr_type(ctx);
    let i32t = l::int_type(ctx, 32);
    let all = declare_like(m, f, body, &[ptr, i32t], true);
    // The entries reach the body by a call: it must stay one body, not a copy in each entry.
    l::add_fn_enum_attribute(all, "noinline");
    let (entry, resumes) = rebuild(m, f, all, &states);

    let params = l::params(all);
    let (buf, site_param) = (params[0], params[1]);
    l::set_name(buf, "osr.state");
    l::set_name(site_param, "osr.site");
    let builder = Builder::new(ctx);
    let unknown = l::append_block(ctx, all, "osr.unknown_site");
    builder.at_end(unknown);
    builder.unreachable();
    builder.at_end(entry);
    let switch = builder.switch(site_param, unknown, states.len() as u32);
    for (state, (resume, slots)) in states.iter().zip(&resumes) {
        let load = l::insert_block_before(ctx, *resume, &format!("osr.load.{}", state.site.0));
        builder.at_end(load);
        load_state(m, &builder, buf, slots, machine_frame_at(machine, state));
        builder.br(*resume);
        l::add_case(switch, l::const_int(i32t, u64::from(state.site.0)), load);
    }

    // The entries: the same calling convention and return attributes as the body (both copied
    // from `f`), so that each tail call can become a `jmp`.
    let all_ty = l::function_type(all);
    let returns = l::type_kind(l::return_type(all_ty)) != llvm_sys::LLVMTypeKind::LLVMVoidTypeKind;
    for (state, (_, name)) in states.iter().zip(entries) {
        let stub = declare_like(m, f, name, &[ptr], false);
        builder.at_end(l::append_block(ctx, stub, "entry"));
        let stub_buf = l::params(stub)[0];
        l::set_name(stub_buf, "osr.state");
        let mut args = [stub_buf, l::const_int(i32t, u64::from(state.site.0))];
        let call = builder.call(all_ty, all, &mut args, "");
        l::set_tail_call(call);
        // SAFETY: `call` is a live call of `all`; the attributes are `all`'s own.
        unsafe {
            llc::LLVMSetInstructionCallConv(call, llc::LLVMGetFunctionCallConv(all));
            for a in l::fn_attributes(all, llvm_sys::LLVMAttributeReturnIndex) {
                llc::LLVMAddCallSiteAttribute(call, llvm_sys::LLVMAttributeReturnIndex, a);
            }
        }
        builder.ret(returns.then_some(call));
    }
    Ok(())
}

/// One site a continuation resumes after: its call and the state the transfer buffer carries.
struct ResumeState {
    site: SiteId,
    call: Value,
    /// The live values, in record (and buffer) order.
    values: Vec<(Value, ValueKind)>,
    /// The call result's kind (`None` for `void`): the buffer slot after the values.
    result: Option<ValueKind>,
}

impl ResumeState {
    fn of(site: SiteId, call: Value) -> std::result::Result<ResumeState, &'static str> {
        let state = l::site_state(call).map(|s| s.values).unwrap_or_default();
        let mut values = Vec::new();
        for &v in &state {
            values.push((
                v,
                l::value_kind(l::type_of(v)).ok_or("a value has no kind")?,
            ));
        }
        let result = match l::type_kind(l::type_of(call)) {
            llvm_sys::LLVMTypeKind::LLVMVoidTypeKind => None,
            _ => Some(l::value_kind(l::type_of(call)).ok_or("the result has no kind")?),
        };
        Ok(ResumeState {
            site,
            call,
            values,
            result,
        })
    }
}

/// Where one site's state goes: `(slot, kind)` per buffer slot, in buffer order. `None` for a
/// value that needs no slot (a constant): its buffer slot is not read.
type Slots = Vec<Option<(Value, ValueKind)>>;

/// `function`'s definition in `m`.
fn body_of(m: LLVMModuleRef, function: &str) -> std::result::Result<Value, &'static str> {
    let c = std::ffi::CString::new(function).map_err(|_| "bad function name")?;
    // SAFETY: `m` is live and `c` NUL-terminated.
    let f = unsafe { llc::LLVMGetNamedFunction(m, c.as_ptr()) };
    if f.is_null() || l::is_declaration(f) {
        return Err("the function has no body in this unit");
    }
    Ok(f)
}

/// The calls of `f` that carry a site (a `"deopt"` bundle led by the site id), in layout order.
fn site_calls(f: Value) -> Vec<(SiteId, Value)> {
    l::blocks(f)
        .into_iter()
        .flat_map(l::instructions)
        .filter(|&i| l::is_call(i))
        .filter_map(|i| Some((l::site_state(i)?.site, i)))
        .collect()
}

/// Declares `name(params...)` with `f`'s return type, calling convention, function and return
/// attributes, and (with `gc`) its GC strategy.
fn declare_like(m: LLVMModuleRef, f: Value, name: &str, params: &[Type], gc: bool) -> Value {
    let ret = l::return_type(l::function_type(f));
    let ty = {
        let mut params = params.to_vec();
        // SAFETY: builds `ret (params...)` in `m`'s context.
        unsafe { llc::LLVMFunctionType(ret, params.as_mut_ptr(), params.len() as u32, 0) }
    };
    let new = l::declare_function(m, name, ty);
    // SAFETY: both are live functions of `m`; attributes are copied within one context.
    unsafe {
        llc::LLVMSetFunctionCallConv(new, llc::LLVMGetFunctionCallConv(f));
        for index in [
            llvm_sys::LLVMAttributeFunctionIndex,
            llvm_sys::LLVMAttributeReturnIndex,
        ] {
            for a in l::fn_attributes(f, index) {
                llc::LLVMAddAttributeAtIndex(new, index, a);
            }
        }
        let name = llc::LLVMGetGC(f);
        if gc && !name.is_null() {
            llc::LLVMSetGC(new, name);
        }
    }
    new
}

/// Moves `f`'s body into `cont` (a declaration), ending the block of every site's call right
/// after the call, and demotes the state of every site to slots in a new entry block (which has
/// no terminator yet). Returns the entry block and, for each of `sites`, the block to resume
/// at and its slots in buffer order. Afterwards `f` is a declaration.
fn rebuild(
    m: LLVMModuleRef,
    f: Value,
    cont: Value,
    sites: &[ResumeState],
) -> (Block, Vec<(Block, Slots)>) {
    let ctx = l::context_of(m);
    let builder = Builder::new(ctx);
    // Split each call's block right after the call: blocks that branched to it now branch to
    // `pre`, which holds its phis and head up to the call and falls into it. Sites may share a
    // block, in any order: each call's resume block is read at the end, as the block its `pre`
    // falls into.
    for state in sites {
        let block = l::parent(state.call);
        let pre = l::insert_block_before(ctx, block, "osr.pre");
        l::redirect_branches(f, block, pre);
        builder.at_end(pre);
        for i in l::instructions(block) {
            l::move_to(&builder, i);
            if i == state.call {
                break;
            }
        }
        builder.at_end(pre);
        builder.br(block);
    }

    // Move the body into the continuation; `f` becomes a declaration.
    for b in l::blocks(f) {
        // SAFETY: `b` is a live block of `f`, detached then appended to `cont` in order.
        unsafe {
            llc::LLVMRemoveBasicBlockFromParent(b);
            llc::LLVMAppendExistingBasicBlock(cont, b);
        }
    }
    // Debug info goes with the body: the declaration must have no subprogram, and what
    // describes `f`'s parameters (debug intrinsics refer to them) now describes nothing.
    // SAFETY: `f` and `cont` are live functions of `m`; the subprogram moves from one to the
    // other; an argument's remaining uses are debug metadata and code that no resume point
    // reaches (the uses the continuation keeps read slots, made below).
    unsafe {
        use llvm_sys::debuginfo::{LLVMGetSubprogram, LLVMSetSubprogram};
        let subprogram = LLVMGetSubprogram(f);
        if !subprogram.is_null() {
            LLVMSetSubprogram(f, std::ptr::null_mut());
            LLVMSetSubprogram(cont, subprogram);
        }
    }
    let first = l::blocks(cont)[0];
    let entry = l::insert_block_before(ctx, first, "osr.entry");
    let at_entry = Builder::new(ctx);
    at_entry.at_end(entry);
    // The base body's own stack slots (after instrumentation: the loop counts of
    // `LoopCounters::Register`, which no state carries, and the locals that stay in the machine
    // frame, which states carry by their contents) are allocated afresh and started as the
    // body's entry starts them: with the constants stored there (then the state's values).
    let own: Vec<Value> = l::instructions(first)
        .into_iter()
        .filter(|&i| l::is_alloca(i))
        .collect();
    for &slot in &own {
        l::move_to(&at_entry, slot);
    }
    for i in l::instructions(first) {
        if l::opcode(i) == llvm_sys::LLVMOpcode::LLVMStore
            && let [value, pointer] = l::operands(i)[..]
            && own.contains(&pointer)
            && l::const_int_value(value).is_some()
        {
            at_entry.store(value, pointer);
        }
    }

    // Every value some site carries (once, in first-seen order) gets a slot, and so does every
    // site's call result. Constants need none: their uses stay as they are.
    let mut order: Vec<Value> = Vec::new();
    let mut slot_of: HashMap<Value, Value> = HashMap::new();
    for state in sites {
        let carried = state.values.iter().map(|&(v, _)| v);
        let result = state.result.map(|_| state.call);
        for v in carried.chain(result) {
            if !(l::is_instruction(v) || l::is_argument(v)) || slot_of.contains_key(&v) {
                continue;
            }
            let ty = l::type_of(v);
            // A local that stayed in the machine frame is carried by a load of it right before
            // the call: the continuation's own local is its slot.
            let local = (l::is_instruction(v) && l::opcode(v) == llvm_sys::LLVMOpcode::LLVMLoad)
                .then(|| l::operands(v)[0])
                .filter(|p| own.contains(p));
            let slot = local.unwrap_or_else(|| at_entry.alloca(ty, "osr.slot"));
            // Every use reads the slot: at the use, or for a phi at the end of the incoming
            // block.
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
            slot_of.insert(v, slot);
            order.push(v);
        }
    }
    // A saved stack pointer (`llvm.stacksave`, which clang emits at a scope holding a local
    // array whose size is a `const int`, restored when the scope ends) is an address in the old
    // machine frame: carried over, its restore would move the continuation's `rsp` into a
    // frame that is not its own (or no longer exists). Instrumented functions allocate no stack
    // dynamically (`instrument::dynamic_stack` excludes them), so every save in a frame returns
    // the same `rsp`, its value with no dynamic allocation live: the continuation saves its own
    // at its entry instead, and the state's word is not read.
    let mut saved_afresh: Vec<Value> = Vec::new();
    for &v in &order {
        if is_stack_save(v) {
            let callee = l::called_function(v).expect("a stack save calls the intrinsic");
            let fresh = at_entry.call(l::function_type(callee), callee, &mut [], "osr.stacksave");
            at_entry.store(fresh, slot_of[&v]);
            saved_afresh.push(v);
        }
    }
    // Every definition writes its slot; arguments are only defined by the state.
    for &v in &order {
        if l::is_argument(v) {
            continue;
        }
        let writer = Builder::new(ctx);
        let after = if l::is_phi(v) {
            l::instructions(l::parent(v))
                .into_iter()
                .find(|&i| !l::is_phi(i))
        } else {
            // SAFETY: `v` is a live instruction and not a terminator (a site's call is
            // followed by the branch its split added), so it has a next instruction.
            let next = unsafe { llc::LLVMGetNextInstruction(v) };
            (!next.is_null()).then_some(next)
        };
        match after {
            Some(i) => writer.before(i),
            None => writer.at_end(l::parent(v)),
        }
        writer.store(v, slot_of[&v]);
    }
    // Arguments that are not live at any site are only used where the continuation never goes;
    // those that are now have their slots, and only debug metadata still names them.
    for p in l::params(f) {
        l::replace_all_uses(p, l::poison(l::type_of(p)));
    }

    let resumes = sites
        .iter()
        .map(|state| {
            let pre = l::parent(state.call);
            let resume = l::successors(pre)[0];
            let carried = state.values.iter().map(|&(v, kind)| (v, kind));
            let result = state.result.map(|kind| (state.call, kind));
            let slots = carried
                .chain(result)
                .map(|(v, kind)| {
                    let slot = slot_of.get(&v).filter(|_| !saved_afresh.contains(&v));
                    slot.map(|&slot| (slot, kind))
                })
                .collect();
            (resume, slots)
        })
        .collect();
    (entry, resumes)
}

/// Whether `v` is the stack pointer saved by `llvm.stacksave`.
fn is_stack_save(v: Value) -> bool {
    l::is_instruction(v)
        && l::is_call(v)
        && l::called_function(v).is_some_and(|c| {
            let name = super::value_name(c);
            name == "llvm.stacksave" || name.starts_with("llvm.stacksave.")
        })
}

/// Where a site's state holds the shadow-stack frame that records the machine frame (shadow
/// discovery), as `load_state` takes it: the value's index, the word's offset in the frame, and
/// `llvm.frameaddress` with its type.
type MachineFrame = Option<(usize, u64, Type, Value)>;

/// `machine` (from [`machine_frame_slot`]) for one site's state.
fn machine_frame_at(
    machine: Option<(Value, u64, Type, Value)>,
    state: &ResumeState,
) -> MachineFrame {
    let (frame, offset, ty, intrinsic) = machine?;
    let index = state.values.iter().position(|&(v, _)| v == frame)?;
    Some((index, offset, ty, intrinsic))
}

/// At `builder`'s position, fills each slot from its buffer slot of `buf`. A function that
/// records its machine frame in its shadow-stack frame (`machine`) records it again: the
/// continuation runs in a machine frame of its own.
fn load_state(
    m: LLVMModuleRef,
    builder: &Builder,
    buf: Value,
    slots: &Slots,
    machine: MachineFrame,
) {
    let ctx = l::context_of(m);
    let i64t = l::int_type(ctx, 64);
    for (n, slot) in slots.iter().enumerate() {
        let Some((slot, kind)) = *slot else { continue };
        let at = builder.gep_i8(ctx, buf, (n as u64) * 8, "");
        let bits = builder.load(i64t, at, "");
        // SAFETY: `slot` is a live alloca.
        let ty = unsafe { llc::LLVMGetAllocatedType(slot) };
        let value = builder.bits_to_value(bits, kind, ty, "");
        builder.store(value, slot);
        if let Some((index, offset, fa_ty, fa)) = machine
            && index == n
        {
            let address = builder.call(
                fa_ty,
                fa,
                &mut [l::const_int(l::int_type(ctx, 32), 0)],
                "osr.machine_frame",
            );
            let word = builder.gep_i8(ctx, value, offset, "osr.machine_frame.slot");
            builder.store(address, word);
        }
    }
}

/// Where `f` records its machine frame, if it does (instrumentation stores
/// `llvm.frameaddress(0)` into its shadow-stack frame in its entry block): the frame, the
/// word's offset, and the intrinsic with its type.
fn machine_frame_slot(f: Value) -> Option<(Value, u64, Type, Value)> {
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
