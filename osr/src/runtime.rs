//! The OSR runtime: handles every site hypercall of an instrumented engine, hands it to a
//! [`Policy`], and gives the policy what it needs to act: the frames on the stack, versions and
//! continuations (compiled once, cached), and frame transfers.
//!
//! ```text
//!  guest: counter hits 0 / store to a watched global
//!    └─ PerformCustomCallback("uppercut.osr.site", site) ──> Osr's callback
//!         ├─ walk this thread's JIT frames (Transfers::walk)
//!         ├─ policy.on_site(cx): cx.version(...)  cx.transfer(frame, spec)  cx.set_counter(...)
//!         │     transfer = continuation of (function, frame's site, spec), cached
//!         │              + Transfers::prepare + Transfers::patch (the frame's return address)
//!         └─ return to the guest: each patched frame moves into its continuation when its
//!            callee returns (the innermost at once)
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uppercut_core::{
    CallbackError, Engine, Hypercall, OptLevel, OsrModule, Readiness, SITE_CALLBACK, SiteId,
    SiteInfo, SiteKind, UnitId, ValueKind, VersionInfo, VersionRequest, specialisation_text,
};

use crate::compiler::Compiler;
use crate::policy::Policy;
use crate::{Frame, Target, Transfers};

/// What a version is built as: a level, the global values it assumes, and the sites it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionSpec {
    /// Its optimisation level.
    pub opt_level: OptLevel,
    /// Globals it treats as constants, with their values' bits, sorted by name.
    pub specialisation: Vec<(String, u64)>,
    /// Which sites it keeps: a [`Readiness::Final`] version is where frames go to stay.
    pub readiness: Readiness,
}

impl std::fmt::Display for VersionSpec {
    /// `O2`, `O2 final`, or `O2, mode=1` when specialised.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.opt_level)?;
        if self.readiness == Readiness::Final {
            write!(f, " final")?;
        }
        if !self.specialisation.is_empty() {
            write!(f, ", {}", specialisation_text(&self.specialisation))?;
        }
        Ok(())
    }
}

impl VersionSpec {
    /// An unspecialised version at `opt_level`.
    pub fn at(opt_level: OptLevel) -> VersionSpec {
        VersionSpec {
            opt_level,
            specialisation: Vec::new(),
            readiness: Readiness::Sites,
        }
    }

    /// The spec a compiled version was built with.
    pub fn of(version: &VersionInfo) -> VersionSpec {
        VersionSpec {
            opt_level: version.opt_level,
            specialisation: version.specialisation.clone(),
            readiness: version.readiness,
        }
    }
}

/// Counts of what OSR did, for `--osr-stats` and experiments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OsrStats {
    /// Site hypercalls after which at least one frame was set to move.
    pub transitions: u64,
    /// Frames that actually entered a continuation.
    pub frames: u64,
    /// Frames set to move (return addresses patched); some may never return (exit, longjmp).
    pub patched: u64,
    /// Frames a policy wanted to move that could not be (missing or doubtful metadata, or a
    /// continuation that could not be built): they kept running their old code.
    pub refused: u64,
    /// Versions and continuations compiled after the base unit.
    pub recompiles: u64,
    /// Site hypercalls handed to the policy (not counting the ones a relink's arming caused,
    /// which only catch up).
    pub sites: u64,
    /// Versions compiled in the background ([`Cx::version_in_background`]).
    pub background: u64,
    /// Frames moved at a safepoint because their function was relinked elsewhere: by another
    /// thread, or by a background compilation.
    pub caught_up: u64,
    /// The longest time a site hypercall kept the guest waiting.
    pub max_stall: Duration,
    /// The time all site hypercalls kept the guest waiting.
    pub total_stall: Duration,
    /// Functions and globals a policy's storm guard gave up on ([`Cx::storm`]): recompiled or
    /// deoptimised too often, they are left as they are.
    pub storms: u64,
}

/// One thing OSR did, in order (kept for tests and experiments; the first
/// [`MAX_EVENTS`] only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsrEvent {
    /// A new version of a function was compiled (and relinked, if `relinked`).
    Version {
        /// The function.
        function: String,
        /// How it was built.
        spec: VersionSpec,
        /// Whether the function's entries now jump to it.
        relinked: bool,
    },
    /// A frame was set to move into a continuation.
    Transfer {
        /// The frame's function.
        function: String,
        /// The site it is suspended at.
        site: SiteId,
        /// What it was running.
        from: VersionSpec,
        /// What it moves to.
        to: VersionSpec,
    },
}

/// When a frame's state is read: at its callee's return, or at the safepoint that moves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TransferMode {
    /// Patch the frame's return address; read its state when its callee returns
    /// ([`Transfers::patch`]).
    #[default]
    Lazy,
    /// Read every moved frame's state at the safepoint, in the same pass that patches it
    /// ([`Transfers::transfer_now`]): the old frames' slots and the old code's metadata are
    /// not needed afterwards.
    Eager,
}

