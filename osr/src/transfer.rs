//! Frame transfer: from a suspended JIT frame to a continuation, at its callee's return. A lazy
//! transfer ([`Transfers::patch`]) reads the frame's state then; an eager one
//! ([`Transfers::transfer_now`], `eager.rs`) reads it at the safepoint and keeps it per thread.
//!
//! ```text
//!   walk ──> Frame{return address, slot, sp, fp, version, site}
//!     prepare(frame, target) ──> record at the return address (stack map) + CFI row
//!        └─ checked against Uppercut's deopt convention and the target, decoded once into a
//!           Descriptor (value locations, result kind, callee-saved slots), with a thunk
//!     patch(frame, prepared) ──> the frame's return-address slot := thunk
//!   ... the callee returns into the thunk ──> stub ──> resume: values + result into the
//!       thread's transfer buffer, callee-saved registers from the frame's save slots
//!       ──> jmp continuation(buffer) with rsp = CFA - 8: it returns to the old frame's caller
//! ```
//!
//! The convention and the lifetimes are on [`Transfers`].

use std::cell::UnsafeCell;
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use uppercut_core::code_memory::{CodeArena, CodeRegion, RegionRequest};
use uppercut_core::frames::{
    CalleeSaves, CodeMap, CursorFrame, FrameBase, FrameCursor, FrameRow, RecordValue, Refusal,
    SavedAt, SiteState, StackMemory, ThreadStack, WalkStart,
};
use uppercut_core::stackmaps::DwarfReg;
use uppercut_core::unwind::{EhFrameRegistration, frame_section};
use uppercut_core::{CallbackError, Engine, GuestState, Hypercall, SiteId, UnitId, ValueKind};

use crate::arch::{self, THUNK_SIZE};
use crate::eager;
use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::runtime::TransferMode;

/// The name of the callback through which an engine owns its [`Transfers`]' thunks and
/// descriptors (dropped with the engine's callbacks). A hypercall to it is refused.
pub const KEEPALIVE_CALLBACK: &str = "uppercut.osr.transfers";

/// Where a frame goes: a site's continuation, and the kinds of the values it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The site the frame must be suspended at (deopt location 0 of its record).
    pub site: SiteId,
    /// The continuation's address: `ret_ty cont(ptr %buf)`.
    pub continuation: u64,
    /// The kinds of the site's live values, in record order.
    pub values: Vec<ValueKind>,
    /// The kind of the site's call result, `None` for a `void` call (or one whose result the
    /// continuation does not use).
    pub result: Option<ValueKind>,
}

/// A transfer ready to be patched into frames suspended at one return address: a descriptor
/// and its thunk. Cheap to clone; its thunk is not recycled while a handle lives.
#[derive(Clone)]
pub struct Prepared {
    batch: Arc<ThunkBatch>,
    index: usize,
    owner: usize,
    lease: Arc<Lease>,
}

/// What a handed-out thunk holds on to: the units its descriptor leads out of and into, pinned
/// until the thunk is recycled. Every [`Prepared`] of the thunk shares one.
#[derive(Debug)]
struct Lease {
    source: UnitId,
    target: UnitId,
}

impl Prepared {
    fn descriptor(&self) -> &Descriptor {
        self.batch.cells[self.index]
            .get()
            .expect("a thunk is handed out only with its descriptor set")
    }

    /// The thunk's address: what a patched return-address slot holds.
    pub fn thunk(&self) -> u64 {
        self.batch.address + (self.index * THUNK_SIZE) as u64
    }

    /// The return address the frames it applies to are suspended at.
    pub fn return_address(&self) -> u64 {
        self.descriptor().return_address
    }

    /// The continuation it enters.
    pub fn continuation(&self) -> u64 {
        self.descriptor().continuation
    }

    /// The site.
    pub fn site(&self) -> SiteId {
        self.descriptor().site
    }

    /// The kinds of the values it passes.
    pub fn values(&self) -> &[ValueKind] {
        &self.descriptor().kinds
    }

    /// The kind of the call result it passes.
    pub fn result(&self) -> Option<ValueKind> {
        self.descriptor().result_kind
    }

    /// The callee-saved registers the frame saved in its prologue, with their CFA offsets: the
    /// ones a transfer reloads for the frame's caller.
    pub fn restored_registers(&self) -> Vec<(DwarfReg, i32)> {
        self.descriptor().saves.iter().collect()
    }

    /// Whether frames that reach its thunk are transferred (not [cancelled](Transfers::cancel)).
    pub fn is_enabled(&self) -> bool {
        self.descriptor().enabled.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.descriptor();
        f.debug_struct("Prepared")
            .field("thunk", &format_args!("{:#x}", self.thunk()))
            .field("return_address", &format_args!("{:#x}", d.return_address))
            .field("continuation", &format_args!("{:#x}", d.continuation))
            .field("site", &d.site)
            .field("values", &d.values)
            .field("result", &d.result)
            .field("saves", &d.saves)
            .finish()
    }
}

/// The frame transfers of one engine: decoded records, descriptors, thunks and counters.
///
/// Cheap to clone (clones share everything). It holds the engine: do not keep one inside a
/// callback of its own engine (a cycle); call [`Transfers::new`] in the callback instead, which
/// returns the engine's one instance.
///
/// # The convention
///
/// An OSR site is a `gc.statepoint` with a `"deopt"` bundle; its record sits at the call's
/// return address with the locations `[cc, flags, N, deopt 0 … deopt N-1, gc pairs…]`. Deopt
/// location 0 is `Constant(site id)`; deopt locations 1 to N-1 are the site's live values in
/// the order of [`Target::values`]. Each value is read from an `Indirect [rsp + off]` or
/// `[rbp + off]` spill slot or is a `Constant`/`ConstantIndex`; any other location (a
/// register, a `Direct` frame address), a count that does not match (the multi-frame state that
/// inlining leaves), or call-frame information without a frame pointer, and the frame is not
/// transferred: [`Transfers::prepare`] says why. Locations after the deopt state come in
/// (base, derived) pairs and are not read: under `gc "shadow-stack"`, LLVM 19 adds one pair per
/// `ptr` deopt value.
///
/// A continuation is `ret_ty cont(ptr %buf)`, with the return type of the frame's function. It
/// finds value `i` in `buf[i]` and the call's result (when [`Target::result`] is set) in
/// `buf[n]`, each a 64-bit slot holding the value's bits zero-extended (see
/// [`ValueKind`]), and returns to the frame's caller. The buffer is per thread and reused by
/// the next transfer on the thread: a continuation reads it before it calls anything.
///
/// # Lifetimes
///
/// [`Transfers::new`] hands out the engine's one instance, which the engine keeps alive (see
/// [`KEEPALIVE_CALLBACK`]). Thunk code is written once, in page-sized batches, and published
/// executable; it is never written again. A prepared transfer pins the units it leads out of
/// and into ([`Engine::pin_unit`]). Once either unit is retired, the transfer leaves the cache
/// and its thunk is retired too: its descriptor cell is emptied and the thunk handed out again
/// once no thread's stack, registers or eager records hold it and no [`Prepared`] handle
/// remains (see [`uppercut_core::reclaim`]), and then the units are unpinned.
#[derive(Clone)]
pub struct Transfers {
    engine: Engine,
    inner: Arc<Inner>,
}

struct Inner {
    counters: Arc<Counters>,
    /// Whether eager transfers poison the slots they captured.
    scrub: AtomicBool,
    /// Descriptors by (unit, return address, continuation).
    prepared: Mutex<HashMap<(UnitId, u64, u64), Prepared>>,
    thunks: Mutex<ThunkPool>,
    /// The engine's lifetime epoch when the caches were last swept of units that are retired
    /// or gone.
    swept: AtomicU64,
}

/// Counters the stub updates (relaxed: they are statistics).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Frames that entered a continuation (less the ones a thread still counts on its own,
    /// see [`count_transfer`]).
    pub(crate) transferred: AtomicU64,
    /// Frames sent back to their old code by the stub.
    pub(crate) fell_back: AtomicU64,
}

