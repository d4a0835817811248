//! Hypercalls: named calls from guest code into host callbacks.
//!
//! The guest calls `void *PerformCustomCallback(const char *name, void *args)`. When `name` is
//! a constant string in the IR, the compiler rewrote the call at link time to pass the
//! callback's [`Slot`] instead, so the call costs a trampoline, one atomic load and the handler;
//! a dynamic name is looked up by name. Either way the trampoline records where the guest was
//! (rsp, rbp, return address) for the host to read ([`Hypercall::guest_state`]).
//!
//! A handler that fails or panics, or a name nobody registered, stops the guest: the dispatcher
//! records the error and returns straight to the host frame that entered the guest
//! ([`crate::arch::guest_abort`]), without unwinding through JIT frames.
//!
//! Threads that the guest starts itself (`pthread_create`) may make hypercalls too: a
//! constant-name call finds its engine through its slot, a dynamic name reaches the engine that
//! runs the program's `main`. Such a thread has no host frame to return to, so a failing
//! hypercall there prints the error and exits the process with status 2.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::arch::{self, GuestCall, TrampolineFrame};
use crate::engine::{Engine, EngineInner};
use crate::error::{Error, Result};

/// Why a handler refuses a hypercall: the guest is stopped and the engine reports this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackError(pub String);

impl std::fmt::Display for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CallbackError {}

impl From<String> for CallbackError {
    fn from(s: String) -> Self {
        CallbackError(s)
    }
}

impl From<&str> for CallbackError {
    fn from(s: &str) -> Self {
        CallbackError(s.to_owned())
    }
}

impl From<Error> for CallbackError {
    fn from(e: Error) -> Self {
        CallbackError(e.to_string())
    }
}

/// A host callback. Closures `Fn(&mut Hypercall<'_>) -> Result<*mut c_void, CallbackError>`
/// implement it.
pub trait Callback: Send + Sync + 'static {
    /// Handles one hypercall; the returned pointer is what `PerformCustomCallback` returns.
    fn call(&self, hypercall: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError>;
}

impl<F> Callback for F
where
    F: Fn(&mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> + Send + Sync + 'static,
{
    fn call(&self, hypercall: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
        self(hypercall)
    }
}

/// A C handler as plugins register it: `void *(*fn)(void *args, void *ctx)`.
pub type CHandler = unsafe extern "C" fn(args: *mut c_void, ctx: *mut c_void) -> *mut c_void;

struct CCallback {
    handler: CHandler,
    ctx: usize,
}

impl Callback for CCallback {
    fn call(&self, hypercall: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
        // SAFETY: the plugin that registered the handler vouched for it and its context when it
        // called `registerCustomCallback`; the arguments are the guest's own.
        Ok(unsafe { (self.handler)(hypercall.args, self.ctx as *mut c_void) })
    }
}

/// The guest's state when it made a hypercall, as the trampoline recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestState {
    /// The guest's stack pointer after the hypercall returns (its frame's `rsp`).
    pub rsp: u64,
    /// The guest's frame pointer.
    pub rbp: u64,
    /// Where the hypercall returns to in the guest.
    pub return_address: u64,
}

/// One hypercall, as its handler sees it.
pub struct Hypercall<'a> {
    engine: &'a Arc<EngineInner>,
    name: &'a str,
    args: *mut c_void,
    state: GuestState,
}

impl Hypercall<'_> {
    /// The callback's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The guest's argument pointer.
    pub fn args(&self) -> *mut c_void {
        self.args
    }

    /// The engine that runs the guest.
    pub fn engine(&self) -> Engine {
        Engine::from_inner(Arc::clone(self.engine))
    }

    /// Where the guest was when it made this hypercall.
    pub fn guest_state(&self) -> GuestState {
        self.state
    }
}

impl std::fmt::Debug for Hypercall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hypercall")
            .field("name", &self.name)
            .field("args", &self.args)
            .field("state", &self.state)
            .finish()
    }
}

type Handler = Box<dyn Callback>;

