//! Multi-entry continuations (`Engine::compile_multi_continuation`) under real transfers: a
//! frame moved from any site into the multi-entry continuation finishes as the original code
//! and as that site's per-site continuation do, and a frame running the multi-entry body can be
//! moved again, at O0 and O2.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use uppercut_core::{
    CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, MultiContinuation, OptLevel,
    SITE_CALLBACK, SiteId, SiteInfo, SiteKind, VersionKind,
};
use uppercut_osr::{Target, Transfers};

const LEVELS: [OptLevel; 2] = [OptLevel::O0, OptLevel::O2];

/// `work` has nine sites: two loop headers, and seven calls that reach the `tick` hypercall
/// (two pairs of them share a block). `tick` and `bump` are never inlined: a frame stopped in
/// inlined code has a multi-frame state, which transfers refuse. Its state holds integers, a `double` and the pointer to
/// its shadow-stack frame (`%cell` escapes to `bump`); some calls return `void`.
const GUEST: &str = r#"
@tick.name = private unnamed_addr constant [5 x i8] c"tick\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @tick(i64 %x) noinline {
  %r = call ptr @PerformCustomCallback(ptr @tick.name, ptr null)
  %ri = ptrtoint ptr %r to i64
  %m = mul i64 %x, 3
  %s = add i64 %m, %ri
  ret i64 %s
}

define void @bump(ptr %p) noinline {
  %v = load i64, ptr %p
  %t = call i64 @tick(i64 %v)
  %w = add i64 %t, 1
  store i64 %w, ptr %p
  ret void
}

define i64 @work(i64 %n) {
entry:
  %cell = alloca i64
  store i64 %n, ptr %cell
  %a = call i64 @tick(i64 %n)
  br label %loop1
loop1:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop1 ]
  %acc = phi i64 [ %a, %entry ], [ %acc1, %loop1 ]
  %fs = phi double [ 0.0, %entry ], [ %fs1, %loop1 ]
  %x = xor i64 %acc, %i
  %acc1 = mul i64 %x, 31
  %fi = uitofp i64 %i to double
  %fh = fmul double %fi, 5.000000e-01
  %fs1 = fadd double %fs, %fh
  %i1 = add i64 %i, 1
  %c1 = icmp ult i64 %i1, %n
  br i1 %c1, label %loop1, label %mid
mid:
  call void @bump(ptr %cell)
  %b = call i64 @tick(i64 %acc1)
  %d = add i64 %b, %a
  br label %loop2
loop2:
  %j = phi i64 [ 0, %mid ], [ %j1, %latch ]
  %acc2 = phi i64 [ %d, %mid ], [ %acc3, %latch ]
  %odd = and i64 %j, 1
  %is_odd = icmp ne i64 %odd, 0
  br i1 %is_odd, label %odd_j, label %latch
odd_j:
  %t = call i64 @tick(i64 %j)
  call void @bump(ptr %cell)
  br label %latch
latch:
  %v = phi i64 [ %t, %odd_j ], [ %j, %loop2 ]
  %mixed = mul i64 %acc2, 7
  %acc3 = add i64 %mixed, %v
  %j1 = add i64 %j, 1
  %c2 = icmp ult i64 %j1, %n
  br i1 %c2, label %loop2, label %done
done:
  %e = call i64 @tick(i64 %acc3)
  %f = call i64 @tick(i64 %e)
  %cv = load i64, ptr %cell
  %fsi = fptoui double %fs1 to i64
  %r1 = xor i64 %f, %a
  %r2 = mul i64 %cv, 1000003
  %r3 = add i64 %r1, %r2
  %r = add i64 %r3, %fsi
  ret i64 %r
}
"#;

/// `work`'s argument: each loop runs this many times.
const N: u64 = 10;