impl std::str::FromStr for TransferMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_choice(
            s,
            "transfer mode",
            &[("lazy", TransferMode::Lazy), ("eager", TransferMode::Eager)],
        )
    }
}

/// The value named `s` among `choices`, or an error naming what was expected.
fn parse_choice<T: Copy>(s: &str, what: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == s)
        .map(|&(_, value)| value)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            format!("unknown {what} `{s}` (expected {})", names.join(" or "))
        })
}

/// What a moved frame resumes in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ContinuationKind {
    /// One continuation per (site, spec), built for that site alone: the best code
    /// ([`Engine::compile_continuation`]).
    #[default]
    PerSite,
    /// One multi-entry continuation per (function, spec), compiled once for all its sites
    /// ([`Engine::compile_multi_continuation`]).
    MultiEntry,
}

impl std::str::FromStr for ContinuationKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_choice(
            s,
            "continuation kind",
            &[
                ("per-site", ContinuationKind::PerSite),
                ("multi", ContinuationKind::MultiEntry),
            ],
        )
    }
}

/// How [`Osr`] runs, besides its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsrOptions {
    /// What moved frames resume in.
    pub continuations: ContinuationKind,
    /// When moved frames' state is read.
    pub transfer: TransferMode,
    /// With [`TransferMode::Eager`], overwrite the slots each transfer captured with a poison
    /// pattern ([`Transfers::set_scrub`]): nothing may read them again, and a bug that did
    /// would show.
    pub scrub: bool,
    /// How many continuations (per (site, spec), failures included) the cache keeps. The least
    /// recently used one goes first; its unit is retired once no other cached continuation
    /// lives in it (see [`uppercut_core::reclaim`]), and frames already moved into it finish
    /// there. At least 1.
    pub continuation_cache: usize,
}

/// [`OsrOptions::continuation_cache`] by default.
pub const CONTINUATION_CACHE: usize = 256;

impl Default for OsrOptions {
    fn default() -> Self {
        OsrOptions {
            continuations: ContinuationKind::default(),
            transfer: TransferMode::default(),
            scrub: false,
            continuation_cache: CONTINUATION_CACHE,
        }
    }
}

/// The continuations compiled so far, least recently used first out.
#[derive(Default)]
struct Continuations {
    entries: HashMap<(SiteId, VersionSpec), Cached>,
    /// Bumped at every use.
    clock: u64,
}

/// A cached continuation: its entry (`None`: it failed to compile) and unit.
struct Cached {
    entry: Option<u64>,
    unit: Option<UnitId>,
    used: u64,
}

impl Continuations {
    fn get(&mut self, key: &(SiteId, VersionSpec)) -> Option<Option<u64>> {
        self.clock += 1;
        let clock = self.clock;
        let cached = self.entries.get_mut(key)?;
        cached.used = clock;
        Some(cached.entry)
    }

    fn insert(&mut self, key: (SiteId, VersionSpec), entry: Option<u64>, unit: Option<UnitId>) {
        self.clock += 1;
        let used = self.clock;
        self.entries
            .entry(key)
            .or_insert(Cached { entry, unit, used });
    }

    /// Evicts least recently used continuations down to `capacity`; returns the units no
    /// cached continuation lives in any more.
    fn evict(&mut self, capacity: usize) -> Vec<UnitId> {
        let mut gone = Vec::new();
        while self.entries.len() > capacity.max(1) {
            let Some(key) = self
                .entries
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let Some(unit) = self.entries.remove(&key).and_then(|c| c.unit) else {
                continue;
            };
            if !self.entries.values().any(|c| c.unit == Some(unit)) {
                gone.push(unit);
            }
        }
        gone
    }
}

/// How many events [`Osr::events`] keeps.
pub const MAX_EVENTS: usize = 10_000;

/// The state shared between the handle and the engine's callback.
struct Shared {
    /// This runtime's number, unique in the process.
    id: u64,
    options: OsrOptions,
    policy: Mutex<Box<dyn Policy>>,
    continuations: Mutex<Continuations>,
    events: Mutex<Vec<OsrEvent>>,
    /// Where LLVM runs.
    compiler: Compiler,
    /// Bumped at every relink; each thread catches up at its next safepoint with what
    /// `relinked` says changed since it last looked.
    generation: AtomicU64,
    /// Each relinked function's latest spec, the generation that made it current, and whether
    /// frames running its older code are to move to it (else they finish where they are).
    relinked: Mutex<HashMap<String, (u64, VersionSpec, bool)>>,
    /// Loop and entry counters a relink armed (set to 1, so that threads running old code come
    /// to a safepoint), with the count each held before. The fire an arming causes catches up
    /// and puts the count back; policies never see it.
    armed: Mutex<HashMap<String, i64>>,
    /// Versions asked for in the background (compiled, being compiled, or queued).
    queued: Mutex<HashSet<(String, VersionSpec)>>,
    /// Continuations asked for in the background by a catch-up, likewise.
    queued_continuations: Mutex<HashSet<(SiteId, VersionSpec)>>,
    transitions: AtomicU64,
    patched: AtomicU64,
    refused: AtomicU64,
    recompiles: AtomicU64,
    sites: AtomicU64,
    background: AtomicU64,
    caught_up: AtomicU64,
    stall_max_ns: AtomicU64,
    stall_total_ns: AtomicU64,
    storms: AtomicU64,
}