/// Transfers this thread made and has not added to their engine's counters yet: a locked add
/// per frame would be a good part of a transfer's cost.
struct Uncounted {
    counters: Option<Arc<Counters>>,
    count: u64,
}

impl Uncounted {
    fn flush(&mut self) {
        if let Some(counters) = &self.counters
            && self.count > 0
        {
            counters
                .transferred
                .fetch_add(self.count, Ordering::Relaxed);
            self.count = 0;
        }
    }
}

impl Drop for Uncounted {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static UNCOUNTED: UnsafeCell<Uncounted> = const {
        UnsafeCell::new(Uncounted {
            counters: None,
            count: 0,
        })
    };
}

/// Counts one frame that entered a continuation, on this thread until the next
/// [`flush_transfer_counts`] (a walk, a read of the counters, another engine's transfer or the
/// thread's exit).
#[inline]
pub(crate) fn count_transfer(counters: &Arc<Counters>) {
    let _ = UNCOUNTED.try_with(|cell| {
        // SAFETY: this thread's own cell; nothing here reenters (no callbacks, no panics but
        // allocation failure, which aborts).
        let local = unsafe { &mut *cell.get() };
        if !local
            .counters
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, counters))
        {
            local.flush();
            local.counters = Some(Arc::clone(counters));
        }
        local.count += 1;
    });
}

/// Adds this thread's uncounted transfers to their engine's counters.
pub(crate) fn flush_transfer_counts() {
    let _ = UNCOUNTED.try_with(|cell| {
        // SAFETY: as in `count_transfer`.
        unsafe { (*cell.get()).flush() };
    });
}

