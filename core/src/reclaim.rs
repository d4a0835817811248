//! Code lifetime: retired code is freed once no guest thread can reach it.
//!
//! Recompilation leaves old code behind: a version that a relink superseded, a continuation
//! evicted from a cache, a transfer thunk nothing will patch in again. New calls never reach it
//! (guest function pointers are base entries, which are never freed, see
//! [`Engine::retire_unit`](crate::Engine::retire_unit)), but a thread may still be *inside* it:
//! a frame running it, a return address into it, a patched return address (a thunk) whose
//! descriptor leads to it. Such memory is *retired*, not freed, and freed later by epochs:
//!
//! ```text
//!  retire(ranges, free)          waiting = every registered guest thread
//!     │                          (a parked thread's frozen stack is scanned at once instead)
//!     ▼
//!  each guest thread, at its next safepoint (the end of any hypercall):
//!     scans its own stack (and callee-saved registers, and the roots `uppercut-osr` adds:
//!     its eager-transfer records) for words inside the retired ranges
//!        ├─ none found → leaves `waiting`
//!        └─ found      → stays; scans again later (with a backoff)
//!     ▼
//!  waiting empty → free() (a unit still pinned by a thunk waits for its unpin)
//! ```
//!
//! A safepoint is a point where everything a thread holds of guest code is on its stack: the
//! end of a hypercall (its handler is done; every frame of guest code on this thread is
//! suspended in a call, so its position is a return address on the stack). A thread running
//! guest code between safepoints holds its position in registers, which is why freeing waits for
//! every thread to pass one *after* the retirement. The scan is conservative: any word that
//! looks like an address in a retired range keeps it; a false hit only keeps memory longer.
//!
//! **Guest threads.** Only registered threads run guest code: the thread of
//! [`Engine::call`](crate::Engine::call) / [`Engine::run_main`](crate::Engine::run_main) for the
//! call's duration, threads the guest starts with `pthread_create` or `thrd_create` (the engine
//! links those names to wrappers that register the new thread), and threads an embedder
//! registers with [`GuestThread::enter`]. A thread blocked in `pthread_join` or `thrd_join`
//! (the engine wraps those too) is *parked*: its stack is frozen, so whoever retires something
//! scans it then and there instead of waiting for it. A registered thread that blocks anywhere
//! else, or runs for a long time without a hypercall, keeps everything retired meanwhile alive:
//! memory stays mapped (never a crash), and is freed once the thread comes back.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// What a retired item does when nothing can reach it any more: frees it and says `true`, or
/// says `false` when something else still holds it (a pinned unit, a handle still in use); the
/// item is then offered again at later reclamations.
pub type Free = Box<dyn FnMut() -> bool + Send>;

/// Extra words a thread holds outside its stack that may point into retired memory (for
/// `uppercut-osr`: the descriptors its eager-transfer records name). Called on the thread
/// itself.
pub type ThreadRoots = fn(&mut dyn FnMut(u64));

/// A guest thread's registration.
struct Thread {
    /// Where its scans stop: the top of its stack, or, for a thread that entered guest code
    /// from host code ([`Engine::call`](crate::Engine::call)), the host frame that entered it
    /// (the host's frames above hold the host's own data, not the guest's). 0 when unknown.
    top: u64,
    /// The engines (by [`Engine::id`](crate::Engine::id)) whose code it runs, with how deep.
    engines: Mutex<Vec<(u64, usize)>>,
    /// Set when the thread left (deregistered or exited): it holds nothing any more.
    departed: AtomicBool,
    /// While parked: what it holds, frozen.
    parked: Mutex<Option<Frozen>>,
}

/// A parked thread's state: its stack from `low` up, its callee-saved registers and its roots.
struct Frozen {
    low: u64,
    words: Vec<u64>,
}

/// One retired item.
struct Item {
    id: u64,
    /// Sorted, disjoint `[start, end)` ranges: a word inside one of them reaches the item.
    ranges: Vec<(u64, u64)>,
    /// Threads that have not yet shown that they hold nothing of it.
    waiting: Vec<Arc<Thread>>,
    free: Free,
}