impl Shared {
    fn event(&self, event: OsrEvent) {
        self.event_with(|| event);
    }

    /// Records the event `make` makes, unless the log is full (then it is not made).
    fn event_with(&self, make: impl FnOnce() -> OsrEvent) {
        let mut events = lock(&self.events);
        if events.len() < MAX_EVENTS {
            events.push(make());
        }
    }

    /// Records that `function`'s entries now lead to `spec`, and arms its loop sites so that
    /// threads running its old code reach a safepoint soon.
    fn relinked(
        &self,
        engine: &Engine,
        osr: &OsrModule,
        function: &str,
        spec: &VersionSpec,
        chase: bool,
    ) {
        {
            // Under the lock: a thread that reads the new generation finds its entry.
            let mut relinked = lock(&self.relinked);
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            relinked.insert(function.to_owned(), (generation, spec.clone(), chase));
        }
        if !chase {
            return;
        }
        // Outermost loops only: a frame moved at an outermost loop's header resumes in a loop
        // nest the optimiser sees whole (entered deeper, the loops around the resume point are
        // entered in their middle). Entries neither: an entry of the old code is never run
        // again (it jumps to the new version now).
        let counters: Vec<String> = osr
            .function(function)
            .map(|f| f.sites.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|id| osr.site(*id))
            .filter(|site| site.kind == SiteKind::Loop && site.loop_depth == Some(1))
            .filter_map(|site| site.counter.clone())
            .collect();
        // One store each: a loop that counts in registers charges its global with a
        // compare-and-swap, which never overwrites the arming, and sees it within a chunk of
        // passes (`REGISTER_CHUNK`). A loop that counts in the global itself
        // (`LoopCounters::Global`) decrements it with a plain load and store, and may
        // overwrite the arming: its frames then move only at a later relink, or never
        // (correct, only slower).
        let mut armed = lock(&self.armed);
        for counter in &counters {
            let before = read_counter(engine, counter).unwrap_or(i64::MAX);
            armed.entry(counter.clone()).or_insert(before);
            let _ = store_counter(engine, counter, 1);
        }
    }

    /// If a relink armed `site`'s counter, disarms it (the count it held before comes back)
    /// and says so: this fire was the arming's.
    fn disarm(&self, engine: &Engine, site: &SiteInfo) -> bool {
        let Some(counter) = site.counter.as_deref() else {
            return false;
        };
        let Some(before) = lock(&self.armed).remove(counter) else {
            return false;
        };
        let _ = store_counter(engine, counter, before);
        true
    }

    /// The continuation of `site` built as `spec`: from the cache, or compiled (and cached,
    /// failures too) on the compiler thread, which is this thread when `here`.
    fn continuation(
        &self,
        engine: &Engine,
        site: &SiteInfo,
        spec: &VersionSpec,
        here: bool,
    ) -> Result<u64, String> {
        let key = (site.id, spec.clone());
        if let Some(cached) = lock(&self.continuations).get(&key) {
            return cached.ok_or_else(|| format!("no continuation at {} (failed before)", site.id));
        }
        let (function, id, level, specialisation, readiness) = (
            site.function.clone(),
            site.id,
            spec.opt_level,
            spec.specialisation.clone(),
            spec.readiness,
        );
        let compiling = engine.clone();
        let kind = self.options.continuations;
        // Per site: the site's entry. Multi-entry: every site's entry, of which this one's.
        // With the unit they live in.
        let compile = move || -> Result<(Vec<(SiteId, u64)>, UnitId), String> {
            match kind {
                ContinuationKind::PerSite => compiling
                    .compile_continuation_as(&function, id, level, &specialisation, readiness)
                    .map(|c| (vec![(id, c.version.entry)], c.version.unit)),
                ContinuationKind::MultiEntry => compiling
                    .compile_multi_continuation_as(&function, level, &specialisation, readiness)
                    .map(|c| (c.entries, c.version.unit)),
            }
            .map_err(|e| e.to_string())
        };
        let made = if here {
            compile()
        } else {
            self.compiler
                .run(compile)
                .unwrap_or_else(|| Err("the compiler thread failed".to_owned()))
        };
        let mut cache = lock(&self.continuations);
        let (entries, unit) = match made {
            Ok(made) => made,
            Err(why) => {
                cache.insert(key, None, None);
                let gone = cache.evict(self.options.continuation_cache);
                drop(cache);
                retire_all(engine, gone);
                return Err(why);
            }
        };
        self.recompiles.fetch_add(1, Ordering::Relaxed);
        for &(site, entry) in &entries {
            cache.insert((site, spec.clone()), Some(entry), Some(unit));
        }
        let found = cache.get(&key).flatten();
        if found.is_none() {
            cache.insert(key, None, Some(unit));
        }
        // The continuation just made is the most recently used: it stays.
        let gone = cache.evict(self.options.continuation_cache);
        drop(cache);
        retire_all(engine, gone);
        found.ok_or_else(|| format!("{} has no entry in its continuation", site.id))
    }
}

