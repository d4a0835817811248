//! What OSR instrumentation did to a guest module: its sites, its functions, its globals.
//!
//! With [`EngineOptions::instrument`](crate::EngineOptions::instrument) set, the engine rewrites
//! the prepared module once, before anything is compiled, and every version is built from the
//! result:
//!
//! ```text
//!  f(args)                                   f(args)        gc "statepoint-example" → "shadow-stack"
//!    %a = alloca [4 x i32]                     osr.entry:
//!    ...                                         %sf = __uppercut_shadow_push(@map.f, 32)
//!  loop:                            ==>          %a  = gep %sf, 16        (escaping memory lives
//!    %i = phi ...                                [entry site: counter, hypercall]  on the shadow stack)
//!    %r = call @g(%i)                          osr.loop:  %i = phi ...; --counter; if <= 0:
//!    ...                                         osr.fire: PerformCustomCallback("uppercut.osr.site", site)
//!    ret                                                     ["deopt"(site, live values...)]
//!                                              loop: %r = call @g(%i) ["deopt"(site, %i, %sf, ...)]
//!                                              ...   __uppercut_shadow_pop(%sf); ret
//! ```
//!
//! (The picture counts in the global, as [`LoopCounters::Global`] does; by default a loop counts
//! in a register and charges the global in chunks, [`LoopCounters::Register`]. A scalar local
//! that no site's callee can reach stays in the machine frame instead, its contents part of
//! each site's state: [`Instrumentation::frame_locals`].)
//!
//! A call carries a site (a `"deopt"` bundle with its id and the base program's live values)
//! when it can reach a hypercall, by the module's call graph: a call of `PerformCustomCallback`
//! or of a guest function that can reach one, an indirect call when some guest function whose
//! address is taken can (nothing else is reachable through a pointer but libraries), and with
//! [`Instrumentation::shadow_discovery`] a call into a library that may call such a function
//! back. Calls that cannot reach a hypercall cost nothing. After optimisation, `rewrite-statepoints-for-gc` turns each
//! into a statepoint whose stack-map record, at the call's return address, says where every
//! value lives in that version's frame.

use std::collections::HashMap;

use crate::types::{SiteId, ValueKind};

/// What OSR instrumentation adds to a guest module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instrumentation {
    /// A counter and a hypercall at every loop header.
    pub loop_sites: bool,
    /// A counter and a hypercall at every function entry.
    pub entry_sites: bool,
    /// Globals whose every store is followed by a hypercall (`uppercut.osr.site` with the
    /// store's site), for specialisation on their value.
    pub store_sites: Vec<String>,
    /// The value every site counter starts at: a loop or entry site fires when its counter,
    /// decremented at each pass, reaches zero. The handler may store a new count (see
    /// [`SiteInfo::counter`]).
    pub initial_count: i64,
    /// Start each function's counters at `initial_count` times its size in units of
    /// [`SIZE_UNIT`] instructions (at least one unit), so that a function that costs more to
    /// compile runs longer before its sites fire (JavaScriptCore scales its tier-up thresholds
    /// by code size the same way). Off by default: every counter starts at `initial_count`.
    pub scale_counts_by_size: bool,
    /// How loop sites count their passes (entry sites always count in their global).
    pub loop_counters: LoopCounters,
    /// Sites only where the module's call graph says a hypercall can be reached (the default):
    /// an indirect call is a site only when some guest function whose address is taken can
    /// reach a hypercall. Off, every indirect call is a site (an indirect call may lead
    /// anywhere), as before the call graph was used; the experiments measure the difference.
    pub call_graph: bool,
    /// Keep a local whose address is taken in the machine frame when nothing but its own
    /// function's code can reach it while a site's call runs (a scalar that is not a pointer,
    /// only loaded, stored, or handed to calls that are not sites and do not capture it): each
    /// site where it is live carries its contents as one more value, and a continuation's
    /// frame gets a local of its own, filled from that value (the default). Off, every such
    /// local lives in a shadow-stack frame, which costs two runtime calls per call of the
    /// function.
    pub frame_locals: bool,
    /// Frame discovery from the shadow-stack chain alone (the 2009 design): every function
    /// that has sites opens a shadow-stack frame (even without escaping locals) that records
    /// its machine frame address (stored once at entry) and the id of the site it is at
    /// (stored before each site's call, and before the hypercall of a loop or entry site); see
    /// [`DiscoverySlots`] and [`crate::shadow`]. A walker can then find every instrumented
    /// frame of a thread from the chain, through frames of code that has no frame pointers or
    /// no metadata (a libc `qsort` calling a guest comparator).
    ///
    /// It also makes calls of external functions sites when some guest function that can reach
    /// a hypercall has its address taken (the library may call it back): the frame below the
    /// library frame then stops at a site. (Variadic external calls are left alone: a
    /// statepoint cannot carry them.)
    pub shadow_discovery: bool,
}