/// The engines' transfers, by the start of their code arena (unique among live engines); the
/// strong reference is the engine's [`KEEPALIVE_CALLBACK`].
static REGISTRY: Mutex<Vec<(usize, Weak<Inner>)>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Transfers {
    /// The transfers of `engine`: made on first use, then the same instance (same caches, same
    /// counters) for every call with the same engine, until the engine is dropped.
    pub fn new(engine: &Engine) -> Transfers {
        let key = engine.arena().range().start;
        let mut registry = lock(&REGISTRY);
        registry.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(inner) = registry
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Transfers {
                engine: engine.clone(),
                inner,
            };
        }
        let inner = Arc::new(Inner {
            counters: Arc::default(),
            scrub: AtomicBool::new(false),
            prepared: Mutex::default(),
            thunks: Mutex::new(ThunkPool {
                arena: engine.arena().clone(),
                batches: Vec::new(),
                used: 0,
                free: Vec::new(),
            }),
            swept: AtomicU64::new(0),
        });
        // A thread's eager records name descriptors: their thunks must not be recycled under
        // them (a record left by a frame that `longjmp` skipped is dropped lazily).
        uppercut_core::reclaim::set_thread_roots(eager::visit_descriptors);
        let keep = Arc::clone(&inner);
        let registered = engine.register_callback(
            KEEPALIVE_CALLBACK,
            move |_: &mut Hypercall<'_>| -> Result<*mut c_void, CallbackError> {
                let _owned = &keep;
                Err(CallbackError::from(
                    "uppercut.osr.transfers is the engine's frame-transfer state, not a hypercall",
                ))
            },
        );
        if registered.is_err() {
            // Cannot happen (the name is valid); never free thunks a frame may return into.
            std::mem::forget(Arc::clone(&inner));
        }
        registry.push((key, Arc::downgrade(&inner)));
        Transfers {
            engine: engine.clone(),
            inner,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// This thread's JIT frames, innermost first, from the guest state of the hypercall that is
    /// running on this thread ([`Hypercall::guest_state`]).
    ///
    /// Frame 0 is the one that made the hypercall. The walk follows frame pointers and stops at
    /// the first return address that is neither in a JIT version nor a transfer thunk, or where
    /// the chain stops making sense (a frame pointer that is null, misaligned, not above the
    /// previous one, or outside this thread's stack). A frame whose
    /// return address already points at a thunk is reported with its original return address
    /// and `pending` set.
    pub fn walk(&self, state: &GuestState) -> Vec<Frame> {
        self.walk_limit(state, usize::MAX)
    }

    /// [`Transfers::walk`], stopping after the `limit` innermost frames.
    pub fn walk_limit(&self, state: &GuestState, limit: usize) -> Vec<Frame> {
        let map = self.engine.code_map();
        let thunks = self.thunk_index();
        let mut frames = Vec::new();
        if limit == 0 {
            return frames;
        }
        self.for_each_frame(&map, &thunks, state, |f| {
            let pending = (f.word != f.return_address)
                .then(|| thunks.descriptor(f.word).map(|d| d.continuation))
                .flatten();
            frames.push(Frame::of(f, pending));
            frames.len() < limit
        });
        frames
    }

    /// Runs `f` on each of this thread's JIT frames, innermost first, as the engine's frame
    /// cursor sees them (a slot patched with a thunk reads as its original return address)
    /// until it returns `false`. `map` must be the engine's [`Engine::code_map`].
    pub(crate) fn for_each_frame<'m>(
        &self,
        map: &'m CodeMap,
        thunks: &ThunkIndex,
        state: &GuestState,
        mut f: impl FnMut(&CursorFrame<'m>) -> bool,
    ) {
        flush_transfer_counts();
        let Some(stack) = ThreadStack::current() else {
            return;
        };
        let resolve = |word: u64| thunks.resolve(word);
        let start = WalkStart::at_hypercall(state.rsp, state.rbp, state.return_address);
        for frame in FrameCursor::new(map, stack, start, resolve) {
            if !f(&frame) {
                break;
            }
        }
    }

    /// The engine's frame-table row at the frame's return address.
    fn row(&self, frame: &Frame) -> Result<FrameRow> {
        let return_address = frame.return_address;
        let code = self
            .engine
            .unit_code(frame.version.unit)
            .ok_or(Error::NotJitCode { return_address })?;
        code.table
            .row(return_address)
            .cloned()
            .map_err(|reason| Error::Refused {
                return_address,
                reason,
            })
    }

    /// A snapshot of the thunk batches, to read patched slots with.
    pub(crate) fn thunk_index(&self) -> ThunkIndex {
        ThunkIndex {
            batches: lock(&self.inner.thunks).batches.clone(),
        }
    }

    /// Checks the frame's record and call-frame information against Uppercut's convention and
    /// `target`, and makes (or finds in the cache) the transfer descriptor and its thunk.
    ///
    /// Cached per (unit, return address, continuation): preparing many frames suspended at one
    /// site costs one decode. `Err` says why the frame cannot be transferred; it then keeps
    /// running its old code.
    pub fn prepare(&self, frame: &Frame, target: &Target) -> Result<Prepared> {
        let return_address = frame.return_address;
        if target.continuation == 0 {
            return Err(Error::InvalidTarget {
                return_address,
                reason: "the continuation's address is 0".to_owned(),
            });
        }
        self.sweep();
        let key = (frame.version.unit, return_address, target.continuation);
        let same = |p: &Prepared| {
            let d = p.descriptor();
            d.site == target.site && *d.kinds == *target.values && d.result_kind == target.result
        };
        if let Some(p) = lock(&self.inner.prepared).get(&key).filter(|p| same(p)) {
            return Ok(p.clone());
        }
        let refused = |reason| Error::Refused {
            return_address,
            reason,
        };
        let row = self.row(frame)?;
        let decoded = row.state.as_ref().map_err(|r| refused(r.clone()))?;
        if decoded.site != target.site {
            return Err(Error::SiteMismatch {
                return_address,
                expected: target.site,
                found: decoded.site,
            });
        }
        let values = value_slots(return_address, decoded, &target.values)?;
        let saves = row.saves.clone().map_err(refused)?;
        let descriptor = Descriptor {
            continuation: target.continuation,
            return_address,
            values,
            result: ResultSlot::of(target.result),
            saves,
            enabled: AtomicBool::new(true),
            eager: AtomicBool::new(false),
            counters: Arc::clone(&self.inner.counters),
            site: target.site,
            kinds: target.values.clone().into_boxed_slice(),
            result_kind: target.result,
        };
        let mut prepared = lock(&self.inner.prepared);
        if let Some(existing) = prepared.get(&key) {
            return if same(existing) {
                Ok(existing.clone())
            } else {
                Err(Error::TargetConflict {
                    return_address,
                    continuation: target.continuation,
                })
            };
        }
        // The thunk pins the unit its frames run and the continuation's: neither is freed
        // while a frame may still return into the thunk.
        let source = frame.version.unit;
        let target_unit =
            self.engine
                .unit_at(target.continuation)
                .ok_or_else(|| Error::InvalidTarget {
                    return_address,
                    reason: format!(
                        "the continuation {:#x} is not in a live unit of the engine",
                        target.continuation
                    ),
                })?;
        // Frames in retired code are the ones that most need to move; but a retired
        // continuation is on its way out and must not take new frames.
        if self.engine.is_retired(target_unit) {
            return Err(Error::InvalidTarget {
                return_address,
                reason: format!("the continuation's {target_unit} was retired"),
            });
        }
        if !self.engine.pin_unit(source) {
            return Err(Error::InvalidTarget {
                return_address,
                reason: format!("{source} is not live"),
            });
        }
        if !self.engine.pin_unit(target_unit) {
            self.engine.unpin_unit(source);
            return Err(Error::InvalidTarget {
                return_address,
                reason: format!("{target_unit} is not live"),
            });
        }
        let lease = Arc::new(Lease {
            source,
            target: target_unit,
        });
        let made = match lock(&self.inner.thunks).allocate(descriptor, self.owner(), lease) {
            Ok(made) => made,
            Err(e) => {
                self.engine.unpin_unit(source);
                self.engine.unpin_unit(target_unit);
                return Err(e);
            }
        };
        prepared.insert(key, made.clone());
        Ok(made)
    }

    /// Drops what the caches hold of units retired or freed since the last sweep: prepared
    /// transfers out of or into a retired unit are retired with their thunks (frames patched
    /// with them still return through them; see [`uppercut_core::reclaim`]), and decoded
    /// records of freed units go.
    fn sweep(&self) {
        let now = self.engine.lifetime_epoch();
        if self.inner.swept.swap(now, Ordering::AcqRel) == now {
            return;
        }
        let retired: HashSet<UnitId> = self.engine.retired_units().into_iter().collect();
        self.forget_prepared(|p| {
            retired.contains(&p.lease.source) || retired.contains(&p.lease.target)
        });
    }

    /// Recycles `prepared`'s thunk once no thread can return into it and no handle holds it,
    /// and then unpins its units.
    fn retire_thunk(&self, prepared: Prepared) {
        let thunk = prepared.thunk();
        let cell = &prepared.batch.cells[prepared.index] as *const DescriptorCell as u64;
        let ranges = vec![
            (thunk, thunk + THUNK_SIZE as u64),
            (cell, cell + std::mem::size_of::<DescriptorCell>() as u64),
        ];
        let inner = Arc::downgrade(&self.inner);
        let engine = self.engine.downgrade();
        let Prepared {
            batch,
            index,
            lease,
            ..
        } = prepared;
        uppercut_core::reclaim::retire(
            self.engine.id(),
            ranges,
            Box::new(move || {
                if Arc::strong_count(&lease) > 1 {
                    // A handle still holds it: offered again later.
                    return false;
                }
                if let Some(inner) = inner.upgrade() {
                    let mut pool = lock(&inner.thunks);
                    // SAFETY: no thread can reach the thunk or its cell any more (no stack,
                    // register or eager record holds them: `reclaim`), no handle holds it
                    // (the lease is ours alone), and the cache no longer has it.
                    unsafe { batch.cells[index].clear() };
                    batch.forget(index);
                    pool.free.push((Arc::clone(&batch), index));
                }
                if let Some(engine) = engine.upgrade() {
                    engine.unpin_unit(lease.source);
                    engine.unpin_unit(lease.target);
                }
                true
            }),
        );
    }

    /// Points the frame's return address at the thunk of `prepared`: when its callee returns,
    /// the frame moves into the continuation (a lazy transfer). Patching a frame that is
    /// already pending replaces its transfer.
    ///
    /// The frame must come from a [`walk`](Self::walk) of the hypercall running on this thread;
    /// its slot must still hold its return address (or a thunk for it).
    ///
    /// A frame whose state an eager transfer ([`transfer_now`](Self::transfer_now)) captured
    /// already stays captured: patching it again retargets its captured state.
    pub fn patch(&self, frame: &Frame, prepared: &Prepared) -> Result<()> {
        self.check_prepared(frame, prepared)?;
        if self.captured(frame).is_some() {
            return self.transfer_now(frame, prepared);
        }
        self.replace_slot(frame, prepared.thunk())
    }

    /// An eager transfer: reads the frame's whole state now (its live values, the callee-saved
    /// registers its prologue saved and its caller's frame pointer) into this thread's records
    /// and points its return address at the thunk of `prepared`, in one step. When its callee
    /// returns, the frame enters the continuation with the captured state: neither its old slots
    /// nor the old version's metadata are read again.
    ///
    /// The frame must come from a [`walk`](Self::walk) of the hypercall running on this thread.
    pub fn transfer_now(&self, frame: &Frame, prepared: &Prepared) -> Result<()> {
        self.check_prepared(frame, prepared)?;
        let descriptor = prepared.descriptor();
        let fp = frame.frame_pointer;
        let captured = match self.captured(frame) {
            // Captured before (and perhaps scrubbed since): the record is the frame's state.
            Some(captured) if captured.values.len() == descriptor.values.len() => captured,
            Some(_) => {
                return Err(Error::StaleFrame {
                    return_address: frame.return_address,
                    slot: frame.return_address_slot,
                    reason: "its captured state does not fit the transfer".to_owned(),
                });
            }
            None => self.capture_frame(frame, descriptor)?,
        };
        descriptor.eager.store(true, Ordering::Relaxed);
        self.replace_slot(frame, prepared.thunk())?;
        eager::push(
            fp,
            descriptor as *const Descriptor as usize,
            &captured.values,
            captured.saves,
            captured.caller_fp,
        );
        if self.inner.scrub.load(Ordering::Relaxed) {
            scrub_frame(frame, descriptor);
        }
        Ok(())
    }

    /// After each eager transfer, overwrite the captured frame's value and callee-saved slots
    /// with a poison pattern (`0xdb` bytes): a check, for tests, that nothing reads them again.
    /// The frame's saved `rbp` and return address stay (older frames are still walked through
    /// them).
    pub fn set_scrub(&self, scrub: bool) {
        self.inner.scrub.store(scrub, Ordering::Relaxed);
    }

    /// Frames of this thread whose state an eager transfer captured and whose callee has not
    /// returned yet.
    pub fn eager_pending(&self) -> usize {
        eager::pending()
    }

    /// What an eager transfer captured of `frame`, if its slot holds the thunk that transfer
    /// patched in (a record alone may be stale: a frame skipped by `longjmp` leaves its record
    /// behind, and a later frame may live at the same address).
    fn captured(&self, frame: &Frame) -> Option<eager::Captured> {
        let word = ThreadStack::current()?.read(frame.return_address_slot)?;
        if word == frame.return_address {
            // Not pending: the common case, decided without a lookup.
            return None;
        }
        let captured = eager::lookup(frame.frame_pointer)?;
        let thunks = lock(&self.inner.thunks);
        let descriptor = thunk_at(&thunks.batches, word)?;
        (descriptor.return_address == frame.return_address
            && descriptor as *const Descriptor as usize == captured.descriptor)
            .then_some(captured)
    }

    fn check_prepared(&self, frame: &Frame, prepared: &Prepared) -> Result<()> {
        if prepared.owner != self.owner() || prepared.return_address() != frame.return_address {
            return Err(Error::WrongPrepared {
                return_address: frame.return_address,
                prepared_for: prepared.return_address(),
            });
        }
        Ok(())
    }

    /// Reads what an eager transfer keeps of a frame, checking every address against this
    /// thread's live stack.
    fn capture_frame(&self, frame: &Frame, descriptor: &Descriptor) -> Result<eager::Captured> {
        let window = ThreadStack::current().ok_or_else(|| Error::StaleFrame {
            return_address: frame.return_address,
            slot: frame.return_address_slot,
            reason: "this thread's stack bounds are unknown".to_owned(),
        })?;
        let mut values = Vec::with_capacity(descriptor.values.len());
        let (saves, caller_fp) = capture_into(
            &window,
            descriptor,
            (frame.stack_pointer, frame.frame_pointer, &frame.saved),
            frame.return_address_slot,
            &mut values,
        )?;
        Ok(eager::Captured {
            descriptor: descriptor as *const Descriptor as usize,
            values,
            saves,
            caller_fp,
        })
    }

    /// Moves frames in one pass over this thread's stack, the fast way to move many: for each
    /// JIT frame, innermost first, `choose` says where it goes (`None`: it stays). A transfer
    /// is prepared once per (return address, target) run of frames (a recursion's frames share
    /// one), and each frame is then patched ([`TransferMode::Lazy`], as
    /// [`patch`](Self::patch)) or captured and patched ([`TransferMode::Eager`], as
    /// [`transfer_now`](Self::transfer_now)) in place, without making a [`Frame`] of it.
    ///
    /// A frame that cannot move keeps running its old code, and the pass goes on: the report
    /// says how many moved and why the others were refused. Call it from a hypercall running
    /// on this thread, with that hypercall's [`GuestState`].
    pub fn transfer_frames<'t>(
        &self,
        state: &GuestState,
        mode: TransferMode,
        mut choose: impl FnMut(&CursorFrame<'_>) -> Option<&'t Target>,
    ) -> PassReport {
        let mut report = PassReport::default();
        let Some(window) = ThreadStack::current() else {
            return report;
        };
        let map = self.engine.code_map();
        let thunks = self.thunk_index();
        // Scrubbing (a test aid) takes the one-frame path.
        let scrub = self.inner.scrub.load(Ordering::Relaxed);
        let mut last: Option<(u64, *const Target, Result<Prepared>)> = None;
        let mut values: Vec<u64> = Vec::new();
        self.for_each_frame(&map, &thunks, state, |f| {
            let Some(target) = choose(f) else {
                return true;
            };
            let reuse = last
                .as_ref()
                .is_some_and(|(ra, t, _)| *ra == f.return_address && std::ptr::eq(*t, target));
            if !reuse {
                let prepared = self.prepare(&Frame::of(f, None), target);
                last = Some((f.return_address, target, prepared));
            }
            let prepared = match last.as_ref().map(|(_, _, p)| p) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    report.refused.push(e.clone());
                    return true;
                }
                None => return true,
            };
            let outcome = if f.word != f.return_address || scrub {
                // Pending already (perhaps captured): the one-frame path sorts it out.
                let pending = thunks.descriptor(f.word).map(|d| d.continuation);
                let frame = Frame::of(f, pending);
                match mode {
                    TransferMode::Lazy => self.patch(&frame, prepared),
                    TransferMode::Eager => self.transfer_now(&frame, prepared),
                }
            } else {
                self.move_in_place(&window, f, prepared, mode, &mut values)
            };
            match outcome {
                Ok(()) => report.moved += 1,
                Err(e) => report.refused.push(e),
            }
            true
        });
        report
    }

    /// Patches (or captures and patches) a frame the pass found not pending.
    #[inline]
    fn move_in_place(
        &self,
        window: &ThreadStack,
        f: &CursorFrame<'_>,
        prepared: &Prepared,
        mode: TransferMode,
        values: &mut Vec<u64>,
    ) -> Result<()> {
        let descriptor = prepared.descriptor();
        if mode == TransferMode::Eager {
            values.clear();
            let (saves, caller_fp) =
                capture_into(window, descriptor, (f.sp, f.fp, &f.saved), f.slot, values)?;
            descriptor.eager.store(true, Ordering::Relaxed);
            eager::push(
                f.fp,
                descriptor as *const Descriptor as usize,
                values,
                saves,
                caller_fp,
            );
        }
        // SAFETY: the slot is this frame's live return-address slot and holds its return
        // address (the cursor read it in this pass, on this thread): the callee's `ret` is its
        // only reader, and the thunk resumes the frame correctly.
        if unsafe { window.write(f.slot, prepared.thunk()) } {
            Ok(())
        } else {
            eager::forget(f.fp);
            Err(Error::StaleFrame {
                return_address: f.return_address,
                slot: f.slot,
                reason: "the slot is not in this thread's live stack".to_owned(),
            })
        }
    }

    /// Undoes [`patch`](Self::patch): the frame's slot gets its original return address back
    /// (nothing happens to a frame that is not pending). A frame captured by an eager transfer
    /// whose slots were scrubbed cannot go back: [`Error::StaleFrame`].
    pub fn unpatch(&self, frame: &Frame) -> Result<()> {
        if self.inner.scrub.load(Ordering::Relaxed) && self.captured(frame).is_some() {
            return Err(Error::StaleFrame {
                return_address: frame.return_address,
                slot: frame.return_address_slot,
                reason: "an eager transfer captured and scrubbed it".to_owned(),
            });
        }
        self.replace_slot(frame, frame.return_address)?;
        eager::forget(frame.frame_pointer);
        Ok(())
    }

    /// Makes every frame pending on `prepared` go on in its old code when its callee returns
    /// (the stub falls back), and forgets it: the next [`prepare`](Self::prepare) for the same
    /// return address and continuation makes a fresh descriptor.
    pub fn cancel(&self, prepared: &Prepared) {
        if prepared.owner != self.owner() {
            return;
        }
        prepared
            .descriptor()
            .enabled
            .store(false, Ordering::Relaxed);
        self.forget_prepared(|p| p.thunk() == prepared.thunk());
    }

    /// Takes the prepared transfers that `gone` picks out of the cache and retires their thunks.
    fn forget_prepared(&self, gone: impl Fn(&Prepared) -> bool) {
        let removed: Vec<Prepared> = {
            let mut cache = lock(&self.inner.prepared);
            let keys: Vec<(UnitId, u64, u64)> = cache
                .iter()
                .filter(|(_, p)| gone(p))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| cache.remove(k)).collect()
        };
        for p in removed {
            self.retire_thunk(p);
        }
    }

    /// Reads the frame's live values now, as a transfer would pass them (zero-extended bits per
    /// [`ValueKind`]): for cross-checks, debugging and tests. The frame must come from a walk of
    /// the hypercall running on this thread.
    pub fn read_values(&self, frame: &Frame, values: &[ValueKind]) -> Result<Vec<u64>> {
        let return_address = frame.return_address;
        if let Some(captured) = self.captured(frame)
            && captured.values.len() == values.len()
        {
            return Ok(captured.values);
        }
        let row = self.row(frame)?;
        let decoded = row.state.as_ref().map_err(|reason| Error::Refused {
            return_address,
            reason: reason.clone(),
        })?;
        let slots = value_slots(return_address, decoded, values)?;
        let window = ThreadStack::current().ok_or_else(|| Error::StaleFrame {
            return_address,
            slot: frame.return_address_slot,
            reason: "this thread's stack bounds are unknown".to_owned(),
        })?;
        let at = (frame.stack_pointer, frame.frame_pointer, &frame.saved);
        slots
            .iter()
            .map(|slot| read_value(&window, slot, at, return_address, frame.return_address_slot))
            .collect()
    }

    /// Does ahead of time what the first transfers would otherwise do inside a hypercall:
    /// sweeps the caches and makes sure a batch of free thunks is ready (frame tables are
    /// decoded when units are published). The runtime calls it on the compiler thread, after
    /// installing itself and after each background compilation.
    pub fn warm(&self) -> Result<()> {
        self.sweep();
        lock(&self.inner.thunks).reserve()
    }

    /// Thunks handed out and not recycled yet: prepared transfers in the cache, and retired
    /// ones that a frame may still return through.
    pub fn thunks_in_use(&self) -> usize {
        lock(&self.inner.thunks).in_use()
    }

    /// Prepared transfers in the cache.
    pub fn prepared_count(&self) -> usize {
        lock(&self.inner.prepared).len()
    }

    /// Frames that entered a continuation through this engine's thunks.
    pub fn frames_transferred(&self) -> u64 {
        flush_transfer_counts();
        self.inner.counters.transferred.load(Ordering::Relaxed)
    }

    /// Frames that reached a thunk but went on in their old code (a cancelled transfer, or a
    /// frame the stub found inconsistent with its descriptor).
    pub fn frames_fell_back(&self) -> u64 {
        self.inner.counters.fell_back.load(Ordering::Relaxed)
    }

    fn owner(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The (original return address, continuation) of this engine's thunk at `address`, if
    /// `address` is one: what a patched return-address slot means (for `discovery.rs`).
    pub(crate) fn thunk_target(&self, address: u64) -> Option<(u64, u64)> {
        let thunks = lock(&self.inner.thunks);
        thunk_at(&thunks.batches, address).map(|d| (d.return_address, d.continuation))
    }

    fn replace_slot(&self, frame: &Frame, value: u64) -> Result<()> {
        let slot = frame.return_address_slot;
        let stale = |reason: String| Error::StaleFrame {
            return_address: frame.return_address,
            slot,
            reason,
        };
        let window = ThreadStack::current()
            .ok_or_else(|| stale("this thread's stack bounds are unknown".to_owned()))?;
        let current = window
            .read(slot)
            .ok_or_else(|| stale("the slot is not in this thread's live stack".to_owned()))?;
        if current != frame.return_address {
            let thunks = lock(&self.inner.thunks);
            let ours = thunk_at(&thunks.batches, current)
                .is_some_and(|d| d.return_address == frame.return_address);
            drop(thunks);
            if !ours {
                return Err(stale(format!(
                    "the slot holds {current:#x}, neither the return address nor a thunk for it"
                )));
            }
        }
        // SAFETY: the slot is a live return-address slot of this thread's stack that holds the
        // frame's return address or a thunk for it (checked): the callee's `ret` is its only
        // reader, and the thunk or the return address both resume the frame correctly.
        if unsafe { window.write(slot, value) } {
            Ok(())
        } else {
            Err(stale(
                "the slot is not in this thread's live stack".to_owned(),
            ))
        }
    }
}