/// Retires continuation units the cache let go of.
fn retire_all(engine: &Engine, units: Vec<UnitId>) {
    for unit in units {
        // Retired by someone else already, or handed over: not ours any more.
        let _ = engine.retire_unit(unit);
    }
}

thread_local! {
    /// The generation each runtime (by [`Shared::id`]) was at when this thread last caught up.
    static SEEN: RefCell<HashMap<u64, u64>> = RefCell::new(HashMap::new());
}

/// `None` on a thread past its thread-local destructors.
fn seen(shared: &Shared) -> Option<u64> {
    SEEN.try_with(|s| s.borrow().get(&shared.id).copied().unwrap_or(0))
        .ok()
}

fn set_seen(shared: &Shared, generation: u64) {
    let _ = SEEN.try_with(|s| s.borrow_mut().insert(shared.id, generation));
}

/// Numbers runtimes, so that what a thread saw of one is never taken for another's.
static RUNTIMES: AtomicU64 = AtomicU64::new(0);

fn read_counter(engine: &Engine, counter: &str) -> Option<i64> {
    let address = engine.global_address(counter).ok()?;
    // SAFETY: as in `store_counter`: an aligned `i64` global of the guest.
    Some(unsafe { (address as *const i64).read_volatile() })
}

fn store_counter(engine: &Engine, counter: &str, count: i64) -> uppercut_core::Result<()> {
    let address = engine.global_address(counter)?;
    // SAFETY: the counter is an `i64` global of the guest (defined by the base unit, writable
    // data, 8-aligned); the guest reads and writes it with plain accesses too, and an aligned
    // 8-byte store is atomic on x86-64.
    unsafe { (address as *mut i64).write_volatile(count) };
    Ok(())
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// OSR installed on an engine: its site hypercalls go to a policy.
///
/// The handle keeps the engine alive; the engine's callback holds only the shared state.
#[derive(Clone)]
pub struct Osr {
    shared: Arc<Shared>,
    transfers: Transfers,
}

impl std::fmt::Debug for Osr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Osr").field("stats", &self.stats()).finish()
    }
}

impl Osr {
    /// Handles `engine`'s site hypercalls with `policy`. The engine must have been created
    /// with [`EngineOptions::instrument`](uppercut_core::EngineOptions::instrument).
    ///
    /// Compiles the guest (if it is not yet) and decodes its frame metadata, so that the first
    /// site hypercall does not; a guest that does not compile is an error here.
    pub fn install(engine: &Engine, policy: impl Policy) -> crate::Result<Osr> {
        Osr::install_with(engine, policy, OsrOptions::default())
    }

    /// [`Osr::install`] with options.
    pub fn install_with(
        engine: &Engine,
        policy: impl Policy,
        options: OsrOptions,
    ) -> crate::Result<Osr> {
        if engine.osr().is_none() {
            return Err(crate::Error::NotInstrumented);
        }
        let shared = Arc::new(Shared {
            id: RUNTIMES.fetch_add(1, Ordering::Relaxed),
            options,
            policy: Mutex::new(Box::new(policy)),
            continuations: Mutex::default(),
            events: Mutex::default(),
            compiler: Compiler::default(),
            generation: AtomicU64::new(0),
            relinked: Mutex::default(),
            armed: Mutex::default(),
            queued: Mutex::default(),
            queued_continuations: Mutex::default(),
            transitions: AtomicU64::new(0),
            patched: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            recompiles: AtomicU64::new(0),
            sites: AtomicU64::new(0),
            background: AtomicU64::new(0),
            caught_up: AtomicU64::new(0),
            stall_max_ns: AtomicU64::new(0),
            stall_total_ns: AtomicU64::new(0),
            storms: AtomicU64::new(0),
        });
        let callback = Arc::clone(&shared);
        engine
            .register_callback(SITE_CALLBACK, move |h: &mut Hypercall<'_>| {
                on_site(&callback, h)
            })
            .map_err(|e| crate::Error::Engine(e.to_string()))?;
        let transfers = Transfers::new(engine);
        transfers.set_scrub(shared.options.scrub && shared.options.transfer == TransferMode::Eager);
        // The thread that installs OSR is usually the one that runs the guest.
        let _ = uppercut_core::frames::ThreadStack::current();
        // Compile the guest (its globals, when it compiles lazily) and decode its frame
        // metadata now rather than in the first site hypercall. On this thread: the compiler
        // thread starts only when a policy first compiles, since any second thread moves the
        // process's `malloc` to its slower multi-threaded paths for good.
        engine
            .compile()
            .map_err(|e| crate::Error::Engine(e.to_string()))?;
        transfers
            .warm()
            .map_err(|e| crate::Error::Engine(e.to_string()))?;
        Ok(Osr { shared, transfers })
    }

    /// The options it runs with.
    pub fn options(&self) -> &OsrOptions {
        &self.shared.options
    }

    /// What OSR did so far.
    pub fn stats(&self) -> OsrStats {
        let s = &self.shared;
        OsrStats {
            transitions: s.transitions.load(Ordering::Relaxed),
            frames: self.transfers.frames_transferred(),
            patched: s.patched.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            recompiles: s.recompiles.load(Ordering::Relaxed),
            sites: s.sites.load(Ordering::Relaxed),
            background: s.background.load(Ordering::Relaxed),
            caught_up: s.caught_up.load(Ordering::Relaxed),
            max_stall: Duration::from_nanos(s.stall_max_ns.load(Ordering::Relaxed)),
            total_stall: Duration::from_nanos(s.stall_total_ns.load(Ordering::Relaxed)),
            storms: s.storms.load(Ordering::Relaxed),
        }
    }

    /// The first [`MAX_EVENTS`] things OSR did, in order.
    pub fn events(&self) -> Vec<OsrEvent> {
        lock(&self.shared.events).clone()
    }
}