/// A callback's place in an engine: its address is what constant-name hypercalls pass.
pub(crate) struct Slot {
    name: String,
    /// The engine, for hypercalls from threads the engine did not enter.
    engine: Weak<EngineInner>,
    /// The current handler (a leaked `Box<Handler>`), or null while none is registered.
    handler: AtomicPtr<Handler>,
}

/// An engine's callbacks, by name.
pub(crate) struct Callbacks {
    engine: Weak<EngineInner>,
    slots: Mutex<HashMap<String, Box<Slot>>>,
    /// Handlers replaced by a later registration: kept until the engine goes, since a
    /// hypercall may still be running them. The outer box is what a running hypercall points
    /// into, so it must stay where it is.
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<Handler>>>,
}

impl Callbacks {
    /// The callbacks of the engine `engine` will point to.
    pub(crate) fn new(engine: Weak<EngineInner>) -> Callbacks {
        Callbacks {
            engine,
            slots: Mutex::default(),
            retired: Mutex::default(),
        }
    }

    /// Registers (or replaces) the handler of `name`.
    pub(crate) fn register(&self, name: &str, callback: Handler) -> Result<()> {
        if name.is_empty() || name.contains('\0') {
            return Err(Error::InvalidCallbackName(name.to_owned()));
        }
        let new = Box::into_raw(Box::new(callback));
        let slot = self.slot(name);
        // SAFETY: `slot` points into a box owned by `self.slots`, which never removes entries.
        let old = unsafe { &*slot }.handler.swap(new, Ordering::AcqRel);
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` in this function.
            let old = unsafe { Box::from_raw(old) };
            self.retired
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(old);
        }
        Ok(())
    }

    /// The slot of `name`, made (empty) when new. Its address is stable for the engine's life.
    pub(crate) fn slot(&self, name: &str) -> *const Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.entry(name.to_owned()).or_insert_with(|| {
            Box::new(Slot {
                name: name.to_owned(),
                engine: self.engine.clone(),
                handler: AtomicPtr::new(std::ptr::null_mut()),
            })
        });
        &**slot as *const Slot
    }

    /// Whether `name` has a handler.
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .get(name)
            .is_some_and(|s| !s.handler.load(Ordering::Acquire).is_null())
    }

    /// Names with a handler, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = slots
            .values()
            .filter(|s| !s.handler.load(Ordering::Acquire).is_null())
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        let slots = self.slots.get_mut().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values() {
            let h = slot.handler.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !h.is_null() {
                // SAFETY: `h` came from `Box::into_raw` in `register`; no guest runs any more.
                drop(unsafe { Box::from_raw(h) });
            }
        }
    }
}

/// Callbacks that plugins registered through the C ABI, for every engine in the process.
static PLUGIN_CALLBACKS: Mutex<Vec<(String, usize, usize)>> = Mutex::new(Vec::new());

/// The design note's C ABI for plugins: registers `handler` under `name` for every engine of
/// this process (those made later, and those running, at their next lookup of `name`).
/// Returns 0 on success, -1 when `name` is null, empty or not UTF-8, or `handler` is null.
///
/// # Safety
///
/// `name` must be null or a NUL-terminated string; `handler` must be safe to call with any
/// guest's argument pointer and `ctx` from any thread while the process lives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn registerCustomCallback(
    name: *const c_char,
    handler: Option<CHandler>,
    ctx: *mut c_void,
) -> i32 {
    let Some(handler) = handler else { return -1 };
    if name.is_null() {
        return -1;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let Ok(name) = unsafe { CStr::from_ptr(name) }.to_str() else {
        return -1;
    };
    if name.is_empty() {
        return -1;
    }
    let mut plugins = PLUGIN_CALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    plugins.retain(|(n, _, _)| n != name);
    plugins.push((name.to_owned(), handler as usize, ctx as usize));
    0
}

/// Installs the plugin callbacks registered so far into an engine's table (engine callbacks of
/// the same name win).
pub(crate) fn adopt_plugin_callback(callbacks: &Callbacks, name: &str) -> bool {
    let plugins = PLUGIN_CALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(&(_, handler, ctx)) = plugins.iter().find(|(n, _, _)| n == name) else {
        return false;
    };
    // SAFETY: `handler` was stored from a `CHandler` in `registerCustomCallback`.
    let handler: CHandler = unsafe { std::mem::transmute::<usize, CHandler>(handler) };
    callbacks
        .register(name, Box::new(CCallback { handler, ctx }))
        .is_ok()
}

/// The address of [`registerCustomCallback`], which guest code may call too.
pub(crate) fn register_entry() -> u64 {
    registerCustomCallback as *const () as u64
}

/// What a thread is running: the innermost guest call and the engine it belongs to.
#[derive(Clone, Copy)]
struct Running {
    engine: *const Arc<EngineInner>,
    call: *mut GuestCall,
}

thread_local! {
    static RUNNING: Cell<Running> = const {
        Cell::new(Running { engine: std::ptr::null(), call: std::ptr::null_mut() })
    };
    static LAST_EXIT: Cell<u64> = const { Cell::new(0) };
    static PENDING: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// The trampoline frame of the innermost hypercall running on this thread (0 when none).
pub(crate) fn innermost_exit_frame() -> u64 {
    LAST_EXIT.with(Cell::get)
}

/// Runs guest code at `target` with up to six integer arguments on this thread; a hypercall
/// that fails stops it and its error comes back here.
///
/// # Safety
///
/// `target` must be a guest function of `engine` taking `args.len()` integer or pointer
/// arguments (a C ABI function; extra arguments are ignored by it).
pub(crate) unsafe fn call_guest(
    engine: &Arc<EngineInner>,
    target: u64,
    args: &[u64],
) -> Result<u64> {
    if args.len() > 6 {
        return Err(Error::TooManyArguments(args.len()));
    }
    let mut call = GuestCall {
        target,
        ..GuestCall::default()
    };
    call.args[..args.len()].copy_from_slice(args);
    let outer = RUNNING.with(|r| {
        r.replace(Running {
            engine,
            call: &mut call,
        })
    });
    let outer_exit = LAST_EXIT.with(Cell::get);
    // The thread runs guest code until the call returns: retired code waits for it.
    let bound = &call as *const GuestCall as u64;
    let _registered = crate::reclaim::GuestThread::enter_ids(vec![engine.id], bound);
    // SAFETY: the caller vouches for the target and its arguments.
    let returned = unsafe { arch::guest_call(&mut call) };
    RUNNING.with(|r| r.set(outer));
    LAST_EXIT.with(|l| l.set(outer_exit));
    if returned {
        Ok(call.result)
    } else {
        Err(PENDING
            .with(|p| p.borrow_mut().take())
            .unwrap_or(Error::CallbackFailed {
                name: "?".to_owned(),
                message: "the guest was stopped without a reason".to_owned(),
            }))
    }
}

/// Entry from the fast trampoline: `slot` was fixed at link time.
pub(crate) extern "C" fn dispatch_fast(
    slot: *const Slot,
    args: *mut c_void,
    frame: TrampolineFrame,
) -> *mut c_void {
    let running = RUNNING.with(Cell::get);
    // SAFETY: constant-name hypercalls pass a slot address that the engine's `Callbacks` owns
    // for the engine's life, and the guest runs only while its engine lives.
    let slot = unsafe { &*slot };
    if running.engine.is_null() {
        // A thread the guest started itself: the slot knows its engine.
        let Some(engine) = slot.engine.upgrade() else {
            fail(running, Error::UnknownCallback(slot.name.clone()));
        };
        return dispatch(&engine, running, slot, args, frame);
    }
    // SAFETY: `running.engine` points at the engine handle of the `call_guest` frame that is
    // still below us on this thread's stack.
    dispatch(unsafe { &*running.engine }, running, slot, args, frame)
}

/// The engine that runs the program (`main`), for hypercalls by dynamic name from threads the
/// guest started itself.
static PROGRAM_ENGINE: Mutex<Weak<EngineInner>> = Mutex::new(Weak::new());

/// Makes `engine` the one that hypercalls from guest-started threads reach.
pub(crate) fn set_program_engine(engine: &Arc<EngineInner>) {
    *PROGRAM_ENGINE.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(engine);
}

/// Entry from `PerformCustomCallback`: `name` is looked up now.
pub(crate) extern "C" fn dispatch_dynamic(
    name: *const c_char,
    args: *mut c_void,
    frame: TrampolineFrame,
) -> *mut c_void {
    let running = RUNNING.with(Cell::get);
    let fallback;
    let engine = if running.engine.is_null() {
        fallback = PROGRAM_ENGINE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        match &fallback {
            Some(engine) => engine,
            None => fail(
                running,
                Error::CallbackFailed {
                    name: "?".to_owned(),
                    message: "hypercall from a thread of no running program".to_owned(),
                },
            ),
        }
    } else {
        // SAFETY: `running.engine` points at the engine handle of the `call_guest` frame that
        // is still below us on this thread's stack.
        unsafe { &*running.engine }
    };
    let name = if name.is_null() {
        None
    } else {
        // SAFETY: the guest passes a NUL-terminated string, as the C ABI requires.
        unsafe { CStr::from_ptr(name) }.to_str().ok()
    };
    let Some(name) = name else {
        fail(
            running,
            Error::InvalidCallbackName("(null or not UTF-8)".to_owned()),
        );
    };
    let slot = engine.callbacks.slot(name);
    // SAFETY: slots live as long as the engine.
    dispatch(engine, running, unsafe { &*slot }, args, frame)
}

fn dispatch(
    engine: &Arc<EngineInner>,
    running: Running,
    slot: &Slot,
    args: *mut c_void,
    frame: TrampolineFrame,
) -> *mut c_void {
    let mut handler = slot.handler.load(Ordering::Acquire);
    if handler.is_null() && adopt_plugin_callback(&engine.callbacks, &slot.name) {
        handler = slot.handler.load(Ordering::Acquire);
    }
    if handler.is_null() {
        fail(running, Error::UnknownCallback(slot.name.clone()));
    }
    let outer_exit = LAST_EXIT.with(|l| l.replace(frame as u64));
    // SAFETY: `frame` is the trampoline's frame pointer, live during this call.
    let (rsp, rbp, return_address) = unsafe { arch::exit_state(frame) };
    let mut hypercall = Hypercall {
        engine,
        name: &slot.name,
        args,
        state: GuestState {
            rsp,
            rbp,
            return_address,
        },
    };
    // SAFETY: handlers are only freed when the engine goes (replaced ones are retired).
    let handler = unsafe { &*handler };
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.call(&mut hypercall)));
    LAST_EXIT.with(|l| l.set(outer_exit));
    match outcome {
        Ok(Ok(result)) => {
            // The handler is done and every guest frame of this thread is suspended in a call:
            // what the thread holds of guest code is on its stack.
            crate::reclaim::safepoint_at(frame as u64 - arch::TRAMPOLINE_SAVES);
            result
        }
        Ok(Err(e)) => fail(
            running,
            Error::CallbackFailed {
                name: slot.name.clone(),
                message: e.0,
            },
        ),
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            drop(panic);
            fail(
                running,
                Error::CallbackPanicked {
                    name: slot.name.clone(),
                    message,
                },
            )
        }
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic payload)".to_owned())
}

/// Stops the guest running on this thread with `error`, from host code the guest called (not a
/// hypercall): see [`fail`].
pub(crate) fn stop_guest(error: Error) -> ! {
    fail(RUNNING.with(Cell::get), error)
}

/// Stops the guest with `error`: back to the innermost `call_guest` of this thread, or, on a
/// thread the engine never entered, out of the process with the error on stderr.
#[cold]
#[inline(never)]
fn fail(running: Running, error: Error) -> ! {
    if running.call.is_null() {
        eprintln!("uppercut: {error}");
        // SAFETY: `exit` is always safe to call; it runs atexit handlers and flushes stdio, as a
        // guest calling `exit` would.
        unsafe { libc::exit(2) }
    }
    PENDING.with(|p| *p.borrow_mut() = Some(error));
    // SAFETY: `running.call` is the innermost live `call_guest` on this thread; every frame
    // between is guest code, the trampoline, or this dispatcher, which owns nothing now (the
    // error moved into the thread-local, the panic payload was dropped).
    unsafe { arch::guest_abort(running.call) }
}