impl fmt::Debug for Transfers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfers")
            .field("frames_transferred", &self.frames_transferred())
            .field("frames_fell_back", &self.frames_fell_back())
            .field("prepared", &lock(&self.inner.prepared).len())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Checks a decoded site against the kinds a target expects and makes the descriptor's value
/// slots.
fn value_slots(
    return_address: u64,
    decoded: &SiteState<RecordValue>,
    kinds: &[ValueKind],
) -> Result<Box<[ValueSlot]>> {
    if decoded.values.len() != kinds.len() {
        return Err(Error::ValueCountMismatch {
            return_address,
            site: decoded.site,
            expected: kinds.len(),
            found: decoded.values.len(),
        });
    }
    decoded
        .values
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(index, (value, &kind))| {
            let bits = mask(kind);
            Ok(match *value {
                RecordValue::Constant(c) => ValueSlot {
                    source: Source::Constant,
                    width: 8,
                    offset: 0,
                    bits: c & bits,
                },
                RecordValue::Register(register) => ValueSlot {
                    source: Source::Register,
                    width: 8,
                    offset: register as i32,
                    bits,
                },
                RecordValue::Stack { base, offset, size } => {
                    let base = match base {
                        FrameBase::Sp => Source::Sp,
                        FrameBase::Fp => Source::Fp,
                    };
                    if u32::from(size) < kind.size() {
                        return Err(Error::SizeMismatch {
                            return_address,
                            site: decoded.site,
                            index,
                            kind,
                            size,
                        });
                    }
                    ValueSlot {
                        source: base,
                        width: kind.size() as u8,
                        offset,
                        bits,
                    }
                }
            })
        })
        .collect()
}