fn on_site(shared: &Arc<Shared>, h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    let started = Instant::now();
    let result = handle_site(shared, h);
    let stall = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    shared.stall_total_ns.fetch_add(stall, Ordering::Relaxed);
    shared.stall_max_ns.fetch_max(stall, Ordering::Relaxed);
    result
}

fn handle_site(shared: &Arc<Shared>, h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    let id = SiteId(h.args() as usize as u32);
    let engine = h.engine();
    let osr = engine
        .osr()
        .ok_or_else(|| CallbackError::from("uppercut.osr.site: the engine is not instrumented"))?;
    let Some(site) = osr.site(id).cloned() else {
        return Err(CallbackError::from(format!(
            "uppercut.osr.site: the guest names {id}, which instrumentation never made"
        )));
    };
    let transfers = Transfers::new(&engine);
    // A thread past its thread-local destructors (a C++ `thread_local` object's destructor
    // runs guest code as its thread exits) moves no frame: they keep running their code.
    let Some(seen) = seen(shared) else {
        return Ok(std::ptr::null_mut());
    };
    if shared.disarm(&engine, &site) {
        // A relink armed this site to bring this thread here: catch up, without the policy.
        let state = h.guest_state();
        let mut cx = Cx {
            engine: &engine,
            transfers: &transfers,
            shared,
            osr: &osr,
            site: &site,
            frames: transfers.walk(&state),
            patched: 0,
            shadow_check: None,
            last: None,
        };
        let now = shared.generation.load(Ordering::Acquire);
        cx.catch_up(seen);
        set_seen(shared, now);
        if cx.patched > 0 {
            shared.transitions.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(std::ptr::null_mut());
    }
    shared.sites.fetch_add(1, Ordering::Relaxed);
    let mut policy = lock(&shared.policy);
    // Catching up with relinks needs every frame; otherwise the policy says how many.
    let behind = shared.generation.load(Ordering::Acquire) != seen;
    let limit = match behind {
        true => usize::MAX,
        false => policy.frames_wanted(&site).unwrap_or(usize::MAX),
    };
    let state = h.guest_state();
    let frames = transfers.walk_limit(&state, limit);
    let complete = limit == usize::MAX;
    let mut cx = Cx {
        engine: &engine,
        transfers: &transfers,
        shared,
        osr: &osr,
        site: &site,
        frames,
        patched: 0,
        shadow_check: None,
        last: None,
    };
    let result = policy.on_site(&mut cx);
    drop(policy);
    let now = shared.generation.load(Ordering::Acquire);
    if result.is_ok() && now != seen {
        // Frames the policy moved are pending now: walk again to see them as they are.
        if !complete || cx.patched > 0 {
            cx.frames = transfers.walk(&state);
            cx.shadow_check = None;
        }
        cx.catch_up(seen);
        set_seen(shared, now);
    }
    if cx.patched > 0 {
        shared.transitions.fetch_add(1, Ordering::Relaxed);
    }
    result.map_err(CallbackError::from)?;
    Ok(std::ptr::null_mut())
}

/// What a policy sees and can do at one site hypercall.
pub struct Cx<'a> {
    engine: &'a Engine,
    transfers: &'a Transfers,
    shared: &'a Arc<Shared>,
    osr: &'a OsrModule,
    site: &'a SiteInfo,
    frames: Vec<Frame>,
    patched: u64,
    /// The shadow-stack cross-check, once made: `Err` makes every transfer fail.
    shadow_check: Option<Result<(), String>>,
    /// The last transfer prepared, for the next frame suspended at the same return address
    /// of the same version going to the same spec (a recursion's frames).
    last: Option<LastTransfer>,
}

