//! The engine: a guest module, its compiled versions, its callbacks.
//!
//! ```text
//!   Engine::from_file ──> prepared module (bitcode bodies read on demand)
//!        └─compile(), lazy (default): stubs (each function's base entry) + base unit: the
//!          globals ──first call of f──> unit with f only ──> stub becomes `jmp <f's code>`
//!        └─compile(), eager: base unit: every function, v0 each, and the globals
//!   recompile(f, O2) ──> unit with f only, extracted from the prepared module ──> f's new version
//!        └─ relink: every older entry of f becomes `jmp <new entry>` (5 bytes that LLVM left as
//!           a no-op for this), so calls from old code, from new code and through function
//!           pointers the guest took earlier all reach the new version. Units compiled later
//!           link every guest function to its *base* entry (which leads to the newest), and a
//!           version's own address, taken inside it, is its base entry too.
//!        └─ the version that the relink superseded is retired, and freed once no thread can
//!           reach it (`crate::reclaim`).
//! ```
//!
//! Base entries are the stubs of lazy compilation ([`CompileMode::Lazy`]), or the eager base
//! unit's own functions. Code lifetime: only base entries ever escape into guest data (function pointers, callbacks
//! handed to libc, `atexit` handlers) or into other units, and the base unit is never freed. A
//! newer version is reached only through those entries, by its own recursive calls, and by
//! frames (return addresses, and the thunks and eager records of frame transfers); the last are
//! what the epoch reclamation of `crate::reclaim` waits out. Constants a unit would otherwise
//! copy (string literals) are linked to the base unit's copies, so that a pointer to one the
//! guest keeps stays valid after the unit is freed.
//!
//! Why a patched jump and not an indirection cell: it costs nothing until a function is
//! recompiled (one 5-byte no-op per call), needs no rewriting of how the guest takes function
//! addresses (in constants, in global initialisers, through casts), and a function pointer the
//! guest stored before the recompilation still works. The no-op area is reserved at every
//! entry by `"patchable-function-entry"="5"`, so no branch inside the function can target the
//! patched bytes; the arena keeps all code within `jmp rel32` reach. Every function is aligned
//! to 16 bytes, so the 5 bytes lie in one aligned 8-byte word, which is written with one atomic
//! store through a second mapping of the code while the code stays executable: other guest
//! threads may keep running the old code while it is relinked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use uppercut_stackmaps::{EH_FRAME_SECTION, EhFrameSection, STACKMAP_SECTION, StackMap};

use crate::frames::{CodeMap, FrameCursor, FrameTable, ThreadStack, UnitCode, WalkStart};

use crate::arch;
use crate::code_memory::{ArenaConfig, CodeArena, CodeRegion};
use crate::error::{Error, Result};
use crate::hypercall::{self, Callback, Callbacks};
use crate::ir::{self, Ir, Linker, ModuleFacts, Resume, ResumePart, UnitSpec};
use crate::perf::{self, PerfMode};
use crate::sites::{Instrumentation, OsrModule};
use crate::types::{OptLevel, Readiness, SiteId, UnitId, VersionId};

/// How an engine compiles.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The optimisation level of the first compilation of every function.
    pub opt_level: OptLevel,
    /// Where and how large the engine's code arena is: every unit's code and data are carved
    /// from it, all within `jmp rel32` reach. [`ArenaConfig::placement`] puts the engine's code
    /// at a chosen address
    /// ([`ArenaPlacement::At`](crate::code_memory::ArenaPlacement::At)) or near one; the engine fails to start with
    /// an error saying why when the address cannot be had. Relinking ([`Engine::recompile`],
    /// [`Engine::bind`] of a defined function) patches entries while other threads may run
    /// them, which needs the arena's [`ArenaConfig::dual_mapping`] (the default): without it,
    /// relinking fails with [`CodeMemoryError::NotAliasable`](crate::code_memory::CodeMemoryError::NotAliasable).
    pub arena: ArenaConfig,
    /// Whether to install the built-in `uppercut.*` callbacks.
    pub builtins: bool,
    /// OSR instrumentation of the guest module (sites, shadow-stack frames), done once at load:
    /// every version is then built from the instrumented module. `None` compiles the guest as
    /// it is.
    pub instrument: Option<Instrumentation>,
    /// When guest functions are compiled: on their first call (the default) or all at once
    /// before the guest starts.
    pub compile: CompileMode,
    /// How many relinked versions that a later relink superseded stay compiled, so that asking
    /// for one of them again (a specialised global flipping back to a value seen before, a
    /// deoptimisation back to the first tier) relinks it instead of compiling it again. The
    /// oldest beyond this many is retired (and freed once no thread reaches it). 0 retires
    /// every superseded version at once.
    pub version_cache: usize,
    /// Whether every unit is registered with GDB's JIT interface while it lives (the default):
    /// `bt` in guest code then names its functions, with file:line when the IR has debug info,
    /// and a continuation's frames say which function and site they continue.
    pub debugger: bool,
    /// What `perf` is shown of guest code: nothing (the default), a perf map, or a jitdump.
    pub perf: PerfMode,
    /// A folder to write each unit's machine code into as it is published, disassembled and
    /// annotated with its versions' names and its stack-map records (`crate::dump`); created if
    /// missing. `None` (the default) writes nothing.
    pub dump_code: Option<PathBuf>,
}

/// When the engine compiles the guest's functions ([`EngineOptions::compile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompileMode {
    /// Each function on its first call, in a unit of its own (see `crate::lazy`): loading
    /// compiles only the guest's global variables (and the few functions that must share their
    /// unit, [`Engine::grouped_with_globals`]), so startup is proportional to the code that
    /// runs. Bitcode is also read lazily, each body when its function is first compiled.
    /// Needs the arena's dual mapping (stubs are relinked while they run); without it the
    /// engine compiles eagerly.
    #[default]
    Lazy,
    /// The whole program in one unit before the guest starts, as `lli` does.
    Eager,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            opt_level: OptLevel::O2,
            arena: ArenaConfig::default(),
            builtins: true,
            instrument: None,
            compile: CompileMode::Lazy,
            version_cache: 64,
            debugger: true,
            perf: PerfMode::Off,
            dump_code: None,
        }
    }
}

/// A guest program under the JIT. Cheap to clone: clones share the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    /// Unique in the process.
    pub(crate) id: u64,
    /// Bumped whenever a unit is retired or freed ([`Engine::lifetime_epoch`]).
    lifetime_epoch: std::sync::atomic::AtomicU64,
    ir: Mutex<Ir>,
    facts: ModuleFacts,
    osr: Option<Arc<OsrModule>>,
    arena: CodeArena,
    state: Mutex<State>,
    pub(crate) callbacks: Callbacks,
    options: EngineOptions,
    /// Serialises lazy compilation, so that a function first called by several threads at
    /// once is compiled once.
    lazy: Mutex<()>,
}

/// An engine handle that does not keep it alive ([`Engine::downgrade`]).
#[derive(Clone, Debug)]
pub struct WeakEngine(Weak<EngineInner>);

impl WeakEngine {
    /// The engine, if it still lives.
    pub fn upgrade(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

/// One compiled version of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version.
    pub id: VersionId,
    /// Its function.
    pub function: String,
    /// The unit that holds its code.
    pub unit: UnitId,
    /// Its entry address.
    pub entry: u64,
    /// Bytes from its entry to the next symbol of its unit (its code and padding).
    pub size: u64,
    /// The optimisation level it was built at.
    pub opt_level: OptLevel,
    /// A whole function, or (part of) a continuation of it.
    pub kind: VersionKind,
    /// The globals it was specialised on, with the values it assumes (their bits).
    pub specialisation: Vec<(String, u64)>,
    /// Which of the function's sites it keeps ([`Readiness::Final`]: none but store sites).
    pub readiness: Readiness,
}

impl VersionInfo {
    /// Whether `address` lies in its code strictly after its entry: a return address into it.
    pub fn holds_return_address(&self, address: u64) -> bool {
        address > self.entry && address < self.entry + self.size.max(1)
    }

