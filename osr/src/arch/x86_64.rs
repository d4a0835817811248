//! x86-64 System V: frame layout, the transfer thunk, the transfer stub and its Rust half.
//!
//! A lazy transfer patches a suspended frame's return address to a *thunk*, 24 bytes of code
//! in the engine's code arena, one per (return address, continuation):
//!
//! ```text
//!   thunk:  mov r11, <descriptor cell>      49 BB imm64
//!           jmp qword ptr [rip + 0]         FF 25 00 00 00 00
//!           dq  uppercut_osr_transfer_stub
//! ```
//!
//! While a thunk is handed out, the process's unwinder has an FDE for it whose row is the moved
//! frame's own at its original return address (the frame is exactly the old frame until its
//! callee returns), so a C++ exception thrown below the frame unwinds through the thunk as
//! through that return address ([`THUNK_UNWIND_BYTES`], `ThunkBatch::describe`).
//!
//! When the callee returns into it, the stub below saves the machine state, lets
//! [`uppercut_osr_resume`] read the frame's values (from its slots, and from the callee-saved
//! registers as the callee returned them) into the thread's transfer buffer and work
//! out the old frame's caller's state from the call-frame information, and jumps to the
//! continuation as if the old frame's caller had called it:
//!
//! ```text
//!   higher addresses
//!   ┌─────────────────────────────┐
//!   │ old frame's caller ...      │
//!   ├─────────────────────────────┤ <- CFA = old rbp + 16
//!   │ return address into caller  │    CFA - 8    <- rsp when the continuation starts
//!   │ caller's rbp                │    CFA - 16   <- old rbp
//!   │ callee-saved registers      │    CFA - 24 … (the old frame's prologue saved them)
//!   │ old frame's spill slots     │    <- deopt values: [rsp + off] or [rbp + off]
//!   ├─────────────────────────────┤ <- entry rsp: the old frame's rsp at its return address
//!   │ alignment (0 or 8 bytes)    │
//!   │ save area (128 bytes)       │ <- rsi for resume; the continuation overwrites all of
//!   └─────────────────────────────┘    this once it runs: nothing below CFA - 8 is live
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;

use crate::transfer::{self, DescriptorCell};

pub(crate) use uppercut_core::frames::layout::{
    CALLEE_SAVED as RESTORED, CFA_FROM_FP_OFFSET, FP_ALIGN, RA_FROM_CFA, SAVED_FP_FROM_CFA,
};

/// Largest distance between a frame's stack pointer and its frame pointer the stub accepts:
/// anything larger means the frame is not what the descriptor describes.
const MAX_FRAME_BYTES: u64 = 1 << 28;

// ---------------------------------------------------------------------------------------------
// Thunks
// ---------------------------------------------------------------------------------------------

/// Bytes per thunk (24 of code and address, padded with `int3` to keep thunks 32-aligned).
pub(crate) const THUNK_SIZE: usize = 32;
const THUNK_CODE: usize = 16;
/// The bytes a thunk's unwind information covers: the byte before it (where an unwinder looks
/// up a return address) and its code.
pub(crate) const THUNK_UNWIND_BYTES: u64 = 1 + THUNK_CODE as u64;

/// The bytes of a thunk that enters the stub with `r11 = cell`.
pub(crate) fn encode_thunk(cell: u64, stub: u64) -> [u8; THUNK_SIZE] {
    let mut out = [0xCC; THUNK_SIZE];
    out[0..2].copy_from_slice(&[0x49, 0xBB]); // mov r11, imm64
    out[2..10].copy_from_slice(&cell.to_le_bytes());
    out[10..16].copy_from_slice(&[0xFF, 0x25, 0, 0, 0, 0]); // jmp qword ptr [rip + 0]
    out[16..24].copy_from_slice(&stub.to_le_bytes());
    out
}

/// Decodes a thunk at `ip` with iced-x86: `Some(cell)` when it is exactly `mov r11, cell;
/// jmp qword ptr [rip + 0]` followed by the stub's address.
pub(crate) fn decode_thunk(bytes: &[u8], ip: u64, stub: u64) -> Option<u64> {
    use iced_x86::{Code, Decoder, DecoderOptions, Register};
    let code = bytes.get(..THUNK_CODE)?;
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mov = decoder.decode();
    let jmp = decoder.decode();
    let target = u64::from_le_bytes(bytes.get(THUNK_CODE..THUNK_CODE + 8)?.try_into().ok()?);
    let ok = mov.code() == Code::Mov_r64_imm64
        && mov.op0_register() == Register::R11
        && jmp.code() == Code::Jmp_rm64
        && jmp.is_ip_rel_memory_operand()
        && jmp.ip_rel_memory_address() == ip + THUNK_CODE as u64
        && decoder.position() == THUNK_CODE
        && target == stub;
    ok.then(|| mov.immediate64())
}

// ---------------------------------------------------------------------------------------------
// The stub
// ---------------------------------------------------------------------------------------------

