//! Thin wrappers over the LLVM C API for the IR rewrites of `instrument` and `continuation`.
//!
//! Every function here takes values, blocks and types that belong to a module the caller holds
//! alive and does not change concurrently (the engine keeps all IR behind one mutex); that is
//! the one invariant each `// SAFETY:` comment below leans on.

use std::ffi::CString;

use llvm_sys::LLVMTypeKind;
use llvm_sys::core as llc;
use llvm_sys::prelude::{
    LLVMBasicBlockRef, LLVMBuilderRef, LLVMContextRef, LLVMModuleRef, LLVMTypeRef, LLVMValueRef,
};

use crate::types::ValueKind;

pub(crate) type Value = LLVMValueRef;
pub(crate) type Block = LLVMBasicBlockRef;
pub(crate) type Type = LLVMTypeRef;

/// `name` for the C API: a guest's value names may hold NUL bytes, which become `_`.
fn c_name(name: &str) -> CString {
    CString::new(name.replace('\0', "_")).unwrap_or_default()
}

/// The blocks of a function, in layout order.
pub(crate) fn blocks(f: Value) -> Vec<Block> {
    let mut out = Vec::new();
    // SAFETY: `f` is a live function (module invariant).
    let mut b = unsafe { llc::LLVMGetFirstBasicBlock(f) };
    while !b.is_null() {
        out.push(b);
        // SAFETY: `b` is a live block of `f`.
        b = unsafe { llc::LLVMGetNextBasicBlock(b) };
    }
    out
}

/// The instructions of a block, in order.
pub(crate) fn instructions(b: Block) -> Vec<Value> {
    let mut out = Vec::new();
    // SAFETY: `b` is a live block (module invariant).
    let mut i = unsafe { llc::LLVMGetFirstInstruction(b) };
    while !i.is_null() {
        out.push(i);
        // SAFETY: `i` is a live instruction of `b`.
        i = unsafe { llc::LLVMGetNextInstruction(i) };
    }
    out
}

/// The block's terminator, if it has one yet.
pub(crate) fn terminator(b: Block) -> Option<Value> {
    // SAFETY: `b` is a live block.
    let t = unsafe { llc::LLVMGetBasicBlockTerminator(b) };
    (!t.is_null()).then_some(t)
}

/// The successors of a block.
pub(crate) fn successors(b: Block) -> Vec<Block> {
    let Some(t) = terminator(b) else {
        return Vec::new();
    };
    // SAFETY: `t` is a live terminator; indices stay below the count LLVM reports.
    unsafe {
        (0..llc::LLVMGetNumSuccessors(t))
            .map(|i| llc::LLVMGetSuccessor(t, i))
            .collect()
    }
}

/// Makes every branch of `f` to `from` go to `to` instead. Unlike replacing the block's uses
/// (which also renames the incoming block of phis in `from`'s successors), this changes
/// terminators only: phis keep naming the blocks that really branch to them.
pub(crate) fn redirect_branches(f: Value, from: Block, to: Block) {
    for b in blocks(f) {
        let Some(t) = terminator(b) else { continue };
        // SAFETY: `t` is a live terminator; indices stay below its successor count, and `to`
        // is a block of the same function.
        unsafe {
            for i in 0..llc::LLVMGetNumSuccessors(t) {
                if llc::LLVMGetSuccessor(t, i) == from {
                    llc::LLVMSetSuccessor(t, i, to);
                }
            }
        }
    }
}

/// The operands of an instruction or constant.
pub(crate) fn operands(v: Value) -> Vec<Value> {
    // SAFETY: `v` is a live user; indices stay below the count LLVM reports.
    unsafe {
        let n = llc::LLVMGetNumOperands(v).max(0) as u32;
        (0..n).map(|i| llc::LLVMGetOperand(v, i)).collect()
    }
}

/// Sets operand `i` of a user.
pub(crate) fn set_operand(v: Value, i: u32, to: Value) {
    // SAFETY: `v` is a live user with more than `i` operands, `to` a value of the same type.
    unsafe { llc::LLVMSetOperand(v, i, to) }
}