    /// How debuggers, profilers and frame dumps name this code ([`version_label`]).
    pub fn label(&self) -> String {
        version_label(
            &self.function,
            self.opt_level,
            &self.specialisation,
            self.readiness,
            self.kind,
        )
    }
}

/// How debuggers, profilers and frame dumps name a version's code: its function, then its level,
/// the values it was specialised on, whether it is final, and which part of a continuation it
/// is, e.g. `hot_loop [O2]`, `hot_loop [O2, mode=1]`, `hot_loop [O2 final]`,
/// `hot_loop [O2, continuation of site7]`.
pub fn version_label(
    function: &str,
    opt_level: OptLevel,
    specialisation: &[(String, u64)],
    readiness: Readiness,
    kind: VersionKind,
) -> String {
    let mut label = format!("{function} [{opt_level}");
    if readiness == Readiness::Final {
        label.push_str(" final");
    }
    if !specialisation.is_empty() {
        label.push_str(", ");
        label.push_str(&specialisation_text(specialisation));
    }
    match kind {
        VersionKind::Function => {}
        VersionKind::Continuation(site) => label.push_str(&format!(", continuation of {site}")),
        VersionKind::MultiContinuation => label.push_str(", continuation"),
    }
    label.push(']');
    label
}

/// The values a version was specialised on, as labels and logs show them: `mode=1, level=-2`
/// (each global's bits as a signed number).
pub fn specialisation_text(specialisation: &[(String, u64)]) -> String {
    specialisation
        .iter()
        .map(|(global, bits)| format!("{global}={}", *bits as i64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a version's code is.
///
/// Only `Function` versions are among a function's entries ([`Engine::versions`]); the others
/// are entered by frame transfers, and [`Engine::version_at`] finds frames running any of them
/// as versions of their function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    /// The whole function, entered at its entry.
    Function,
    /// A continuation: `ret (ptr state)`, resuming the function right after a site. Either a
    /// per-site continuation ([`Engine::compile_continuation`]) or one entry of a multi-entry
    /// continuation ([`Engine::compile_multi_continuation`]): a few instructions that jump to
    /// its body, in the same unit.
    Continuation(SiteId),
    /// The body of a multi-entry continuation ([`Engine::compile_multi_continuation`]):
    /// `ret (ptr state, i32 site)`, resuming the function right after whichever site `site`
    /// names. Entered through its per-site entries.
    MultiContinuation,
}

/// What [`Engine::compile_version`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRequest {
    /// The function.
    pub function: String,
    /// The optimisation level.
    pub opt_level: OptLevel,
    /// Globals to treat as constants with these values (their bits, zero-extended); each must
    /// be specialisable ([`OsrModule::global`]).
    pub specialisation: Vec<(String, u64)>,
    /// Whether every older entry of the function should jump to the new version. The version
    /// the entries led to before is then retired ([`Engine::retire_unit`]); a version compiled
    /// without relinking is the caller's to retire.
    pub relink: bool,
    /// Which of the function's sites the version keeps. A [`Readiness::Final`] version cannot
    /// be specialised.
    pub readiness: Readiness,
}

impl VersionRequest {
    /// A plain version of `function` at `opt_level`, relinked.
    pub fn new(function: &str, opt_level: OptLevel) -> VersionRequest {
        VersionRequest {
            function: function.to_owned(),
            opt_level,
            specialisation: Vec::new(),
            relink: true,
            readiness: Readiness::Sites,
        }
    }
}

/// A compiled continuation ([`Engine::compile_continuation`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// Its code, as a version of the function.
    pub version: VersionInfo,
    /// The site it resumes after.
    pub site: SiteId,
    /// Where the time went (`link` is zero: nothing is redirected).
    pub times: CompileTimes,
}

/// A compiled multi-entry continuation ([`Engine::compile_multi_continuation`]): one body that
/// resumes a function after any of its sites, and an entry per site.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiContinuation {
    /// The body, as a version of the function ([`VersionKind::MultiContinuation`]): the code
    /// that frames resumed through any entry run in.
    pub version: VersionInfo,
    /// `(site, entry address)` by ascending site: each entry takes the transfer buffer as a
    /// per-site continuation of that site does (`ret (ptr state)`) and jumps to the body. Its
    /// version is [`VersionKind::Continuation`] of the site, in the body's unit.
    pub entries: Vec<(SiteId, u64)>,
    /// Where the time went (`link` is zero: nothing is redirected).
    pub times: CompileTimes,
}

impl MultiContinuation {
    /// The entry that resumes after `site`, if the function has that site and it carries state.
    pub fn entry(&self, site: SiteId) -> Option<u64> {
        let i = self.entries.binary_search_by_key(&site, |e| e.0).ok()?;
        Some(self.entries[i].1)
    }
}

/// Where one compile unit's memory lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitInfo {
    /// The unit.
    pub id: UnitId,
    /// Its name.
    pub name: String,
    /// `(address, size)` of each code section.
    pub code: Vec<(u64, u64)>,
    /// `(name, address, size)` of each data section.
    pub data: Vec<(String, u64, u64)>,
    /// Hypercalls with a constant name that were linked straight to their callback's slot.
    pub fast_hypercalls: usize,
}

/// What one compilation cost, split by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompileTimes {
    /// Cloning, trimming and optimising the IR.
    pub ir: Duration,
    /// Code generation, loading (relocation) and finalisation.
    pub codegen: Duration,
    /// Redirecting old entries to the new code.
    pub link: Duration,
}

/// The outcome of [`Engine::recompile`].
#[derive(Debug, Clone, PartialEq)]
pub struct Recompiled {
    /// The new version.
    pub version: VersionInfo,
    /// How many older entries now jump to it.
    pub redirected: usize,
    /// Where the time went.
    pub times: CompileTimes,
    /// Whether the version was not compiled but taken from the engine's version cache (a
    /// relink to a version compiled before, [`EngineOptions::version_cache`]).
    pub reused: bool,
}

/// A JIT frame found on the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitFrame {
    /// The frame's return address (into the function below).
    pub return_address: u64,
    /// The frame pointer of the frame that return address belongs to.
    pub frame_pointer: u64,
    /// The function and version the return address lies in.
    pub version: VersionInfo,
}

#[derive(Default)]
struct State {
    compiled: bool,
    /// Live units (freed ones are gone), by id.
    units: BTreeMap<UnitId, Unit>,
    /// The id the next unit gets.
    next_unit: u32,
    /// Versions of live units, by id.
    versions: BTreeMap<VersionId, VersionInfo>,
    /// The id the next version gets (how many were ever compiled).
    next_version: u32,
    /// Every version of a live unit by its entry address: [`version_at`]'s index.
    by_entry: BTreeMap<u64, VersionId>,
    /// Every section of a live unit, `start → (end, unit)`: [`Engine::unit_at`]'s index.
    by_section: BTreeMap<u64, (u64, UnitId)>,
    /// The snapshot walks read; `None` once units came or went since it was made.
    code_map: Option<Arc<CodeMap>>,
    /// Function name → its versions, oldest first (the first is the base unit's).
    functions: HashMap<String, Vec<VersionId>>,
    /// The version each relinked function's entries lead to now.
    current: HashMap<String, VersionId>,
    /// Retired units, not freed yet, and what pins them.
    retired: HashSet<UnitId>,
    pins: HashMap<UnitId, usize>,
    /// Lazy compilation's stubs, the never-freed base entries of the functions compiled on
    /// first call.
    stubs: Option<crate::lazy::Stubs>,
    /// The unit that holds the stubs (never retired).
    stub_unit: Option<UnitId>,
    /// Functions compiled with the guest's globals when loading, and why.
    grouped: Vec<(String, String)>,
    /// Relinked versions a later relink superseded, kept for reuse, oldest first.
    cached: std::collections::VecDeque<VersionId>,
    /// Versions linked before a host binding changed: never reused.
    stale: HashSet<VersionId>,

    /// Where the function currently lives when the host redirected it with `bind`.
    redirected: HashMap<String, u64>,
    globals: HashMap<String, u64>,
    bindings: HashMap<String, u64>,
}

struct Unit {
    id: UnitId,
    name: String,
    /// The unit's registration with GDB: before `memory`, so that it goes first.
    debug: ir::Registration,
    /// Empty once the unit's memory was handed to the caller ([`Engine::take_unit_memory`]).
    memory: ir::UnitMemory,
    /// Its versions and frame table, as walks see them.
    code: Arc<UnitCode>,
    fast_hypercalls: usize,
    detached: bool,
}

/// A unit's memory, handed over to the caller by [`Engine::take_unit_memory`]: the caller
/// decides when it is freed (dropping a region unmaps it).
#[derive(Debug)]
pub struct UnitMemory {
    /// The unit's code sections, executable.
    pub code: Vec<CodeRegion>,
    /// The unit's data sections with their names.
    pub data: Vec<(String, CodeRegion)>,
}

impl Engine {
    /// Loads a guest from a `.ll` or `.bc` file.
    pub fn from_file(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Engine::from_bytes(&bytes, &path.display().to_string(), options)
    }

