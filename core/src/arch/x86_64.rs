//! x86-64 System V primitives.
//!
//! ```text
//! guest_call(call):                      hypercall trampoline (both entries):
//!   host frame                             guest frame ... call PerformCustomCallback
//!   ├ ret addr                             ├ guest return address   <- [rbp+8]
//!   ├ rbp, rbx, r12-r15 (callee-saved)     ├ guest rbp              <- [rbp]   (rbp = trampoline frame)
//!   ├ call ptr            <- call.saved_rsp├ (rdi, rsi kept) rdx = rbp: the dispatcher reads the
//!   └ guest frames ...                     └ guest's rsp (rbp+16), rbp and return address from it
//!
//! guest_abort(call): rsp = call.saved_rsp, pop the call pointer, return 1 from guest_call with
//! the callee-saved registers it saved: every guest frame in between is dropped without unwinding.
//! ```

use std::ffi::{c_char, c_void};

use crate::hypercall::{dispatch_dynamic, dispatch_fast};

/// The argument block of `guest_call`. Offsets are fixed by the assembly below.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct GuestCall {
    /// The guest function to call (offset 0).
    pub(crate) target: u64,
    /// Its integer arguments, in rdi, rsi, rdx, rcx, r8, r9 (offsets 8 to 48).
    pub(crate) args: [u64; 6],
    /// rax after the call returned (offset 56).
    pub(crate) result: u64,
    /// The host stack pointer to abort to (offset 64).
    pub(crate) saved_rsp: u64,
}

const _: () = assert!(std::mem::offset_of!(GuestCall, args) == 8);
const _: () = assert!(std::mem::offset_of!(GuestCall, result) == 56);
const _: () = assert!(std::mem::offset_of!(GuestCall, saved_rsp) == 64);

/// Bytes a hypercall trampoline keeps below its frame pointer: the guest's callee-saved
/// registers.
pub(crate) const TRAMPOLINE_SAVES: u64 = 48;

/// The frame that a hypercall trampoline pushed: `rbp` of the trampoline.
///
/// `[frame]` holds the guest's rbp, `[frame+8]` the return address into the guest, and the
/// guest's stack pointer after the return is `frame + 16`.
pub(crate) type TrampolineFrame = *const u64;

std::arch::global_asm!(
    ".pushsection .text.uppercut_primitives,\"ax\",@progbits",
    ".p2align 4",
    ".globl uppercut_guest_call",
    ".hidden uppercut_guest_call",
    ".type uppercut_guest_call,@function",
    "uppercut_guest_call:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov [rdi + 64], rsp",
    "mov r11, rdi",
    "mov rdi, [r11 + 8]",
    "mov rsi, [r11 + 16]",
    "mov rdx, [r11 + 24]",
    "mov rcx, [r11 + 32]",
    "mov r8, [r11 + 40]",
    "mov r9, [r11 + 48]",
    // The guest starts with no host values in its callee-saved registers: a conservative
    // scan of its stack (`crate::reclaim`) must not mistake them for references to code.
    "xor ebx, ebx",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "xor eax, eax",
    "call qword ptr [r11]",
    "pop rdi",
    "mov [rdi + 56], rax",
    "xor eax, eax",
    "2:",
    "lea rsp, [rbp - 40]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size uppercut_guest_call, . - uppercut_guest_call",
    "",
    ".p2align 4",
    ".globl uppercut_guest_abort",
    ".hidden uppercut_guest_abort",
    ".type uppercut_guest_abort,@function",
    "uppercut_guest_abort:",
    "mov rsp, [rdi + 64]",
    "lea rbp, [rsp + 48]",
    "pop rdi",
    "mov eax, 1",
    "jmp 2b",
    ".size uppercut_guest_abort, . - uppercut_guest_abort",
    "",
    // Both hypercall entries: a frame for the walker, the frame pointer as the dispatcher's
    // third argument (rdi and rsi pass through), and back to the guest.
    ".macro uppercut_trampoline name, dispatcher",
    ".p2align 4",
    ".globl \\name",
    ".hidden \\name",
    ".type \\name,@function",
    "\\name:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    // The guest's callee-saved registers, where a scan of the stack finds them
    // (`crate::reclaim`): 48 bytes keep the stack 16-aligned. The dispatcher preserves them.
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rbx",
    "mov rdx, rbp",
    "call \\dispatcher",
    "lea rsp, [rbp]",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "ret",
    ".cfi_endproc",
    ".size \\name, . - \\name",
    ".endm",
    "uppercut_trampoline uppercut_hypercall_dynamic, {dynamic}",
    "uppercut_trampoline uppercut_hypercall_fast, {fast}",
    ".purgem uppercut_trampoline",
    ".popsection",
    dynamic = sym dispatch_dynamic,
    fast = sym dispatch_fast,
);

