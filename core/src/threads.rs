//! What the engine links the guest's thread functions to: wrappers that keep the registry of
//! guest threads ([`crate::reclaim`]) right.
//!
//! - `pthread_create` and `thrd_create` start the thread in a trampoline that registers it as a
//!   guest thread before the start routine runs; it stays registered until the routine returns
//!   or the thread exits (`pthread_exit` included: the registration's thread-local destructor
//!   deregisters it).
//! - `pthread_join` and `thrd_join` park the calling thread while they block: its stack is
//!   frozen, so code retired meanwhile need not wait for it to come back.
//! - `exit` first runs the hooks registered with [`crate::before_exit`] (the OSR runtime's
//!   compiler thread finishes its job there), as [`Engine::exec_main`](crate::Engine::exec_main)
//!   does before it exits: `exit` runs the C++ destructors of LLVM's static state, which a
//!   compilation still running on another thread would use after they ran.

use std::ffi::{c_int, c_void};
use std::sync::{Mutex, Once};

use crate::reclaim;

/// What a new thread runs, handed to the trampoline.
struct Start {
    routine: Routine,
    arg: *mut c_void,
    /// The engines whose code the creating thread runs.
    engines: Vec<u64>,
}

#[derive(Clone, Copy)]
enum Routine {
    Posix(extern "C" fn(*mut c_void) -> *mut c_void),
    C11(extern "C" fn(*mut c_void) -> c_int),
}

/// A POSIX start routine that may be left by a forced unwind (`pthread_exit`).
type UnwindingStart = extern "C-unwind" fn(*mut c_void) -> *mut c_void;

/// Runs a new guest thread's start routine, registered.
///
/// `C-unwind`: `pthread_exit` in the guest unwinds through this frame (which owns nothing that
/// needs dropping while the routine runs); the registration's destructor deregisters the thread.
extern "C-unwind" fn trampoline(start: *mut c_void) -> *mut c_void {
    // SAFETY: `start` is the `Box<Start>` that `create` leaked for this thread, taken once.
    let Start {
        routine,
        arg,
        engines,
    } = *unsafe { Box::from_raw(start.cast::<Start>()) };
    // Leaked while the routine runs, so that this frame owns nothing a forced unwind would
    // have to drop; the registration also ends with the thread (its thread-local destructor).
    let registered = Box::into_raw(Box::new(reclaim::GuestThread::enter_ids(engines, 0)));
    let result = match routine {
        Posix(routine) => routine(arg),
        // As glibc's own `thrd_create` does: the `int` travels as the pointer's bits.
        C11(routine) => routine(arg) as isize as *mut c_void,
    };
    // SAFETY: `registered` came from `Box::into_raw` above and is taken back once.
    drop(unsafe { Box::from_raw(registered) });
    result
}

use Routine::{C11, Posix};

/// Starts a thread with `pthread_create(thread, attr, trampoline, start)`.
///
/// # Safety
///
/// As `pthread_create`.
unsafe fn create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: Routine,
    arg: *mut c_void,
) -> c_int {
    let start = Box::into_raw(Box::new(Start {
        routine,
        arg,
        engines: reclaim::current_engines(),
    }));
    // SAFETY: `trampoline` has the C calling convention of a start routine; `C-unwind` only
    // lets a forced unwind pass through it, which is what the type-erased pointer allows too.
    let entry = unsafe {
        std::mem::transmute::<UnwindingStart, extern "C" fn(*mut c_void) -> *mut c_void>(trampoline)
    };
    // SAFETY: the caller vouches for `thread` and `attr`; `start` is live until the
    // trampoline takes it.
    let rc = unsafe { libc::pthread_create(thread, attr, entry, start.cast()) };
    if rc != 0 {
        // SAFETY: no thread started, so nothing else owns `start`.
        drop(unsafe { Box::from_raw(start) });
    }
    rc
}

/// The guest's `pthread_create`.
///
/// # Safety
///
/// As `pthread_create`.
pub(crate) unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    routine: Option<extern "C" fn(*mut c_void) -> *mut c_void>,
    arg: *mut c_void,
) -> c_int {
    let Some(routine) = routine else {
        return libc::EINVAL;
    };
    // SAFETY: as the caller vouches.
    unsafe { create(thread, attr, Posix(routine), arg) }
}

/// C11's results, as glibc defines them.
const THRD_SUCCESS: c_int = 0;
const THRD_ERROR: c_int = 2;
const THRD_NOMEM: c_int = 3;

/// The guest's `thrd_create` (`thrd_t` is a `pthread_t` in glibc).
///
/// # Safety
///
/// As `thrd_create`.
pub(crate) unsafe extern "C" fn thrd_create(
    thread: *mut libc::pthread_t,
    routine: Option<extern "C" fn(*mut c_void) -> c_int>,
    arg: *mut c_void,
) -> c_int {
    let Some(routine) = routine else {
        return THRD_ERROR;
    };
    // SAFETY: as the caller vouches; default attributes.
    match unsafe { create(thread, std::ptr::null(), C11(routine), arg) } {
        0 => THRD_SUCCESS,
        libc::ENOMEM | libc::EAGAIN => THRD_NOMEM,
        _ => THRD_ERROR,
    }
}

/// The guest's `pthread_join`: parked while it waits.
///
/// # Safety
///
/// As `pthread_join`.
#[inline(never)]
pub(crate) unsafe extern "C" fn pthread_join(
    thread: libc::pthread_t,
    result: *mut *mut c_void,
) -> c_int {
    let anchor = 0u64;
    reclaim::park(std::hint::black_box(&anchor) as *const u64 as u64);
    // SAFETY: as the caller vouches.
    let rc = unsafe { libc::pthread_join(thread, result) };
    reclaim::unpark();
    rc
}

/// The guest's `thrd_join`: parked while it waits.
///
/// # Safety
///
/// As `thrd_join`.
#[inline(never)]
pub(crate) unsafe extern "C" fn thrd_join(thread: libc::pthread_t, result: *mut c_int) -> c_int {
    let anchor = 0u64;
    reclaim::park(std::hint::black_box(&anchor) as *const u64 as u64);
    let mut bits: *mut c_void = std::ptr::null_mut();
    // SAFETY: as the caller vouches; the result comes back through `bits`.
    let rc = unsafe { libc::pthread_join(thread, &mut bits) };
    reclaim::unpark();
    if rc != 0 {
        return THRD_ERROR;
    }
    if !result.is_null() {
        // SAFETY: the caller passes a writable `int` or null.
        unsafe { *result = bits as isize as c_int };
    }
    THRD_SUCCESS
}

static BEFORE_EXIT: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

/// Registers `hook` to run when the guest exits the process (its `exit`, or `main` returning
/// under [`Engine::exec_main`](crate::Engine::exec_main)), before any `atexit` handler or static
/// destructor runs. For what must stop before the process tears down shared state, such as a
/// thread still running LLVM. Hooks run once, in registration order.
pub fn before_exit(hook: fn()) {
    BEFORE_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(hook);
}

/// Runs the [`before_exit`] hooks, once.
pub(crate) fn before_exit_hooks() {
    static RAN: Once = Once::new();
    RAN.call_once(|| {
        let hooks = BEFORE_EXIT
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for hook in hooks {
            hook();
        }
    });
}

/// The guest's `exit`.
pub(crate) extern "C" fn exit(status: c_int) -> ! {
    before_exit_hooks();
    // SAFETY: what the guest asked for.
    unsafe { libc::exit(status) }
}