    /// Loads a guest from IR text or bitcode in memory; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str, options: EngineOptions) -> Result<Engine> {
        let lazy = options.compile == CompileMode::Lazy && options.arena.is_dual_mapped();
        match options.perf {
            PerfMode::Off => {}
            PerfMode::Map => perf::enable_map().map_err(|e| {
                Error::Profiler(format!("cannot write {}: {e}", perf::map_path().display()))
            })?,
            PerfMode::Jitdump if !ir::has_perf_listener() => {
                return Err(Error::Profiler(
                    "this LLVM was built without its perf listener (no jitdump)".to_owned(),
                ));
            }
            PerfMode::Jitdump => {}
        }
        if let Some(dir) = &options.dump_code {
            std::fs::create_dir_all(dir).map_err(|source| Error::DumpCode {
                path: dir.clone(),
                source,
            })?;
        }
        let debug = ir::DebugTargets {
            gdb: options.debugger,
            jitdump: options.perf == PerfMode::Jitdump,
        };
        let ir = Ir::load(bytes, origin, options.instrument.as_ref(), lazy, debug)?;
        let facts = ir.facts();
        let osr = ir.osr().cloned().map(Arc::new);
        let arena = CodeArena::with_config(options.arena.clone())?;
        let engine = Engine {
            inner: Arc::new_cyclic(|weak| EngineInner {
                id: ENGINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                lifetime_epoch: std::sync::atomic::AtomicU64::new(0),
                ir: Mutex::new(ir),
                facts,
                osr,
                arena,
                state: Mutex::new(State::default()),
                callbacks: Callbacks::new(weak.clone()),
                options,
                lazy: Mutex::new(()),
            }),
        };
        if engine.inner.options.builtins {
            crate::builtins::install(&engine)?;
        }
        Ok(engine)
    }

    pub(crate) fn from_inner(inner: Arc<EngineInner>) -> Engine {
        Engine { inner }
    }

    /// The engine's number, unique in the process (what [`crate::reclaim`] knows it by).
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The options the engine was made with.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// The code arena all units are allocated from.
    pub fn arena(&self) -> &CodeArena {
        &self.inner.arena
    }

    /// Registers (or replaces) the handler of hypercalls named `name`.
    pub fn register_callback(&self, name: &str, callback: impl Callback) -> Result<()> {
        self.inner.callbacks.register(name, Box::new(callback))
    }

    /// The names that have a handler.
    pub fn callback_names(&self) -> Vec<String> {
        self.inner.callbacks.names()
    }

    /// Whether `name` has a handler.
    pub fn has_callback(&self, name: &str) -> bool {
        self.inner.callbacks.is_registered(name)
    }

    /// Binds `name` to `address`.
    ///
    /// For a name the guest only declares, every unit compiled from now on resolves it to
    /// `address`. For a function the guest defines, once compiled, its entries are redirected to
    /// `address` (which must be within `jmp rel32` reach of them), so the host's code replaces it.
    pub fn bind(&self, name: &str, address: u64) -> Result<()> {
        if address == 0 {
            return Err(Error::NullBinding(name.to_owned()));
        }
        let mut state = self.state();
        if is_known(&state, name) {
            let entries = entries_of(&state, name);
            redirect(&mut state, name, &entries, address)?;
            state.redirected.insert(name.to_owned(), address);
        }
        state.bindings.insert(name.to_owned(), address);
        // Compiled versions link the name as it was bound: none is reused from now on.
        let linked: Vec<VersionId> = state.current.values().copied().collect();
        state.stale.extend(linked);
        let dropped: Vec<UnitId> = std::mem::take(&mut state.cached)
            .into_iter()
            .filter_map(|id| state.versions.get(&id).map(|v| v.unit))
            .collect();
        drop(state);
        for unit in dropped {
            if unit != BASE_UNIT {
                let _ = self.retire_unit(unit);
            }
        }
        Ok(())
    }

    /// Compiles every guest function (the base unit) at the engine's level, once; later calls
    /// do nothing.
    pub fn compile(&self) -> Result<()> {
        if self.state().compiled {
            return Ok(());
        }
        let ir = self.ir();
        if self.state().compiled {
            return Ok(());
        }
        let name = format!("{}#base", ir.origin());
        if !self.is_lazy() {
            let spec = UnitSpec {
                name: &name,
                functions: None,
                opt: self.inner.options.opt_level,
                continuation: None,
                specialise: &[],
                data: true,
                inline: &[],
                readiness: Readiness::Sites,
            };
            self.compile_unit(&ir, &spec)?;
            self.state().compiled = true;
            return Ok(());
        }
        // Lazily: stubs for every function, then the guest's globals (with the functions that
        // must share their unit) as the base unit, then a check that every declaration
        // resolves, so that a missing symbol fails now and not at some first call.
        let grouped = ir.grouped_with_globals()?;
        let stubbed: Vec<String> = self
            .inner
            .facts
            .functions
            .iter()
            .filter(|f| !grouped.iter().any(|(g, _)| g == *f))
            .cloned()
            .collect();
        let (stubs, region) =
            crate::lazy::Stubs::new(&self.inner.arena, Arc::downgrade(&self.inner), &stubbed)?;
        let stub_range = region.range();
        self.state().stubs = Some(stubs);
        let keep: Vec<String> = grouped.iter().map(|(f, _)| f.clone()).collect();
        let spec = UnitSpec {
            name: &name,
            functions: Some(&keep),
            opt: self.inner.options.opt_level,
            continuation: None,
            specialise: &[],
            data: true,
            inline: &[],
            readiness: Readiness::Sites,
        };
        let linked = self
            .compile_unit(&ir, &spec)
            .and_then(|_| ir.check_declarations(&mut self.linker()));
        let mut state = self.state();
        if let Err(e) = linked {
            state.stubs = None;
            return Err(e);
        }
        let unit = UnitId(state.next_unit);
        state.next_unit += 1;
        state.units.insert(
            unit,
            Unit {
                id: unit,
                name: format!("{}#stubs", ir.origin()),
                debug: ir::Registration::default(),
                memory: ir::UnitMemory {
                    code: vec![region],
                    data: Vec::new(),
                },
                code: Arc::new(UnitCode::new(unit, Vec::new(), FrameTable::default())),
                fast_hypercalls: 0,
                detached: false,
            },
        );
        state
            .by_section
            .insert(stub_range.start as u64, (stub_range.end as u64, unit));
        state.stub_unit = Some(unit);
        state.code_map = None;
        state.grouped = grouped;
        state.compiled = true;
        Ok(())
    }

    /// Whether functions are compiled on their first call ([`CompileMode::Lazy`]).
    pub fn is_lazy(&self) -> bool {
        self.inner.options.compile == CompileMode::Lazy && self.inner.options.arena.is_dual_mapped()
    }

    /// The functions compiled with the guest's globals when a lazy engine starts, rather than
    /// on their first call, with the reason (their labels' addresses escape into a global; they
    /// use a thread-local variable). Empty for an eager engine.
    pub fn grouped_with_globals(&self) -> Vec<(String, String)> {
        self.state().grouped.clone()
    }

    /// Whether `function` has been compiled (lazily compiled functions are not until their
    /// first call).
    pub fn is_compiled(&self, function: &str) -> bool {
        self.state()
            .functions
            .get(function)
            .is_some_and(|v| !v.is_empty())
    }

    /// Compiles `function` on its first call (from its stub, through the resolver): once,
    /// whichever thread gets here first; returns where the call goes on.
    pub(crate) fn compile_lazily(&self, function: &str) -> Result<u64> {
        let _serial = self.inner.lazy.lock().unwrap_or_else(|e| e.into_inner());
        {
            let state = self.state();
            let done = state.functions.get(function).is_some_and(|v| !v.is_empty())
                || state.redirected.contains_key(function);
            if done {
                return current_entry(&state, function)
                    .ok_or_else(|| Error::NoSuchFunction(function.to_owned()));
            }
        }
        self.compile_version(&VersionRequest::new(function, self.inner.options.opt_level))?;
        current_entry(&self.state(), function)
            .ok_or_else(|| Error::NoSuchFunction(function.to_owned()))
    }

    fn linker(&self) -> EngineLinker<'_> {
        EngineLinker {
            engine: &self.inner,
        }
    }

    /// Compiles a new version of `function` from the pristine module at `opt`, and makes every
    /// later call reach it (hot function replacement).
    pub fn recompile(&self, function: &str, opt: OptLevel) -> Result<Recompiled> {
        self.compile_version(&VersionRequest::new(function, opt))
    }

    /// Compiles a new version of a function from the pristine (or instrumented) module: at a
    /// level, specialised on global values, and relinked or not.
    pub fn compile_version(&self, request: &VersionRequest) -> Result<Recompiled> {
        self.compile()?;
        let function = request.function.as_str();
        if !is_known(&self.state(), function) {
            return Err(Error::NoSuchFunction(function.to_owned()));
        }
        self.check_specialisation(&request.specialisation)?;
        check_final(request.readiness, &request.specialisation)?;
        if request.relink {
            if let Some(done) = self.relink_cached(request)? {
                return Ok(done);
            }
        }
        let ir = self.ir();
        let unit_index = self.state().next_unit;
        let name = format!("{}#{function}.{unit_index}", ir.origin());
        let keep = [function.to_owned()];
        let inline = self.inline_candidates(&ir, function, request.opt_level, request.readiness)?;
        let spec = UnitSpec {
            name: &name,
            functions: Some(&keep),
            opt: request.opt_level,
            continuation: None,
            specialise: &request.specialisation,
            data: false,
            inline: &inline,
            readiness: request.readiness,
        };
        let (versions, mut times) = self.compile_unit(&ir, &spec)?;
        drop(ir);
        let version = versions
            .into_iter()
            .find(|v| v.function == function)
            .ok_or_else(|| Error::Codegen {
                unit: name.clone(),
                message: format!("the unit does not define `{function}`"),
            })?;
        if !request.relink {
            return Ok(Recompiled {
                redirected: 0,
                version,
                times,
                reused: false,
            });
        }
        let link_start = Instant::now();
        let redirected = self.relink_to(&version)?;
        times.link = link_start.elapsed();
        Ok(Recompiled {
            redirected,
            version,
            times,
            reused: false,
        })
    }

    /// Relinks `request`'s function to a version built as asked that is still compiled (the
    /// current one, or one a later relink superseded and the cache kept), if there is one.
    fn relink_cached(&self, request: &VersionRequest) -> Result<Option<Recompiled>> {
        let started = Instant::now();
        let found = {
            let state = self.state();
            let matches = |id: &VersionId| {
                state.versions.get(id).is_some_and(|v| {
                    v.function == request.function
                        && v.kind == VersionKind::Function
                        && v.opt_level == request.opt_level
                        && v.specialisation == request.specialisation
                        && v.readiness == request.readiness
                        && !state.retired.contains(&v.unit)
                        && !state.stale.contains(id)
                })
            };
            let current = state
                .current
                .get(&request.function)
                .filter(|id| matches(id));
            if let Some(id) = current {
                return Ok(Some(Recompiled {
                    version: state.versions[id].clone(),
                    redirected: 0,
                    times: CompileTimes::default(),
                    reused: true,
                }));
            }
            state
                .cached
                .iter()
                .find(|id| matches(id))
                .map(|id| state.versions[id].clone())
        };
        let Some(version) = found else {
            return Ok(None);
        };
        let redirected = self.relink_to(&version)?;
        Ok(Some(Recompiled {
            version,
            redirected,
            times: CompileTimes {
                link: started.elapsed(),
                ..CompileTimes::default()
            },
            reused: true,
        }))
    }

    /// Makes every entry of `version`'s function lead to it: its own entry runs its body
    /// again (it may have jumped to a newer version), every other jumps to it. The version
    /// it supersedes is kept in the version cache; the oldest the cache no longer holds is
    /// retired. Returns how many entries now jump to it.
    fn relink_to(&self, version: &VersionInfo) -> Result<usize> {
        let function = version.function.as_str();
        let mut state = self.state();
        let redirected_by_host = state.redirected.get(function).copied();
        if redirected_by_host.is_none() {
            restore_entry(&mut state, function, version.entry)?;
        }
        let older: Vec<u64> = entries_of(&state, function)
            .into_iter()
            .filter(|&e| e != version.entry)
            .collect();
        let target = redirected_by_host.unwrap_or(version.entry);
        redirect(&mut state, function, &older, target)?;
        tracing::info!(
            target: "uppercut::code",
            function,
            version = %version.label(),
            unit = version.unit.0,
            entries = older.len() as u64,
            "relink"
        );
        state.cached.retain(|id| *id != version.id);
        // The version the entries led to before is superseded: nothing enters it anew (calls go
        // through the entries, which now jump past it), and threads inside it run on.
        let superseded = state
            .current
            .insert(function.to_owned(), version.id)
            .filter(|&id| id != version.id);
        let mut retire = Vec::new();
        if let Some(id) = superseded {
            state.cached.push_back(id);
        }
        while state.cached.len() > self.inner.options.version_cache {
            if let Some(id) = state.cached.pop_front() {
                retire.extend(state.versions.get(&id).map(|v| v.unit));
            }
        }
        drop(state);
        for unit in retire {
            if unit != BASE_UNIT && unit != version.unit {
                // A unit handed over or retired by the caller already is the caller's business.
                let _ = self.retire_unit(unit);
            }
        }
        Ok(older.len())
    }

    /// The version `function`'s entries lead to now (the newest relinked one, or the first
    /// compiled), if it is compiled.
    pub fn current_version(&self, function: &str) -> Option<VersionInfo> {
        let state = self.state();
        state
            .current
            .get(function)
            .or_else(|| state.functions.get(function)?.first())
            .and_then(|id| state.versions.get(id))
            .cloned()
    }

    /// Compiles a continuation of `function` that resumes right after `site`, at `opt`,
    /// specialised on `specialisation`: `ret (ptr state)`, taking the site's values (and the
    /// call's result after them) one 64-bit slot each. Needs an instrumented engine.
    pub fn compile_continuation(
        &self,
        function: &str,
        site: SiteId,
        opt: OptLevel,
        specialisation: &[(String, u64)],
    ) -> Result<Continuation> {
        self.compile_continuation_as(function, site, opt, specialisation, Readiness::Sites)
    }

    /// [`Engine::compile_continuation`], keeping the function's sites as `readiness` says: a
    /// [`Readiness::Final`] continuation is where a frame goes to stay (its loops count
    /// nothing, its calls may be inlined), and cannot be specialised.
    pub fn compile_continuation_as(
        &self,
        function: &str,
        site: SiteId,
        opt: OptLevel,
        specialisation: &[(String, u64)],
        readiness: Readiness,
    ) -> Result<Continuation> {
        let osr = self.osr_of(function)?;
        let info = osr.site(site).ok_or_else(|| Error::NoSuchSite {
            function: function.to_owned(),
            site,
            reason: "no such site".to_owned(),
        })?;
        if info.function != function {
            return Err(Error::NoSuchSite {
                function: function.to_owned(),
                site,
                reason: format!("it belongs to `{}`", info.function),
            });
        }
        self.check_specialisation(specialisation)?;
        check_final(readiness, specialisation)?;
        let ir = self.ir();
        let unit_index = self.state().next_unit;
        let name = format!("{}#{function}.osr.{}.{unit_index}", ir.origin(), site.0);
        let symbol = format!("{function}.osr.{}.{unit_index}", site.0);
        let keep = [function.to_owned()];
        let inline = self.inline_candidates(&ir, function, opt, readiness)?;
        let spec = UnitSpec {
            name: &name,
            functions: Some(&keep),
            opt,
            continuation: Some(Resume::Site(site, &symbol)),
            specialise: specialisation,
            data: false,
            inline: &inline,
            readiness,
        };
        let (versions, times) = self.compile_unit(&ir, &spec)?;
        drop(ir);
        let version = versions
            .into_iter()
            .find(|v| v.kind == VersionKind::Continuation(site))
            .ok_or_else(|| Error::Codegen {
                unit: name.clone(),
                message: format!("the unit does not define `{symbol}`"),
            })?;
        Ok(Continuation {
            version,
            site,
            times,
        })
    }

    /// Compiles the multi-entry continuation of `function` at `opt`, specialised on
    /// `specialisation`: one body that resumes the function after any of its sites, compiled
    /// once, and one entry per site. Needs an instrumented engine.
    ///
    /// Each entry takes a frame's state exactly as [`Engine::compile_continuation`]'s
    /// continuation of the same site does, so a transfer can target either. Sites whose state
    /// cannot be carried ([`SiteInfo::refused`](crate::SiteInfo::refused)) get no entry. The
    /// body keeps every site of the function, with the same ids and state layout: frames
    /// running it can be transferred again.
    ///
    /// Against per-site continuations: one compilation instead of one per site, and one body's
    /// code instead of one per site, at some cost in code quality (the body is optimised for
    /// all its resume points at once). `uppercut-osr`'s `continuations` benchmark measures
    /// both kinds.
    pub fn compile_multi_continuation(
        &self,
        function: &str,
        opt: OptLevel,
        specialisation: &[(String, u64)],
    ) -> Result<MultiContinuation> {
        self.compile_multi_continuation_as(function, opt, specialisation, Readiness::Sites)
    }

    /// [`Engine::compile_multi_continuation`], keeping the function's sites as `readiness`
    /// says (see [`Engine::compile_continuation_as`]).
    pub fn compile_multi_continuation_as(
        &self,
        function: &str,
        opt: OptLevel,
        specialisation: &[(String, u64)],
        readiness: Readiness,
    ) -> Result<MultiContinuation> {
        let osr = self.osr_of(function)?;
        let mut sites: Vec<SiteId> = osr
            .sites()
            .iter()
            .filter(|s| s.function == function && s.refused.is_none())
            .map(|s| s.id)
            .collect();
        sites.sort_unstable();
        if sites.is_empty() {
            return Err(Error::Osr(format!(
                "`{function}` has no site a continuation can resume after"
            )));
        }
        self.check_specialisation(specialisation)?;
        check_final(readiness, specialisation)?;
        let ir = self.ir();
        let unit_index = self.state().next_unit;
        let name = format!("{}#{function}.osr.all.{unit_index}", ir.origin());
        let body = format!("{function}.osr.all.{unit_index}");
        let entries: Vec<(SiteId, String)> = sites
            .iter()
            .map(|&site| (site, format!("{function}.osr.{}.{unit_index}", site.0)))
            .collect();
        let keep = [function.to_owned()];
        let inline = self.inline_candidates(&ir, function, opt, readiness)?;
        let spec = UnitSpec {
            name: &name,
            functions: Some(&keep),
            opt,
            continuation: Some(Resume::Multi {
                body: &body,
                entries: &entries,
            }),
            specialise: specialisation,
            data: false,
            inline: &inline,
            readiness,
        };
        let (versions, times) = self.compile_unit(&ir, &spec)?;
        drop(ir);
        let missing = |symbol: &str| Error::Codegen {
            unit: name.clone(),
            message: format!("the unit does not define `{symbol}`"),
        };
        let version = versions
            .iter()
            .find(|v| v.kind == VersionKind::MultiContinuation)
            .cloned()
            .ok_or_else(|| missing(&body))?;
        let entries = entries
            .iter()
            .map(|(site, symbol)| {
                versions
                    .iter()
                    .find(|v| v.kind == VersionKind::Continuation(*site))
                    .map(|v| (*site, v.entry))
                    .ok_or_else(|| missing(symbol))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiContinuation {
            version,
            entries,
            times,
        })
    }

    /// The callees whose bodies a unit of `function` at `opt` carries: above O0, its small
    /// callees, so that the optimiser can inline them as it would in the whole program.
    fn inline_candidates(
        &self,
        ir: &Ir,
        function: &str,
        opt: OptLevel,
        readiness: Readiness,
    ) -> Result<Vec<String>> {
        if opt == OptLevel::O0 {
            return Ok(Vec::new());
        }
        let grouped: Vec<String> = self
            .state()
            .grouped
            .iter()
            .map(|(f, _)| f.clone())
            .collect();
        ir.inline_candidates(
            function,
            &grouped,
            INLINE_MAX_INSTRUCTIONS,
            INLINE_MAX_CALLEES,
            readiness,
        )
    }

    /// The engine's OSR module, after compiling the base unit, when `function` is a guest
    /// function and the engine is instrumented.
    fn osr_of(&self, function: &str) -> Result<Arc<OsrModule>> {
        self.compile()?;
        let osr = self.osr().ok_or_else(|| {
            Error::Osr("the engine was created without OSR instrumentation".to_owned())
        })?;
        if !is_known(&self.state(), function) {
            return Err(Error::NoSuchFunction(function.to_owned()));
        }
        Ok(osr)
    }

    /// What OSR instrumentation made of the guest module (`None` without instrumentation).
    pub fn osr(&self) -> Option<Arc<OsrModule>> {
        self.inner.osr.clone()
    }

    /// The instrumented module as LLVM prints it (the prepared module without instrumentation):
    /// what every version is built from.
    pub fn instrumented_ir(&self) -> String {
        self.ir().prepared_text()
    }

    fn check_specialisation(&self, values: &[(String, u64)]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let osr = self.osr().ok_or_else(|| {
            Error::Osr("specialisation needs an engine created with OSR instrumentation".to_owned())
        })?;
        for (global, _) in values {
            match osr.global(global).map(|g| &g.specialisable) {
                Some(Ok(_)) => {}
                Some(Err(why)) => {
                    return Err(Error::Osr(format!(
                        "cannot specialise on `{global}`: {why}"
                    )));
                }
                None => {
                    return Err(Error::Osr(format!(
                        "cannot specialise on `{global}`: no such global variable in the guest"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Hands a unit's code and data memory to the caller, who then decides when it is freed
    /// (the design note's "transfer the code memory ownership after compilation").
    ///
    /// The engine keeps its records of the unit's versions but no longer patches, frees or
    /// reads that memory: a later recompilation of one of its functions redirects the entries
    /// the engine still owns, not the ones in the handed-over memory, and frame walks stop at
    /// it. Freeing the memory while guest code can still reach it (a caller, a function
    /// pointer, a frame) is the caller's responsibility.
    pub fn take_unit_memory(&self, unit: UnitId) -> Result<UnitMemory> {
        let mut state = self.state();
        if unit == BASE_UNIT {
            return Err(Error::Relink {
                function: unit.to_string(),
                reason: "the base unit's memory stays with the engine".to_owned(),
            });
        }
        state.code_map = None;
        let entry = state
            .units
            .get_mut(&unit)
            .filter(|u| !u.detached)
            .ok_or_else(|| Error::Relink {
                function: unit.to_string(),
                reason: "no such unit, or its memory was already handed over".to_owned(),
            })?;
        entry.detached = true;
        // GDB must not read memory the engine no longer owns.
        drop(std::mem::take(&mut entry.debug));
        let memory = std::mem::take(&mut entry.memory);
        // Its versions are no longer entries the engine patches.
        let handed: Vec<(VersionId, String)> = state
            .versions
            .values()
            .filter(|v| v.unit == unit)
            .map(|v| (v.id, v.function.clone()))
            .collect();
        for (id, function) in handed {
            if let Some(ids) = state.functions.get_mut(&function) {
                ids.retain(|i| *i != id);
            }
        }
        Ok(UnitMemory {
            code: memory.code,
            data: memory
                .data
                .into_iter()
                .map(|d| (d.name, d.region))
                .collect(),
        })
    }

    /// The entry address that a call to `function` should use now (its newest version, or
    /// where the host bound it).
    pub fn entry(&self, function: &str) -> Result<u64> {
        self.compile()?;
        let state = self.state();
        current_entry(&state, function).ok_or_else(|| Error::NoSuchFunction(function.to_owned()))
    }

    /// The address of a guest global variable.
    pub fn global_address(&self, name: &str) -> Result<u64> {
        self.compile()?;
        self.state()
            .globals
            .get(name)
            .copied()
            .ok_or_else(|| Error::NoSuchFunction(name.to_owned()))
    }

    /// Every live version of `function` (compiled as a whole function, not freed), oldest
    /// first: the base unit's, then later ones (its continuations are in
    /// [`Engine::all_versions`]).
    pub fn versions(&self, function: &str) -> Vec<VersionInfo> {
        let state = self.state();
        state
            .functions
            .get(function)
            .map(|ids| ids.iter().map(|id| state.versions[id].clone()).collect())
            .unwrap_or_default()
    }

    /// Every live version of every function, in the order they were compiled.
    pub fn all_versions(&self) -> Vec<VersionInfo> {
        self.state().versions.values().cloned().collect()
    }

    /// How many versions the engine has compiled so far, freed ones included (it only grows):
    /// a cheap way to tell that a cache built from [`Engine::all_versions`] is out of date.
    pub fn version_count(&self) -> usize {
        self.state().next_version as usize
    }

    /// Where every live unit's sections lie.
    pub fn units(&self) -> Vec<UnitInfo> {
        self.state().units.values().map(unit_info).collect()
    }

    /// The live unit one of whose sections (code or data) holds `address`.
    pub fn unit_at(&self, address: u64) -> Option<UnitId> {
        let state = self.state();
        let (_, &(end, unit)) = state.by_section.range(..=address).next_back()?;
        (address < end).then_some(unit)
    }

    /// Retires a unit: nothing will enter its code anew, and its memory is freed once no guest
    /// thread can reach it any more (no frame running it, no return address or transfer into
    /// it, no pin; see `reclaim`). Until then everything about it stays (its versions, its
    /// metadata, [`Engine::version_at`]).
    ///
    /// The engine retires a relinked version itself once a later relink supersedes it. A
    /// version compiled without relinking, or a continuation, belongs to the caller, who
    /// retires it when it will not transfer frames into it again. The base unit cannot be
    /// retired (function pointers the guest holds lead into it), nor a unit whose memory was
    /// handed over ([`Engine::take_unit_memory`]). Retiring twice is retiring once.
    pub fn retire_unit(&self, unit: UnitId) -> Result<()> {
        let ranges = {
            let mut state = self.state();
            let refused = |reason: &str| Error::Retire {
                unit,
                reason: reason.to_owned(),
            };
            let entry = state
                .units
                .get(&unit)
                .ok_or_else(|| refused("no such live unit"))?;
            if unit == BASE_UNIT {
                return Err(refused("the base unit lives as long as the engine"));
            }
            if state.stub_unit == Some(unit) {
                return Err(refused(
                    "lazy compilation's stubs live as long as the engine",
                ));
            }
            if entry.detached {
                return Err(refused("its memory was handed over"));
            }
            let ranges = unit_ranges(entry);
            if !state.retired.insert(unit) {
                return Ok(());
            }
            self.inner
                .lifetime_epoch
                .fetch_add(1, std::sync::atomic::Ordering::Release);
            ranges
        };
        tracing::info!(target: "uppercut::code", unit = unit.0, "retire");
        let engine = Arc::downgrade(&self.inner);
        crate::reclaim::retire(
            self.inner.id,
            ranges,
            Box::new(move || free_unit(&engine, unit)),
        );
        Ok(())
    }

    /// Keeps a unit from being freed while the pin lasts (a transfer thunk whose descriptor
    /// leads into it, or out of it); pins count. `false` when there is no such live unit.
    pub fn pin_unit(&self, unit: UnitId) -> bool {
        let mut state = self.state();
        if !state.units.contains_key(&unit) {
            return false;
        }
        *state.pins.entry(unit).or_insert(0) += 1;
        true
    }

    /// Undoes one [`Engine::pin_unit`]; a retired unit that nothing else holds is freed now.
    pub fn unpin_unit(&self, unit: UnitId) {
        let freeable = {
            let mut state = self.state();
            let Some(pins) = state.pins.get_mut(&unit) else {
                return;
            };
            *pins -= 1;
            let last = *pins == 0;
            if last {
                state.pins.remove(&unit);
            }
            last && state.retired.contains(&unit)
        };
        if freeable {
            crate::reclaim::retry_blocked();
        }
    }

    /// Whether `unit` was retired and is not freed yet.
    pub fn is_retired(&self, unit: UnitId) -> bool {
        self.state().retired.contains(&unit)
    }

    /// The units retired and not freed yet.
    pub fn retired_units(&self) -> Vec<UnitId> {
        self.state().retired.iter().copied().collect()
    }

    /// A number that changes whenever a unit is retired or freed, read without a lock: a cheap
    /// way to tell that a cache keyed by unit may need a sweep.
    pub fn lifetime_epoch(&self) -> u64 {
        self.inner
            .lifetime_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `unit` is live: compiled, and not freed.
    pub fn is_live_unit(&self, unit: UnitId) -> bool {
        self.state().units.contains_key(&unit)
    }

    /// A handle that does not keep the engine alive.
    pub fn downgrade(&self) -> WeakEngine {
        WeakEngine(Arc::downgrade(&self.inner))
    }

    /// The version whose code contains `address`, if any.
    pub fn version_at(&self, address: u64) -> Option<VersionInfo> {
        version_at(&self.state(), address)
    }

    /// The captured bytes of a unit's data section (`.llvm_stackmaps`, `.eh_frame`, ...) and
    /// the address they were loaded at.
    pub fn unit_section(&self, unit: UnitId, section: &str) -> Option<(u64, Vec<u8>)> {
        let state = self.state();
        let unit = state.units.get(&unit)?;
        unit.memory.section(section).map(|(a, b)| (a, b.to_vec()))
    }

    /// Runs `f` on a unit's frame metadata: its parsed `.llvm_stackmaps` (present when the
    /// unit's code has call-site records: statepoints, stackmaps, patchpoints) and its
    /// `.eh_frame` at its load address. `None` when there is no such unit.
    ///
    /// `f` runs with the engine's registry locked: it must not call back into the engine.
    pub fn with_unit_metadata<R>(
        &self,
        unit: UnitId,
        f: impl FnOnce(Option<&StackMap<'_>>, Option<&EhFrameSection<'_>>) -> R,
    ) -> Option<R> {
        let state = self.state();
        let unit = state.units.get(&unit)?;
        // Both were checked when the unit was registered; a failure now cannot happen, and
        // would only hide the metadata (fail closed).
        let map = unit
            .memory
            .section(STACKMAP_SECTION)
            .and_then(|(_, bytes)| StackMap::parse(bytes).ok());
        let cfi = unit
            .memory
            .section(EH_FRAME_SECTION)
            .and_then(|(address, bytes)| EhFrameSection::new(bytes, address).ok());
        Some(f(map.as_ref(), cfi.as_ref()))
    }

    /// The snapshot of the engine's live code that frame walks read: every version with its
    /// unit's frame table. Made anew only when units come or go; cheap to take.
    pub fn code_map(&self) -> Arc<CodeMap> {
        let mut state = self.state();
        if let Some(map) = &state.code_map {
            return Arc::clone(map);
        }
        let ranges = state
            .units
            .values()
            .filter(|u| !u.detached)
            .flat_map(|u| {
                u.memory
                    .code
                    .iter()
                    .map(|r| r.range())
                    .filter(|r| !r.is_empty())
                    .map(|r| (r.start as u64, r.end as u64, Arc::clone(&u.code)))
            })
            .collect();
        let map = Arc::new(CodeMap::new(ranges));
        state.code_map = Some(Arc::clone(&map));
        map
    }

    /// A live unit's versions and frame table (decoded once, when it was published).
    pub fn unit_code(&self, unit: UnitId) -> Option<Arc<UnitCode>> {
        self.state().units.get(&unit).map(|u| Arc::clone(&u.code))
    }

    /// The JIT frames on this thread's stack, innermost first, starting from the hypercall that
    /// is running now (empty outside a hypercall): a [`FrameCursor`] walk, which stops at the
    /// first return address outside JIT code (or at a return address a frame transfer patched:
    /// `uppercut-osr`'s walk reads those).
    pub fn jit_frames(&self) -> Vec<JitFrame> {
        let exit = hypercall::innermost_exit_frame();
        if exit == 0 {
            return Vec::new();
        }
        // SAFETY: `exit` is the frame pointer of a trampoline that is running on this thread.
        let (sp, fp, return_address) = unsafe { arch::exit_state(exit as *const u64) };
        let Some(stack) = ThreadStack::current() else {
            return Vec::new();
        };
        let map = self.code_map();
        let start = WalkStart::at_hypercall(sp, fp, return_address);
        FrameCursor::new(&map, stack, start, crate::frames::no_patches)
            .map(|f| JitFrame {
                return_address: f.return_address,
                frame_pointer: f.fp,
                version: VersionInfo::clone(f.version),
            })
            .collect()
    }

    /// Runs `main(argc, argv, envp)` with `program` as `argv[0]` and `args` after it, after the
    /// guest's static constructors and before its destructors, as `lli` does; returns `main`'s
    /// result (0 for a `void main`).
    pub fn run_main(&self, program: &str, args: &[String]) -> Result<i32> {
        self.check_main()?;
        self.compile()?;
        self.run_constructors()?;
        let status = self.call_main(program, args)?;
        for dtor in &self.inner.facts.destructors {
            self.call(dtor, &[])?;
        }
        Ok(status)
    }

    /// Runs the guest as a process does, and exits the process with `main`'s result.
    ///
    /// As natively, the guest's static destructors run from an `atexit` handler registered
    /// before its constructors: after the guest's own `atexit` handlers, whether `main` returns
    /// or the guest calls `exit`. The engine stays alive until the process ends. Returns only
    /// when the guest cannot start or is stopped by a failing hypercall.
    pub fn exec_main(&self, program: &str, args: &[String]) -> Error {
        let run = || -> Result<i32> {
            self.check_main()?;
            self.compile()?;
            if !self.inner.facts.destructors.is_empty() {
                // Compiled now, not on their first call from the exit handler: LLVM registers
                // destructors of its own function-local statics with `atexit` during its first
                // compilations, and those registered after this handler run before it.
                if self.is_lazy() {
                    for dtor in &self.inner.facts.destructors {
                        self.compile_lazily(dtor)?;
                    }
                }
                let mut slot = EXIT_DESTRUCTORS.lock().unwrap_or_else(|e| e.into_inner());
                let first = slot.is_none();
                *slot = Some(self.clone());
                drop(slot);
                if first {
                    // SAFETY: registering a handler that only reads a static is always sound.
                    unsafe { libc::atexit(run_exit_destructors) };
                }
            }
            self.run_constructors()?;
            self.call_main(program, args)
        };
        match run() {
            // SAFETY: `exit` runs the atexit handlers (the guest's, then its destructors) and
            // flushes stdio; the engine they need is kept in `EXIT_DESTRUCTORS`.
            Ok(status) => {
                crate::threads::before_exit_hooks();
                // SAFETY: as above.
                unsafe { libc::exit(status) }
            }
            Err(e) => e,
        }
    }

    fn check_main(&self) -> Result<()> {
        let main = self.inner.facts.main.as_ref().ok_or(Error::NoMain)?;
        if !main.callable {
            return Err(Error::BadMainSignature(main.signature.clone()));
        }
        Ok(())
    }

    fn run_constructors(&self) -> Result<()> {
        for ctor in &self.inner.facts.constructors {
            self.call(ctor, &[])?;
        }
        Ok(())
    }

    fn call_main(&self, program: &str, args: &[String]) -> Result<i32> {
        hypercall::set_program_engine(&self.inner);
        let returns_int = self
            .inner
            .facts
            .main
            .as_ref()
            .is_some_and(|m| m.returns_int);
        let argv_owned: Vec<CString> = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .map(|a| CString::new(a.replace('\0', "")).expect("NULs removed"))
            .collect();
        let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: `environ` is the process's environment block, valid for the process's life.
        let envp = unsafe { environ } as u64;
        let result = self.call(
            "main",
            &[argv_owned.len() as u64, argv.as_ptr() as u64, envp],
        )?;
        Ok(if returns_int { result as u32 as i32 } else { 0 })
    }

    /// Calls the guest function `function` with up to six integer or pointer arguments and
    /// returns its integer result (`rax`).
    ///
    /// The call goes through the same entry as `main`: a hypercall inside it that fails stops
    /// it and its error comes back here. A handler may call guest functions this way.
    pub fn call(&self, function: &str, args: &[u64]) -> Result<u64> {
        // The base entry, never freed, which leads to the newest version: the thread registers
        // before it runs guest code, so a version retired once it runs waits for it (a newest
        // entry read here could be retired and freed before the call began).
        self.compile()?;
        let entry = base_entry(&self.state(), function)
            .ok_or_else(|| Error::NoSuchFunction(function.to_owned()))?;
        // SAFETY: `entry` is a compiled guest function; guest functions follow the C ABI, and
        // extra integer arguments in registers are ignored by a callee that takes fewer.
        unsafe { hypercall::call_guest(&self.inner, entry, args) }
    }

    /// The names of the functions the guest defines, in module order.
    pub fn function_names(&self) -> Vec<String> {
        self.inner.facts.functions.clone()
    }

    /// Whether the guest defines `main`.
    pub fn has_main(&self) -> bool {
        self.inner.facts.main.is_some()
    }

    /// The pristine guest module as LLVM IR text.
    pub fn pristine_ir(&self) -> Result<String> {
        self.ir().pristine_text()
    }

    fn compile_unit(
        &self,
        ir: &Ir,
        spec: &UnitSpec<'_>,
    ) -> Result<(Vec<VersionInfo>, CompileTimes)> {
        let mut linker = self.linker();
        let started = Instant::now();
        let name = spec.name;
        let opt = spec.opt;
        let span = tracing::info_span!(
            target: "uppercut::compile",
            "compile",
            unit = name,
            function = spec.functions.and_then(|f| f.first()).map_or("", |f| f.as_str()),
            tier = %opt,
            specialisation = %specialisation_text(spec.specialise),
            continuation = spec.continuation.is_some(),
            code_bytes = tracing::field::Empty,
            ir_us = tracing::field::Empty,
            codegen_us = tracing::field::Empty,
        );
        let _entered = span.enter();
        let (compiled, split) = ir.compile(spec, &self.inner.arena, &mut linker)?;
        let table = frame_table(name, &compiled.memory)?;
        let total = started.elapsed();
        let code_bytes: usize = compiled.memory.code.iter().map(|r| r.len()).sum();
        span.record("code_bytes", code_bytes as u64);
        span.record("ir_us", split.as_micros() as u64);
        span.record("codegen_us", total.saturating_sub(split).as_micros() as u64);
        let times = CompileTimes {
            ir: split,
            codegen: total.saturating_sub(split),
            link: Duration::ZERO,
        };
        let mut state = self.state();
        let unit = UnitId(state.next_unit);
        state.next_unit += 1;
        let mut starts: Vec<u64> = compiled.functions.iter().map(|(_, a)| *a).collect();
        starts.sort_unstable();
        let mut made = Vec::new();
        for (function, entry) in &compiled.functions {
            // Only code in this unit is a version (MCJIT used to answer a lookup of a function it
            // did not emit, an `available_externally` body, with the process's symbol).
            let Some(region) = compiled
                .memory
                .code
                .iter()
                .find(|r| r.contains(*entry as usize))
            else {
                continue;
            };
            let region_end = (region.addr() + region.len()) as u64;
            let next = starts
                .iter()
                .copied()
                .find(|&s| s > *entry && s <= region_end)
                .unwrap_or(region_end);
            let id = VersionId(state.next_version);
            state.next_version += 1;
            let part = spec.continuation.and_then(|r| r.part(function));
            let (base, kind) = match part {
                Some(part) => (
                    spec.functions
                        .and_then(|f| f.first())
                        .cloned()
                        .unwrap_or_default(),
                    match part {
                        ResumePart::Site(site) => VersionKind::Continuation(site),
                        ResumePart::Body => VersionKind::MultiContinuation,
                    },
                ),
                None => (function.clone(), VersionKind::Function),
            };
            let info = VersionInfo {
                id,
                function: base,
                unit,
                entry: *entry,
                size: next - entry,
                opt_level: opt,
                kind,
                specialisation: spec.specialise.to_vec(),
                readiness: spec.readiness,
            };
            state.versions.insert(id, info.clone());
            state.by_entry.insert(info.entry, id);
            if kind == VersionKind::Function {
                // Continuations are entered only by transfers, never through the function's
                // entries: they are not redirected and never redirected to.
                state
                    .functions
                    .entry(function.clone())
                    .or_default()
                    .push(id);
            }
            made.push(info);
        }
        // Guest globals are the base unit's: a later unit's own data (a literal the optimiser
        // made) goes when the unit is freed, and must not be linked to by others.
        let globals = if unit == BASE_UNIT {
            compiled.globals.as_slice()
        } else {
            &[]
        };
        for (global, address) in globals {
            let in_unit = compiled
                .memory
                .data
                .iter()
                .any(|d| d.region.contains(*address as usize));
            if in_unit {
                state.globals.entry(global.clone()).or_insert(*address);
            }
        }
        let entry = Unit {
            id: unit,
            name: name.to_owned(),
            debug: compiled.registration,
            memory: compiled.memory,
            code: Arc::new(UnitCode::new(unit, made.clone(), table)),
            fast_hypercalls: compiled.fast_hypercalls,
            detached: false,
        };
        // Read while the unit cannot be freed; written once the registry is unlocked.
        let dump = self.inner.options.dump_code.as_ref().map(|dir| {
            (
                crate::dump::unit_path(dir, unit, name),
                crate::dump::unit_text(unit, name, &entry.memory, &made),
            )
        });
        for (start, end) in unit_ranges(&entry) {
            state.by_section.insert(start, (end, unit));
        }
        state.units.insert(unit, entry);
        state.code_map = None;
        drop(state);
        if self.inner.options.perf == PerfMode::Map {
            perf::published_versions(&made);
        }
        if let Some((path, text)) = dump
            && let Err(e) = std::fs::write(&path, text)
        {
            eprintln!(
                "uppercut: --dump-code: cannot write {}: {e}",
                path.display()
            );
        }
        Ok((made, times))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ir(&self) -> MutexGuard<'_, Ir> {
        self.inner.ir.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Engine")
            .field("units", &state.units.len())
            .field("versions", &state.versions.len())
            .finish()
    }
}

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// The engine whose guest destructors run at process exit ([`Engine::exec_main`]).
static EXIT_DESTRUCTORS: Mutex<Option<Engine>> = Mutex::new(None);

extern "C" fn run_exit_destructors() {
    let engine = EXIT_DESTRUCTORS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(engine) = engine {
        for dtor in &engine.inner.facts.destructors {
            if let Err(e) = engine.call(dtor, &[]) {
                eprintln!("uppercut: destructor `{dtor}`: {e}");
                return;
            }
        }
        // The process is ending: the engine's code must stay mapped for whatever runs after.
        std::mem::forget(engine);
    }
}

/// Resolves declarations while a unit links.
struct EngineLinker<'a> {
    engine: &'a EngineInner,
}

impl EngineLinker<'_> {
    /// What a new unit links a guest symbol to: a guest function's base entry (its stub, or
    /// where the host bound it), never a version that may be freed; a guest global; a host
    /// binding; an alias of a guest function as the function.
    fn guest_symbol(&self, name: &str) -> Option<u64> {
        let state = self.engine.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = base_entry(&state, name) {
            return Some(entry);
        }
        if let Some(&address) = state.globals.get(name) {
            return Some(address);
        }
        if let Some(&address) = state.bindings.get(name) {
            return Some(address);
        }
        let (_, function) = self
            .engine
            .facts
            .function_aliases
            .iter()
            .find(|(alias, _)| alias == name)?;
        base_entry(&state, function)
    }
}

impl Linker for EngineLinker<'_> {
    fn resolve(&mut self, name: &str) -> Option<u64> {
        if let Some(a) = self.guest_symbol(name) {
            return Some(a);
        }
        if let Some(function) = name.strip_suffix(ir::BASE_SUFFIX) {
            return self.guest_symbol(function);
        }
        match name {
            "exit" => return Some(crate::threads::exit as *const () as u64),
            "pthread_create" => return Some(crate::threads::pthread_create as *const () as u64),
            "thrd_create" => return Some(crate::threads::thrd_create as *const () as u64),
            "pthread_join" => return Some(crate::threads::pthread_join as *const () as u64),
            "thrd_join" => return Some(crate::threads::thrd_join as *const () as u64),
            ir::HYPERCALL => return Some(arch::hypercall_dynamic_entry()),
            ir::FAST_HYPERCALL => return Some(arch::hypercall_fast_entry()),
            "registerCustomCallback" => return Some(hypercall::register_entry()),
            ir::instrument::SHADOW_PUSH => {
                return Some(crate::shadow::shadow_push as *const () as u64);
            }
            ir::instrument::SHADOW_POP => {
                return Some(crate::shadow::shadow_pop as *const () as u64);
            }
            ir::instrument::SHADOW_MARK => {
                return Some(crate::shadow::shadow_mark as *const () as u64);
            }
            ir::instrument::SHADOW_UNWIND => {
                return Some(crate::shadow::shadow_unwind as *const () as u64);
            }
            _ => {}
        }
        process_symbol(name)
    }

    fn hypercall_slot(&mut self, name: &str) -> u64 {
        self.engine.callbacks.slot(name) as u64
    }
}

unsafe extern "C" {
    /// In glibc's `libc_nonshared.a`, like `atexit`.
    fn at_quick_exit(f: extern "C" fn()) -> libc::c_int;
}

/// A symbol of the process (libc and whatever else is loaded), as the dynamic linker sees it.
///
/// glibc keeps a few functions out of `libc.so` (in `libc_nonshared.a`, linked into each
/// executable): `dlsym` cannot find them, so they resolve to the copies linked into this
/// program, as `lli` does.
pub(crate) fn process_symbol(name: &str) -> Option<u64> {
    let nonshared = match name {
        "atexit" => Some(libc::atexit as *const () as u64),
        "pthread_atfork" => Some(libc::pthread_atfork as *const () as u64),
        "at_quick_exit" => Some(at_quick_exit as *const () as u64),
        _ => None,
    };
    if nonshared.is_some() {
        return nonshared;
    }
    let c = CString::new(name).ok()?;
    // SAFETY: `dlsym` with RTLD_DEFAULT and a NUL-terminated name only reads.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
    (!address.is_null()).then_some(address as u64)
}

/// Numbers engines.
static ENGINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The largest callee (in instructions) whose body a version above O0 carries for inlining.
const INLINE_MAX_INSTRUCTIONS: usize = 120;

/// A final version assumes nothing about globals: nothing could leave it when a value changes.
fn check_final(readiness: Readiness, specialisation: &[(String, u64)]) -> Result<()> {
    if readiness == Readiness::Final && !specialisation.is_empty() {
        return Err(Error::Osr(format!(
            "a final version cannot be specialised ({}): its frames could not leave it when a \
             value changes",
            specialisation_text(specialisation)
        )));
    }
    Ok(())
}
/// How many callees' bodies a version above O0 carries at most.
const INLINE_MAX_CALLEES: usize = 16;

/// The unit every guest function is first compiled in: never retired.
const BASE_UNIT: UnitId = UnitId(0);

fn current_entry(state: &State, function: &str) -> Option<u64> {
    if let Some(&a) = state.redirected.get(function) {
        return Some(a);
    }
    let newest = state
        .current
        .get(function)
        .or_else(|| state.functions.get(function)?.last())
        .and_then(|id| state.versions.get(id));
    match newest {
        Some(v) => Some(v.entry),
        None => stub(state, function),
    }
}

/// The stub of a function compiled lazily.
fn stub(state: &State, function: &str) -> Option<u64> {
    state.stubs.as_ref()?.entries.get(function).copied()
}

/// Whether `function` is a guest function the engine compiles (compiled already, or waiting
/// for its first call).
fn is_known(state: &State, function: &str) -> bool {
    state.functions.contains_key(function) || stub(state, function).is_some()
}

/// Where calls to `function` from guest data and later units go: its base entry, never freed,
/// which leads to the newest version (or where the host bound it).
fn base_entry(state: &State, function: &str) -> Option<u64> {
    if let Some(&a) = state.redirected.get(function) {
        return Some(a);
    }
    if let Some(stub) = stub(state, function) {
        return Some(stub);
    }
    let id = state.functions.get(function)?.first()?;
    Some(state.versions[id].entry)
}

fn entries_of(state: &State, function: &str) -> Vec<u64> {
    stub(state, function)
        .into_iter()
        .chain(
            state
                .functions
                .get(function)
                .into_iter()
                .flatten()
                .map(|id| state.versions[id].entry),
        )
        .collect()
}

/// The version whose code holds `address` strictly after its entry (a return address).
fn version_at(state: &State, address: u64) -> Option<VersionInfo> {
    let (_, id) = state.by_entry.range(..address).next_back()?;
    let v = &state.versions[id];
    let detached = state.units.get(&v.unit).is_none_or(|u| u.detached);
    (!detached && v.holds_return_address(address)).then(|| v.clone())
}

/// Every section of a unit as a `[start, end)` range.
fn unit_ranges(unit: &Unit) -> Vec<(u64, u64)> {
    unit.memory
        .code
        .iter()
        .map(|r| r.range())
        .chain(unit.memory.data.iter().map(|d| d.region.range()))
        .filter(|r| !r.is_empty())
        .map(|r| (r.start as u64, r.end as u64))
        .collect()
}

/// Frees a retired unit that no thread reaches any more, unless a pin still holds it (`false`:
/// the last unpin offers it again). Its versions go with it.
fn free_unit(engine: &Weak<EngineInner>, unit: UnitId) -> bool {
    let Some(engine) = engine.upgrade() else {
        // The engine, and with it the unit, is gone already.
        return true;
    };
    let (freed, gone_entries) = {
        let mut state = engine.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.pins.get(&unit).is_some_and(|&p| p > 0) {
            return false;
        }
        let Some(freed) = state.units.remove(&unit) else {
            return true;
        };
        state.retired.remove(&unit);
        engine
            .lifetime_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        let gone: Vec<VersionId> = state
            .versions
            .iter()
            .filter(|(_, v)| v.unit == unit)
            .map(|(id, _)| *id)
            .collect();
        let mut gone_entries = Vec::new();
        for id in &gone {
            if let Some(v) = state.versions.remove(id) {
                gone_entries.push(v.entry);
                state.by_entry.remove(&v.entry);
                if let Some(ids) = state.functions.get_mut(&v.function) {
                    ids.retain(|i| i != id);
                }
            }
        }
        for (start, _) in unit_ranges(&freed) {
            state.by_section.remove(&start);
        }
        state.code_map = None;
        (freed, gone_entries)
    };
    if engine.options.perf == PerfMode::Map {
        perf::freed(&gone_entries);
    }
    // Unmapping takes the arena's lock: outside the registry's.
    tracing::info!(target: "uppercut::code", unit = unit.0, unit_name = %freed.name, "free");
    drop(freed);
    true
}

fn unit_info(unit: &Unit) -> UnitInfo {
    UnitInfo {
        id: unit.id,
        name: unit.name.clone(),
        code: unit
            .memory
            .code
            .iter()
            .map(|r| (r.addr() as u64, r.len() as u64))
            .collect(),
        data: unit
            .memory
            .data
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.region.addr() as u64,
                    d.region.len() as u64,
                )
            })
            .collect(),
        fast_hypercalls: unit.fast_hypercalls,
    }
}

/// Checks a new unit's frame metadata before the engine trusts it (the stack map parses and
/// every function it describes lies in the unit's code; the `.eh_frame` section parses) and
/// decodes it into the unit's frame table, once.
fn frame_table(unit: &str, memory: &ir::UnitMemory) -> Result<FrameTable> {
    let corrupt = |source| Error::StackMaps {
        unit: unit.to_owned(),
        source,
    };
    let map = match memory.section(STACKMAP_SECTION) {
        Some((_, bytes)) => Some(StackMap::parse(bytes).map_err(corrupt)?),
        None => None,
    };
    if let Some(map) = &map {
        for function in map.functions() {
            let address = function.address();
            if !memory.code.iter().any(|r| r.contains(address as usize)) {
                return Err(Error::Codegen {
                    unit: unit.to_owned(),
                    message: format!(
                        "the stack map describes a function at {address:#x}, outside the unit's code"
                    ),
                });
            }
        }
    }
    let cfi = match memory.section(EH_FRAME_SECTION) {
        Some((address, bytes)) => {
            Some(EhFrameSection::new(bytes.to_vec(), address).map_err(corrupt)?)
        }
        None => None,
    };
    Ok(FrameTable::build(map.as_ref(), cfi))
}

/// Makes each of `entries` jump to `target`.
///
/// Each entry must still hold the 5-byte no-op LLVM placed there, or a jump an earlier
/// redirection wrote: anything else means the entry is not ours to patch.
///
/// Other threads may be running the old code, this entry included, at this very moment (a
/// multi-threaded guest whose policy recompiles): each entry is therefore patched live, the
/// jump and the 3 bytes after it written as one aligned 8-byte word with one atomic store while
/// the code stays executable ([`CodeRegion::patch_live`]). A thread that reaches the entry runs
/// either the no-op (or the earlier jump), into an older version that is still mapped, or the
/// new jump. Entries are 16-byte aligned (the IR asks for it), so their 5 bytes always lie in
/// one aligned word; an entry that somehow does not is refused rather than patched by making
/// its code writable, which would fault any thread running it.
fn redirect(state: &mut State, function: &str, entries: &[u64], target: u64) -> Result<()> {
    for &entry in entries {
        if entry == target {
            continue;
        }
        if entry % 8 + ir::PATCHABLE_ENTRY_BYTES as u64 > 8 {
            return Err(Error::Relink {
                function: function.to_owned(),
                reason: format!(
                    "the entry at {entry:#x} is not aligned so that its {} bytes lie within one \
                     aligned 8-byte word: it cannot be patched with one atomic store while other \
                     threads may run it",
                    ir::PATCHABLE_ENTRY_BYTES
                ),
            });
        }
        let jump = arch::jmp_rel32(entry, target).ok_or_else(|| Error::Relink {
            function: function.to_owned(),
            reason: format!("{target:#x} is out of jmp rel32 reach of the entry at {entry:#x}"),
        })?;
        let (region, offset, _) = patchable_entry(state, function, entry)?;
        region.patch_live(offset, &jump)?;
    }
    Ok(())
}

/// The code region holding `entry`, its offset there, and its 5 bytes, which must still be the
/// no-op LLVM placed there or a jump an earlier redirection wrote: anything else means the
/// entry is not ours to patch.
fn patchable_entry<'s>(
    state: &'s mut State,
    function: &str,
    entry: u64,
) -> Result<(&'s mut CodeRegion, usize, [u8; ir::PATCHABLE_ENTRY_BYTES])> {
    let refused = |reason: String| Error::Relink {
        function: function.to_owned(),
        reason,
    };
    let region = find_code_region(state, entry).ok_or_else(|| {
        refused(format!(
            "the entry at {entry:#x} is not in the engine's code memory"
        ))
    })?;
    let offset = entry as usize - region.addr();
    let current: [u8; ir::PATCHABLE_ENTRY_BYTES] = region
        .as_slice()
        .get(offset..offset + ir::PATCHABLE_ENTRY_BYTES)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            refused(format!(
                "the entry at {entry:#x} ends past its code section"
            ))
        })?;
    if !is_patchable_entry(&current, entry) {
        return Err(refused(format!(
            "the entry at {entry:#x} holds {current:02x?}, not the reserved 5-byte no-op or an \
             earlier jump"
        )));
    }
    Ok((region, offset, current))
}

