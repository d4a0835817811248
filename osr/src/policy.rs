//! Policies: when to recompile what, and which frames to move where.
//!
//! A [`Policy`] sees every site hypercall through a [`Cx`] and acts with it. Built in:
//!
//! - [`TierUp`]: a hot loop (its header's counter ran out) gets its function recompiled at O2
//!   and every frame of the function still in slower code moves to O2 mid-loop.
//! - [`Specialise`]: after a store to a watched global, every function that reads it is rebuilt
//!   from the instrumented module with the stored value as a constant; frames running code that
//!   assumed another value (or none) move into the new specialisation. A later store with
//!   another value deoptimises and specialises again.
//! - [`Stress`]: seeded random transfers of random frames between O0 and O2 continuations at
//!   every site hypercall, with random counter reloads: for differential testing.
//! - [`Policies`]: several of them, in order.

use std::collections::HashMap;

use uppercut_core::{OptLevel, Readiness, SiteInfo, SiteKind, ValueKind, VersionId};

use crate::runtime::{Cx, VersionSpec};

/// Decides what happens at a site hypercall.
pub trait Policy: Send + 'static {
    /// The policy's name, for diagnostics.
    fn name(&self) -> &str;

    /// A site's hypercall fired on this thread: recompile, transfer frames, reload counters.
    /// An `Err` stops the guest with the message (use it only when carrying on would be
    /// wrong, such as a stale specialisation that cannot be left).
    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String>;

    /// How many of the innermost frames [`Cx::frames`] should list at `site` (`None`: all of
    /// them). Walking is linear in the depth of the stack.
    fn frames_wanted(&self, site: &SiteInfo) -> Option<usize> {
        let _ = site;
        None
    }
}

/// Tier-up: hot functions and hot loops of slower code move to `level`.
///
/// A loop or entry site whose counter ran out (see
/// [`Instrumentation`](uppercut_core::Instrumentation): loop headers count passes, function
/// entries count calls) asks for its function at `level`. With `background` (the default) the
/// guest goes on in its old code while the compiler thread builds the version (and, for a loop,
/// the continuations of the sites where this thread's frames of the function wait); once it is
/// relinked, later calls enter it and the waiting loops move into it at their next pass. Without,
/// the guest waits for the compilation and the frames move at once.
///
/// Tiered code is built [`Readiness::Final`] by default: it is the last tier, so it keeps no
/// loop or entry counters and no call sites (its calls may be inlined), and runs as fast as a
/// plain version at `level`. A function that already runs specialised code is tiered up with
/// its sites (a later store must be able to move its frames out).
#[derive(Debug, Clone)]
pub struct TierUp {
    /// The level hot code moves to.
    pub level: OptLevel,
    /// Compile in the background: the hot loop goes on in its old code and moves once the
    /// new version (and the continuation of the site that fired) is ready, at a later pass.
    pub background: bool,
    /// What tiered code keeps of its sites.
    pub readiness: Readiness,
    /// The storm guard: versions the policy asks for per function, at most. A function that
    /// reaches it is left where it runs (reported once, as a `storm` event in the log).
    pub max_versions: u32,
    asked: HashMap<String, u32>,
}

impl Default for TierUp {
    fn default() -> Self {
        TierUp {
            level: OptLevel::O2,
            background: true,
            readiness: Readiness::Final,
            max_versions: TIER_MAX_VERSIONS,
            asked: HashMap::new(),
        }
    }
}

/// [`TierUp::max_versions`] by default.
pub const TIER_MAX_VERSIONS: u32 = 8;

impl TierUp {
    /// Tier-up to `level`, compiling in the background or not; final tiered code and the
    /// default storm guard.
    pub fn new(level: OptLevel, background: bool) -> TierUp {
        TierUp {
            level,
            background,
            ..TierUp::default()
        }
    }

    /// This thread's frames of `function` in code slower than the level, not yet set to move.
    fn slow_frames(&self, cx: &Cx<'_>, function: &str) -> Vec<usize> {
        (0..cx.frames().len())
            .filter(|&i| {
                let frame = &cx.frames()[i];
                frame.version.function == function
                    && frame.version.opt_level < self.level
                    && frame.pending.is_none()
            })
            .collect()
    }