/// The bits of a value of `kind` in a buffer slot: `i1` is its lowest bit (LLVM leaves the
/// other bits of an `i1` byte unspecified; a constant `true` is recorded as -1).
fn mask(kind: ValueKind) -> u64 {
    match kind {
        ValueKind::I1 => 1,
        kind => kind.mask(u64::MAX),
    }
}

// ---------------------------------------------------------------------------------------------
// Descriptors and the transfer buffer
// ---------------------------------------------------------------------------------------------

/// Everything the stub's Rust half needs for one (return address, continuation).
pub(crate) struct Descriptor {
    /// Where the frame goes.
    pub(crate) continuation: u64,
    /// Where the frame is suspended (and where it goes back to when the stub falls back).
    pub(crate) return_address: u64,
    /// The values, in buffer order.
    pub(crate) values: Box<[ValueSlot]>,
    /// The call's result.
    pub(crate) result: ResultSlot,
    /// The frame's callee-saved register slots.
    pub(crate) saves: CalleeSaves,
    /// Cleared by [`Transfers::cancel`].
    pub(crate) enabled: AtomicBool,
    /// Set once an eager transfer used it: only then may a frame returning into its thunk
    /// have an eager record.
    pub(crate) eager: AtomicBool,
    /// The engine's counters.
    pub(crate) counters: Arc<Counters>,
    site: SiteId,
    kinds: Box<[ValueKind]>,
    result_kind: Option<ValueKind>,
}

/// What a thunk's `r11` points at: set before the thunk is handed out, cleared when it is
/// recycled, which happens only once nothing can reach it.
pub(crate) struct DescriptorCell(UnsafeCell<Option<Descriptor>>);

// SAFETY: a cell is written only while no thread can reach it (a fresh or recycled thunk,
// under the pool's lock, before any handle exists; or cleared once `reclaim` showed that no
// thread holds the thunk and no handle exists), and those writes happen-before any read by a
// thread that learns of the thunk through the pool's or the cache's lock, or through its own
// stack. Between them it is only read.
unsafe impl Sync for DescriptorCell {}

impl DescriptorCell {
    fn empty() -> DescriptorCell {
        DescriptorCell(UnsafeCell::new(None))
    }

    /// The descriptor, if the thunk is handed out.
    pub(crate) fn get(&self) -> Option<&Descriptor> {
        // SAFETY: see the `Sync` impl: no write can overlap this read.
        unsafe { (*self.0.get()).as_ref() }
    }

    /// Fills an empty cell.
    ///
    /// # Safety
    ///
    /// No thread may be able to reach the cell: it is fresh, or recycled.
    unsafe fn set(&self, descriptor: Descriptor) {
        // SAFETY: as the caller vouches.
        unsafe { *self.0.get() = Some(descriptor) };
    }

    /// Empties the cell.
    ///
    /// # Safety
    ///
    /// No thread may be able to reach the cell, and no reference into it may live.
    unsafe fn clear(&self) {
        // SAFETY: as the caller vouches.
        unsafe { *self.0.get() = None };
    }
}

/// Where one value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `bits` is the value.
    Constant,
    /// `[rsp + offset]`.
    Sp,
    /// `[rbp + offset]`.
    Fp,
    /// The callee-saved register `offset` ([`arch::RESTORED`] order): where an inner frame
    /// saved it (eager), or as the callee returned it (lazy).
    Register,
}

/// One value of a descriptor: read `width` bytes at `source + offset` and keep `bits`, or take
/// `bits` as is for a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueSlot {
    source: Source,
    width: u8,
    offset: i32,
    bits: u64,
}

/// Where the call's result comes from: nothing, `rax`, or `xmm0`, with the bits to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultSlot {
    None,
    Integer(u64),
    Float(u64),
}

impl ResultSlot {
    fn of(kind: Option<ValueKind>) -> ResultSlot {
        match kind {
            None => ResultSlot::None,
            Some(k) if k.is_float() => ResultSlot::Float(mask(k)),
            Some(k) => ResultSlot::Integer(mask(k)),
        }
    }
}

/// Slots the transfer buffer starts with: enough for any site short of a huge one, so that it
/// is rarely reallocated.
const BUFFER_SLOTS: usize = 1024;

thread_local! {
    /// This thread's transfer buffer. Only [`capture`] touches it, and never reentrantly.
    static BUFFER: UnsafeCell<Vec<u64>> = const { UnsafeCell::new(Vec::new()) };
}

