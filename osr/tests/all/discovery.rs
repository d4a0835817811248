//! Frame discovery from the shadow-stack chain alone ([`ShadowDiscovery`]), on clang-19 output
//! at O0 and O2: it agrees with the frame-pointer walk on every frame both see, it finds the
//! guest frame below a libc `qsort` that the frame-pointer walk cannot reach, and frames it
//! moves finish with the native program's results.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use uppercut_core::frames::SavedAt;
use uppercut_core::{
    CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel as Level, SiteId,
    SiteKind, VersionKind,
};
use uppercut_osr::{DiscoveredFrame, Error, Frame, ShadowDiscovery, Target, Transfers};

use crate::support::{
    IrFormat, OptLevel, Runner, Scratch, compare, compile_ir, compile_native, run, run_command,
};

const LEVELS: [OptLevel; 2] = [OptLevel::O0, OptLevel::O2];

/// Recursion (with a local whose address escapes), several functions, a hypercall in the leaf.
const RECURSION: &str = r#"
#include <stdio.h>
#include <stdlib.h>
void *PerformCustomCallback(const char *name, void *args);

static long fired;

__attribute__((noinline)) long leaf(long x) {
  if (x % 5 == 0) {
    fired++;
    PerformCustomCallback("probe", (void *)x);
  }
  return x * 3 + 1;
}

__attribute__((noinline)) long mix(long *cell, long n) {
  *cell += leaf(n);
  return *cell ^ n;
}

__attribute__((noinline)) long rec(long n, long acc) {
  long cell = acc;
  if (n == 0)
    return mix(&cell, acc);
  long r = rec(n - 1, acc + n);
  return r * 3 + mix(&cell, n) - n;
}

long run(long n) {
  long total = 0;
  fired = 0;
  for (long i = 0; i < n; i++)
    total = total * 7 + rec(i % 9, i);
  return total + fired;
}

int main(int argc, char **argv) {
  printf("%ld\n", run(argc > 1 ? atol(argv[1]) : 40));
  return 0;
}
"#;

/// A guest comparator called back by libc's `qsort` makes the hypercall: `run`'s frame lies
/// below `qsort`'s, which has no frame pointer the walk could trust.
const QSORT: &str = r#"
#include <stdio.h>
#include <stdlib.h>
void *PerformCustomCallback(const char *name, void *args);

#define N 64
static long calls, fire_at = 5;

static int cmp(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  if (++calls == fire_at)
    PerformCustomCallback("probe", (void *)calls);
  return (x > y) - (x < y);
}

static long checksum(const int *v) {
  long sum = 0;
  for (int i = 0; i < N; i++)
    sum = sum * 31 + v[i];
  return sum;
}

long run(long seed) {
  int v[N];
  calls = 0;
  fire_at = 5;
  for (int i = 0; i < N; i++)
    v[i] = (int)((i * 7919 + seed) % 1009);
  qsort(v, N, sizeof v[0], cmp);
  long sum = checksum(v);
  for (int i = 0; i < N; i++)
    v[i] = (v[i] * 13 + i) % 97;
  fire_at = calls + 3;
  qsort(v, N, sizeof v[0], cmp);
  return (sum * 7 + checksum(v)) * 1000 + calls % 1000;
}

int main(int argc, char **argv) {
  printf("%ld\n", run(argc > 1 ? atol(argv[1]) : 11));
  return 0;
}
"#;

/// What the native build links instead of the JIT's hypercall.
const NATIVE_HYPERCALL: &str = r#"
void *PerformCustomCallback(const char *name, void *args) {
  (void)name;
  return args;
}
"#;

fn level(opt: OptLevel) -> Level {
    match opt {
        OptLevel::O0 => Level::O0,
        OptLevel::O2 => Level::O2,
    }
}