/// The stub's save area: what the stub stores on entry, and what resume hands back.
/// Offsets are fixed by the assembly below.
#[repr(C, align(16))]
#[derive(Debug, Default)]
pub(crate) struct SaveArea {
    /// `rax` on entry: the call's integer result (offset 0).
    rax: u64,
    /// `rdx` on entry (offset 8).
    rdx: u64,
    /// `rbx, r12, r13, r14, r15`: on entry, then as the continuation gets them (offset 16).
    callee_saved: [u64; 5],
    /// `rbp`: on entry, then as the continuation gets it (offset 56).
    rbp: u64,
    /// `rsp` on entry: the old frame's stack pointer at its return address (offset 64).
    entry_rsp: u64,
    /// `rsp` for the continuation: the old frame's CFA - 8 (offset 72).
    new_rsp: u64,
    /// `rdi` for the continuation: the transfer buffer (offset 80).
    rdi: u64,
    /// Where the stub goes when resume returns 0: the original return address (offset 88).
    resume_at: u64,
    /// `xmm0` on entry: the call's float result (offset 96).
    xmm0: [u64; 2],
    /// `xmm1` on entry (offset 112).
    xmm1: [u64; 2],
}

const _: () = assert!(std::mem::size_of::<SaveArea>() == 128);
const _: () = assert!(std::mem::offset_of!(SaveArea, callee_saved) == 16);
const _: () = assert!(std::mem::offset_of!(SaveArea, rbp) == 56);
const _: () = assert!(std::mem::offset_of!(SaveArea, entry_rsp) == 64);
const _: () = assert!(std::mem::offset_of!(SaveArea, new_rsp) == 72);
const _: () = assert!(std::mem::offset_of!(SaveArea, rdi) == 80);
const _: () = assert!(std::mem::offset_of!(SaveArea, resume_at) == 88);
const _: () = assert!(std::mem::offset_of!(SaveArea, xmm0) == 96);
const _: () = assert!(std::mem::offset_of!(SaveArea, xmm1) == 112);

// Entry (from a thunk, after the callee's `ret` popped the patched return address):
//   rsp                = the old frame's rsp at its return address
//   rax, rdx           = the call's integer result; xmm0, xmm1 = its float result
//   r11                = the descriptor cell
//   rbx, rbp, r12-r15  = the old frame's values (the callee restored them)
//   rcx, rsi, rdi, r8-r10, xmm2-15 = dead (caller-saved: the callee could clobber them)
//
// Exit to the continuation (resume returned its address):
//   rsp                = old CFA - 8, where the return address into the old frame's caller is:
//                        the continuation looks called from there, and returns there
//   rdi                = the transfer buffer (the continuation's `ptr %buf`)
//   rbx, rbp, r12-r15  = the old frame's caller's values, from the old frame's save slots
//   everything else    = dead (the continuation starts like any called function)
//
// Exit back to the old code (resume returned 0: a failure it detected):
//   rsp, rax, rdx, xmm0, xmm1, rbx, rbp, r12-r15 = as on entry
//   jmp to the original return address: the frame goes on in its old code
std::arch::global_asm!(
    ".pushsection .text.uppercut_osr_transfer,\"ax\",@progbits",
    ".p2align 4",
    ".globl uppercut_osr_transfer_stub",
    ".hidden uppercut_osr_transfer_stub",
    ".type uppercut_osr_transfer_stub,@function",
    "uppercut_osr_transfer_stub:",
    "mov r10, rsp",
    "and rsp, -16",
    "sub rsp, 128",
    "mov [rsp], rax",
    "mov [rsp + 8], rdx",
    "mov [rsp + 16], rbx",
    "mov [rsp + 24], r12",
    "mov [rsp + 32], r13",
    "mov [rsp + 40], r14",
    "mov [rsp + 48], r15",
    "mov [rsp + 56], rbp",
    "mov [rsp + 64], r10",
    "movdqa [rsp + 96], xmm0",
    "movdqa [rsp + 112], xmm1",
    "mov rdi, r11",
    "mov rsi, rsp",
    "call {resume}",
    "test rax, rax",
    "jz 2f",
    "mov rbx, [rsp + 16]",
    "mov r12, [rsp + 24]",
    "mov r13, [rsp + 32]",
    "mov r14, [rsp + 40]",
    "mov r15, [rsp + 48]",
    "mov rbp, [rsp + 56]",
    "mov rdi, [rsp + 80]",
    "mov rsp, [rsp + 72]",
    "jmp rax",
    "2:",
    "mov rax, [rsp]",
    "mov rdx, [rsp + 8]",
    "mov rbx, [rsp + 16]",
    "mov r12, [rsp + 24]",
    "mov r13, [rsp + 32]",
    "mov r14, [rsp + 40]",
    "mov r15, [rsp + 48]",
    "mov rbp, [rsp + 56]",
    "movdqa xmm0, [rsp + 96]",
    "movdqa xmm1, [rsp + 112]",
    "mov r11, [rsp + 88]",
    "mov rsp, [rsp + 64]",
    "jmp r11",
    ".size uppercut_osr_transfer_stub, . - uppercut_osr_transfer_stub",
    ".popsection",
    resume = sym uppercut_osr_resume,
);