/// Reads a frame's values (into `values`), the callee-saved registers its prologue saved and
/// its caller's `rbp`, as the descriptor says, checking every address against `window`.
fn capture_into(
    window: &ThreadStack,
    descriptor: &Descriptor,
    frame: (u64, u64, &[SavedAt; 5]),
    slot: u64,
    values: &mut Vec<u64>,
) -> Result<([u64; arch::RESTORED.len()], u64)> {
    let return_address = descriptor.return_address;
    for value in &descriptor.values {
        values.push(read_value(window, value, frame, return_address, slot)?);
    }
    let read = |address: u64, width: u8| -> Result<u64> {
        checked_load(window, address, width, return_address, slot)
    };
    let cfa = frame.1 + arch::CFA_FROM_FP_OFFSET;
    let mut saves = [0u64; arch::RESTORED.len()];
    for (saved, &offset) in saves.iter_mut().zip(&descriptor.saves.0) {
        if offset != 0 {
            *saved = read(cfa.wrapping_add_signed(i64::from(offset)), 8)?;
        }
    }
    let caller_fp = read(cfa.wrapping_add_signed(arch::SAVED_FP_FROM_CFA), 8)?;
    Ok((saves, caller_fp))
}

/// One value of a frame suspended at `return_address` (its return-address slot `slot`), with
/// these stack and frame pointers and callee-saved register save slots, as a transfer passes it;
/// every address read is checked against `window`.
fn read_value(
    window: &ThreadStack,
    value: &ValueSlot,
    (sp, fp, saved): (u64, u64, &[SavedAt; 5]),
    return_address: u64,
    slot: u64,
) -> Result<u64> {
    let address = match value.source {
        Source::Constant => return Ok(value.bits),
        Source::Sp => sp.wrapping_add_signed(i64::from(value.offset)),
        Source::Fp => fp.wrapping_add_signed(i64::from(value.offset)),
        Source::Register => register_slot(return_address, saved, value.offset)?,
    };
    Ok(checked_load(window, address, value.width, return_address, slot)? & value.bits)
}

/// `width` bytes at `address`, zero-extended, if they lie in `window` (the frame at
/// `return_address`, whose return-address slot is `slot`, is stale otherwise).
fn checked_load(
    window: &ThreadStack,
    address: u64,
    width: u8,
    return_address: u64,
    slot: u64,
) -> Result<u64> {
    if !window.contains(address, u64::from(width)) {
        return Err(Error::StaleFrame {
            return_address,
            slot,
            reason: format!("{address:#x} is outside this thread's live stack"),
        });
    }
    // SAFETY: the bytes lie in this thread's live stack (checked above).
    Ok(unsafe { load(address, width) })
}

/// Where the frame's callee-saved register `register` ([`arch::RESTORED`] order) is saved, as
/// the frame walk found it.
fn register_slot(return_address: u64, saved: &[SavedAt; 5], register: i32) -> Result<u64> {
    match saved.get(register as usize) {
        Some(&SavedAt::Slot(address)) => Ok(address),
        _ => Err(Error::Refused {
            return_address,
            reason: Refusal::UnsupportedFrame {
                reason: format!(
                    "a value is in {}, and the walk did not find where it was saved",
                    arch::RESTORED
                        .get(register as usize)
                        .map_or_else(|| format!("register {register}"), |r| r.to_string())
                ),
            },
        }),
    }
}

/// What a [`Transfers::transfer_frames`] pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Frames patched (lazy) or captured and patched (eager).
    pub moved: usize,
    /// Why each frame `choose` picked but that could not move was refused (it keeps running
    /// its old code).
    pub refused: Vec<Error>,
}

/// Reads `bytes` bytes at `address`, zero-extended.
///
/// # Safety
///
/// The bytes must be readable.
#[inline(always)]
unsafe fn load(address: u64, bytes: u8) -> u64 {
    // SAFETY: the caller vouches that the bytes are readable; unaligned reads are fine.
    unsafe {
        match bytes {
            1 => u64::from(*(address as *const u8)),
            2 => u64::from(std::ptr::read_unaligned(address as *const u16)),
            4 => u64::from(std::ptr::read_unaligned(address as *const u32)),
            _ => std::ptr::read_unaligned(address as *const u64),
        }
    }
}

/// This thread's transfer buffer, with room for at least `slots` slots; `None` on a thread past
/// its thread-local destructors (a C++ `thread_local` object's destructor returning into a moved
/// frame as its thread exits), whose frames then keep their code.
#[inline(always)]
fn transfer_buffer(slots: usize) -> Option<*mut u64> {
    BUFFER
        .try_with(|cell| {
            // SAFETY: the buffer is this thread's, and nothing else borrows it during this closure
            // (the stub's Rust half does not reenter).
            let buffer = unsafe { &mut *cell.get() };
            if buffer.len() < slots {
                buffer.resize(slots.next_power_of_two().max(BUFFER_SLOTS), 0);
            }
            buffer.as_mut_ptr()
        })
        .ok()
}

/// The call's result as the buffer takes it.
#[inline(always)]
fn result_bits(result: ResultSlot, integer_result: u64, float_result: u64) -> u64 {
    match result {
        ResultSlot::None => 0,
        ResultSlot::Integer(bits) => integer_result & bits,
        ResultSlot::Float(bits) => float_result & bits,
    }
}

/// Fills this thread's transfer buffer with a frame's values and its call's result; returns
/// the buffer (`None` when the thread has none any more: [`transfer_buffer`]).
///
/// # Safety
///
/// `sp` and `fp` must be the stack and frame pointers of a live frame suspended at
/// `descriptor.return_address`, laid out as the descriptor says.
#[inline(always)]
pub(crate) unsafe fn capture(
    descriptor: &Descriptor,
    sp: u64,
    fp: u64,
    registers: &[u64; arch::RESTORED.len()],
    integer_result: u64,
    float_result: u64,
) -> Option<*mut u64> {
    let n = descriptor.values.len();
    let buffer = transfer_buffer(n + 1)?;
    // SAFETY: the buffer holds at least n + 1 slots (above).
    let slots = unsafe { std::slice::from_raw_parts_mut(buffer, n + 1) };
    for (slot, value) in slots.iter_mut().zip(descriptor.values.iter()) {
        let base = match value.source {
            Source::Constant => {
                *slot = value.bits;
                continue;
            }
            Source::Register => {
                *slot = registers[value.offset as usize] & value.bits;
                continue;
            }
            Source::Sp => sp,
            Source::Fp => fp,
        };
        // SAFETY: the value's slot is in the live frame (the caller vouches for the layout).
        let bits = unsafe {
            load(
                base.wrapping_add_signed(i64::from(value.offset)),
                value.width,
            )
        };
        *slot = bits & value.bits;
    }
    slots[n] = result_bits(descriptor.result, integer_result, float_result);
    Some(buffer)
}

/// The eager half of the stub's work: when an eager transfer captured the frame at `fp` for
/// `descriptor`, fills this thread's transfer buffer from the captured values and the call's
/// result, and returns the buffer, the callee-saved registers the frame had saved and its
/// caller's `rbp`. `None`: no such record (the caller falls back to reading the frame).
#[inline(always)]
pub(crate) fn capture_eager(
    descriptor: &Descriptor,
    fp: u64,
    integer_result: u64,
    float_result: u64,
) -> Option<(*mut u64, [u64; arch::RESTORED.len()], u64)> {
    let n = descriptor.values.len();
    eager::take(
        fp,
        descriptor as *const Descriptor as usize,
        |values, saves, caller_fp| {
            if values.len() != n {
                return None;
            }
            let buffer = transfer_buffer(n + 1)?;
            // SAFETY: the buffer holds at least n + 1 slots (above).
            let slots = unsafe { std::slice::from_raw_parts_mut(buffer, n + 1) };
            slots[..n].copy_from_slice(values);
            slots[n] = result_bits(descriptor.result, integer_result, float_result);
            Some((buffer, *saves, caller_fp))
        },
    )
    .flatten()
}

/// The byte eager transfers poison captured slots with ([`Transfers::set_scrub`]).
pub const SCRUB_BYTE: u8 = 0xdb;