/// A transfer [`Cx::transfer`] prepared, and what it was prepared for.
struct LastTransfer {
    return_address: u64,
    version: uppercut_core::VersionId,
    spec: VersionSpec,
    site: SiteId,
    function: String,
    prepared: crate::Prepared,
}

impl Cx<'_> {
    /// The engine.
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// What instrumentation made of the module.
    pub fn osr(&self) -> &OsrModule {
        self.osr
    }

    /// The site whose hypercall fired.
    pub fn site(&self) -> &SiteInfo {
        self.site
    }

    /// This thread's JIT frames, innermost first (frame 0 made the hypercall).
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The site frame `index` is suspended at, if its record is an OSR site.
    pub fn frame_site(&self, index: usize) -> Option<&SiteInfo> {
        self.osr.site(self.frames.get(index)?.site?)
    }

    /// Compiles a version of `function` (relinking it when `relink`), from the instrumented
    /// module, on the compiler thread while the guest waits. After a relink, every thread's
    /// frames of `function` move to it at their next safepoint.
    pub fn version(
        &mut self,
        function: &str,
        spec: &VersionSpec,
        relink: bool,
    ) -> uppercut_core::Result<VersionInfo> {
        // Code may come and go: the next transfer prepares afresh.
        self.last = None;
        let request = VersionRequest {
            function: function.to_owned(),
            opt_level: spec.opt_level,
            specialisation: spec.specialisation.clone(),
            relink,
            readiness: spec.readiness,
        };
        let engine = self.engine.clone();
        let made = self
            .shared
            .compiler
            .run(move || engine.compile_version(&request))
            .unwrap_or_else(|| {
                Err(uppercut_core::Error::Osr(
                    "the compiler thread failed".to_owned(),
                ))
            })?;
        self.shared.recompiles.fetch_add(1, Ordering::Relaxed);
        self.shared.event(OsrEvent::Version {
            function: function.to_owned(),
            spec: spec.clone(),
            relinked: relink,
        });
        if relink {
            self.shared
                .relinked(self.engine, self.osr, function, spec, true);
        }
        Ok(made.version)
    }

    /// Asks for a version of `function` built as `spec` without waiting: the guest goes on in
    /// its old code while the compiler thread builds it, with the continuations of `sites`
    /// (where the function's frames are likely to be found next). Once it is ready (and
    /// relinked, when `relink`), later calls enter it; with `chase`, each thread's frames of
    /// `function` also move to it at their next safepoint, and its outermost loops are armed
    /// so that this comes soon (without, they finish in their old code).
    ///
    /// `false` when the same version was asked for before (it is ready, or on its way).
    pub fn version_in_background(
        &mut self,
        function: &str,
        spec: &VersionSpec,
        relink: bool,
        sites: &[SiteId],
        chase: bool,
    ) -> bool {
        let Some(osr) = self.engine.osr() else {
            return false;
        };
        let key = (function.to_owned(), spec.clone());
        if !lock(&self.shared.queued).insert(key) {
            return false;
        }
        let engine = self.engine.clone();
        let shared = Arc::clone(self.shared);
        let function = function.to_owned();
        let spec = spec.clone();
        let sites: Vec<SiteInfo> = sites
            .iter()
            .filter_map(|s| osr.site(*s))
            .filter(|s| s.function == function && s.refused.is_none())
            .cloned()
            .collect();
        self.shared.compiler.spawn(move || {
            let request = VersionRequest {
                function: function.clone(),
                opt_level: spec.opt_level,
                specialisation: spec.specialisation.clone(),
                relink,
                readiness: spec.readiness,
            };
            // Continuations first: once the version is relinked, threads move at once.
            for site in &sites {
                let _ = shared.continuation(&engine, site, &spec, true);
            }
            if engine.compile_version(&request).is_err() {
                return;
            }
            shared.recompiles.fetch_add(1, Ordering::Relaxed);
            shared.background.fetch_add(1, Ordering::Relaxed);
            shared.event(OsrEvent::Version {
                function: function.clone(),
                spec: spec.clone(),
                relinked: relink,
            });
            // Decode the new units' records before any thread needs them.
            let _ = Transfers::new(&engine).warm();
            if relink {
                shared.relinked(&engine, &osr, &function, &spec, chase);
            }
        })
    }

    /// Moves this thread's frames of functions relinked since generation `seen` (by another
    /// thread, or in the background) to their functions' current spec.
    fn catch_up(&mut self, seen: u64) {
        let relinked: Vec<(String, VersionSpec)> = lock(&self.shared.relinked)
            .iter()
            .filter(|(_, (generation, _, chase))| *generation > seen && *chase)
            .map(|(f, (_, spec, _))| (f.clone(), spec.clone()))
            .collect();
        if relinked.is_empty() {
            return;
        }
        let map = self.engine.code_map();
        for i in 0..self.frames.len() {
            let frame = &self.frames[i];
            let Some((_, spec)) = relinked.iter().find(|(f, _)| *f == frame.version.function)
            else {
                continue;
            };
            let Some(site) = frame.site.and_then(|s| self.osr.site(s)) else {
                continue;
            };
            let inner_loop = site.loop_depth.is_some_and(|d| d > 1);
            let next = frame
                .pending
                .and_then(|c| map.version_at(c + 1))
                .unwrap_or(&frame.version);
            if VersionSpec::of(next) == *spec {
                continue;
            }
            let spec = spec.clone();
            if next.specialisation.is_empty() && inner_loop {
                // Code that assumes nothing can wait for the header of the loop around this
                // one, which is armed and a better place to resume.
                continue;
            }
            if next.specialisation.is_empty() && !self.has_continuation(i, &spec) {
                // Code that assumes nothing need not leave at once: the continuation is built
                // in the background, and the frame moves at a later site once it is ready.
                self.continuation_in_background(i, &spec);
                continue;
            }
            if self.transfer(i, &spec).is_ok() {
                self.shared.caught_up.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves frame `index` to `spec` if the continuation it needs is compiled already (`true`);
    /// otherwise builds it in the background without waiting (see
    /// [`Cx::transfer`] for the rest), and the frame moves at a later site once it is ready.
    pub fn transfer_when_ready(
        &mut self,
        index: usize,
        spec: &VersionSpec,
    ) -> Result<bool, String> {
        if self.has_continuation(index, spec) {
            return self.transfer(index, spec).map(|()| true);
        }
        self.continuation_in_background(index, spec);
        Ok(false)
    }

    /// Builds the continuation frame `index` needs to move to `spec` on the compiler thread,
    /// without waiting; once it is ready, the frame's function is announced again (as if
    /// relinked anew, if `spec` is still what it was relinked to, now chasing its frames), so
    /// that the frames of it still in older code move at their next site.
    fn continuation_in_background(&mut self, index: usize, spec: &VersionSpec) {
        let Some(site) = self.frame_site(index).cloned() else {
            return;
        };
        if !lock(&self.shared.queued_continuations).insert((site.id, spec.clone())) {
            return;
        }
        let (engine, shared, spec) = (self.engine.clone(), Arc::clone(self.shared), spec.clone());
        self.shared.compiler.spawn(move || {
            if shared.continuation(&engine, &site, &spec, true).is_err() {
                return;
            }
            let Some(osr) = engine.osr() else {
                return;
            };
            let current = lock(&shared.relinked)
                .get(&site.function)
                .is_some_and(|(_, relinked, _)| *relinked == spec);
            if current {
                shared.relinked(&engine, &osr, &site.function, &spec, true);
            }
        });
    }

    /// Reports that a policy's storm guard gave up on `what` (a function or a global) for
    /// `reason`: counted in [`OsrStats::storms`] and logged as a `storm` event.
    pub fn storm(&self, what: &str, reason: &str) {
        self.shared.storms.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "uppercut::osr", what, reason, "storm");
    }

    /// The newest version of `function` that its entries lead to.
    pub fn newest(&self, function: &str) -> Option<VersionInfo> {
        self.engine.current_version(function)
    }

    /// Sets frame `index` to move into the continuation of its site built as `spec` (compiled
    /// on first use, then cached). On `Err` the frame keeps running its old code.
    pub fn transfer(&mut self, index: usize, spec: &VersionSpec) -> Result<(), String> {
        let frame = self.frames.get(index);
        let span = tracing::info_span!(
            target: "uppercut::osr",
            "transfer",
            function = frame.map_or("", |f| f.version.function.as_str()),
            site = %frame.and_then(|f| f.site).map(|s| s.to_string()).unwrap_or_default(),
            from = %frame.map(|f| f.version.label()).unwrap_or_default(),
            to = %spec,
            mode = ?self.shared.options.transfer,
            refused = tracing::field::Empty,
        );
        let _entered = span.enter();
        let result = self.try_transfer(index, spec);
        match &result {
            Ok(()) => {
                self.patched += 1;
                self.shared.patched.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                span.record("refused", why.as_str());
                self.shared.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Whether a continuation for frame `index`'s site built as `spec` is compiled already.
    pub fn has_continuation(&self, index: usize, spec: &VersionSpec) -> bool {
        let Some(site) = self.frames.get(index).and_then(|f| f.site) else {
            return false;
        };
        lock(&self.shared.continuations)
            .entries
            .contains_key(&(site, spec.clone()))
    }

    /// Checks the walk against this thread's shadow-stack chain: the shadow frame each walked
    /// frame holds (read from its record) must appear on the chain, innermost first and in
    /// order. Frames of functions without sites may own chain entries the walk does not report,
    /// so the walked frames must be a subsequence of the chain, not a prefix.
    fn check_shadow_chain(&self) -> Result<(), String> {
        let chain: Vec<u64> = uppercut_core::shadow::shadow_frames()
            .iter()
            .map(|f| f.address)
            .collect();
        let mut next = 0usize;
        for frame in &self.frames {
            let Some(site) = frame.site.and_then(|s| self.osr.site(s)) else {
                continue;
            };
            let Some(index) = site.shadow_frame else {
                continue;
            };
            let values = self
                .transfers
                .read_values(frame, &site.values)
                .map_err(|e| {
                    format!("cannot read the frame at {:#x}: {e}", frame.return_address)
                })?;
            let address = values[index];
            match chain[next..].iter().position(|&a| a == address) {
                Some(at) => next += at + 1,
                None => {
                    return Err(format!(
                        "the frame of `{}` at {:#x} holds shadow frame {address:#x}, which is not \
                         on this thread's shadow-stack chain where the walk expects it",
                        site.function, frame.return_address
                    ));
                }
            }
        }
        Ok(())
    }

    fn try_transfer(&mut self, index: usize, spec: &VersionSpec) -> Result<(), String> {
        if self.shadow_check.is_none() {
            self.shadow_check = Some(self.check_shadow_chain());
        }
        if let Some(Err(why)) = &self.shadow_check {
            return Err(format!("the frame walk is doubtful: {why}"));
        }
        let frame = self
            .frames
            .get(index)
            .cloned()
            .ok_or_else(|| format!("no frame {index}"))?;
        if let Some(last) = self.last.as_ref().filter(|l| {
            l.return_address == frame.return_address
                && l.version == frame.version.id
                && l.spec == *spec
        }) {
            // Another frame of a run (a recursion): same record, same target.
            let prepared = last.prepared.clone();
            match self.shared.options.transfer {
                TransferMode::Lazy => self.transfers.patch(&frame, &prepared),
                TransferMode::Eager => self.transfers.transfer_now(&frame, &prepared),
            }
            .map_err(|e| e.to_string())?;
            let (function, site) = (last.function.clone(), last.site);
            self.shared.event_with(|| OsrEvent::Transfer {
                function,
                site,
                from: VersionSpec::of(&frame.version),
                to: spec.clone(),
            });
            return Ok(());
        }
        let site_id = frame
            .site
            .ok_or_else(|| format!("frame {index} is not stopped at an OSR site"))?;
        let site = self
            .osr
            .site(site_id)
            .filter(|s| s.refused.is_none())
            .ok_or_else(|| format!("{site_id} carries no state"))?
            .clone();
        if site.function != frame.version.function {
            return Err(format!(
                "frame {index} runs `{}` but its record names {site_id} of `{}`",
                frame.version.function, site.function
            ));
        }
        let continuation = self.continuation(&site, spec)?;
        let target = Target {
            site: site_id,
            continuation,
            values: site.values.clone(),
            result: site.result,
        };
        let prepared = self
            .transfers
            .prepare(&frame, &target)
            .map_err(|e| e.to_string())?;
        match self.shared.options.transfer {
            TransferMode::Lazy => self.transfers.patch(&frame, &prepared),
            TransferMode::Eager => self.transfers.transfer_now(&frame, &prepared),
        }
        .map_err(|e| e.to_string())?;
        self.event(OsrEvent::Transfer {
            function: site.function.clone(),
            site: site_id,
            from: VersionSpec::of(&frame.version),
            to: spec.clone(),
        });
        self.last = Some(LastTransfer {
            return_address: frame.return_address,
            version: frame.version.id,
            spec: spec.clone(),
            site: site_id,
            function: site.function,
            prepared,
        });
        Ok(())
    }

    fn continuation(&mut self, site: &SiteInfo, spec: &VersionSpec) -> Result<u64, String> {
        self.shared.continuation(self.engine, site, spec, false)
    }

    /// Stores `count` into a loop or entry site's counter: its hypercall fires again after
    /// `count` more passes.
    pub fn set_counter(&self, site: SiteId, count: i64) -> uppercut_core::Result<()> {
        let Some(counter) = self.osr.site(site).and_then(|s| s.counter.clone()) else {
            return Ok(());
        };
        store_counter(self.engine, &counter, count)
    }

    /// The count in `site`'s counter now (`None` for a site without one).
    pub fn counter(&self, site: SiteId) -> Option<i64> {
        let counter = self.osr.site(site)?.counter.as_deref()?;
        read_counter(self.engine, counter)
    }

    /// The current bits of a scalar global (zero-extended to 64 bits).
    pub fn read_global(&self, name: &str, kind: ValueKind) -> uppercut_core::Result<u64> {
        let address = self.engine.global_address(name)?;
        // SAFETY: the global is a scalar of `kind` defined by the base unit; reading its bytes
        // is what the guest does.
        let bits = unsafe {
            match kind.size() {
                1 => u64::from((address as *const u8).read_volatile()),
                2 => u64::from((address as *const u16).read_unaligned()),
                4 => u64::from((address as *const u32).read_unaligned()),
                _ => (address as *const u64).read_unaligned(),
            }
        };
        Ok(kind.mask(bits))
    }

    fn event(&self, event: OsrEvent) {
        self.shared.event(event);
    }
}