// The lazy-compilation resolver. A function's stub (`crate::lazy`) loads its record into r11
// and jumps here: every argument register is kept (rdi..r9, rax for a variadic call's vector
// count, r10, xmm0-7; stack arguments are untouched above the return address), the record's
// function is compiled, and the call goes on into its code as if it had called it directly.
std::arch::global_asm!(
    ".pushsection .text.uppercut_primitives,\"ax\",@progbits",
    ".p2align 4",
    ".globl uppercut_lazy_resolver",
    ".hidden uppercut_lazy_resolver",
    ".type uppercut_lazy_resolver,@function",
    "uppercut_lazy_resolver:",
    ".cfi_startproc",
    "push rbp",
    ".cfi_def_cfa_offset 16",
    ".cfi_offset rbp, -16",
    "mov rbp, rsp",
    ".cfi_def_cfa_register rbp",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push r8",
    "push r9",
    "push rax",
    "push r10",
    // 64 bytes of registers and 128 of vectors keep rsp 16-aligned for the call.
    "sub rsp, 128",
    "movdqu [rsp], xmm0",
    "movdqu [rsp + 16], xmm1",
    "movdqu [rsp + 32], xmm2",
    "movdqu [rsp + 48], xmm3",
    "movdqu [rsp + 64], xmm4",
    "movdqu [rsp + 80], xmm5",
    "movdqu [rsp + 96], xmm6",
    "movdqu [rsp + 112], xmm7",
    "mov rdi, r11",
    "call {compile}",
    "mov r11, rax",
    "movdqu xmm0, [rsp]",
    "movdqu xmm1, [rsp + 16]",
    "movdqu xmm2, [rsp + 32]",
    "movdqu xmm3, [rsp + 48]",
    "movdqu xmm4, [rsp + 64]",
    "movdqu xmm5, [rsp + 80]",
    "movdqu xmm6, [rsp + 96]",
    "movdqu xmm7, [rsp + 112]",
    "add rsp, 128",
    "pop r10",
    "pop rax",
    "pop r9",
    "pop r8",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "pop rbp",
    ".cfi_def_cfa rsp, 8",
    "jmp r11",
    ".cfi_endproc",
    ".size uppercut_lazy_resolver, . - uppercut_lazy_resolver",
    ".popsection",
    compile = sym crate::lazy::compile_on_first_call,
);

/// Bytes of one lazy-compilation stub ([`lazy_stub`]).
pub(crate) const LAZY_STUB_BYTES: usize = 32;

/// A function's stub before its first call: the patchable 5-byte no-op (what a relink turns
/// into `jmp <code>`), `movabs r11, record`, then `jmp [rip]` to the resolver through the
/// absolute address that follows, padded with `int3`.
pub(crate) fn lazy_stub(record: u64) -> [u8; LAZY_STUB_BYTES] {
    let mut out = [0xCC; LAZY_STUB_BYTES];
    out[..5].copy_from_slice(&NOP5);
    out[5..7].copy_from_slice(&[0x49, 0xBB]);
    out[7..15].copy_from_slice(&record.to_le_bytes());
    out[15..21].copy_from_slice(&[0xFF, 0x25, 0, 0, 0, 0]);
    out[21..29].copy_from_slice(&(uppercut_lazy_resolver as *const () as u64).to_le_bytes());
    out
}

/// The 5-byte no-op LLVM places at a patchable function entry (`nopl 0x0(%rax,%rax,1)`).
pub(crate) const NOP5: [u8; 5] = [0x0F, 0x1F, 0x44, 0x00, 0x00];