#[derive(Default)]
struct Items {
    /// Items some thread may still reach.
    waiting: Vec<Item>,
    /// Items no thread reaches whose `free` said "not yet".
    blocked: Vec<Item>,
    next_id: u64,
}

static THREADS: Mutex<Vec<Arc<Thread>>> = Mutex::new(Vec::new());
static ITEMS: Mutex<Items> = Mutex::new(Items {
    waiting: Vec::new(),
    blocked: Vec::new(),
    next_id: 0,
});
/// `ITEMS.waiting.len()`: the safepoint's fast path reads only this.
static WAITING: AtomicUsize = AtomicUsize::new(0);
static ROOTS: OnceLock<ThreadRoots> = OnceLock::new();
static RETIRED: AtomicU64 = AtomicU64::new(0);
static FREED: AtomicU64 = AtomicU64::new(0);
static SCANS: AtomicU64 = AtomicU64::new(0);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// This thread's registration.
struct Membership {
    thread: Arc<Thread>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        depart(&self.thread);
    }
}

thread_local! {
    static ME: RefCell<Option<Membership>> = const { RefCell::new(None) };
    /// Safepoints to let pass before scanning again after a scan found something retired.
    static BACKOFF: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

fn depart(thread: &Arc<Thread>) {
    thread.departed.store(true, Ordering::Release);
    lock(&THREADS).retain(|t| !Arc::ptr_eq(t, thread));
}

/// A registration of the calling thread as a thread that runs an engine's guest code, for as
/// long as the guard lives (nested registrations count).
///
/// The engine registers the threads it knows run its code ([`Engine::call`](crate::Engine::call),
/// and threads the guest starts, which run the code of every engine their creator ran); an
/// embedder that runs guest code on a thread of its own by other means (a raw function pointer)
/// registers it with this, or code retired meanwhile may be freed under that thread's feet.
#[derive(Debug)]
pub struct GuestThread {
    engines: Vec<u64>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl GuestThread {
    /// Registers the calling thread as running `engine`'s code until the guard drops.
    ///
    /// Its frames below the caller's are what reclamation scans (frames above it are taken to
    /// be host frames that hold no guest code), unless the thread was registered already.
    #[inline(never)]
    pub fn enter(engine: &crate::Engine) -> GuestThread {
        let marker = 0u64;
        let here = std::hint::black_box(&marker) as *const u64 as u64;
        GuestThread::enter_ids(vec![engine.id()], here)
    }

    /// Registers the calling thread as running the code of `engines`; a fresh registration's
    /// scans stop at `bound` (0: the top of the stack).
    pub(crate) fn enter_ids(mut engines: Vec<u64>, bound: u64) -> GuestThread {
        // A thread past its thread-local destructors (an `atexit` handler, a destructor run at
        // exit) cannot register: it runs unregistered, as nothing is freed at exit anyway.
        engines.retain(|&engine| enter(engine, bound));
        GuestThread {
            engines,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for GuestThread {
    fn drop(&mut self) {
        for &engine in &self.engines {
            leave(engine);
        }
    }
}

/// Registers the calling thread as running `engine`'s code (or deepens that registration);
/// `false` when the thread's thread-local storage is gone.
fn enter(engine: u64, bound: u64) -> bool {
    ME.try_with(|me| {
        let mut me = me.borrow_mut();
        let membership = me.get_or_insert_with(|| {
            let top = crate::sys::stack_top().unwrap_or(0);
            let top = match bound {
                0 => top,
                bound if top == 0 => bound,
                bound => bound.min(top),
            };
            let thread = Arc::new(Thread {
                top,
                engines: Mutex::new(Vec::new()),
                departed: AtomicBool::new(false),
                parked: Mutex::new(None),
            });
            lock(&THREADS).push(Arc::clone(&thread));
            Membership { thread }
        });
        let mut engines = lock(&membership.thread.engines);
        match engines.iter_mut().find(|(e, _)| *e == engine) {
            Some((_, depth)) => *depth += 1,
            None => engines.push((engine, 1)),
        }
    })
    .is_ok()
}

/// Undoes one [`enter`]; the last one of the last engine deregisters the thread.
fn leave(engine: u64) {
    let gone = ME.try_with(|me| {
        let mut me = me.borrow_mut();
        let empty = me.as_ref().is_some_and(|m| {
            let mut engines = lock(&m.thread.engines);
            if let Some(at) = engines.iter().position(|(e, _)| *e == engine) {
                engines[at].1 -= 1;
                if engines[at].1 == 0 {
                    engines.remove(at);
                }
            }
            engines.is_empty()
        });
        if empty { me.take() } else { None }
    });
    // Dropping the membership deregisters the thread (outside the borrow).
    drop(gone.ok().flatten());
}

/// The engines the calling thread runs the code of: what a thread it starts inherits.
pub(crate) fn current_engines() -> Vec<u64> {
    current()
        .map(|t| lock(&t.engines).iter().map(|(e, _)| *e).collect())
        .unwrap_or_default()
}

fn current() -> Option<Arc<Thread>> {
    ME.try_with(|me| me.borrow().as_ref().map(|m| Arc::clone(&m.thread)))
        .ok()
        .flatten()
}

/// Sets the function that reports each thread's extra roots; the first call wins.
pub fn set_thread_roots(roots: ThreadRoots) {
    let _ = ROOTS.set(roots);
}

/// Retires memory of `engine` (its [`Engine::id`](crate::Engine::id)): `free` runs once no
/// thread registered as running that engine's code can hold a word inside `ranges` (see the
/// module documentation). Ranges are `[start, end)` addresses.
pub fn retire(engine: u64, ranges: Vec<(u64, u64)>, free: Free) {
    let mut ranges: Vec<(u64, u64)> = ranges.into_iter().filter(|r| r.0 < r.1).collect();
    ranges.sort_unstable();
    let threads: Vec<Arc<Thread>> = lock(&THREADS).clone();
    let mut waiting = Vec::new();
    for thread in threads {
        if thread.departed.load(Ordering::Acquire)
            || !lock(&thread.engines).iter().any(|(e, _)| *e == engine)
        {
            continue;
        }
        let parked = lock(&thread.parked);
        match parked.as_ref() {
            // Frozen while parked, and it cannot unpark while we hold the lock.
            Some(frozen) if thread.top != 0 => {
                let mut hit = false;
                scan_frozen(&thread, frozen, &mut |word| hit |= inside(&ranges, word));
                if hit {
                    waiting.push(Arc::clone(&thread));
                }
            }
            _ => waiting.push(Arc::clone(&thread)),
        }
    }
    RETIRED.fetch_add(1, Ordering::Relaxed);
    let mut items = lock(&ITEMS);
    let id = items.next_id;
    items.next_id += 1;
    items.waiting.push(Item {
        id,
        ranges,
        waiting,
        free,
    });
    let ready = take_ready(&mut items);
    drop(items);
    free_all(ready);
}

/// Whether `word` lies in one of the sorted `ranges`.
fn inside(ranges: &[(u64, u64)], word: u64) -> bool {
    containing(ranges, |r| *r, word).is_some()
}

/// The index of the range of sorted, disjoint `ranges` (each `[start, end)` as `bounds` reads
/// it) that holds `word`.
fn containing<T>(ranges: &[T], bounds: impl Fn(&T) -> (u64, u64), word: u64) -> Option<usize> {
    let i = ranges.partition_point(|r| bounds(r).0 <= word);
    (i > 0 && word < bounds(&ranges[i - 1]).1).then(|| i - 1)
}

impl Item {
    fn waits_on(&self, thread: &Arc<Thread>) -> bool {
        self.waiting.iter().any(|t| Arc::ptr_eq(t, thread))
    }
}

/// Takes the items no thread waits on (and every blocked one, to offer it again) out of
/// `items`, dropping departed threads from the waiting lists first.
fn take_ready(items: &mut Items) -> Vec<Item> {
    for item in &mut items.waiting {
        item.waiting.retain(|t| !t.departed.load(Ordering::Acquire));
    }
    let (ready, still): (Vec<Item>, Vec<Item>) = std::mem::take(&mut items.waiting)
        .into_iter()
        .partition(|i| i.waiting.is_empty());
    items.waiting = still;
    WAITING.store(items.waiting.len(), Ordering::Release);
    let mut ready = ready;
    ready.append(&mut items.blocked);
    ready
}

/// Frees what it can of `ready` (outside the lock: freeing takes engine locks), and keeps the
/// rest blocked.
fn free_all(ready: Vec<Item>) {
    if ready.is_empty() {
        return;
    }
    let mut blocked = Vec::new();
    for mut item in ready {
        if (item.free)() {
            FREED.fetch_add(1, Ordering::Relaxed);
        } else {
            blocked.push(item);
        }
    }
    if !blocked.is_empty() {
        lock(&ITEMS).blocked.append(&mut blocked);
    }
}

/// Offers blocked items to their `free` again (after something they waited for went away).
pub fn retry_blocked() {
    let blocked = std::mem::take(&mut lock(&ITEMS).blocked);
    free_all(blocked);
}

/// The calling thread's safepoint: if something retired may still be reached by it, scans its
/// stack and leaves the waiting list of every item it does not reach; frees what no thread
/// reaches. The engine calls it at the end of every hypercall; cheap when nothing waits on this
/// thread (one atomic load). The caller must hold nothing of guest code but what is on its
/// stack and in its callee-saved registers.
#[inline(never)]
pub fn safepoint() {
    let marker = 0u64;
    safepoint_at(std::hint::black_box(&marker) as *const u64 as u64);
}

/// [`safepoint`], scanning the stack from `low` up: at the end of a hypercall, from the
/// guest's registers that its trampoline saved, so that stale words in the dispatcher's own
/// frames do not keep retired code alive.
pub(crate) fn safepoint_at(low: u64) {
    if WAITING.load(Ordering::Acquire) == 0 {
        return;
    }
    let Some(me) = current() else {
        return;
    };
    if me.top == 0 {
        // Its stack bounds are unknown: it cannot show that it holds nothing.
        return;
    }
    let Ok((skip, next)) = BACKOFF.try_with(Cell::get) else {
        return;
    };
    if skip > 0 {
        BACKOFF.with(|b| b.set((skip - 1, next)));
        return;
    }
    // What this thread is waited on for, as one sorted list of (range, item).
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
    {
        let items = lock(&ITEMS);
        for item in &items.waiting {
            if item.waits_on(&me) {
                ranges.extend(item.ranges.iter().map(|r| (r.0, r.1, item.id)));
            }
        }
    }
    if ranges.is_empty() {
        return;
    }
    ranges.sort_unstable();
    // Ranges never overlap (units are disjoint, and a thunk's ranges are its own slot and
    // cell): the range a word falls in names the one item it reaches.
    let mut hits: HashSet<u64> = HashSet::new();
    scan_own(&me, low, &mut |word| {
        if let Some(i) = containing(&ranges, |r| (r.0, r.1), word) {
            hits.insert(ranges[i].2);
        }
    });
    let hit_item = |item: &Item| hits.contains(&item.id);
    let mut items = lock(&ITEMS);
    let mut held = false;
    for item in &mut items.waiting {
        if !item.waits_on(&me) {
            continue;
        }
        if hit_item(item) {
            held = true;
        } else {
            item.waiting.retain(|t| !Arc::ptr_eq(t, &me));
        }
    }
    let ready = take_ready(&mut items);
    drop(items);
    let _ = BACKOFF.try_with(|b| {
        b.set(if held {
            // Still inside retired code: look again after 1, 2, 4, ... up to 1024 safepoints.
            let next = (next.max(1) * 2).min(1024);
            (next, next)
        } else {
            (0, 0)
        })
    });
    free_all(ready);
}

/// Calls `f` with every word the calling thread holds: its callee-saved registers, its stack
/// from `low` (at or below the caller's frame) to the top, and its extra roots.
#[inline(never)]
fn scan_own(me: &Thread, low: u64, f: &mut dyn FnMut(u64)) {
    SCANS.fetch_add(1, Ordering::Relaxed);
    for word in crate::arch::callee_saved_registers() {
        f(word);
    }
    scan_range(low, me.top, f);
    if let Some(roots) = ROOTS.get() {
        roots(f);
    }
}

/// Calls `f` with the words of a parked thread.
fn scan_frozen(thread: &Thread, frozen: &Frozen, f: &mut dyn FnMut(u64)) {
    SCANS.fetch_add(1, Ordering::Relaxed);
    for &word in &frozen.words {
        f(word);
    }
    scan_range(frozen.low, thread.top, f);
}

fn scan_range(low: u64, high: u64, f: &mut dyn FnMut(u64)) {
    let mut address = (low + 7) & !7;
    while address + 8 <= high {
        // SAFETY: `[low, high)` is part of a thread stack that is mapped and stays so: the
        // calling thread's own, above its current frame, or a parked thread's above the frame
        // it parked in (which it cannot leave while the caller holds its park lock). The words
        // read are not being written (the owner is here, or parked); a volatile read of an
        // aligned word is all that happens.
        f(unsafe { std::ptr::read_volatile(address as *const u64) });
        address += 8;
    }
}

/// Parks the calling thread before it blocks outside guest code (`pthread_join`): clears it
/// where it can, then freezes what it holds so that others scan it instead of waiting for it.
/// `low` is the lowest stack address whose contents stay put until [`unpark`].
pub(crate) fn park(low: u64) {
    let Some(me) = current() else {
        return;
    };
    safepoint();
    let mut words: Vec<u64> = crate::arch::callee_saved_registers().to_vec();
    if let Some(roots) = ROOTS.get() {
        roots(&mut |w| words.push(w));
    }
    *lock(&me.parked) = Some(Frozen { low, words });
}

/// Undoes [`park`] (waits while another thread scans this one).
pub(crate) fn unpark() {
    if let Some(me) = current() {
        *lock(&me.parked) = None;
    }
}

/// In a forked child only the forking thread exists: every other registration departs.
pub(crate) fn after_fork_in_child() {
    let me = current();
    let mut threads = lock(&THREADS);
    for t in threads.iter() {
        if me.as_ref().is_none_or(|m| !Arc::ptr_eq(m, t)) {
            t.departed.store(true, Ordering::Release);
        }
    }
    threads.retain(|t| !t.departed.load(Ordering::Acquire));
}

/// Counts of retired memory, process-wide ([`stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReclaimStats {
    /// Items retired so far.
    pub retired: u64,
    /// Items freed so far.
    pub freed: u64,
    /// Items some guest thread may still reach.
    pub waiting: usize,
    /// Items no thread reaches that are still held otherwise (a pinned unit).
    pub blocked: usize,
    /// Stack scans made (own at safepoints, and of parked threads).
    pub scans: u64,
    /// Registered guest threads.
    pub threads: usize,
    /// Of those, threads parked (blocked in `pthread_join` or `thrd_join`).
    pub parked: usize,
}

/// Process-wide counts of retired memory.
pub fn stats() -> ReclaimStats {
    let threads: Vec<Arc<Thread>> = lock(&THREADS).clone();
    let parked = threads.iter().filter(|t| lock(&t.parked).is_some()).count();
    let items = lock(&ITEMS);
    ReclaimStats {
        retired: RETIRED.load(Ordering::Relaxed),
        freed: FREED.load(Ordering::Relaxed),
        waiting: items.waiting.len(),
        blocked: items.blocked.len(),
        scans: SCANS.load(Ordering::Relaxed),
        threads: threads.len(),
        parked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_is_inside_a_range_only_between_its_bounds() {
        let ranges = [(0x1000, 0x2000), (0x3000, 0x3010)];
        assert!(!inside(&ranges, 0xfff));
        assert!(inside(&ranges, 0x1000));
        assert!(inside(&ranges, 0x1fff));
        assert!(!inside(&ranges, 0x2000));
        assert!(inside(&ranges, 0x300f));
        assert!(!inside(&ranges, 0x3010));
        assert!(!inside(&[], 5));
    }
}