unsafe extern "C" {
    /// Entered from thunks only; see the comment above the assembly.
    fn uppercut_osr_transfer_stub();
}

/// The stub's address, which every thunk jumps to.
pub(crate) fn stub_address() -> u64 {
    uppercut_osr_transfer_stub as *const () as u64
}

/// The stub's Rust half: fills the transfer buffer and the save area, and returns the
/// continuation's address, or 0 to send the frame back to its old code.
///
/// No panic unwinds out of it (a panic means 0); a thunk whose cell holds no descriptor cannot
/// happen (thunks are handed out only with their descriptor set) and aborts the process, since
/// there is no return address to go back to.
extern "C" fn uppercut_osr_resume(cell: *const DescriptorCell, save: *mut SaveArea) -> u64 {
    // SAFETY: the stub passes the cell its thunk was made for (owned by the engine's transfers,
    // which live as long as the engine; the cell is emptied only once no thread has passed a
    // safepoint holding the thunk, and this thread has not since it returned into it) and its
    // own save area, 16-aligned on its stack and not otherwise accessed during this call.
    let (cell, save) = unsafe { (&*cell, &mut *save) };
    let Some(descriptor) = cell.get() else {
        std::process::abort();
    };
    save.resume_at = descriptor.return_address;
    // SAFETY: the save area holds the state of a frame suspended at the descriptor's return
    // address, whose layout the descriptor describes (checked by `prepare` and `patch`).
    match catch_unwind(AssertUnwindSafe(|| unsafe { resume(descriptor, save) })) {
        Ok(continuation) => continuation,
        Err(payload) => {
            // Dropping the payload could panic again; a panic here is a bug, leak it.
            std::mem::forget(payload);
            0
        }
    }
}

/// # Safety
///
/// `save` must hold the registers of a frame suspended at `descriptor.return_address` as the
/// stub stored them on entry.
#[inline(always)]
unsafe fn resume(descriptor: &transfer::Descriptor, save: &mut SaveArea) -> u64 {
    let sp = save.entry_rsp;
    let fp = save.rbp;
    if fp % FP_ALIGN != 0 || fp < sp || fp - sp > MAX_FRAME_BYTES {
        return fall_back(descriptor, fp);
    }
    let cfa = fp + CFA_FROM_FP_OFFSET;
    // A descriptor no eager transfer ever used has no records to look for.
    let eager = if descriptor.eager.load(Ordering::Relaxed) {
        transfer::capture_eager(descriptor, fp, save.rax, save.xmm0[0])
    } else {
        None
    };
    let buffer = if let Some((buffer, saves, caller_fp)) = eager {
        // An eager transfer read the frame's state at the safepoint: it is committed (a
        // cancelled descriptor does not send it back, its old slots may be gone).
        for ((value, &offset), saved) in save
            .callee_saved
            .iter_mut()
            .zip(&descriptor.saves.0)
            .zip(saves)
        {
            if offset != 0 {
                *value = saved;
            }
        }
        save.rbp = caller_fp;
        buffer
    } else {
        if !descriptor.enabled.load(Ordering::Relaxed) {
            return fall_back(descriptor, fp);
        }
        // SAFETY: the frame is live and suspended at the descriptor's return address, so its
        // values are where the descriptor says relative to `sp` and `fp`.
        let captured = unsafe {
            transfer::capture(
                descriptor,
                sp,
                fp,
                &save.callee_saved,
                save.rax,
                save.xmm0[0],
            )
        };
        let Some(buffer) = captured else {
            return fall_back(descriptor, fp);
        };
        for (value, &offset) in save.callee_saved.iter_mut().zip(&descriptor.saves.0) {
            if offset != 0 {
                // SAFETY: the CFI says the frame's prologue saved this register at CFA +
                // offset, inside the live frame.
                *value = unsafe { *(cfa.wrapping_add_signed(i64::from(offset)) as *const u64) };
            }
        }
        // SAFETY: with a frame pointer, the caller's rbp is at CFA - 16 (checked against the
        // CFI).
        save.rbp = unsafe { *(cfa.wrapping_add_signed(SAVED_FP_FROM_CFA) as *const u64) };
        buffer
    };
    save.new_rsp = cfa.wrapping_add_signed(RA_FROM_CFA);
    save.rdi = buffer as u64;
    transfer::count_transfer(&descriptor.counters);
    descriptor.continuation
}

/// Sends the frame back to its old code (the stub jumps to the original return address).
fn fall_back(descriptor: &transfer::Descriptor, fp: u64) -> u64 {
    crate::eager::forget(fp);
    descriptor
        .counters
        .fell_back
        .fetch_add(1, Ordering::Relaxed);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thunk_decodes_as_written() {
        let ip = 0x7000_1000;
        let cell = 0x5555_1234_5678;
        let stub = stub_address();
        let bytes = encode_thunk(cell, stub);
        assert_eq!(decode_thunk(&bytes, ip, stub), Some(cell));
        assert_eq!(decode_thunk(&bytes, ip, stub + 1), None);
        let mut broken = bytes;
        broken[11] = 0x15; // call, not jmp
        assert_eq!(decode_thunk(&broken, ip, stub), None);
    }
}