    /// What frame `index` moves to: the level, with the values its code assumes (and then its
    /// sites, so that it can leave when they change).
    fn frame_spec(&self, cx: &Cx<'_>, index: usize) -> VersionSpec {
        let specialisation = cx.frames()[index].version.specialisation.clone();
        VersionSpec {
            opt_level: self.level,
            readiness: match specialisation.is_empty() {
                true => self.readiness,
                false => Readiness::Sites,
            },
            specialisation,
        }
    }

    /// Whether the storm guard lets `function` have one more version (and counts it).
    fn may_ask(&mut self, cx: &Cx<'_>, function: &str) -> bool {
        let asked = self.asked.entry(function.to_owned()).or_insert(0);
        if *asked >= self.max_versions {
            if *asked == self.max_versions {
                *asked += 1;
                let reason = format!("{} versions asked for: no more tier-up", self.max_versions);
                cx.storm(function, &reason);
            }
            return false;
        }
        *asked += 1;
        true
    }
}

impl Policy for TierUp {
    fn name(&self) -> &str {
        "tier"
    }

    fn frames_wanted(&self, site: &SiteInfo) -> Option<usize> {
        // An entry site moves no frame (its own is all it walks); a loop looks for every frame
        // of its function.
        match site.kind {
            SiteKind::Entry => Some(1),
            _ => None,
        }
    }

    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        let site = cx.site().clone();
        if !matches!(site.kind, SiteKind::Loop | SiteKind::Entry) {
            return Ok(());
        }
        // The counter has done its job whatever happens next.
        let _ = cx.set_counter(site.id, i64::MAX);
        let function = site.function.clone();
        let newest = cx.newest(&function);
        let specialisation = newest
            .as_ref()
            .map(|v| v.specialisation.clone())
            .unwrap_or_default();
        let readiness = match specialisation.is_empty() {
            true => self.readiness,
            false => Readiness::Sites,
        };
        let spec = VersionSpec {
            opt_level: self.level,
            specialisation,
            readiness,
        };
        let slower = newest.as_ref().is_none_or(|v| v.opt_level < self.level);
        if slower && !self.may_ask(cx, &function) {
            return Ok(());
        }
        // A function entered more than once (hot by its calls, or a loop in a function called
        // again and again) needs only the version: its frames finish in their old code and
        // later calls enter the new. A frame that stays in one long call of its function is
        // chased: the version comes with the continuation of the loop that fired if it is an
        // outermost one (the relink arms those), and of the calls where this thread's other
        // frames of the function wait; a frame found elsewhere gets its continuation built
        // when it is found.
        let osr = cx.osr();
        let entries = osr
            .function(&function)
            .map(|f| f.sites.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|&s| osr.site(s))
            .find(|s| s.kind == SiteKind::Entry)
            .and_then(|entry| Some((entry.counter_start?, cx.counter(entry.id)?)))
            .map(|(start, left)| start.saturating_sub(left.max(0)));
        let chase = site.kind == SiteKind::Loop && entries.is_none_or(|calls| calls <= 1);
        if slower && self.background {
            let mut sites: Vec<_> = Vec::new();
            if chase {
                if site.loop_depth == Some(1) {
                    sites.push(site.id);
                }
                sites.extend(
                    cx.frames()
                        .iter()
                        .filter(|f| f.version.function == function)
                        .filter_map(|f| f.site)
                        .filter(|&s| osr.site(s).is_some_and(|s| s.kind != SiteKind::Loop)),
                );
            }
            sites.sort_unstable();
            sites.dedup();
            cx.version_in_background(&function, &spec, true, &sites, chase);
            return Ok(());
        }
        if self.background {
            // Tiered already (by its calls, say) while this frame stays in a loop of its old
            // code: it moves once a continuation is ready, never waiting for one.
            if chase {
                for i in self.slow_frames(cx, &function) {
                    let frame_spec = self.frame_spec(cx, i);
                    let _ = cx.transfer_when_ready(i, &frame_spec);
                }
            }
            return Ok(());
        }
        if slower && cx.version(&function, &spec, true).is_err() {
            // A function that cannot have a new version (it uses thread-locals, say) keeps
            // running where it is.
            return Ok(());
        }
        if site.kind == SiteKind::Entry {
            // Its frame has barely started: it finishes where it is, later calls enter the new
            // version.
            return Ok(());
        }
        for i in self.slow_frames(cx, &function) {
            let frame_spec = self.frame_spec(cx, i);
            let _ = cx.transfer(i, &frame_spec);
        }
        Ok(())
    }
}

