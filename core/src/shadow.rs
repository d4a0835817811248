//! Per-thread shadow stacks: where instrumented guest functions keep the locals whose memory
//! must not move when their frame is transferred, laid out as LLVM's shadow-stack GC ABI.
//!
//! ```text
//!  thread's shadow stack (heap, grows up)           FrameMap (one per function, constant)
//!  ┌──────────────────────────────┐ <- head          ┌───────────────┬──────────────┬─────────┐
//!  │ Next ─────────────┐          │                   │ NumRoots: i32 │ NumMeta: i32 │ Meta[0] ─┼─> FunctionMeta
//!  │ Map  ──> FrameMap │          │                   └───────────────┴──────────────┴─────────┘
//!  │ roots[NumRoots]   │ (ptr-typed locals)           FunctionMeta { index: i64, name: ptr,
//!  │ [machine frame]   │ (shadow discovery only)                     frame_address_offset: i64,
//!  │ [site id]         │          │                                  site_offset: i64 }
//!  │ other locals      │          │
//!  ├───────────────────v──────────┤ <- older frame
//!  │ Next, Map, ...               │
//! ```
//!
//! With [`Instrumentation::shadow_discovery`](crate::Instrumentation::shadow_discovery), every
//! function that has sites opens a frame, and two words after its roots say where its machine
//! frame is (`llvm.frameaddress(0)`, its `rbp`, stored once at entry) and which site it is at
//! (0 at entry, then each site's id right before its call): [`for_each_entry`] reads them,
//! and `uppercut-osr`'s discovery turns them into transferable frames without walking the
//! machine stack. The words follow the roots, so a collector scanning `NumRoots` roots is
//! unaffected; [`FunctionMeta`] gives their offsets (see also
//! [`DiscoverySlots`](crate::DiscoverySlots)).
//!
//! An instrumented function opens its frame with `__uppercut_shadow_push(map, size)` at entry
//! and closes it with `__uppercut_shadow_pop(frame)` before each return. The frame pointer is an
//! ordinary SSA value of the function, so it is part of every site's state: a continuation keeps
//! using the same frame, and the locals never move. Closing restores the head and top from the
//! frame itself, so a `longjmp` that skipped some frames is repaired by the next return; a
//! function that calls `setjmp` (and so has no frame: it is never instrumented) takes a mark of
//! the stack at entry and closes every newer frame each time `setjmp` returns
//! (`__uppercut_shadow_mark`, `__uppercut_shadow_unwind`).
//!
//! The same chain gives a precise collector its roots: [`for_each_root`].

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_void};

use std::ops::ControlFlow;

use crate::sys::{Pages, Prot};
use crate::types::SiteId;

/// Address space reserved for one thread's shadow stack (committed as it is touched).
pub const SHADOW_STACK_BYTES: usize = 64 << 20;

/// The header of one shadow-stack frame (LLVM's `StackEntry`); the roots follow it.
#[repr(C)]
#[derive(Debug)]
pub struct StackEntry {
    /// The next older frame, or null.
    pub next: *const StackEntry,
    /// The function's frame map.
    pub map: *const FrameMap,
}

/// A function's frame map (LLVM's `FrameMap`); `Meta[0]` follows the two counts.
#[repr(C)]
#[derive(Debug)]
pub struct FrameMap {
    /// How many pointer slots follow the frame header (the function's pointer-typed locals).
    pub num_roots: i32,
    /// How many metadata pointers follow; Uppercut writes one, the function's [`FunctionMeta`].
    pub num_meta: i32,
    /// The metadata pointers.
    pub meta: [*const FunctionMeta; 1],
}

/// What `Meta[0]` of an Uppercut frame map points to.
#[repr(C)]
#[derive(Debug)]
pub struct FunctionMeta {
    /// The function's index among the instrumented functions that have frames.
    pub index: i64,
    /// Its name, NUL-terminated.
    pub name: *const c_char,
    /// Offset in the frame of the word holding the function's machine frame address; 0 when
    /// the frame does not record it (without shadow discovery).
    pub frame_address_offset: i64,
    /// Offset in the frame of the word holding the id of the site the function is at; 0 when
    /// the frame does not record it.
    pub site_offset: i64,
}

#[derive(Clone, Copy)]
struct Stack {
    top: usize,
    limit: usize,
    head: *const StackEntry,
}