/// The program compiled by clang at `opt`, loaded into an engine at `opt` with call sites and
/// shadow discovery, and what the native build prints for `arg`.
fn build(name: &str, source: &str, opt: OptLevel, arg: &str) -> (Engine, u64, Scratch) {
    let scratch = Scratch::new(name);
    let path = scratch.path().join(format!("{name}.c"));
    std::fs::write(&path, source).unwrap();
    // Natively, the hypercall does nothing.
    let native_path = scratch.path().join(format!("{name}-native.c"));
    std::fs::write(&native_path, format!("{source}{NATIVE_HYPERCALL}")).unwrap();
    let native = compile_native(&native_path, opt, scratch.path());
    let out = run(&native, &[OsString::from(arg)], b"", scratch.path());
    assert!(
        out.status.success(),
        "native {name}: {}",
        out.describe_end()
    );
    let expected: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let ir = compile_ir(&path, opt, IrFormat::Text, scratch.path());
    let options = EngineOptions {
        opt_level: level(opt),
        instrument: Some(Instrumentation {
            loop_sites: false,
            shadow_discovery: true,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_file(&ir, options).expect("load");
    engine
        .register_callback("probe", |h: &mut Hypercall<'_>| Ok(h.args()))
        .unwrap();
    (engine, expected as u64, scratch)
}

fn failed(e: impl std::fmt::Display) -> CallbackError {
    CallbackError(e.to_string())
}

/// Moves `frame` into the continuation of its site (compiled once per site, at O2).
fn transfer(
    transfers: &Transfers,
    frame: &Frame,
    continuations: &mut HashMap<SiteId, u64>,
) -> Result<(), CallbackError> {
    let engine = transfers.engine();
    let site = frame.site.ok_or("a discovered frame has a site")?;
    let info = engine.osr().unwrap().site(site).cloned().unwrap();
    let continuation = match continuations.get(&site) {
        Some(&c) => c,
        None => {
            let c = engine
                .compile_continuation(&info.function, site, Level::O2, &[])
                .map_err(failed)?
                .version
                .entry;
            continuations.insert(site, c);
            c
        }
    };
    let target = Target {
        site,
        continuation,
        values: info.values.clone(),
        result: info.result,
    };
    let prepared = transfers.prepare(frame, &target).map_err(failed)?;
    transfers.patch(frame, &prepared).map_err(failed)
}

fn ok_frames(found: &[DiscoveredFrame]) -> Vec<Frame> {
    found.iter().filter_map(|f| f.frame.clone().ok()).collect()
}

/// At every hypercall, both walks see the same frames (every guest function has a shadow
/// frame here, and nothing but guest frames lies between them); every hypercall moves every
/// frame discovery found that is not moving yet, and the result is still the native one.
#[test]
fn discovery_agrees_with_the_frame_pointer_walk() {
    for opt in LEVELS {
        let (engine, expected, _scratch) = build("discovery-recursion", RECURSION, opt, "40");
        assert_eq!(
            engine.call("run", &[40]).unwrap(),
            expected,
            "{opt:?}: no OSR"
        );

        let discovery = ShadowDiscovery::new();
        // (hypercalls, frames compared, most frames in one walk, frames pending at a walk)
        let stats = Arc::new(Mutex::new((0usize, 0usize, 0usize, 0usize)));
        let continuations: Arc<Mutex<HashMap<SiteId, u64>>> = Arc::default();
        let seen = Arc::clone(&stats);
        engine
            .register_callback("probe", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let walked = transfers.walk(&h.guest_state());
                let found = discovery.walk(&transfers);
                for f in &found {
                    if let Err(e) = &f.frame {
                        return Err(format!("{opt:?}: {e}").into());
                    }
                }
                // The chain does not say where inner frames saved registers: compare the rest.
                let discovered = ok_frames(&found);
                assert_eq!(
                    without_saves(discovered.clone()),
                    without_saves(walked.clone()),
                    "{opt:?}: the two walks disagree"
                );
                assert!(
                    found
                        .iter()
                        .zip(&walked)
                        .all(|(d, w)| *d.function == *w.version.function
                            && d.frame_pointer == w.frame_pointer
                            && d.site == w.site),
                    "{opt:?}"
                );
                let mut stats = seen.lock().unwrap();
                stats.0 += 1;
                stats.1 += walked.len();
                stats.2 = stats.2.max(walked.len());
                stats.3 += walked.iter().filter(|f| f.pending.is_some()).count();
                let mut continuations = continuations.lock().unwrap();
                for frame in discovered.iter().filter(|f| f.pending.is_none()) {
                    transfer(&transfers, frame, &mut continuations)?;
                }
                Ok(std::ptr::null_mut())
            })
            .unwrap();
        let transfers = Transfers::new(&engine);
        let before = transfers.frames_transferred();
        assert_eq!(engine.call("run", &[40]).unwrap(), expected, "{opt:?}");
        let (hypercalls, compared, deepest, pending) = *stats.lock().unwrap();
        assert!(hypercalls > 10, "{opt:?}: {hypercalls} hypercalls");
        assert!(
            deepest >= 11,
            "{opt:?}: deep recursions are walked: {deepest}"
        );
        assert!(compared > 5 * hypercalls, "{opt:?}");
        assert!(pending > 0, "{opt:?}: later walks see pending frames");
        assert!(
            transfers.frames_transferred() - before > 10,
            "{opt:?}: frames moved"
        );
    }
}

/// The frame-pointer walk stops at `qsort`; discovery finds `run` below it, at its `qsort`
/// site, and moves it: `run` finishes in its continuation (where discovery finds it again, at
/// the second `qsort`) with the native result.
#[test]
fn discovery_finds_the_frame_below_qsort_and_moves_it() {
    for opt in LEVELS {
        let (engine, expected, _scratch) = build("discovery-qsort", QSORT, opt, "11");
        let osr = engine.osr().unwrap();
        let qsort_sites: Vec<SiteId> = osr
            .sites()
            .iter()
            .filter(|s| {
                s.function == "run"
                    && s.kind
                        == SiteKind::Call {
                            callee: Some("qsort".to_owned()),
                        }
            })
            .map(|s| {
                assert_eq!(s.refused, None, "{opt:?}");
                s.id
            })
            .collect();
        assert_eq!(qsort_sites.len(), 2, "{opt:?}: both qsort calls are sites");
        assert_eq!(
            engine.call("run", &[11]).unwrap(),
            expected,
            "{opt:?}: no OSR"
        );

        let discovery = ShadowDiscovery::new();
        let log: Arc<Mutex<Vec<(usize, Frame)>>> = Arc::default();
        let continuations: Arc<Mutex<HashMap<SiteId, u64>>> = Arc::default();
        let sink = Arc::clone(&log);
        engine
            .register_callback("probe", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let walked = transfers.walk(&h.guest_state());
                let found = discovery.walk(&transfers);
                let names: Vec<&str> = found.iter().map(|f| &*f.function).collect();
                assert_eq!(names, ["cmp", "run"], "{opt:?}");
                // The frame-pointer walk sees the comparator, not `run`.
                assert!(walked.iter().all(|f| f.version.function != "run"));
                assert_eq!(
                    without_saves(found[0].frame.iter().cloned().collect()),
                    without_saves(walked.iter().take(1).cloned().collect()),
                    "{opt:?}: both see the comparator's frame alike"
                );
                let run = found[1].frame.clone().map_err(failed)?;
                let mut log = sink.lock().unwrap();
                if log.is_empty() {
                    transfer(&transfers, &run, &mut continuations.lock().unwrap())?;
                }
                log.push((walked.len(), run));
                Ok(std::ptr::null_mut())
            })
            .unwrap();
        let transfers = Transfers::new(&engine);
        let before = transfers.frames_transferred();
        assert_eq!(engine.call("run", &[11]).unwrap(), expected, "{opt:?}");
        assert_eq!(transfers.frames_transferred() - before, 1, "{opt:?}");
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 2, "{opt:?}: one hypercall per qsort");
        let (first, second) = (&log[0].1, &log[1].1);
        assert_eq!(first.site, Some(qsort_sites[0]));
        assert_eq!(first.version.kind, VersionKind::Function);
        // The second qsort runs in the continuation of the first one's site.
        assert_eq!(second.site, Some(qsort_sites[1]));
        assert_eq!(
            second.version.kind,
            VersionKind::Continuation(qsort_sites[0]),
            "{opt:?}"
        );
        assert_eq!(
            second.frame_pointer, first.frame_pointer,
            "{opt:?}: the continuation runs in the same machine frame"
        );
    }
}

/// A frame whose return-address slot does not hold one of its site's return addresses is
/// refused, not guessed: here the site word of `run`'s shadow frame is overwritten with the
/// id of another site while `run` is suspended in `qsort`.
#[test]
fn a_frame_whose_slot_does_not_match_is_refused() {
    let (engine, expected, _scratch) = build("discovery-refused", QSORT, OptLevel::O2, "11");
    let osr = engine.osr().unwrap();
    let run = osr.function("run").cloned().unwrap();
    let slots = run.discovery.expect("run records its site");
    let [first, second] = run.sites[..] else {
        panic!("run has two sites: {:?}", run.sites);
    };
    let discovery = ShadowDiscovery::new();
    let refusals: Arc<Mutex<Vec<Error>>> = Arc::default();
    let sink = Arc::clone(&refusals);
    engine
        .register_callback("probe", move |h: &mut Hypercall<'_>| {
            let transfers = Transfers::new(&h.engine());
            let found = discovery.walk(&transfers);
            let entry = found[1].shadow_frame;
            let word = (entry + slots.site) as *mut u64;
            // SAFETY: `entry` is `run`'s open shadow-stack frame; its site word is 8 bytes at
            // `slots.site`, which only `run` writes (before its calls).
            let real = unsafe { word.read() };
            let wrong = if real == u64::from(first.0) {
                second
            } else {
                first
            };
            // SAFETY: as above; restored below before the guest runs on.
            unsafe { word.write(u64::from(wrong.0)) };
            let again = discovery.walk(&transfers);
            // SAFETY: as above.
            unsafe { word.write(real) };
            assert_eq!(again[1].site, Some(wrong));
            let error = again[1]
                .frame
                .clone()
                .expect_err("a mismatched slot is refused");
            sink.lock().unwrap().push(error);
            assert!(found[1].frame.is_ok());
            Ok(std::ptr::null_mut())
        })
        .unwrap();
    assert_eq!(engine.call("run", &[11]).unwrap(), expected);
    let refusals = refusals.lock().unwrap();
    assert_eq!(refusals.len(), 2);
    for e in refusals.iter() {
        assert!(
            matches!(e, Error::Undiscoverable { function, reason, .. }
                if function == "run" && reason.contains("holds no return address")),
            "{e}"
        );
    }
}