/// `(value, block)` for each incoming edge of a phi.
pub(crate) fn incoming(phi: Value) -> Vec<(Value, Block)> {
    // SAFETY: `phi` is a live phi node; indices stay below its incoming count.
    unsafe {
        (0..llc::LLVMCountIncoming(phi))
            .map(|i| {
                (
                    llc::LLVMGetIncomingValue(phi, i),
                    llc::LLVMGetIncomingBlock(phi, i),
                )
            })
            .collect()
    }
}

pub(crate) fn is_phi(v: Value) -> bool {
    // SAFETY: `v` is a live value; the check returns null on mismatch.
    !unsafe { llc::LLVMIsAPHINode(v) }.is_null()
}

pub(crate) fn is_call(v: Value) -> bool {
    // SAFETY: as for `is_phi`.
    !unsafe { llc::LLVMIsACallInst(v) }.is_null()
}

pub(crate) fn is_instruction(v: Value) -> bool {
    // SAFETY: as for `is_phi`.
    !unsafe { llc::LLVMIsAInstruction(v) }.is_null()
}

pub(crate) fn is_argument(v: Value) -> bool {
    // SAFETY: as for `is_phi`.
    !unsafe { llc::LLVMIsAArgument(v) }.is_null()
}

pub(crate) fn is_alloca(v: Value) -> bool {
    // SAFETY: as for `is_phi`.
    !unsafe { llc::LLVMIsAAllocaInst(v) }.is_null()
}

pub(crate) fn is_function(v: Value) -> bool {
    // SAFETY: as for `is_phi`.
    !unsafe { llc::LLVMIsAFunction(v) }.is_null()
}

pub(crate) fn is_declaration(v: Value) -> bool {
    // SAFETY: `v` is a live global value.
    unsafe { llc::LLVMIsDeclaration(v) != 0 }
}

pub(crate) fn opcode(v: Value) -> llvm_sys::LLVMOpcode {
    // SAFETY: `v` is a live instruction.
    unsafe { llc::LLVMGetInstructionOpcode(v) }
}

/// The block an instruction lies in.
pub(crate) fn parent(v: Value) -> Block {
    // SAFETY: `v` is a live instruction.
    unsafe { llc::LLVMGetInstructionParent(v) }
}

/// The function a block lies in.
pub(crate) fn block_function(b: Block) -> Value {
    // SAFETY: `b` is a live block.
    unsafe { llc::LLVMGetBasicBlockParent(b) }
}

/// The callee operand of a call (a function, or any pointer for an indirect call).
pub(crate) fn called_value(call: Value) -> Value {
    // SAFETY: `call` is a live call instruction.
    unsafe { llc::LLVMGetCalledValue(call) }
}

/// The function a call calls directly, if it does.
pub(crate) fn called_function(call: Value) -> Option<Value> {
    let callee = called_value(call);
    is_function(callee).then_some(callee)
}

/// Whether the callee operand is inline assembly.
pub(crate) fn is_inline_asm(v: Value) -> bool {
    // SAFETY: as for `is_phi`.
    !unsafe { llc::LLVMIsAInlineAsm(v) }.is_null()
}

pub(crate) fn operand_bundle_count(call: Value) -> u32 {
    // SAFETY: `call` is a live call.
    unsafe { llc::LLVMGetNumOperandBundles(call) }
}

pub(crate) fn arg_count(call: Value) -> u32 {
    // SAFETY: `call` is a live call.
    unsafe { llc::LLVMGetNumArgOperands(call) }
}

pub(crate) fn type_of(v: Value) -> Type {
    // SAFETY: `v` is a live value.
    unsafe { llc::LLVMTypeOf(v) }
}

pub(crate) fn type_kind(t: Type) -> LLVMTypeKind {
    // SAFETY: `t` is a live type.
    unsafe { llc::LLVMGetTypeKind(t) }
}

/// The [`ValueKind`] of a type, if OSR state can carry it.
pub(crate) fn value_kind(t: Type) -> Option<ValueKind> {
    Some(match type_kind(t) {
        // SAFETY: `t` is a live integer type here.
        LLVMTypeKind::LLVMIntegerTypeKind => match unsafe { llc::LLVMGetIntTypeWidth(t) } {
            1 => ValueKind::I1,
            8 => ValueKind::I8,
            16 => ValueKind::I16,
            32 => ValueKind::I32,
            64 => ValueKind::I64,
            _ => return None,
        },
        // SAFETY: `t` is a live pointer type here.
        LLVMTypeKind::LLVMPointerTypeKind if unsafe { llc::LLVMGetPointerAddressSpace(t) } == 0 => {
            ValueKind::Ptr
        }
        LLVMTypeKind::LLVMFloatTypeKind => ValueKind::F32,
        LLVMTypeKind::LLVMDoubleTypeKind => ValueKind::F64,
        _ => return None,
    })
}