thread_local! {
    static STACK: Cell<Stack> = const {
        Cell::new(Stack { top: 0, limit: 0, head: std::ptr::null() })
    };
    /// Owns the thread's region: unmapped when the thread ends.
    static REGION: RefCell<Region> = const { RefCell::new(Region(None)) };
}

/// A thread's shadow-stack region. Dropping it (the thread's destructors run) also forgets the
/// thread's stack, so that guest code running after that (an `atexit` handler: glibc's `exit`
/// runs thread-local destructors before the handlers) opens its frames in a fresh region
/// instead of the unmapped one.
struct Region(Option<Pages>);

impl Drop for Region {
    fn drop(&mut self) {
        STACK.with(|cell| {
            cell.set(Stack {
                top: 0,
                limit: 0,
                head: std::ptr::null(),
            })
        });
    }
}

/// Opens a frame of `size` bytes (header included) for the function described by `map`.
pub(crate) extern "C" fn shadow_push(map: *const FrameMap, size: u64) -> *mut StackEntry {
    STACK.with(|cell| {
        let mut stack = cell.get();
        let size = size as usize;
        if stack.limit == 0 {
            stack = allocate();
        }
        if stack.top + size > stack.limit {
            eprintln!(
                "uppercut: shadow stack overflow: more than {} MiB of escaping locals on one thread",
                SHADOW_STACK_BYTES >> 20
            );
            std::process::abort();
        }
        let frame = stack.top as *mut StackEntry;
        // SAFETY: `frame..frame+size` lies in this thread's committed read-write region (checked
        // against the limit above) and belongs to no open frame.
        unsafe {
            frame.write(StackEntry {
                next: stack.head,
                map,
            })
        };
        stack.top += size;
        stack.head = frame;
        cell.set(stack);
        frame
    })
}

/// Closes `frame` and every frame opened after it.
pub(crate) extern "C" fn shadow_pop(frame: *mut StackEntry) {
    STACK.with(|cell| {
        let mut stack = cell.get();
        // SAFETY: `frame` was returned by `shadow_push` on this thread and its header is intact
        // (guest code only writes the slots after it).
        stack.head = unsafe { (*frame).next };
        stack.top = frame as usize;
        cell.set(stack);
    })
}

/// The current top of this thread's shadow stack: every frame opened later lies at or above
/// it. A function that calls `setjmp` takes this mark at entry, and hands it to
/// [`shadow_unwind`] each time `setjmp` returns.
pub(crate) extern "C" fn shadow_mark() -> u64 {
    STACK.with(|cell| cell.get().top as u64)
}

/// Closes every frame opened after `mark` (see [`shadow_mark`]): after a `longjmp` lands in a
/// function that has no frame of its own, the frames it skipped are closed here instead of
/// piling up (nothing older returns through them to close them).
pub(crate) extern "C" fn shadow_unwind(mark: u64) {
    STACK.with(|cell| {
        let mut stack = cell.get();
        while !stack.head.is_null() && stack.head as u64 >= mark {
            stack.top = stack.head as usize;
            // SAFETY: every frame on the chain was opened by `shadow_push` on this thread and its
            // header is intact (guest code only writes the slots after it).
            stack.head = unsafe { (*stack.head).next };
        }
        cell.set(stack);
    })
}

fn allocate() -> Stack {
    let pages = Pages::reserve(SHADOW_STACK_BYTES, None).and_then(|mut p| {
        p.protect(Prot::ReadWrite)?;
        Ok(p)
    });
    let pages = match pages {
        Ok(p) => p,
        Err(e) => {
            eprintln!("uppercut: cannot map a shadow stack: {e}");
            std::process::abort();
        }
    };
    let stack = Stack {
        top: pages.addr(),
        limit: pages.end(),
        head: std::ptr::null(),
    };
    let mut pages = Some(pages);
    let kept = REGION.try_with(|r| r.borrow_mut().0 = pages.take());
    if kept.is_err() {
        // The thread's destructors have run: it is ending, and the region lives as long as the
        // process (a handful of frames of `atexit` handlers).
        std::mem::forget(pages);
    }
    stack
}

/// One frame of this thread's shadow stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowFrame {
    /// The frame's address (what the function holds as its frame pointer).
    pub address: u64,
    /// The function that opened it.
    pub function: String,
    /// Addresses of its root slots (each holds one pointer).
    pub roots: Vec<u64>,
    /// What the frame records for discovery (with shadow discovery).
    pub discovery: Option<Discovery>,
}