impl Default for Instrumentation {
    fn default() -> Self {
        Instrumentation {
            loop_sites: true,
            entry_sites: false,
            store_sites: Vec::new(),
            initial_count: 1000,
            scale_counts_by_size: false,
            loop_counters: LoopCounters::default(),
            call_graph: true,
            frame_locals: true,
            shadow_discovery: false,
        }
    }
}

/// How a loop site counts the passes of its loop.
///
/// Either way the count lives in the site's counter global ([`SiteInfo::counter`]), the site
/// fires on the pass that brings it to zero, and a count stored into the global (by the site's
/// handler or by another thread) takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopCounters {
    /// Every pass loads, decrements and stores the global. A store through any pointer in the
    /// loop may alias the global, so the optimiser cannot keep the count in a register: the
    /// loop pays a load and a store per pass.
    Global,
    /// Passes are counted in a register of the function and charged to the global in chunks
    /// (strip-mining): the loop header decrements a local count and branches; only when it
    /// runs out does the code read the global, charge the next chunk to it (or fire, when the
    /// global runs out), and refill the local count. A chunk starts at one pass at the
    /// function's entry and after each call it makes (so that the count is never live across a
    /// call), and doubles up to [`REGISTER_CHUNK`] passes: the global is never charged for more
    /// than twice the passes that ran (plus one), and a count stored into it is seen within
    /// [`REGISTER_CHUNK`] passes. A loop whose global is exhausted and not refilled
    /// fires at every pass, as with [`LoopCounters::Global`].
    ///
    /// The local count is a value of the function that no site's state carries: a frame
    /// moved into a continuation starts a fresh chunk.
    #[default]
    Register,
}

/// Instructions per unit of size for [`Instrumentation::scale_counts_by_size`].
pub const SIZE_UNIT: i64 = 100;

/// The largest chunk of passes a [`LoopCounters::Register`] loop site charges to its global at
/// once (a power of two).
pub const REGISTER_CHUNK: i64 = 64;

/// The callback name every instrumented site calls; its argument is the [`SiteId`] as a
/// pointer-sized integer.
pub const SITE_CALLBACK: &str = "uppercut.osr.site";

/// Why a site exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteKind {
    /// A call that can reach a hypercall (the callee's name, `None` for an indirect call).
    Call {
        /// The callee, if the call is direct.
        callee: Option<String>,
    },
    /// The hypercall of a loop header's counter.
    Loop,
    /// The hypercall of a function entry's counter.
    Entry,
    /// The hypercall after a store to a watched global.
    Store {
        /// The global.
        global: String,
    },
}

/// One OSR site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteInfo {
    /// Its id.
    pub id: SiteId,
    /// The function it lies in.
    pub function: String,
    /// Why it exists.
    pub kind: SiteKind,
    /// The kinds of the base program's values live after the call, in record order.
    pub values: Vec<ValueKind>,
    /// The kind of the call's result (`None` for `void`).
    pub result: Option<ValueKind>,
    /// Which value is the function's shadow-stack frame, if it has one and it is live here.
    ///
    /// With [`Instrumentation::shadow_discovery`], the function stores this site's id into its
    /// frame's [`DiscoverySlots::site`] word right before the call (for a loop or entry site,
    /// right before its hypercall); a refused site's id is stored too, so a walker sees that
    /// the frame stopped at a call without state.
    pub shadow_frame: Option<usize>,
    /// The global `i64` counter of a loop or entry site.
    pub counter: Option<String>,
    /// A loop site's nesting depth: 1 for a loop in no other loop of its function, 2 for one
    /// inside such a loop, and so on. A continuation resumed at an outermost loop's header has
    /// a whole loop nest the optimiser sees as one; resumed deeper, the loops around it are
    /// entered in the middle and optimise worse.
    pub loop_depth: Option<u32>,
    /// The count a loop or entry site's counter started at: with its current value, how often
    /// its loop passed or its function was entered (until a handler stores another count).
    pub counter_start: Option<i64>,
    /// Why the call carries no OSR state, if it does not (its hypercall, if any, still fires;
    /// frames stopped there are not transferred).
    pub refused: Option<String>,
}