/// The function's value type (its signature).
pub(crate) fn function_type(f: Value) -> Type {
    // SAFETY: `f` is a live function.
    unsafe { llc::LLVMGlobalGetValueType(f) }
}

pub(crate) fn return_type(fn_ty: Type) -> Type {
    // SAFETY: `fn_ty` is a function type.
    unsafe { llc::LLVMGetReturnType(fn_ty) }
}

pub(crate) fn is_vararg(fn_ty: Type) -> bool {
    // SAFETY: `fn_ty` is a function type.
    unsafe { llc::LLVMIsFunctionVarArg(fn_ty) != 0 }
}

pub(crate) fn params(f: Value) -> Vec<Value> {
    // SAFETY: `f` is a live function; the vector has room for every parameter.
    unsafe {
        let n = llc::LLVMCountParams(f) as usize;
        let mut out = vec![std::ptr::null_mut(); n];
        llc::LLVMGetParams(f, out.as_mut_ptr());
        out
    }
}

pub(crate) fn context_of(m: LLVMModuleRef) -> LLVMContextRef {
    // SAFETY: `m` is a live module.
    unsafe { llc::LLVMGetModuleContext(m) }
}

pub(crate) fn int_type(ctx: LLVMContextRef, bits: u32) -> Type {
    // SAFETY: `ctx` is a live context.
    unsafe { llc::LLVMIntTypeInContext(ctx, bits) }
}

pub(crate) fn ptr_type(ctx: LLVMContextRef) -> Type {
    // SAFETY: `ctx` is a live context.
    unsafe { llc::LLVMPointerTypeInContext(ctx, 0) }
}

pub(crate) fn void_type(ctx: LLVMContextRef) -> Type {
    // SAFETY: `ctx` is a live context.
    unsafe { llc::LLVMVoidTypeInContext(ctx) }
}

pub(crate) fn const_int(t: Type, value: u64) -> Value {
    // SAFETY: `t` is an integer type.
    unsafe { llc::LLVMConstInt(t, value, 0) }
}

pub(crate) fn poison(t: Type) -> Value {
    // SAFETY: `t` is a live first-class type.
    unsafe { llc::LLVMGetPoison(t) }
}

/// `count` of `(type, value)` constant struct with the given field values.
pub(crate) fn const_struct(ctx: LLVMContextRef, fields: &mut [Value]) -> Value {
    // SAFETY: the fields are live constants of `ctx`.
    unsafe { llc::LLVMConstStructInContext(ctx, fields.as_mut_ptr(), fields.len() as u32, 0) }
}

/// Declares (or finds) a function by name.
pub(crate) fn declare_function(m: LLVMModuleRef, name: &str, ty: Type) -> Value {
    let c = c_name(name);
    // SAFETY: `m` is live; `c` NUL-terminated; `ty` a function type of `m`'s context.
    unsafe {
        let f = llc::LLVMGetNamedFunction(m, c.as_ptr());
        if f.is_null() {
            llc::LLVMAddFunction(m, c.as_ptr(), ty)
        } else {
            f
        }
    }
}

/// Adds a global variable with an initializer.
pub(crate) fn add_global(m: LLVMModuleRef, name: &str, init: Value, constant: bool) -> Value {
    let c = c_name(name);
    // SAFETY: `m` is live; the global takes the initializer's type.
    unsafe {
        let g = llc::LLVMAddGlobal(m, llc::LLVMTypeOf(init), c.as_ptr());
        llc::LLVMSetInitializer(g, init);
        llc::LLVMSetGlobalConstant(g, constant as i32);
        g
    }
}

pub(crate) fn set_name(v: Value, name: &str) {
    // SAFETY: `v` is a live value; the name is passed with its length.
    unsafe { llc::LLVMSetValueName2(v, name.as_ptr().cast(), name.len()) }
}