/// An `atexit` handler with a local whose address escapes runs after glibc's `exit` ran the
/// thread's destructors (which unmap the shadow stack `main`'s frame used): it opens its frame
/// in a fresh region, under `uppercut run` with OSR as natively.
#[test]
fn an_atexit_handler_opens_its_shadow_frame_after_the_thread_destructors() {
    const SOURCE: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static int entered;
static void report(void) {
  char line[64];
  snprintf(line, sizeof line, "report: %d", entered);
  puts(line);
}
int main(void) {
  char first[16];
  for (int i = 0; i < 100; i++)
    entered += i % 7;
  snprintf(first, sizeof first, "main: %d", entered % 10);
  puts(first);
  atexit(report);
  return 3;
}
"#;
    let scratch = Scratch::new("atexit-shadow");
    let path = scratch.path().join("atexit.c");
    std::fs::write(&path, SOURCE).unwrap();
    for opt in LEVELS {
        let native = compile_native(&path, opt, scratch.path());
        let native = run(&native, &[], b"", scratch.path());
        let ir = compile_ir(&path, opt, IrFormat::Text, scratch.path());
        let command = Runner::uppercut().command(opt, &["--osr=tier"], &ir, &[]);
        let jitted = run_command(command, b"", scratch.path());
        assert_eq!(native.stdout, b"main: 5\nreport: 295\n");
        compare(&native, &jitted).unwrap_or_else(|report| panic!("{opt:?}:\n{report}"));
    }
}

/// Frames as both walks see them: where inner frames saved the callee-saved registers is known
/// only to the frame-pointer walk.
fn without_saves(frames: Vec<Frame>) -> Vec<Frame> {
    frames
        .into_iter()
        .map(|f| Frame {
            saved: [SavedAt::Unknown; 5],
            ..f
        })
        .collect()
}