unsafe extern "C" {
    /// The lazy-compilation resolver the stubs jump to (never called from Rust).
    fn uppercut_lazy_resolver();
    /// Calls `call.target` with `call.args`; returns 0 when it returned (result in
    /// `call.result`) and 1 when a hypercall aborted it with [`guest_abort`].
    fn uppercut_guest_call(call: *mut GuestCall) -> u64;
    /// Returns to the `guest_call` that owns `call`, dropping every frame above it.
    fn uppercut_guest_abort(call: *mut GuestCall) -> !;
    fn uppercut_hypercall_dynamic(name: *const c_char, args: *mut c_void) -> *mut c_void;
    fn uppercut_hypercall_fast(slot: *const c_void, args: *mut c_void) -> *mut c_void;
}

/// Calls guest code; `false` when a hypercall aborted it.
///
/// # Safety
///
/// `call.target` must be a function that takes up to six integer arguments, follows the C ABI
/// and may be called with `call.args`.
pub(crate) unsafe fn guest_call(call: &mut GuestCall) -> bool {
    // SAFETY: the caller vouches for the target; the primitive saves and restores every
    // callee-saved register and returns normally in both outcomes.
    unsafe { uppercut_guest_call(call) == 0 }
}

/// Abandons the guest frames above `call`'s `guest_call` and makes it return `false`.
///
/// # Safety
///
/// `call` must belong to a `guest_call` still running on this thread, and every frame between
/// here and it must be guest code or frames that own nothing to drop (the dispatcher drops its
/// values before it aborts).
pub(crate) unsafe fn guest_abort(call: *mut GuestCall) -> ! {
    // SAFETY: as the caller vouches.
    unsafe { uppercut_guest_abort(call) }
}

/// Address of the trampoline bound to `PerformCustomCallback`.
pub(crate) fn hypercall_dynamic_entry() -> u64 {
    uppercut_hypercall_dynamic as *const () as u64
}

/// Address of the trampoline that constant-name hypercalls call.
pub(crate) fn hypercall_fast_entry() -> u64 {
    uppercut_hypercall_fast as *const () as u64
}

/// Reads the guest state a trampoline frame records: `(rsp, rbp, return address)`.
///
/// # Safety
///
/// `frame` must be the frame pointer a trampoline passed to the dispatcher, while the
/// trampoline is still running.
pub(crate) unsafe fn exit_state(frame: TrampolineFrame) -> (u64, u64, u64) {
    // SAFETY: the trampoline pushed rbp at `frame` and the call pushed the return address above.
    unsafe { (frame as u64 + 16, *frame, *frame.add(1)) }
}

/// Where a hypercall trampoline whose frame pointer is `frame` keeps the guest's `rbx` and
/// `r12`-`r15` (in [`CALLEE_SAVED`](crate::frames::layout::CALLEE_SAVED) order): pushed right
/// below the guest's saved `rbp`, in that order.
pub(crate) fn trampoline_saves(frame: u64) -> [u64; 5] {
    [8, 16, 24, 32, 40].map(|below| frame.wrapping_sub(below))
}

/// The callee-saved registers (`rbx`, `rbp`, `r12`-`r15`) as they are at the call: what a
/// conservative scan of a thread adds to its stack.
#[inline(always)]
pub(crate) fn callee_saved_registers() -> [u64; 6] {
    let (rbx, rbp, r12, r13, r14, r15): (u64, u64, u64, u64, u64, u64);
    // SAFETY: only copies registers into outputs; touches no memory and no flags.
    unsafe {
        std::arch::asm!(
            "mov {0}, rbx",
            "mov {1}, rbp",
            "mov {2}, r12",
            "mov {3}, r13",
            "mov {4}, r14",
            "mov {5}, r15",
            out(reg) rbx,
            out(reg) rbp,
            out(reg) r12,
            out(reg) r13,
            out(reg) r14,
            out(reg) r15,
            options(nomem, nostack, preserves_flags),
        );
    }
    [rbx, rbp, r12, r13, r14, r15]
}

/// Encodes `jmp rel32` from `from` to `to`, or `None` when the distance does not fit.
pub(crate) fn jmp_rel32(from: u64, to: u64) -> Option<[u8; 5]> {
    let rel = (to as i64).wrapping_sub(from as i64 + 5);
    let rel = i32::try_from(rel).ok()?;
    let mut out = [0xE9, 0, 0, 0, 0];
    out[1..].copy_from_slice(&rel.to_le_bytes());
    Some(out)
}