/// Specialise-on-store: functions that read the watched globals run with their current values
/// folded in.
///
/// The storm guard: a global whose value changed `max_changes` times stops being specialised on.
/// At the next change, its readers are relinked to versions that read it from memory, and every
/// frame that assumes a value of it leaves, as at any other change; later stores only make
/// their hypercall.
#[derive(Debug, Clone)]
pub struct Specialise {
    /// The watched globals.
    pub globals: Vec<String>,
    /// The level specialised versions are built at.
    pub level: OptLevel,
    /// Changes of a global's value after which it is no longer specialised on.
    pub max_changes: u32,
    /// The value each global's specialisations assume now.
    current: HashMap<String, u64>,
    /// How often each global's value changed.
    changes: HashMap<String, u32>,
}

/// [`Specialise::max_changes`] by default: about where production VMs stop reoptimising
/// code that keeps deoptimising.
pub const SPECIALISE_MAX_CHANGES: u32 = 100;

impl Default for Specialise {
    fn default() -> Self {
        Specialise::new(Vec::new())
    }
}

impl Specialise {
    /// Watches `globals`, building specialisations at O2.
    pub fn new(globals: Vec<String>) -> Specialise {
        Specialise {
            globals,
            level: OptLevel::O2,
            max_changes: SPECIALISE_MAX_CHANGES,
            current: HashMap::new(),
            changes: HashMap::new(),
        }
    }
}

