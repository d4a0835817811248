//! Frame discovery from the shadow-stack chain alone (the 2009 design): no frame-pointer walk.
//! See [`ShadowDiscovery`].

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use uppercut_core::frames::{FrameBase, RecordValue, SavedAt, StackMemory, ThreadStack};
use uppercut_core::shadow::{ShadowEntry, for_each_entry};
use uppercut_core::{Engine, OsrModule, SiteId, UnitId, VersionId, VersionInfo};

use crate::error::{Error, Result};
use crate::frames::Frame;
use crate::transfer::Transfers;
use uppercut_core::frames::layout::{FP_ALIGN, NEXT_OLDER_SP_FROM_FP_OFFSET, RA_SLOT_BELOW_SP};

/// What discovery made of one entry of this thread's shadow-stack chain.
#[derive(Debug, Clone)]
pub struct DiscoveredFrame {
    /// The shadow-stack frame's address.
    pub shadow_frame: u64,
    /// The function that opened it.
    pub function: Arc<str>,
    /// The site the entry says its function is at (`None` before its first site call).
    pub site: Option<SiteId>,
    /// The machine frame address the entry records (0 when it records none).
    pub frame_pointer: u64,
    /// The frame, ready for [`Transfers::prepare`]; or why it cannot be transferred.
    pub frame: Result<Frame>,
}

/// Finds this thread's instrumented frames from the shadow-stack chain alone (the 2009 design):
/// no frame-pointer walk.
///
/// With [`Instrumentation::shadow_discovery`](uppercut_core::Instrumentation::shadow_discovery),
/// every guest function that has sites opens a shadow-stack frame that records its machine
/// frame address (`rbp`, stored once at entry) and the site it is at (stored before each site's
/// call). This thread's chain then names every suspended instrumented frame, innermost first,
/// whatever lies between them on the machine stack (a libc `qsort` calling a guest comparator,
/// host code without frame pointers):
///
/// ```text
///   shadow chain (heap)                          machine stack (grows down)
///   ┌────────────────────────┐                   │ ...                          │
///   │ entry of main          │  frame address ─> │ saved rbp of main's caller   │ <- fp (rbp)
///   │   site = 7 (qsort)     │                   │ main's locals, spills        │
///   ├────────────────────────┤                   │ ... (stack map frame size S) │
///   │ entry of cmp           │─┐                 ├──────────────────────────────┤ <- rsp at the call
///   │   site = 3 (hypercall) │ │                 │ return address into main     │ <- slot = fp - S
///   └────────────────────────┘ │                 │ qsort's frame (no metadata)  │
///                              └───── ... ────>  │ cmp's frame ...              │
/// ```
///
/// For each entry: the function comes from its frame map (one per function,
/// [`FunctionOsr::frame_map`](uppercut_core::FunctionOsr::frame_map)); the site from the entry;
/// the candidates are that site's return addresses in every compiled version (functions,
/// continuations, and clones the optimiser made of the function: a record whose deopt location
/// 0 is the site is code of the site's function), each with its stack-map function record's
/// frame size `S`. A frame with a frame pointer has `rsp = fp + 8 - S` at its calls (CFA =
/// `fp + 16`, minus the return address, minus `S`), so the return-address slot of the call is
/// `fp - S`. The frame is
/// reported as a [`Frame`] only when that slot holds one of the candidates (or a transfer thunk
/// for one), the version still holds that code, and the record's shadow-frame value (when the
/// site has one) is this very entry. Anything else fails closed: the entry is reported with an
/// [`Error::Undiscoverable`] and never moves.
///
/// The [`Frame`]s are the ones [`Transfers::walk`] would produce for the same frames, so
/// [`Transfers::prepare`] and [`Transfers::patch`] take them unchanged.
///
/// ```no_run
/// use uppercut_core::{Engine, EngineOptions, Hypercall, Instrumentation};
/// use uppercut_osr::{ShadowDiscovery, Transfers};
///
/// let options = EngineOptions {
///     instrument: Some(Instrumentation {
///         shadow_discovery: true,
///         ..Instrumentation::default()
///     }),
///     ..EngineOptions::default()
/// };
/// let engine = Engine::from_file("sort.ll", options)?;
/// let discovery = ShadowDiscovery::new();
/// engine.register_callback("probe", move |h: &mut Hypercall<'_>| {
///     let transfers = Transfers::new(&h.engine());
///     for found in discovery.walk(&transfers) {
///         match &found.frame {
///             Ok(frame) => println!("{}: {:#x}", found.function, frame.return_address),
///             Err(why) => println!("{why}"),
///         }
///     }
///     Ok(std::ptr::null_mut())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Known limits: a frame whose stack is realigned (a local aligned beyond 16 bytes) has no
/// fixed frame size in the stack map, so it is refused. A frame interrupted by a signal whose
/// handler makes a hypercall is not suspended at a call, yet its slot may still hold the return
/// address of its last call (the red zone below `rsp` is not cleared): it is reported, and
/// patching it is harmless (nothing returns through that word) but never takes effect. Frames
/// a `longjmp` skipped are closed when `setjmp` returns (see [`uppercut_core::shadow`]); an
/// entry whose machine frame lies below an inner one's is refused as out of order all the same.
///
/// A `ShadowDiscovery` holds the decoded stack maps and per-site candidates of one engine (a
/// walk with another engine starts over). Cheap to clone (clones share the cache); it does not
/// hold the engine, so it may live in the engine's own callbacks.
#[derive(Clone, Default)]
pub struct ShadowDiscovery {
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for ShadowDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cache = lock(&self.cache);
        f.debug_struct("ShadowDiscovery")
            .field("functions", &cache.functions.len())
            .field("sites", &cache.sites.len())
            .field("units", &cache.units.len())
            .finish()
    }
}