/// Makes `entry` (a version's own entry, which may jump to a newer version) run its body again:
/// the 5-byte no-op back in place, with the same one-word atomic store as a redirection.
fn restore_entry(state: &mut State, function: &str, entry: u64) -> Result<()> {
    let (region, offset, current) = patchable_entry(state, function, entry)?;
    if current != arch::NOP5 {
        region.patch_live(offset, &arch::NOP5)?;
    }
    Ok(())
}

/// Whether `bytes` (at `address`) decode as one 5-byte no-op or one 5-byte `jmp rel32`.
fn is_patchable_entry(bytes: &[u8], address: u64) -> bool {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    let mut decoder = Decoder::with_ip(64, bytes, address, DecoderOptions::NONE);
    let instruction = decoder.decode();
    instruction.len() == ir::PATCHABLE_ENTRY_BYTES
        && matches!(instruction.mnemonic(), Mnemonic::Nop | Mnemonic::Jmp)
}

fn find_code_region(state: &mut State, address: u64) -> Option<&mut CodeRegion> {
    // The section index says which unit (a program compiled lazily has a unit per function).
    let (_, &(end, unit)) = state.by_section.range(..=address).next_back()?;
    if address >= end {
        return None;
    }
    state
        .units
        .get_mut(&unit)?
        .memory
        .code
        .iter_mut()
        .find(|r| r.contains(address as usize))
}