/// What instrumentation made of one function.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionOsr {
    /// Why the function has no sites at all (its frames are never transferred), if so.
    pub excluded: Option<String>,
    /// Its sites.
    pub sites: Vec<SiteId>,
    /// Calls that can reach a hypercall but carry no site, with the reason (a value or result
    /// that OSR state cannot carry): frames stopped there are not transferred. (Library calls
    /// that only [`Instrumentation::shadow_discovery`] makes sites are not listed when refused:
    /// [`OsrModule::sites`] describes them.)
    pub refused: Vec<String>,
    /// Bytes of its shadow-stack frame (0 without one).
    pub shadow_frame_size: u64,
    /// The constant global holding its shadow-stack frame map, when it has a frame: every
    /// frame it opens points at this global's address (`StackEntry::map`).
    pub frame_map: Option<String>,
    /// Where its shadow-stack frame records its machine frame and current site, with
    /// [`Instrumentation::shadow_discovery`].
    pub discovery: Option<DiscoverySlots>,
    /// Globals it loads directly.
    pub reads: Vec<String>,
}

impl FunctionOsr {
    /// Whether every frame of the function that a hypercall can find is transferable: it is
    /// instrumented and no call that can reach a hypercall was refused a site.
    pub fn complete(&self) -> bool {
        self.excluded.is_none() && self.refused.is_empty()
    }
}

/// Where a shadow-stack frame keeps what frame discovery reads: byte offsets from the frame's
/// start (its `StackEntry`), each an 8-byte word.
///
/// ```text
///  +0   Next                      LLVM shadow-stack ABI header
///  +8   Map ──> FrameMap { NumRoots, NumMeta = 1, Meta[0] ──> FunctionMeta }
///  +16  roots[NumRoots]           pointer-typed escaping locals (what a collector scans)
///  +D   machine frame address     `llvm.frameaddress(0)` (the function's rbp), stored at entry
///  +D+8 site id                   0 at entry, then the id of each site right before its call
///  ...  other escaping locals
/// ```
///
/// `D = 16 + 8 * NumRoots`: the words sit after the roots, so a collector that scans
/// `NumRoots` roots never sees them. [`FunctionMeta`](crate::shadow::FunctionMeta) carries the
/// same two offsets, so a walker needs nothing but the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoverySlots {
    /// Offset of the word holding the machine frame address.
    pub frame_address: u64,
    /// Offset of the word holding the current site id (a [`SiteId`], zero-extended).
    pub site: u64,
}

/// What instrumentation found about one global variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalOsr {
    /// Its value's kind when it can be specialised on (a scalar that is only loaded and stored
    /// directly); else why not.
    pub specialisable: std::result::Result<ValueKind, String>,
    /// Functions that load it directly.
    pub readers: Vec<String>,
}

/// The instrumented module's sites, functions and globals.
#[derive(Debug, Clone, Default)]
pub struct OsrModule {
    pub(crate) sites: Vec<SiteInfo>,
    pub(crate) functions: HashMap<String, FunctionOsr>,
    pub(crate) globals: HashMap<String, GlobalOsr>,
}

impl OsrModule {
    /// Every site, by ascending id. (Ids of calls that were refused a site are missing.)
    pub fn sites(&self) -> &[SiteInfo] {
        &self.sites
    }

    /// One site.
    pub fn site(&self, id: SiteId) -> Option<&SiteInfo> {
        let i = self.sites.binary_search_by_key(&id, |s| s.id).ok()?;
        Some(&self.sites[i])
    }

    /// What instrumentation made of a function.
    pub fn function(&self, name: &str) -> Option<&FunctionOsr> {
        self.functions.get(name)
    }

    /// Every instrumented or excluded function, by name.
    pub fn functions(&self) -> impl Iterator<Item = (&str, &FunctionOsr)> {
        self.functions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// What instrumentation found about a global.
    pub fn global(&self, name: &str) -> Option<&GlobalOsr> {
        self.globals.get(name)
    }
}