impl Policy for Specialise {
    fn name(&self) -> &str {
        "specialise"
    }

    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        let SiteKind::Store { global } = cx.site().kind.clone() else {
            return Ok(());
        };
        if !self.globals.contains(&global) {
            return Ok(());
        }
        let osr = cx.osr();
        let Some(info) = osr.global(&global) else {
            return Ok(());
        };
        let kind: ValueKind = match &info.specialisable {
            Ok(kind) => *kind,
            Err(_) => return Ok(()),
        };
        let readers: Vec<String> = info
            .readers
            .iter()
            .filter(|r| osr.function(r).is_some_and(|f| f.complete()))
            .cloned()
            .collect();
        let value = cx
            .read_global(&global, kind)
            .map_err(|e| format!("cannot read `{global}`: {e}"))?;
        let changes = self.changes.entry(global.clone()).or_insert(0);
        if *changes > self.max_changes || self.current.get(&global) == Some(&value) {
            return Ok(());
        }
        *changes = changes.saturating_add(1);
        // The storm guard: at the change after the last one it allows, every version goes back
        // to reading the global from memory.
        let given_up = *changes > self.max_changes;
        if given_up {
            let reason = format!(
                "its value changed {} times: no longer specialised on",
                self.max_changes
            );
            cx.storm(&global, &reason);
        }
        self.current.insert(global.clone(), value);
        let spec_for = |old: &[(String, u64)]| {
            let mut specialisation: Vec<(String, u64)> =
                old.iter().filter(|(g, _)| *g != global).cloned().collect();
            if !given_up {
                specialisation.push((global.clone(), value));
            }
            specialisation.sort();
            specialisation
        };
        for reader in &readers {
            let old = cx
                .newest(reader)
                .map(|v| v.specialisation)
                .unwrap_or_default();
            let spec = VersionSpec {
                opt_level: self.level,
                specialisation: spec_for(&old),
                readiness: Readiness::Sites,
            };
            // A reader that cannot be rebuilt stays generic: correct, only slower.
            let _ = cx.version(reader, &spec, true);
        }
        let map = cx.engine().code_map();
        // The frames of a recursion share their return address, version and pending
        // continuation, and so the decision: made once per run.
        let mut last: Option<(RunKey, bool)> = None;
        for i in 0..cx.frames().len() {
            let frame = cx.frames()[i].clone();
            let key = (frame.return_address, frame.version.id, frame.pending);
            if let Some((_, false)) = last.as_ref().filter(|(k, _)| *k == key) {
                continue;
            }
            if !readers.contains(&frame.version.function) {
                last = Some((key, false));
                continue;
            }
            // What the frame will run next: its pending continuation, if a transfer is already
            // set up for it, else its own code.
            let next = frame
                .pending
                .and_then(|c| map.version_at(c + 1))
                .unwrap_or(&frame.version);
            let assumed = next
                .specialisation
                .iter()
                .find(|(g, _)| *g == global)
                .map(|(_, v)| *v);
            if assumed == Some(value) || (given_up && assumed.is_none()) {
                last = Some((key, false));
                continue;
            }
            last = Some((key, true));
            let spec = VersionSpec {
                opt_level: self.level,
                specialisation: spec_for(&next.specialisation),
                readiness: Readiness::Sites,
            };
            let stale = assumed.is_some()
                || frame
                    .version
                    .specialisation
                    .iter()
                    .any(|(g, v)| *g == global && *v != value);
            if stale {
                tracing::info!(
                    target: "uppercut::osr",
                    function = %frame.version.function,
                    cause = %format!(
                        "`{global}` is now {value:#x}; the frame assumed {}",
                        assumed.map_or_else(|| "nothing".to_owned(), |v| format!("{v:#x}"))
                    ),
                    "deoptimise"
                );
            }
            if let Err(why) = cx.transfer(i, &spec)
                && stale
            {
                // Left alone, this frame would go on using the old value of the global.
                return Err(format!(
                    "cannot deoptimise a frame of `{}` that assumes `{global}` = {:#x}: {why}",
                    frame.version.function,
                    assumed.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

/// What the frames of one run share: return address, version, pending continuation.
type RunKey = (u64, VersionId, Option<u64>);

/// How deep into the stack [`Stress`] picks frames.
const STRESS_DEPTH: usize = 256;

/// Seeded random transfers between O0 and O2 at every site hypercall.
#[derive(Debug, Clone)]
pub struct Stress {
    state: u64,
    /// Continuations the policy may still compile (each takes milliseconds); once spent, it
    /// moves frames only into continuations that exist already.
    pub compile_budget: u32,
    /// A counter that fired `k` times is reloaded with a value in `1..=max_count << k`.
    pub max_count: i64,
    fired: HashMap<uppercut_core::SiteId, u32>,
    /// Frames picked at random per hypercall, besides the innermost.
    pub frames_per_site: usize,
}

impl Stress {
    /// A stress policy from a seed.
    pub fn new(seed: u64) -> Stress {
        Stress {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            compile_budget: 48,
            max_count: 16,
            fired: HashMap::new(),
            frames_per_site: 4,
        }
    }

    /// xorshift64*: small, seeded, good enough to pick frames.
    fn next(&mut self) -> u64 {
        let mut x = self.state.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Policy for Stress {
    fn name(&self) -> &str {
        "stress"
    }

    fn frames_wanted(&self, _: &SiteInfo) -> Option<usize> {
        Some(STRESS_DEPTH)
    }

    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        let site = cx.site().id;
        // Each site fires at exponentially growing random intervals: every site keeps firing
        // as long as it runs, but a hot one only logarithmically often.
        let fired = self.fired.entry(site).or_insert(0);
        let bound = (self.max_count.max(1) as u64) << (*fired).min(24);
        *fired += 1;
        let reload = 1 + (self.next() % bound) as i64;
        let _ = cx.set_counter(site, reload);
        // A few frames per hypercall, anywhere on the stack: the innermost, then random picks
        // (a deep recursion would make moving half of every stack quadratic).
        let n = cx.frames().len();
        let mut picks = vec![0];
        for _ in 0..self.frames_per_site.min(n) {
            picks.push((self.next() % n.max(1) as u64) as usize);
        }
        picks.sort_unstable();
        picks.dedup();
        for i in picks {
            // The innermost frame (stopped at the site that fired) always moves if it can.
            if i >= n
                || (i > 0 && self.next() % 4 == 0)
                || cx.frame_site(i).is_none_or(|s| s.refused.is_some())
            {
                continue;
            }
            let level = if self.next() % 2 == 0 {
                OptLevel::O0
            } else {
                OptLevel::O2
            };
            let spec = VersionSpec {
                opt_level: level,
                specialisation: cx.frames()[i].version.specialisation.clone(),
                readiness: Readiness::Sites,
            };
            if !cx.has_continuation(i, &spec) {
                if self.compile_budget == 0 {
                    continue;
                }
                self.compile_budget -= 1;
            }
            let _ = cx.transfer(i, &spec);
        }
        Ok(())
    }
}

/// Several policies, asked in order at every site.
pub struct Policies(pub Vec<Box<dyn Policy>>);

impl Policy for Policies {
    fn name(&self) -> &str {
        "policies"
    }

    fn frames_wanted(&self, site: &SiteInfo) -> Option<usize> {
        let mut most = Some(0);
        for policy in &self.0 {
            most = match (most, policy.frames_wanted(site)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        most
    }

    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        for policy in &mut self.0 {
            policy.on_site(cx)?;
        }
        Ok(())
    }
}