/// An engine over `GUEST` at `opt` whose loop sites fire from their third pass on, and whose
/// `tick` hypercall returns 5.
fn engine(opt: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level: opt,
        instrument: Some(Instrumentation {
            initial_count: 3,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(GUEST.as_bytes(), "multi.ll", options).expect("loads");
    engine
        .register_callback("tick", |_: &mut Hypercall<'_>| Ok(5usize as *mut c_void))
        .unwrap();
    engine
        .register_callback(SITE_CALLBACK, |_: &mut Hypercall<'_>| {
            Ok(std::ptr::null_mut::<c_void>())
        })
        .unwrap();
    engine
}

/// The sites of `work` that carry state.
fn work_sites(engine: &Engine) -> Vec<SiteInfo> {
    engine
        .osr()
        .unwrap()
        .sites()
        .iter()
        .filter(|s| s.function == "work" && s.refused.is_none())
        .cloned()
        .collect()
}

/// What a handler does with `work`'s frame when it stops at a site.
#[derive(Clone)]
enum Plan {
    /// The first time the frame stops at `site`, move it to `continuation`.
    Once { site: SiteId, continuation: u64 },
    /// Every time the frame stops at a site and is not moving already, move it to the next of
    /// these multi-entry continuations (round robin), through that site's entry.
    Every(Vec<MultiContinuation>),
}

/// One move: the site, and the kind of code the frame ran when it stopped there.
type Moves = Arc<Mutex<Vec<(SiteId, VersionKind)>>>;

/// Makes `tick` and the site hypercall apply `plan` to `work`'s frame; returns the log of
/// moves.
fn install(engine: &Engine, plan: Plan) -> Moves {
    let moves: Moves = Arc::default();
    let sites: Vec<SiteInfo> = work_sites(engine);
    for (name, result) in [("tick", 5u64), (SITE_CALLBACK, 0)] {
        let (plan, moves, sites) = (plan.clone(), Arc::clone(&moves), sites.clone());
        engine
            .register_callback(name, move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                let Some(frame) = frames.iter().find(|f| f.version.function == "work") else {
                    return Err(CallbackError::from("no frame of `work`"));
                };
                let Some(site) = sites.iter().find(|s| Some(s.id) == frame.site) else {
                    return Err(CallbackError::from("`work` is not at one of its sites"));
                };
                let mut moves = moves.lock().unwrap();
                let continuation = match &plan {
                    Plan::Once { site: at, .. } if *at != site.id || !moves.is_empty() => None,
                    Plan::Once { continuation, .. } => Some(*continuation),
                    Plan::Every(_) if frame.pending.is_some() => None,
                    Plan::Every(multis) => multis
                        .get(moves.len() % multis.len().max(1))
                        .and_then(|m| m.entry(site.id)),
                };
                if let Some(continuation) = continuation {
                    let target = Target {
                        site: site.id,
                        continuation,
                        values: site.values.clone(),
                        result: site.result,
                    };
                    let prepared = transfers
                        .prepare(frame, &target)
                        .map_err(|e| CallbackError(e.to_string()))?;
                    transfers
                        .patch(frame, &prepared)
                        .map_err(|e| CallbackError(e.to_string()))?;
                    moves.push((site.id, frame.version.kind));
                }
                Ok(result as *mut c_void)
            })
            .unwrap();
    }
    moves
}

/// `work(N)` on a fresh engine whose handlers follow the plan `make` builds from the engine:
/// the result, the moves and how many frames entered a continuation.
fn run(
    opt: OptLevel,
    make: impl FnOnce(&Engine) -> Plan,
) -> (u64, Vec<(SiteId, VersionKind)>, u64) {
    let engine = engine(opt);
    let plan = make(&engine);
    let moves = install(&engine, plan);
    let transfers = Transfers::new(&engine);
    let result = engine.call("work", &[N]).expect("work runs");
    let moves = moves.lock().unwrap().clone();
    (result, moves, transfers.frames_transferred())
}

#[test]
fn the_guest_has_call_and_loop_sites_that_carry_every_kind_of_state() {
    let engine = engine(OptLevel::O0);
    let sites = work_sites(&engine);
    let loops = sites.iter().filter(|s| s.kind == SiteKind::Loop).count();
    assert_eq!((sites.len(), loops), (9, 2), "{sites:#?}");
    assert!(sites.iter().any(|s| s.result.is_none()), "a void call");
    assert!(sites.iter().all(|s| s.shadow_frame.is_some()), "{sites:#?}");
    let osr = engine.osr().unwrap();
    assert!(osr.function("work").unwrap().complete());
}

#[test]
fn frames_moved_from_any_site_into_the_multi_entry_continuation_finish_as_the_original() {
    for opt in LEVELS {
        let (expected, moves, _) = run(opt, |_| Plan::Every(Vec::new()));
        assert!(moves.is_empty());
        let sites: Vec<SiteId> = work_sites(&engine(opt)).iter().map(|s| s.id).collect();
        for &site in &sites {
            let (per_site, moves, transferred) = run(opt, |e| Plan::Once {
                site,
                continuation: e
                    .compile_continuation("work", site, opt, &[])
                    .unwrap()
                    .version
                    .entry,
            });
            assert_eq!(moves, [(site, VersionKind::Function)], "{opt} {site}");
            assert_eq!(transferred, 1, "{opt} {site}");
            assert_eq!(per_site, expected, "{opt}: per-site continuation at {site}");

            let (multi, moves, transferred) = run(opt, |e| Plan::Once {
                site,
                continuation: e
                    .compile_multi_continuation("work", opt, &[])
                    .unwrap()
                    .entry(site)
                    .unwrap(),
            });
            assert_eq!(moves, [(site, VersionKind::Function)], "{opt} {site}");
            assert_eq!(transferred, 1, "{opt} {site}");
            assert_eq!(multi, expected, "{opt}: multi-entry continuation at {site}");
        }
    }
}

#[test]
fn a_frame_running_the_multi_entry_body_moves_again_at_every_site() {
    for opt in LEVELS {
        let (expected, ..) = run(opt, |_| Plan::Every(Vec::new()));
        // One level, then alternating levels: every move after the first leaves a body.
        let plans: [&dyn Fn(&Engine) -> Plan; 2] = [
            &|e| {
                Plan::Every(vec![
                    e.compile_multi_continuation("work", opt, &[]).unwrap(),
                ])
            },
            &|e| {
                Plan::Every(
                    LEVELS
                        .iter()
                        .map(|&level| e.compile_multi_continuation("work", level, &[]).unwrap())
                        .collect(),
                )
            },
        ];
        for plan in plans {
            let (result, moves, transferred) = run(opt, plan);
            assert_eq!(result, expected, "{opt}: {moves:?}");
            assert_eq!(transferred, moves.len() as u64, "{opt}");
            assert_eq!(moves[0].1, VersionKind::Function, "{opt}");
            assert!(
                moves[1..]
                    .iter()
                    .all(|&(_, kind)| kind == VersionKind::MultiContinuation),
                "{opt}: {moves:?}"
            );
            // Every site of `work` was passed, each time in the body the last move entered.
            let mut seen: Vec<SiteId> = moves.iter().map(|m| m.0).collect();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 9, "{opt}: {moves:?}");
        }
    }
}