impl ShadowDiscovery {
    /// An empty discovery cache.
    pub fn new() -> ShadowDiscovery {
        ShadowDiscovery::default()
    }

    /// This thread's instrumented frames of `transfers`' engine, innermost first, from the
    /// shadow-stack chain: one entry per shadow-stack frame of the engine's functions (frames of
    /// other engines are skipped). Call it from a hypercall running on this thread.
    pub fn walk(&self, transfers: &Transfers) -> Vec<DiscoveredFrame> {
        self.walk_limit(transfers, usize::MAX)
    }

    /// [`ShadowDiscovery::walk`], stopping after the `limit` innermost entries.
    pub fn walk_limit(&self, transfers: &Transfers, limit: usize) -> Vec<DiscoveredFrame> {
        let mut out = Vec::new();
        let Some(window) = ThreadStack::current() else {
            return out;
        };
        let engine = transfers.engine();
        let Some(osr) = engine.osr() else {
            return out;
        };
        let mut cache = lock(&self.cache);
        cache.open(engine, &osr);
        let mut walk = Walk {
            engine,
            osr: &osr,
            transfers,
            window,
            generation: engine.version_count(),
            verified: Vec::new(),
            innermost_fp: 0,
            last_function: None,
            last_site: None,
        };
        for_each_entry(|entry| {
            if out.len() >= limit {
                return ControlFlow::Break(());
            }
            if let Some(found) = walk.entry(&mut cache, entry) {
                out.push(found);
            }
            ControlFlow::Continue(())
        });
        out
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decoded metadata of one engine.
#[derive(Default)]
struct Cache {
    /// The engine it describes: the start of its code arena (0 before the first walk).
    engine: usize,
    /// The engine's functions by the address of their frame map.
    functions: HashMap<u64, Arc<str>>,
    /// Each site's return addresses in every version.
    sites: HashMap<SiteId, Arc<[Candidate]>>,
    /// [`Engine::version_count`] when `sites` was built (`None`: not yet).
    generation: Option<usize>,
    /// Site records of each unit.
    units: HashMap<UnitId, Arc<UnitIndex>>,
}

/// One return address a frame of a function may be suspended at.
#[derive(Clone)]
struct Candidate {
    return_address: u64,
    /// The stack map's frame size: the return-address slot is at `fp - size` (`None` for a
    /// frame whose size is not fixed).
    frame_size: Option<u64>,
    /// Where the record keeps the shadow-stack frame pointer, when the site has it.
    shadow: Option<RecordValue>,
    version: Arc<VersionInfo>,
}

/// The site records of one unit, by return address.
struct UnitIndex {
    records: Vec<UnitRecord>,
}

struct UnitRecord {
    return_address: u64,
    site: SiteId,
    /// The fixed frame size (`None` when it is not fixed).
    frame_size: Option<u64>,
    /// The decoded values (`None` when the record does not follow the convention).
    values: Option<Vec<RecordValue>>,
}

impl Cache {
    /// Readies the cache for a walk of `engine`: starts over for another engine, and maps the
    /// frame maps of its functions.
    fn open(&mut self, engine: &Engine, osr: &OsrModule) {
        let key = engine.arena().range().start;
        if self.engine == key {
            return;
        }
        *self = Cache {
            engine: key,
            ..Cache::default()
        };
        for (name, info) in osr.functions() {
            let Some(map) = &info.frame_map else {
                continue;
            };
            if let Ok(address) = engine.global_address(map) {
                self.functions.insert(address, Arc::from(name));
            }
        }
    }

    /// Rebuilds the candidates from the engine's versions as of `generation`.
    fn rebuild(&mut self, engine: &Engine, osr: &OsrModule, generation: usize) {
        let mut sites: HashMap<SiteId, Vec<Candidate>> = HashMap::new();
        for version in engine.all_versions() {
            let unit = self.unit(engine, version.unit);
            let version = Arc::new(version);
            let start = unit
                .records
                .partition_point(|r| r.return_address <= version.entry);
            for record in unit.records[start..]
                .iter()
                .take_while(|r| r.return_address < version.entry + version.size)
            {
                let shadow = osr
                    .site(record.site)
                    .and_then(|s| s.shadow_frame)
                    .and_then(|i| record.values.as_ref()?.get(i).copied());
                sites.entry(record.site).or_default().push(Candidate {
                    return_address: record.return_address,
                    frame_size: record.frame_size,
                    shadow,
                    version: Arc::clone(&version),
                });
            }
        }
        self.sites = sites.into_iter().map(|(k, v)| (k, v.into())).collect();
        self.generation = Some(generation);
    }

    fn unit(&mut self, engine: &Engine, unit: UnitId) -> Arc<UnitIndex> {
        if let Some(index) = self.units.get(&unit) {
            return Arc::clone(index);
        }
        let records = engine
            .unit_code(unit)
            .map(|code| {
                code.table
                    .rows()
                    .iter()
                    .filter_map(|row| {
                        Some(UnitRecord {
                            return_address: row.return_address,
                            site: row.site?,
                            frame_size: row.frame_size,
                            values: row.state.as_ref().ok().map(|s| s.values.clone()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let index = Arc::new(UnitIndex { records });
        self.units.insert(unit, Arc::clone(&index));
        index
    }
}

/// The state of one walk.
struct Walk<'a> {
    engine: &'a Engine,
    osr: &'a OsrModule,
    transfers: &'a Transfers,
    window: ThreadStack,
    /// [`Engine::version_count`] when the walk started.
    generation: usize,
    /// Versions checked against the engine's registry in this walk, and the outcome.
    verified: Vec<(VersionId, bool)>,
    /// The machine frame of the last entry accepted: older frames lie at or above it.
    innermost_fp: u64,
    /// The last frame map looked up and its function (the frames of a recursion share it).
    last_function: Option<(u64, Arc<str>)>,
    /// The last site looked up and its candidates.
    last_site: Option<(SiteId, Arc<[Candidate]>)>,
}

/// A candidate whose return address the frame's slot holds.
struct Match {
    candidate: Candidate,
    slot: u64,
    pending: Option<u64>,
}

impl Walk<'_> {
    /// What `entry` is, or `None` when it is not this engine's.
    fn entry(&mut self, cache: &mut Cache, entry: &ShadowEntry) -> Option<DiscoveredFrame> {
        let name = match &self.last_function {
            Some((map, name)) if *map == entry.map => Arc::clone(name),
            _ => {
                let name = Arc::clone(cache.functions.get(&entry.map)?);
                self.last_function = Some((entry.map, Arc::clone(&name)));
                name
            }
        };
        let discovery = entry.discovery;
        let refuse = |reason: String| Error::Undiscoverable {
            shadow_frame: entry.address,
            function: name.to_string(),
            reason,
        };
        let frame = match discovery {
            None => Err(refuse(
                "its shadow-stack frame records no machine frame (the engine was instrumented \
                 without shadow discovery)"
                    .to_owned(),
            )),
            Some(d) => self
                .frame(cache, entry, d.frame_address, d.site)
                .map_err(refuse),
        };
        Some(DiscoveredFrame {
            shadow_frame: entry.address,
            function: name,
            site: discovery.and_then(|d| d.site),
            frame_pointer: discovery.map_or(0, |d| d.frame_address),
            frame,
        })
    }

    fn frame(
        &mut self,
        cache: &mut Cache,
        entry: &ShadowEntry,
        fp: u64,
        site: Option<SiteId>,
    ) -> std::result::Result<Frame, String> {
        if fp == 0 || fp % FP_ALIGN != 0 || !self.window.contains(fp, NEXT_OLDER_SP_FROM_FP_OFFSET)
        {
            return Err(format!(
                "it records machine frame {fp:#x}, which is not a frame of this thread's live stack"
            ));
        }
        if fp < self.innermost_fp {
            return Err(format!(
                "its machine frame {fp:#x} lies below an inner frame's ({:#x}): the chain is out \
                 of order (a frame that a longjmp skipped?)",
                self.innermost_fp
            ));
        }
        self.innermost_fp = fp;
        let site = site.ok_or("it has not reached a site")?;
        let found = match self.find(cache, site, fp) {
            Some(m) => Some(m),
            None if cache.generation != Some(self.generation) => {
                // Versions were compiled since the candidates were gathered.
                cache.rebuild(self.engine, self.osr, self.generation);
                self.last_site = None;
                self.find(cache, site, fp)
            }
            None => None,
        };
        let Some(Match {
            candidate,
            slot,
            pending,
        }) = found
        else {
            let info = self
                .osr
                .site(site)
                .ok_or_else(|| format!("it records {site}, which instrumentation never made"))?;
            if let Some(why) = &info.refused {
                return Err(format!("it is at {site}, which carries no state: {why}"));
            }
            let sizes: Vec<u64> = cache
                .sites
                .get(&site)
                .into_iter()
                .flat_map(|c| c.iter())
                .filter_map(|c| c.frame_size)
                .collect();
            return Err(if sizes.is_empty() {
                format!(
                    "no version of it has a fixed-size frame with {site} (the stack map records \
                     none for a realigned or dynamic frame): its slot cannot be found from its \
                     frame pointer"
                )
            } else {
                format!(
                    "its return-address slot (frame pointer minus {sizes:?}) holds no return \
                     address of {site} in any of its versions"
                )
            });
        };
        if !self.alive(&candidate) {
            return Err(format!(
                "{} no longer holds the code at {:#x}",
                candidate.version.id, candidate.return_address
            ));
        }
        let sp = slot + RA_SLOT_BELOW_SP;
        let shadow_slot = match candidate.shadow {
            Some(RecordValue::Stack {
                base: FrameBase::Sp,
                offset,
                ..
            }) => Some(sp.wrapping_add_signed(i64::from(offset))),
            Some(RecordValue::Stack {
                base: FrameBase::Fp,
                offset,
                ..
            }) => Some(fp.wrapping_add_signed(i64::from(offset))),
            _ => None,
        };
        if let Some(at) = shadow_slot {
            match self.window.read(at) {
                Some(held) if held == entry.address => {}
                Some(held) => {
                    return Err(format!(
                        "at {:#x} its record says it uses shadow-stack frame {held:#x}, not this \
                         one",
                        candidate.return_address
                    ));
                }
                None => {
                    return Err(format!(
                        "its shadow-stack frame pointer at {at:#x} is not in this thread's live \
                         stack"
                    ));
                }
            }
        }
        Ok(Frame {
            return_address: candidate.return_address,
            return_address_slot: slot,
            stack_pointer: sp,
            frame_pointer: fp,
            version: candidate.version,
            site: Some(site),
            pending,
            // Found from the chain, not by unwinding: where inner frames saved callee-saved
            // registers is not known (an eager read of a value in one is refused; a lazy
            // transfer reads it as the callee returns it).
            saved: [SavedAt::Unknown; 5],
        })
    }

    /// The candidate of `site` whose return address (or a thunk for it) the frame's slot holds.
    fn find(&mut self, cache: &Cache, site: SiteId, fp: u64) -> Option<Match> {
        if self
            .last_site
            .as_ref()
            .is_none_or(|(last, _)| *last != site)
        {
            self.last_site = Some((site, Arc::clone(cache.sites.get(&site)?)));
        }
        let candidates: &[Candidate] = self.last_site.as_ref().map_or(&[], |(_, c)| c);
        // Frames of one version share a frame size: usually one slot to read.
        let mut last: Option<(u64, u64)> = None;
        let mut word_at = |slot: u64| match last {
            Some((s, word)) if s == slot => Some(word),
            _ => {
                let word = self.window.read(slot)?;
                last = Some((slot, word));
                Some(word)
            }
        };
        for c in candidates.iter() {
            let Some(slot) = c.frame_size.and_then(|size| fp.checked_sub(size)) else {
                continue;
            };
            if word_at(slot) == Some(c.return_address) {
                return Some(Match {
                    candidate: c.clone(),
                    slot,
                    pending: None,
                });
            }
        }
        // A frame already set to move: its slot holds a thunk for one of the candidates.
        for c in candidates.iter() {
            let Some(slot) = c.frame_size.and_then(|size| fp.checked_sub(size)) else {
                continue;
            };
            let Some(word) = word_at(slot) else {
                continue;
            };
            if let Some((return_address, continuation)) = self.transfers.thunk_target(word)
                && return_address == c.return_address
            {
                return Some(Match {
                    candidate: c.clone(),
                    slot,
                    pending: Some(continuation),
                });
            }
        }
        None
    }

    /// Whether the candidate's version still holds its code (checked once per version and
    /// walk: a reclaimed version's addresses may hold another's code).
    fn alive(&mut self, candidate: &Candidate) -> bool {
        let id = candidate.version.id;
        if let Some(&(_, ok)) = self.verified.iter().find(|(v, _)| *v == id) {
            return ok;
        }
        let ok = self
            .engine
            .version_at(candidate.return_address)
            .is_some_and(|v| v.id == id);
        self.verified.push((id, ok));
        ok
    }
}