/// Overwrites the value slots an eager transfer captured from `frame` with [`SCRUB_BYTE`]s.
/// Its callee-saved save slots stay: they hold its caller's registers, and a caller whose
/// record puts a value in one of those registers is read from there when it moves in turn.
fn scrub_frame(frame: &Frame, descriptor: &Descriptor) {
    let Some(window) = ThreadStack::current() else {
        return;
    };
    let poison = u64::from_ne_bytes([SCRUB_BYTE; 8]);
    let slots = descriptor.values.iter().filter_map(|slot| {
        let base = match slot.source {
            // A register's save slot is an inner frame's, which restores it on return.
            Source::Constant | Source::Register => return None,
            Source::Sp => frame.stack_pointer,
            Source::Fp => frame.frame_pointer,
        };
        Some((base.wrapping_add_signed(i64::from(slot.offset)), slot.width))
    });
    for (address, width) in slots {
        // The frame pointer chain (saved rbp, return address) stays intact.
        let keeps_chain =
            address < frame.frame_pointer + 16 && address + u64::from(width) > frame.frame_pointer;
        if keeps_chain || !window.contains(address, u64::from(width)) {
            continue;
        }
        // SAFETY: the bytes lie in this thread's live stack, in a frame whose state was just
        // captured: its own code never runs again (its return address is a thunk), and the
        // slots are spill and save slots, which no other frame reads.
        unsafe {
            match width {
                1 => (address as *mut u8).write(SCRUB_BYTE),
                2 => (address as *mut u16).write_unaligned(poison as u16),
                4 => (address as *mut u32).write_unaligned(poison as u32),
                _ => (address as *mut u64).write_unaligned(poison),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Thunks
// ---------------------------------------------------------------------------------------------

/// One page of thunks, each with its descriptor cell. Immutable once made: the code is
/// published before the batch is shared, and cells are set once.
struct ThunkBatch {
    /// The unwind information of each thunk handed out (before `region`: dropped first).
    unwind: Box<[Mutex<Option<ThunkUnwind>>]>,
    /// The thunks' code, executable.
    region: CodeRegion,
    address: u64,
    cells: Box<[DescriptorCell]>,
}

/// A thunk's unwind information while it is handed out (dropped: deregistered, then freed).
struct ThunkUnwind {
    _registration: EhFrameRegistration,
    _section: Box<[u8]>,
}

struct ThunkPool {
    arena: CodeArena,
    batches: Vec<Arc<ThunkBatch>>,
    /// Thunks handed out from the last batch.
    used: usize,
    /// Recycled thunks, ready to be handed out again.
    free: Vec<(Arc<ThunkBatch>, usize)>,
}

impl ThunkPool {
    /// Makes sure the last batch has a free thunk, making a new batch when it is full.
    fn reserve(&mut self) -> Result<()> {
        let full = self
            .batches
            .last()
            .is_none_or(|b| self.used >= b.cells.len());
        if full {
            let batch = ThunkBatch::new(&self.arena)?;
            self.batches.push(Arc::new(batch));
            self.used = 0;
        }
        Ok(())
    }

    /// Hands out a recycled thunk, or the next fresh one (making a new batch when the last one
    /// is full), with `descriptor` in its cell.
    fn allocate(
        &mut self,
        descriptor: Descriptor,
        owner: usize,
        lease: Arc<Lease>,
    ) -> Result<Prepared> {
        let (batch, index) = match self.free.pop() {
            Some(free) => free,
            None => {
                self.reserve()?;
                let batch = Arc::clone(self.batches.last().expect("a batch was just made"));
                let index = self.used;
                self.used += 1;
                (batch, index)
            }
        };
        batch.describe(index, &descriptor.saves);
        // SAFETY: the cell is fresh or recycled: no thread can reach it, no handle holds it.
        unsafe { batch.cells[index].set(descriptor) };
        Ok(Prepared {
            batch,
            index,
            owner,
            lease,
        })
    }

    /// Thunks handed out and not recycled.
    fn in_use(&self) -> usize {
        let made: usize = self.batches.iter().map(|b| b.cells.len()).sum();
        let unused_in_last = self
            .batches
            .last()
            .map_or(0, |b| b.cells.len().saturating_sub(self.used));
        made - unused_in_last - self.free.len()
    }
}

impl ThunkBatch {
    fn new(arena: &CodeArena) -> Result<ThunkBatch> {
        let memory = |e: uppercut_core::code_memory::CodeMemoryError| Error::ThunkMemory {
            reason: e.to_string(),
        };
        let count = (arena.page_size() / THUNK_SIZE).max(1);
        let cells: Box<[DescriptorCell]> = (0..count).map(|_| DescriptorCell::empty()).collect();
        let mut region = arena
            .allocate(RegionRequest::code(count * THUNK_SIZE).align(THUNK_SIZE))
            .map_err(memory)?;
        let address = region.addr() as u64;
        let stub = arch::stub_address();
        let bytes = region.as_mut_slice().map_err(memory)?;
        for (i, (chunk, cell)) in bytes
            .chunks_exact_mut(THUNK_SIZE)
            .zip(&cells[..])
            .enumerate()
        {
            let cell = cell as *const DescriptorCell as u64;
            chunk.copy_from_slice(&arch::encode_thunk(cell, stub));
            let ip = address + (i * THUNK_SIZE) as u64;
            if arch::decode_thunk(chunk, ip, stub) != Some(cell) {
                return Err(Error::Unsupported);
            }
        }
        region.publish().map_err(memory)?;
        Ok(ThunkBatch {
            unwind: (0..count).map(|_| Mutex::new(None)).collect(),
            region,
            address,
            cells,
        })
    }

    /// Registers the unwind information of thunk `index` with the process's unwinder: the row
    /// of the frame it stands for (`saves`), so that an exception thrown below a patched frame
    /// unwinds through the thunk as through the frame's own return address. A row that cannot
    /// be described leaves the thunk without (an unwind through it then stops there, as it did
    /// before thunks had any).
    fn describe(&self, index: usize, saves: &CalleeSaves) {
        let thunk = self.address + (index * THUNK_SIZE) as u64;
        // The unwinder looks a return address `ra` up as `ra - 1`: cover the byte before the
        // thunk (the previous thunk's padding, which its own range leaves out) and its code.
        let start = thunk - 1;
        let unwind = frame_section(start, arch::THUNK_UNWIND_BYTES, saves)
            .ok()
            .and_then(|section| {
                let section = section.into_boxed_slice();
                // SAFETY: the section lives in the `ThunkUnwind` with the registration, which
                // drops the registration first; the thunk's code lives in `region`, which the
                // batch drops after `unwind`; the FDE's addresses are final.
                let registration = unsafe { EhFrameRegistration::register(&section) }.ok()??;
                Some(ThunkUnwind {
                    _registration: registration,
                    _section: section,
                })
            });
        *lock(&self.unwind[index]) = unwind;
    }

    /// Takes back the unwind information of thunk `index` (recycled).
    fn forget(&self, index: usize) {
        lock(&self.unwind[index]).take();
    }

    /// The descriptor of the thunk at `address`, if `address` is one of this batch's thunks.
    fn descriptor_at(&self, address: u64) -> Option<&Descriptor> {
        let offset = address.checked_sub(self.address)?;
        if offset % THUNK_SIZE as u64 != 0 || !self.region.contains(address as usize) {
            return None;
        }
        self.cells.get((offset / THUNK_SIZE as u64) as usize)?.get()
    }
}

/// The descriptor of the thunk at `address`, if it is one.
fn thunk_at(batches: &[Arc<ThunkBatch>], address: u64) -> Option<&Descriptor> {
    batches.iter().find_map(|b| b.descriptor_at(address))
}

/// The thunk batches at one moment: what a patched return-address slot means.
pub(crate) struct ThunkIndex {
    batches: Vec<Arc<ThunkBatch>>,
}

impl ThunkIndex {
    /// The original return address behind the thunk at `word`, if `word` is a thunk.
    #[inline]
    pub(crate) fn resolve(&self, word: u64) -> Option<u64> {
        self.descriptor(word).map(|d| d.return_address)
    }

    /// The descriptor of the thunk at `word`, if `word` is a thunk.
    pub(crate) fn descriptor(&self, word: u64) -> Option<&Descriptor> {
        thunk_at(&self.batches, word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uppercut_core::stackmaps::Location;

    const RA: u64 = 0x1000 + 0x40;

    fn header(count: i32) -> Vec<Location> {
        vec![
            Location::Constant { value: 0, size: 8 },
            Location::Constant { value: 0, size: 8 },
            Location::Constant {
                value: count,
                size: 8,
            },
        ]
    }

    fn spill(reg: DwarfReg, offset: i32, size: u16) -> Location {
        Location::Indirect { reg, offset, size }
    }

    #[test]
    fn statepoint_records_decode_by_the_convention() {
        let mut locations = header(5);
        locations.extend([
            Location::Constant { value: 9, size: 8 },
            spill(DwarfReg::RSP, 8, 8),
            spill(DwarfReg::RBP, -20, 4),
            Location::Constant { value: -1, size: 8 },
            Location::ConstantIndex {
                index: uppercut_core::stackmaps::ConstantIndex(0),
                value: 1 << 40,
                size: 8,
            },
            // a (base, derived) pair after the deopt state
            spill(DwarfReg::RSP, 8, 8),
            spill(DwarfReg::RSP, 8, 8),
        ]);
        let (site, decoded) = SiteState::decode(&locations);
        assert_eq!(site, Some(SiteId(9)));
        let decoded = decoded.unwrap();
        assert_eq!(
            decoded.values,
            vec![
                RecordValue::Stack {
                    base: FrameBase::Sp,
                    offset: 8,
                    size: 8
                },
                RecordValue::Stack {
                    base: FrameBase::Fp,
                    offset: -20,
                    size: 4
                },
                RecordValue::Constant(u64::MAX),
                RecordValue::Constant(1 << 40),
            ]
        );
        let kinds = [
            ValueKind::Ptr,
            ValueKind::F32,
            ValueKind::I1,
            ValueKind::I64,
        ];
        let slots = value_slots(RA, &decoded, &kinds).unwrap();
        assert_eq!(slots[1].width, 4);
        assert_eq!(slots[1].bits, 0xffff_ffff);
        assert_eq!(slots[2].bits, 1, "i1 true is recorded as -1");
        assert_eq!(slots[3].bits, 1 << 40);
        assert!(matches!(
            value_slots(RA, &decoded, &kinds[..3]),
            Err(Error::ValueCountMismatch {
                expected: 3,
                found: 4,
                ..
            })
        ));
        let wide = [
            ValueKind::Ptr,
            ValueKind::F64,
            ValueKind::I1,
            ValueKind::I64,
        ];
        assert!(matches!(
            value_slots(RA, &decoded, &wide),
            Err(Error::SizeMismatch {
                index: 1,
                size: 4,
                ..
            })
        ));
    }

    #[test]
    fn thunk_batches_are_published_and_map_back_to_their_cells() {
        use uppercut_core::code_memory::RegionState;
        let arena = CodeArena::new().unwrap();
        let batch = Arc::new(ThunkBatch::new(&arena).unwrap());
        assert_eq!(batch.region.state(), RegionState::Executable);
        assert_eq!(batch.cells.len(), arena.page_size() / THUNK_SIZE);
        for (i, cell) in batch.cells.iter().enumerate() {
            let ip = batch.address + (i * THUNK_SIZE) as u64;
            let bytes = &batch.region.as_slice()[i * THUNK_SIZE..][..THUNK_SIZE];
            let cell_address = cell as *const DescriptorCell as u64;
            assert_eq!(
                arch::decode_thunk(bytes, ip, arch::stub_address()),
                Some(cell_address)
            );
        }
        // Cells are empty until handed out: no thunk maps to a descriptor yet.
        let batches = [Arc::clone(&batch)];
        assert!(thunk_at(&batches, batch.address).is_none());
        let mut pool = ThunkPool {
            arena,
            batches: vec![batch],
            used: 0,
            free: Vec::new(),
        };
        let lease = || {
            Arc::new(Lease {
                source: UnitId(1),
                target: UnitId(2),
            })
        };
        let descriptor = |return_address| Descriptor {
            continuation: 0x99,
            return_address,
            values: Box::new([]),
            result: ResultSlot::None,
            saves: CalleeSaves::default(),
            enabled: AtomicBool::new(true),
            eager: AtomicBool::new(false),
            counters: Arc::default(),
            site: SiteId(1),
            kinds: Box::new([]),
            result_kind: None,
        };
        let a = pool.allocate(descriptor(0x1000), 1, lease()).unwrap();
        let b = pool.allocate(descriptor(0x2000), 1, lease()).unwrap();
        assert_eq!(b.thunk() - a.thunk(), THUNK_SIZE as u64);
        let found = thunk_at(&pool.batches, b.thunk()).unwrap();
        assert_eq!((found.return_address, found.continuation), (0x2000, 0x99));
        assert!(thunk_at(&pool.batches, b.thunk() + 1).is_none());
        assert_eq!(pool.in_use(), 2);
        // A recycled thunk is handed out again, with its new descriptor, before a fresh one.
        let (batch_a, index_a, thunk_a) = (Arc::clone(&a.batch), a.index, a.thunk());
        drop(a);
        // SAFETY: nothing can reach the thunk: it was never patched in, and its handle is gone.
        unsafe { batch_a.cells[index_a].clear() };
        assert!(thunk_at(&pool.batches, thunk_a).is_none());
        pool.free.push((batch_a, index_a));
        assert_eq!(pool.in_use(), 1);
        let again = pool.allocate(descriptor(0x4000), 1, lease()).unwrap();
        assert_eq!(again.thunk(), thunk_a);
        assert_eq!(
            thunk_at(&pool.batches, thunk_a).unwrap().return_address,
            0x4000
        );
        assert_eq!(pool.in_use(), 2);
        // A full batch makes another.
        let capacity = pool.batches[0].cells.len();
        for _ in 2..=capacity {
            pool.allocate(descriptor(0x3000), 1, lease()).unwrap();
        }
        assert_eq!(pool.batches.len(), 2);
    }

    #[test]
    fn capture_reads_values_and_the_result() {
        // A fake frame: sp points at `stack`, fp at its middle.
        let mut stack = [0u64; 8];
        stack[0] = 0x1122_3344_5566_7788;
        stack[1] = 0xffff_ffff_3fc0_0000; // a float in the low half
        stack[5] = 0xfe; // an i1 byte with stray bits
        let sp = stack.as_mut_ptr() as u64;
        let fp = sp + 32;
        let slot = |source, offset, kind: ValueKind| ValueSlot {
            source,
            width: kind.size() as u8,
            offset,
            bits: mask(kind),
        };
        let descriptor = Descriptor {
            continuation: 1,
            return_address: 2,
            values: vec![
                slot(Source::Sp, 0, ValueKind::I64),
                slot(Source::Sp, 8, ValueKind::F32),
                slot(Source::Fp, 8, ValueKind::I1),
                slot(Source::Fp, -32, ValueKind::I16),
                ValueSlot {
                    source: Source::Constant,
                    width: 8,
                    offset: 0,
                    bits: 42,
                },
                slot(Source::Register, 3, ValueKind::I32),
            ]
            .into_boxed_slice(),
            result: ResultSlot::of(Some(ValueKind::I8)),
            saves: CalleeSaves::default(),
            enabled: AtomicBool::new(true),
            eager: AtomicBool::new(false),
            counters: Arc::default(),
            site: SiteId(0),
            kinds: Box::new([]),
            result_kind: None,
        };
        let registers = [1, 2, 3, 0xaaaa_bbbb_cccc_dddd, 5];
        // SAFETY: every slot the descriptor names lies in `stack`.
        let buffer = unsafe { capture(&descriptor, sp, fp, &registers, 0x1234, 0) }.unwrap();
        // SAFETY: the buffer holds at least values + 1 slots.
        let got = unsafe { std::slice::from_raw_parts(buffer, 7) };
        assert_eq!(
            got,
            &[
                0x1122_3344_5566_7788,
                0x3fc0_0000,
                0,
                0x7788,
                42,
                0xcccc_dddd,
                0x34
            ]
        );
    }
}