pub(crate) fn replace_all_uses(old: Value, new: Value) {
    // SAFETY: both are live values of the same type.
    unsafe { llc::LLVMReplaceAllUsesWith(old, new) }
}

pub(crate) fn erase(i: Value) {
    // SAFETY: `i` is a live instruction without uses; it is not touched again.
    unsafe { llc::LLVMInstructionEraseFromParent(i) }
}

/// A new block at the end of `f`.
pub(crate) fn append_block(ctx: LLVMContextRef, f: Value, name: &str) -> Block {
    let c = c_name(name);
    // SAFETY: `f` is a live function of `ctx`.
    unsafe { llc::LLVMAppendBasicBlockInContext(ctx, f, c.as_ptr()) }
}

/// A new block right before `before`.
pub(crate) fn insert_block_before(ctx: LLVMContextRef, before: Block, name: &str) -> Block {
    let c = c_name(name);
    // SAFETY: `before` is a live block of a function of `ctx`.
    unsafe { llc::LLVMInsertBasicBlockInContext(ctx, before, c.as_ptr()) }
}

/// Moves an instruction to the builder's position.
pub(crate) fn move_to(builder: &Builder, i: Value) {
    // SAFETY: `i` is a live instruction, detached then inserted at a valid position of the same
    // function.
    unsafe {
        llc::LLVMInstructionRemoveFromParent(i);
        llc::LLVMInsertIntoBuilder(builder.0, i);
    }
}

/// Whether a call site or function has the named enum attribute at `index`.
pub(crate) fn enum_kind(name: &str) -> u32 {
    // SAFETY: looks up an attribute kind by name (with its length).
    unsafe { llc::LLVMGetEnumAttributeKindForName(name.as_ptr().cast(), name.len()) }
}

pub(crate) fn has_fn_attribute(f: Value, name: &str) -> bool {
    let kind = enum_kind(name);
    // SAFETY: `f` is a live function.
    !unsafe { llc::LLVMGetEnumAttributeAtIndex(f, llvm_sys::LLVMAttributeFunctionIndex, kind) }
        .is_null()
}

pub(crate) fn has_call_attribute(call: Value, name: &str) -> bool {
    let kind = enum_kind(name);
    // SAFETY: `call` is a live call.
    !unsafe { llc::LLVMGetCallSiteEnumAttribute(call, llvm_sys::LLVMAttributeFunctionIndex, kind) }
        .is_null()
}

/// Whether argument `arg` (from 0) of `call` has the named enum attribute, at the call or on
/// the called function's parameter.
pub(crate) fn has_arg_attribute(call: Value, arg: u32, name: &str) -> bool {
    let kind = enum_kind(name);
    let index = arg + 1;
    // SAFETY: `call` is a live call; a direct callee is a live function.
    unsafe {
        !llc::LLVMGetCallSiteEnumAttribute(call, index, kind).is_null()
            || called_function(call)
                .is_some_and(|f| !llc::LLVMGetEnumAttributeAtIndex(f, index, kind).is_null())
    }
}

pub(crate) fn remove_fn_attribute(f: Value, name: &str) {
    let kind = enum_kind(name);
    // SAFETY: `f` is a live function.
    unsafe { llc::LLVMRemoveEnumAttributeAtIndex(f, llvm_sys::LLVMAttributeFunctionIndex, kind) }
}

/// A string attribute on a call site.
pub(crate) fn add_call_string_attribute(call: Value, key: &str, value: &str) {
    // SAFETY: `call` is a live call; the attribute is made in its context with explicit lengths.
    unsafe {
        let ctx = llc::LLVMGetTypeContext(llc::LLVMTypeOf(call));
        let a = llc::LLVMCreateStringAttribute(
            ctx,
            key.as_ptr().cast(),
            key.len() as u32,
            value.as_ptr().cast(),
            value.len() as u32,
        );
        llc::LLVMAddCallSiteAttribute(call, llvm_sys::LLVMAttributeFunctionIndex, a);
    }
}