/// What a shadow-stack frame of shadow discovery records about its function's machine frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovery {
    /// The machine frame address (`rbp`) the function stored at entry.
    pub frame_address: u64,
    /// The site the function is at: the last one whose call it started (`None` before the
    /// first, or for a word that is not a site id).
    pub site: Option<SiteId>,
}

/// One entry of this thread's shadow-stack chain, read without allocating: what a frame walk
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowEntry {
    /// The frame's address.
    pub address: u64,
    /// Its frame map's address: the same for every frame of one function (see
    /// [`FunctionOsr::frame_map`](crate::FunctionOsr::frame_map)).
    pub map: u64,
    /// Its function's index (`FunctionMeta::index`), -1 when its map has no Uppercut metadata.
    pub index: i64,
    /// What it records for discovery.
    pub discovery: Option<Discovery>,
}

/// Calls `f` with each entry of this thread's shadow-stack chain, innermost first, until it
/// breaks. `f` may run guest code: entries older than the first one stay open while it runs.
pub fn for_each_entry(mut f: impl FnMut(&ShadowEntry) -> ControlFlow<()>) {
    let mut entry = STACK.with(|c| c.get().head);
    while !entry.is_null() {
        // SAFETY: every frame on the chain was opened by `shadow_push` on this thread and is
        // still open (frames older than the head when we started cannot close while we run:
        // they belong to suspended callers); its map and metadata are constants of a compiled
        // unit, which stays mapped while frames of it are open.
        let (read, next) = unsafe { read_entry(entry) };
        if f(&read).is_break() {
            return;
        }
        entry = next;
    }
}

/// Reads one open entry.
///
/// # Safety
///
/// `entry` must be an open frame of this thread's chain.
#[inline]
unsafe fn read_entry(entry: *const StackEntry) -> (ShadowEntry, *const StackEntry) {
    // SAFETY: the caller vouches for the entry; its map and metadata are Uppercut's constants.
    unsafe {
        let e = &*entry;
        let map = &*e.map;
        let meta = (map.num_meta >= 1 && !map.meta[0].is_null()).then(|| &*map.meta[0]);
        let word = |offset: i64| {
            (entry as *const u8)
                .add(offset as usize)
                .cast::<u64>()
                .read()
        };
        let discovery = meta
            .filter(|m| m.frame_address_offset > 0 && m.site_offset > 0)
            .map(|m| Discovery {
                frame_address: word(m.frame_address_offset),
                site: u32::try_from(word(m.site_offset))
                    .ok()
                    .filter(|&id| id != 0)
                    .map(SiteId),
            });
        let read = ShadowEntry {
            address: entry as u64,
            map: e.map as u64,
            index: meta.map_or(-1, |m| m.index),
            discovery,
        };
        (read, e.next)
    }
}

/// This thread's shadow-stack frames, innermost first.
pub fn shadow_frames() -> Vec<ShadowFrame> {
    let mut out = Vec::new();
    let mut entry = STACK.with(|c| c.get().head);
    while !entry.is_null() {
        // SAFETY: every frame on the chain was opened by `shadow_push` on this thread and is
        // still open; its map is a constant of a compiled unit, which stays mapped.
        let frame = unsafe {
            let e = &*entry;
            let map = &*e.map;
            let roots = (0..map.num_roots.max(0) as u64)
                .map(|i| entry as u64 + 16 + 8 * i)
                .collect();
            let function = if map.num_meta >= 1 && !map.meta[0].is_null() {
                CStr::from_ptr((*map.meta[0]).name)
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            };
            let f = ShadowFrame {
                address: entry as u64,
                function,
                roots,
                discovery: read_entry(entry).0.discovery,
            };
            entry = e.next;
            f
        };
        out.push(frame);
    }
    out
}

/// Calls `f` with the address of every root slot of this thread's shadow stack, innermost frame
/// first: the precise root set a collector needs (each slot holds one pointer-typed local of a
/// live guest frame; the collector may read and update it).
pub fn for_each_root(mut f: impl FnMut(*mut *mut c_void)) {
    for frame in shadow_frames() {
        for root in frame.roots {
            f(root as *mut *mut c_void);
        }
    }
}

/// The head of this thread's chain (0 when no instrumented frame is open).
pub fn shadow_head() -> u64 {
    STACK.with(|c| c.get().head as u64)
}