/// The function's GC strategy name, if it has one.
pub(crate) fn gc_name(f: Value) -> Option<String> {
    // SAFETY: `f` is a live function; the returned string lives as long as it.
    unsafe {
        let p = llc::LLVMGetGC(f);
        (!p.is_null()).then(|| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// Sets a function's GC strategy. Only Uppercut's own constant names reach this: an unknown
/// strategy aborts LLVM at code generation.
pub(crate) fn set_gc(f: Value, name: &'static std::ffi::CStr) {
    // SAFETY: `f` is a live function; `name` is NUL-terminated.
    unsafe { llc::LLVMSetGC(f, name.as_ptr()) }
}

/// Adds `value → to` to a switch.
pub(crate) fn add_case(switch: Value, value: Value, to: Block) {
    // SAFETY: `switch` is a live switch; `value` a constant of its condition's type; `to` a
    // block of the same function.
    unsafe { llc::LLVMAddCase(switch, value, to) }
}

/// Marks a call `tail`: it may reuse its caller's frame (a `jmp` where the ABI allows).
pub(crate) fn set_tail_call(call: Value) {
    // SAFETY: `call` is a live call.
    unsafe { llc::LLVMSetTailCallKind(call, llvm_sys::LLVMTailCallKind::LLVMTailCallKindTail) }
}

/// The attributes of a function at `index` (function, return or parameter).
pub(crate) fn fn_attributes(f: Value, index: u32) -> Vec<llvm_sys::prelude::LLVMAttributeRef> {
    // SAFETY: `f` is a live function; the vector has room for every attribute at `index`.
    unsafe {
        let count = llc::LLVMGetAttributeCountAtIndex(f, index);
        let mut attrs = vec![std::ptr::null_mut(); count as usize];
        if count > 0 {
            llc::LLVMGetAttributesAtIndex(f, index, attrs.as_mut_ptr());
        }
        attrs
    }
}

/// Adds the enum attribute `name` (one without a value, such as `noinline`) to a function.
pub(crate) fn add_fn_enum_attribute(f: Value, name: &str) {
    // SAFETY: `f` is a live function; the attribute is made in its context.
    unsafe {
        let ctx = llc::LLVMGetTypeContext(llc::LLVMTypeOf(f));
        let a = llc::LLVMCreateEnumAttribute(ctx, enum_kind(name), 0);
        llc::LLVMAddAttributeAtIndex(f, llvm_sys::LLVMAttributeFunctionIndex, a);
    }
}

/// An IR builder, disposed on drop.
pub(crate) struct Builder(pub(crate) LLVMBuilderRef);

impl Builder {
    pub(crate) fn new(ctx: LLVMContextRef) -> Builder {
        // SAFETY: `ctx` is a live context.
        Builder(unsafe { llc::LLVMCreateBuilderInContext(ctx) })
    }

    pub(crate) fn before(&self, i: Value) {
        // SAFETY: `i` is a live instruction.
        unsafe { llc::LLVMPositionBuilderBefore(self.0, i) }
    }

    pub(crate) fn at_end(&self, b: Block) {
        // SAFETY: `b` is a live block.
        unsafe { llc::LLVMPositionBuilderAtEnd(self.0, b) }
    }

    pub(crate) fn call(&self, fn_ty: Type, callee: Value, args: &mut [Value], name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned; `args` match `fn_ty`.
        unsafe {
            llc::LLVMBuildCall2(
                self.0,
                fn_ty,
                callee,
                args.as_mut_ptr(),
                args.len() as u32,
                c.as_ptr(),
            )
        }
    }

    pub(crate) fn gep_i8(
        &self,
        ctx: LLVMContextRef,
        base: Value,
        offset: u64,
        name: &str,
    ) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned; `base` is a pointer.
        unsafe {
            let i8t = llc::LLVMInt8TypeInContext(ctx);
            let mut idx = [const_int(int_type(ctx, 64), offset)];
            llc::LLVMBuildInBoundsGEP2(self.0, i8t, base, idx.as_mut_ptr(), 1, c.as_ptr())
        }
    }

    pub(crate) fn load(&self, ty: Type, ptr: Value, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned; `ptr` is a pointer.
        unsafe { llc::LLVMBuildLoad2(self.0, ty, ptr, c.as_ptr()) }
    }

    pub(crate) fn store(&self, value: Value, ptr: Value) -> Value {
        // SAFETY: the builder is positioned; `ptr` is a pointer.
        unsafe { llc::LLVMBuildStore(self.0, value, ptr) }
    }

    pub(crate) fn alloca(&self, ty: Type, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned in an entry block.
        unsafe { llc::LLVMBuildAlloca(self.0, ty, c.as_ptr()) }
    }

    pub(crate) fn br(&self, to: Block) -> Value {
        // SAFETY: the builder is positioned at the end of a block without a terminator.
        unsafe { llc::LLVMBuildBr(self.0, to) }
    }

    /// `switch value, label otherwise [...]`, with room for `cases` cases ([`add_case`]).
    pub(crate) fn switch(&self, value: Value, otherwise: Block, cases: u32) -> Value {
        // SAFETY: as for `br`; `value` is an integer.
        unsafe { llc::LLVMBuildSwitch(self.0, value, otherwise, cases) }
    }

    pub(crate) fn unreachable(&self) -> Value {
        // SAFETY: as for `br`.
        unsafe { llc::LLVMBuildUnreachable(self.0) }
    }

    /// `ret value`, or `ret void` for `None`.
    pub(crate) fn ret(&self, value: Option<Value>) -> Value {
        // SAFETY: as for `br`; `value` has the function's return type.
        unsafe {
            match value {
                Some(v) => llc::LLVMBuildRet(self.0, v),
                None => llc::LLVMBuildRetVoid(self.0),
            }
        }
    }

    pub(crate) fn cond_br(&self, cond: Value, then: Block, otherwise: Block) -> Value {
        // SAFETY: as for `br`; `cond` is an `i1`.
        unsafe { llc::LLVMBuildCondBr(self.0, cond, then, otherwise) }
    }

    /// `select cond, a, b`.
    pub(crate) fn select(&self, cond: Value, a: Value, b: Value, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned; `cond` is an `i1` and `a`, `b` share a type.
        unsafe { llc::LLVMBuildSelect(self.0, cond, a, b, c.as_ptr()) }
    }

    /// A phi of type `ty` with `incoming` (value, block) pairs; more can be added with
    /// [`add_incoming`].
    pub(crate) fn phi(&self, ty: Type, incoming: &[(Value, Block)], name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned at the start of a block (phis come first); the
        // incoming values have type `ty`.
        let phi = unsafe { llc::LLVMBuildPhi(self.0, ty, c.as_ptr()) };
        for &(value, block) in incoming {
            add_incoming(phi, value, block);
        }
        phi
    }

    /// `cmpxchg ptr, expected, new monotonic monotonic`: returns the value found and whether
    /// it was `expected` (and so replaced).
    pub(crate) fn cmpxchg(&self, ptr: Value, expected: Value, new: Value) -> (Value, Value) {
        // SAFETY: the builder is positioned; `ptr` points to an integer of the type `expected`
        // and `new` have; the result is a `{ T, i1 }` pair, read by index.
        unsafe {
            let pair = llc::LLVMBuildAtomicCmpXchg(
                self.0,
                ptr,
                expected,
                new,
                llvm_sys::LLVMAtomicOrdering::LLVMAtomicOrderingMonotonic,
                llvm_sys::LLVMAtomicOrdering::LLVMAtomicOrderingMonotonic,
                0,
            );
            (
                llc::LLVMBuildExtractValue(self.0, pair, 0, c"osr.seen".as_ptr()),
                llc::LLVMBuildExtractValue(self.0, pair, 1, c"osr.swapped".as_ptr()),
            )
        }
    }

    pub(crate) fn sub(&self, a: Value, b: Value, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned; operands share an integer type.
        unsafe { llc::LLVMBuildSub(self.0, a, b, c.as_ptr()) }
    }

    pub(crate) fn add(&self, a: Value, b: Value, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: as for `sub`.
        unsafe { llc::LLVMBuildAdd(self.0, a, b, c.as_ptr()) }
    }

    pub(crate) fn shl(&self, a: Value, b: Value, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: as for `sub`.
        unsafe { llc::LLVMBuildShl(self.0, a, b, c.as_ptr()) }
    }

    pub(crate) fn lshr(&self, a: Value, b: Value, name: &str) -> Value {
        let c = c_name(name);
        // SAFETY: as for `sub`.
        unsafe { llc::LLVMBuildLShr(self.0, a, b, c.as_ptr()) }
    }

    pub(crate) fn icmp(
        &self,
        predicate: llvm_sys::LLVMIntPredicate,
        a: Value,
        b: Value,
        name: &str,
    ) -> Value {
        let c = c_name(name);
        // SAFETY: as for `sub`.
        unsafe { llc::LLVMBuildICmp(self.0, predicate, a, b, c.as_ptr()) }
    }

    /// The smaller of two signed integers of one type.
    pub(crate) fn smin(&self, a: Value, b: Value, name: &str) -> Value {
        let less = self.icmp(llvm_sys::LLVMIntPredicate::LLVMIntSLT, a, b, "");
        let c = c_name(name);
        // SAFETY: as for `sub`; `less` is an `i1`.
        unsafe { llc::LLVMBuildSelect(self.0, less, a, b, c.as_ptr()) }
    }

    /// Converts 64 bits loaded from a transfer buffer to a value of `kind`'s type `ty`.
    pub(crate) fn bits_to_value(
        &self,
        bits: Value,
        kind: ValueKind,
        ty: Type,
        name: &str,
    ) -> Value {
        let c = c_name(name);
        // SAFETY: the builder is positioned; `bits` is an `i64` and `ty` matches `kind`.
        unsafe {
            let ctx = llc::LLVMGetTypeContext(ty);
            match kind {
                ValueKind::I64 => bits,
                ValueKind::I1 | ValueKind::I8 | ValueKind::I16 | ValueKind::I32 => {
                    llc::LLVMBuildTrunc(self.0, bits, ty, c.as_ptr())
                }
                ValueKind::Ptr => llc::LLVMBuildIntToPtr(self.0, bits, ty, c.as_ptr()),
                ValueKind::F64 => llc::LLVMBuildBitCast(self.0, bits, ty, c.as_ptr()),
                ValueKind::F32 => {
                    let narrow = llc::LLVMBuildTrunc(self.0, bits, int_type(ctx, 32), c"".as_ptr());
                    llc::LLVMBuildBitCast(self.0, narrow, ty, c.as_ptr())
                }
            }
        }
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        // SAFETY: the builder was created by `new` and is disposed once.
        unsafe { llc::LLVMDisposeBuilder(self.0) }
    }
}

/// Adds an incoming `(value, block)` to `phi`.
pub(crate) fn add_incoming(phi: Value, value: Value, block: Block) {
    let (mut v, mut b) = ([value], [block]);
    // SAFETY: `phi` is a live phi; one pair, whose value has the phi's type.
    unsafe { llc::LLVMAddIncoming(phi, v.as_mut_ptr(), b.as_mut_ptr(), 1) };
}

/// Rebuilds `call` with `bundles` (`(tag, operands)`) in place of its own, keeping its callee,
/// arguments, attributes, calling convention and tail-call kind; returns the new call, which
/// has taken over every use of the old one (deleted).
pub(crate) fn rebuild_call_with_bundles(call: Value, bundles: &[(&str, Vec<Value>)]) -> Value {
    let builder = Builder::new(
        // SAFETY: `call` is a live instruction.
        unsafe { llc::LLVMGetTypeContext(llc::LLVMTypeOf(call)) },
    );
    builder.before(call);
    let n_args = arg_count(call);
    let ops = operands(call);
    let mut args: Vec<Value> = ops[..n_args as usize].to_vec();
    // SAFETY: `call` is a live call; each bundle is created from live values and disposed after
    // the new call copied it; attributes are copied index by index within the same context.
    unsafe {
        let fn_ty = llc::LLVMGetCalledFunctionType(call);
        let callee = llc::LLVMGetCalledValue(call);
        let mut made: Vec<_> = bundles
            .iter()
            .map(|(tag, values)| {
                let mut values = values.clone();
                llc::LLVMCreateOperandBundle(
                    tag.as_ptr().cast(),
                    tag.len(),
                    values.as_mut_ptr(),
                    values.len() as u32,
                )
            })
            .collect();
        let new = llc::LLVMBuildCallWithOperandBundles(
            builder.0,
            fn_ty,
            callee,
            args.as_mut_ptr(),
            n_args,
            made.as_mut_ptr(),
            made.len() as u32,
            c"".as_ptr(),
        );
        for b in made {
            llc::LLVMDisposeOperandBundle(b);
        }
        llc::LLVMSetInstructionCallConv(new, llc::LLVMGetInstructionCallConv(call));
        llc::LLVMSetTailCallKind(new, llc::LLVMGetTailCallKind(call));
        let location = llvm_sys::debuginfo::LLVMInstructionGetDebugLoc(call);
        if !location.is_null() {
            llvm_sys::debuginfo::LLVMInstructionSetDebugLoc(new, location);
        }
        let indices = std::iter::once(llvm_sys::LLVMAttributeFunctionIndex).chain(0..=n_args);
        for index in indices {
            let count = llc::LLVMGetCallSiteAttributeCount(call, index);
            if count == 0 {
                continue;
            }
            let mut attrs = vec![std::ptr::null_mut(); count as usize];
            llc::LLVMGetCallSiteAttributes(call, index, attrs.as_mut_ptr());
            for a in attrs {
                llc::LLVMAddCallSiteAttribute(new, index, a);
            }
        }
        let mut len = 0;
        let name = llc::LLVMGetValueName2(call, &mut len);
        if len > 0 {
            let owned = std::slice::from_raw_parts(name.cast::<u8>(), len).to_vec();
            llc::LLVMSetValueName2(call, c"".as_ptr(), 0);
            llc::LLVMSetValueName2(new, owned.as_ptr().cast(), owned.len());
        }
        llc::LLVMReplaceAllUsesWith(call, new);
        llc::LLVMInstructionEraseFromParent(call);
        new
    }
}

/// The operands of the call's `"deopt"` bundle, if it has one.
pub(crate) fn deopt_operands(call: Value) -> Option<Vec<Value>> {
    // SAFETY: `call` is a live call; each bundle is read then disposed; indices stay below the
    // counts LLVM reports.
    unsafe {
        for i in 0..llc::LLVMGetNumOperandBundles(call) {
            let b = llc::LLVMGetOperandBundleAtIndex(call, i);
            let mut len = 0;
            let tag = llc::LLVMGetOperandBundleTag(b, &mut len);
            let is_deopt = std::slice::from_raw_parts(tag.cast::<u8>(), len)
                == crate::frames::convention::DEOPT_BUNDLE.as_bytes();
            let out = is_deopt.then(|| {
                (0..llc::LLVMGetNumOperandBundleArgs(b))
                    .map(|j| llc::LLVMGetOperandBundleArgAtIndex(b, j))
                    .collect()
            });
            llc::LLVMDisposeOperandBundle(b);
            if out.is_some() {
                return out;
            }
        }
    }
    None
}

/// The site state the call's `"deopt"` bundle carries by Uppercut's convention, if it has one.
pub(crate) fn site_state(call: Value) -> Option<crate::frames::SiteState<Value>> {
    crate::frames::SiteState::from_bundle(&deopt_operands(call)?, const_int_value)
}

/// The value of an integer constant, if `v` is one.
pub(crate) fn const_int_value(v: Value) -> Option<u64> {
    // SAFETY: `v` is a live value; the check returns null on mismatch.
    if unsafe { llc::LLVMIsAConstantInt(v) }.is_null() {
        return None;
    }
    // SAFETY: `v` is a constant integer.
    Some(unsafe { llc::LLVMConstIntGetZExtValue(v) })
}

/// Uses of `v` as `(user, operand index)`.
pub(crate) fn uses(v: Value) -> Vec<(Value, u32)> {
    let mut out = Vec::new();
    // SAFETY: walking the use list of a live value, which nothing changes meanwhile; the operand
    // index is found by comparing each operand's use with this one.
    unsafe {
        let mut u = llc::LLVMGetFirstUse(v);
        while !u.is_null() {
            let user = llc::LLVMGetUser(u);
            let n = llc::LLVMGetNumOperands(user).max(0) as u32;
            if let Some(i) = (0..n).find(|&i| llc::LLVMGetOperandUse(user, i) == u) {
                out.push((user, i));
            }
            u = llc::LLVMGetNextUse(u);
        }
    }
    out
}
