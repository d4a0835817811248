//! Lazy frame transfer on JIT code: hand-written OSR sites and continuations (`tests/ir/`), at
//! O0 and O2, with exact results that show which code finished each frame.

use std::ffi::c_void;
use std::path::Path;
use std::sync::{Arc, Mutex};

use uppercut_core::frames::Refusal;
use uppercut_core::{
    CallbackError, Engine, EngineOptions, GuestState, Hypercall, OptLevel, SiteId, ValueKind,
};
use uppercut_osr::{Error, Frame, Target, Transfers};

const LEVELS: [OptLevel; 2] = [OptLevel::O0, OptLevel::O2];

fn engine(fixture: &str, opt: OptLevel) -> Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ir")
        .join(fixture);
    let text = std::fs::read_to_string(&path).expect("read the fixture");
    let options = EngineOptions {
        opt_level: opt,
        ..Default::default()
    };
    Engine::from_bytes(text.as_bytes(), fixture, options).expect("load the fixture")
}

/// With values in registers (the process's default, `uppercut_core::deopt_values_in_registers`),
/// code generation at O2 leaves integer values in callee-saved registers, and the records say
/// so (at O0 every value crossing a block lives in a stack slot anyway); the tests below then
/// move frames whose values are in registers. At both levels, no record names a caller-saved
/// register.
#[test]
fn values_stay_in_callee_saved_registers() {
    use uppercut_core::frames::RecordValue;
    assert!(uppercut_core::deopt_values_in_registers());
    for opt in LEVELS {
        for fixture in ["kinds.ll", "recursion.ll"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/ir")
                .join(fixture);
            let options = EngineOptions {
                opt_level: opt,
                compile: uppercut_core::CompileMode::Eager,
                ..Default::default()
            };
            let engine = Engine::from_file(&path, options).unwrap();
            engine.compile().unwrap();
            let rows: Vec<_> = engine
                .code_map()
                .units()
                .flat_map(|u| u.table.rows().to_vec())
                .collect();
            // Every site's record decodes: no value is in a caller-saved register.
            assert!(rows.iter().all(|r| r.state.is_ok()), "{fixture} at {opt}");
            let in_registers = rows
                .iter()
                .filter_map(|r| r.state.as_ref().ok())
                .flat_map(|state| &state.values)
                .filter(|v| matches!(v, RecordValue::Register(_)))
                .count();
            if opt == OptLevel::O2 {
                assert!(
                    in_registers > 0,
                    "{fixture} at {opt}: no value in a register"
                );
            }
        }
    }
}

fn failed(e: impl std::fmt::Display) -> CallbackError {
    CallbackError(e.to_string())
}

fn as_result(value: u64) -> Result<*mut c_void, CallbackError> {
    Ok(value as *mut c_void)
}

/// Registers a callback that does nothing but return `value`.
fn quiet(engine: &Engine, name: &str, value: u64) {
    engine
        .register_callback(name, move |_: &mut Hypercall<'_>| as_result(value))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// 1. A loop moves to its continuation mid-loop
// ---------------------------------------------------------------------------------------------

#[test]
fn a_loop_finishes_in_its_continuation() {
    for opt in LEVELS {
        let engine = engine("loop.ll", opt);
        quiet(&engine, "osr", 7);
        assert_eq!(engine.call("sum", &[10]).unwrap(), 45, "{opt}: old code");

        let continuation = engine.entry("sum_cont").unwrap();
        let read = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&read);
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                let frame = frames.first().ok_or("no frames")?;
                assert_eq!(frame.site, Some(SiteId(1)));
                assert_eq!(frame.return_address, h.guest_state().return_address);
                assert_eq!(frame.stack_pointer, h.guest_state().rsp);
                assert_eq!(frame.return_address_slot, h.guest_state().rsp - 8);
                assert_eq!(frame.version.function, "sum");
                assert_eq!(frame.pending, None);
                let kinds = vec![ValueKind::I64; 3];
                *seen.lock().unwrap() = transfers.read_values(frame, &kinds).map_err(failed)?;
                let target = Target {
                    site: SiteId(1),
                    continuation,
                    values: kinds,
                    result: Some(ValueKind::Ptr),
                };
                let prepared = transfers.prepare(frame, &target).map_err(failed)?;
                transfers.patch(frame, &prepared).map_err(failed)?;
                as_result(7)
            })
            .unwrap();
        let transfers = Transfers::new(&engine);
        let before = transfers.frames_transferred();
        // acc = 0+1+2+3+4 = 10 at i = 5; then 1000 * (5+6+7+8+9) and the result 7.
        assert_eq!(engine.call("sum", &[10]).unwrap(), 35017, "{opt}");
        assert_eq!(*read.lock().unwrap(), vec![5, 10, 10], "{opt}: i, acc, n");
        assert_eq!(transfers.frames_transferred() - before, 1, "{opt}");
        // Every call transfers again, through the cached descriptor.
        assert_eq!(
            engine.call("sum", &[12]).unwrap(),
            10 + 7 + 1000 * (5..12).sum::<u64>()
        );
        assert_eq!(transfers.frames_transferred() - before, 2, "{opt}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Every value kind, every result kind
// ---------------------------------------------------------------------------------------------

const KINDS: [ValueKind; 8] = [
    ValueKind::I1,
    ValueKind::I8,
    ValueKind::I16,
    ValueKind::I32,
    ValueKind::I64,
    ValueKind::Ptr,
    ValueKind::F32,
    ValueKind::F64,
];

/// The 32 values `kinds(s, _)` keeps live across its sites, as zero-extended bits.
fn kinds_values(s: i64) -> Vec<u64> {
    let mut out = Vec::new();
    for g in 0..3i64 {
        let m = 16 * g;
        let lin = |mul: i64, add: i64| s.wrapping_mul(mul + m).wrapping_add(add + g) as u64;
        out.push(((s >> g) & 1) as u64);
        out.push(lin(3, 1) & 0xff);
        out.push(lin(5, 2) & 0xffff);
        out.push(lin(7, 3) & 0xffff_ffff);
        out.push(lin(11, 4));
        out.push(lin(13, 5));
        out.push(u64::from(((s as f32) * 0.5 + (0.25 + g as f32)).to_bits()));
        out.push(((s as f64) * 1.5 + (0.125 + g as f64)).to_bits());
    }
    out.extend([
        1,
        0xfd,
        0xfed4,
        0xffff_fff9,
        1 << 40,
        0,
        u64::from(1.5f32.to_bits()),
        2.5f64.to_bits(),
    ]);
    out
}

/// The result bits of `produce_<kind>(s)`.
fn produced(kind: ValueKind, s: i64) -> u64 {
    let lin = |mul: i64, add: i64| s.wrapping_mul(mul).wrapping_add(add) as u64;
    match kind {
        ValueKind::I1 => ((s >> 3) & 1) as u64,
        ValueKind::I8 => lin(17, 9) & 0xff,
        ValueKind::I16 => lin(19, 10) & 0xffff,
        ValueKind::I32 => lin(23, 11) & 0xffff_ffff,
        ValueKind::I64 => lin(29, 12),
        ValueKind::Ptr => lin(31, 13),
        ValueKind::F32 => u64::from(((s as f32) * 0.75 + 0.5).to_bits()),
        ValueKind::F64 => ((s as f64) * 2.25 + 0.0625).to_bits(),
    }
}

fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, w| {
        (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn value_kinds() -> Vec<ValueKind> {
    let mut kinds: Vec<ValueKind> = (0..3).flat_map(|_| KINDS).collect();
    kinds.extend(KINDS);
    kinds
}

#[test]
fn every_value_kind_and_result_kind_reaches_the_continuation() {
    let kinds = value_kinds();
    let results: Vec<Option<ValueKind>> = KINDS.iter().copied().map(Some).chain([None]).collect();
    let names = [
        "i1", "i8", "i16", "i32", "i64", "ptr", "float", "double", "void",
    ];
    for (opt, eager) in LEVELS.into_iter().flat_map(|o| EAGER.map(|e| (o, e))) {
        let engine = engine("kinds.ll", opt);
        let continuations: Vec<u64> = names
            .iter()
            .map(|n| engine.entry(&format!("cont_{n}")).unwrap())
            .collect();
        // Which site the callback transfers next (set before each call), and what it read.
        let plan: Arc<Mutex<(usize, bool, Vec<u64>)>> = Arc::new(Mutex::new((0, false, vec![])));
        let shared = Arc::clone(&plan);
        let kinds_in = kinds.clone();
        let results_in = results.clone();
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let mut plan = shared.lock().unwrap();
                let (which, transfer) = (plan.0, plan.1);
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                // Frame 0 is produce_<kind>, which made the hypercall without a record.
                let [producer, frame, ..] = frames.as_slice() else {
                    return Err("fewer than two frames".into());
                };
                assert_eq!(producer.site, None);
                assert!(producer.version.function.starts_with("produce_"));
                assert_eq!(frame.version.function, "kinds");
                let site = SiteId(which as u32 + 1);
                assert_eq!(frame.site, Some(site));
                plan.2 = transfers.read_values(frame, &kinds_in).map_err(failed)?;
                if transfer {
                    let target = Target {
                        site,
                        continuation: continuations[which],
                        values: kinds_in.clone(),
                        result: results_in[which],
                    };
                    let prepared = transfers.prepare(frame, &target).map_err(failed)?;
                    move_frame(&transfers, frame, &prepared, eager)?;
                }
                as_result(0)
            })
            .unwrap();
        for s in [12345i64, -77, 0x1234_5678_9abc] {
            let values = kinds_values(s);
            for (which, result) in results.iter().enumerate() {
                let mut words = values.clone();
                words.extend(result.map(|k| produced(k, s)));
                let expected = fnv(words);
                let args = [s as u64, which as u64];
                *plan.lock().unwrap() = (which, false, vec![]);
                let old = engine.call("kinds", &args).unwrap();
                assert_eq!(old, expected, "{opt}: old code, s = {s}, {}", names[which]);
                assert_eq!(
                    plan.lock().unwrap().2,
                    values,
                    "{opt}: read_values, s = {s}"
                );
                *plan.lock().unwrap() = (which, true, vec![]);
                let new = engine.call("kinds", &args).unwrap();
                assert_eq!(
                    new,
                    expected ^ 0x5a5a,
                    "{opt}, eager {eager}: s = {s}, {}",
                    names[which]
                );
            }
        }
    }
}

/// The two ways a frame moves: lazily (patched, read at its callee's return) or eagerly (read
/// now, its slots then poisoned so that nothing can read them again).
const EAGER: [bool; 2] = [false, true];

fn move_frame(
    transfers: &Transfers,
    frame: &uppercut_osr::Frame,
    prepared: &uppercut_osr::Prepared,
    eager: bool,
) -> Result<(), CallbackError> {
    if eager {
        transfers.set_scrub(true);
        transfers.transfer_now(frame, prepared).map_err(failed)
    } else {
        transfers.patch(frame, prepared).map_err(failed)
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Deep recursion, every frame transferred; 7. re-patching pending frames
// ---------------------------------------------------------------------------------------------

/// Transfers every `rec` frame suspended at site 1 into `continuation`; returns how many.
fn transfer_all(
    transfers: &Transfers,
    state: &GuestState,
    continuation: u64,
    pending: Option<u64>,
    eager: bool,
) -> Result<usize, CallbackError> {
    let target = Target {
        site: SiteId(1),
        continuation,
        values: vec![ValueKind::I64],
        result: Some(ValueKind::I64),
    };
    let mut count = 0;
    for frame in transfers.walk(state) {
        if frame.site != Some(SiteId(1)) {
            continue;
        }
        assert_eq!(frame.pending, pending, "pending state of a rec frame");
        let prepared = transfers.prepare(&frame, &target).map_err(failed)?;
        move_frame(transfers, &frame, &prepared, eager)?;
        count += 1;
    }
    Ok(count)
}

#[test]
fn a_thousand_recursive_frames_all_move() {
    const DEPTH: u64 = 2000;
    for (opt, eager) in LEVELS.into_iter().flat_map(|o| EAGER.map(|e| (o, e))) {
        let engine = engine("recursion.ll", opt);
        quiet(&engine, "osr", 0);
        quiet(&engine, "again", 0);
        assert_eq!(
            engine.call("rec", &[DEPTH]).unwrap(),
            DEPTH * (DEPTH + 1) / 2
        );

        let double = engine.entry("rec_double").unwrap();
        let walked = Arc::new(Mutex::new(0));
        let count = Arc::clone(&walked);
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let moved = transfer_all(&transfers, &h.guest_state(), double, None, eager)?;
                // Eager: every frame's state is held now, none is read at its return.
                let held = if eager { moved } else { 0 };
                assert_eq!(transfers.eager_pending(), held);
                *count.lock().unwrap() = moved;
                as_result(0)
            })
            .unwrap();
        let transfers = Transfers::new(&engine);
        let before = transfers.frames_transferred();
        assert_eq!(
            engine.call("rec", &[DEPTH]).unwrap(),
            DEPTH * (DEPTH + 1),
            "{opt}"
        );
        assert_eq!(*walked.lock().unwrap(), DEPTH as usize);
        assert_eq!(transfers.frames_transferred() - before, DEPTH, "{opt}");
        assert_eq!(transfers.eager_pending(), 0, "every record was used");
    }
}

#[test]
fn pending_frames_are_seen_and_can_be_patched_again() {
    const DEPTH: u64 = 300;
    for (opt, eager) in LEVELS.into_iter().flat_map(|o| EAGER.map(|e| (o, e))) {
        let engine = engine("recursion.ll", opt);
        let double = engine.entry("rec_double").unwrap();
        let triple = engine.entry("rec_triple").unwrap();
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                transfer_all(&transfers, &h.guest_state(), double, None, eager)?;
                as_result(0)
            })
            .unwrap();
        let patched = Arc::new(Mutex::new(0));
        let count = Arc::clone(&patched);
        engine
            .register_callback("again", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                // The walk goes through the thunks: original return addresses, all of one site.
                let rec: Vec<&Frame> = frames.iter().filter(|f| f.site.is_some()).collect();
                assert_eq!(rec.len(), DEPTH as usize);
                assert!(
                    rec.iter()
                        .all(|f| f.return_address == rec[0].return_address)
                );
                assert!(rec.iter().all(|f| f.version.function == "rec"));
                // Patching an eagerly captured frame again retargets its captured state.
                *count.lock().unwrap() =
                    transfer_all(&transfers, &h.guest_state(), triple, Some(double), false)?;
                as_result(0)
            })
            .unwrap();
        let transfers = Transfers::new(&engine);
        let before = transfers.frames_transferred();
        assert_eq!(
            engine.call("rec", &[DEPTH]).unwrap(),
            3 * DEPTH * (DEPTH + 1) / 2
        );
        assert_eq!(*patched.lock().unwrap(), DEPTH as usize);
        assert_eq!(transfers.frames_transferred() - before, DEPTH, "{opt}");
        if eager {
            continue;
        }

        // Undoing a patch: the frames go on in their old code.
        engine
            .register_callback("again", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                for frame in transfers.walk(&h.guest_state()) {
                    if frame.pending.is_some() {
                        transfers.unpatch(&frame).map_err(failed)?;
                    }
                }
                as_result(0)
            })
            .unwrap();
        let before = transfers.frames_transferred();
        assert_eq!(
            engine.call("rec", &[DEPTH]).unwrap(),
            DEPTH * (DEPTH + 1) / 2
        );
        assert_eq!(transfers.frames_transferred(), before);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Callee-saved registers of the transferred frame's caller
// ---------------------------------------------------------------------------------------------

fn inner(n: u64, transferred: bool) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        let k = if transferred && i >= n / 2 { 37 } else { 31 };
        acc = acc.wrapping_mul(k).wrapping_add(i);
    }
    acc
}

fn outer(a: u64, transferred: bool) -> u64 {
    let cells = [3u64, 5, 7, 11, 13, 17, 19, 23, 29, 31];
    let mut s = inner(a, transferred);
    for (k, c) in cells.iter().enumerate() {
        s = s.wrapping_add((c.wrapping_mul(a) ^ c).wrapping_mul(k as u64 + 1));
    }
    s
}

#[test]
fn the_callers_callee_saved_registers_survive() {
    for (opt, eager) in LEVELS.into_iter().flat_map(|o| EAGER.map(|e| (o, e))) {
        let engine = engine("callee_saved.ll", opt);
        quiet(&engine, "osr", 0);
        // The caller is O2 code whatever the engine's level: its values sit in rbx, r12-r15.
        engine.recompile("outer", OptLevel::O2).unwrap();
        assert_eq!(engine.call("outer", &[41]).unwrap(), outer(41, false));

        let continuation = engine.entry("inner_cont").unwrap();
        let restored = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&restored);
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                let frame = &frames[0];
                assert_eq!(frame.version.function, "inner");
                assert_eq!(frames[1].version.function, "outer");
                let target = Target {
                    site: SiteId(1),
                    continuation,
                    values: vec![ValueKind::I64; 3],
                    result: None,
                };
                let prepared = transfers.prepare(frame, &target).map_err(failed)?;
                *seen.lock().unwrap() = prepared.restored_registers();
                move_frame(&transfers, frame, &prepared, eager)?;
                as_result(0)
            })
            .unwrap();
        for a in [41u64, 100, 7] {
            assert_eq!(
                engine.call("outer", &[a]).unwrap(),
                outer(a, true),
                "{opt}, eager {eager}, a = {a}"
            );
        }
        if opt == OptLevel::O2 {
            // inner at O2 saves registers in its prologue: the transfer reloads them.
            assert!(restored.lock().unwrap().len() >= 3, "{:?}", restored.lock());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Frames of two functions in one walk, including the one that made the hypercall
// ---------------------------------------------------------------------------------------------

fn two_targets(engine: &Engine) -> (Target, Target) {
    let top = Target {
        site: SiteId(1),
        continuation: engine.entry("top_cont").unwrap(),
        values: vec![ValueKind::I64, ValueKind::I64],
        result: Some(ValueKind::I64),
    };
    let mid = Target {
        site: SiteId(2),
        continuation: engine.entry("mid_cont").unwrap(),
        values: vec![ValueKind::I64],
        result: Some(ValueKind::Ptr),
    };
    (top, mid)
}

#[test]
fn frames_of_two_functions_move_in_one_walk() {
    for opt in LEVELS {
        let engine = engine("two_functions.ll", opt);
        quiet(&engine, "osr", 7);
        assert_eq!(engine.call("top", &[5]).unwrap(), 127);
        let (top, mid) = two_targets(&engine);
        for (move_top, move_mid, expected) in [
            (true, true, 1_057_015),
            (true, false, 112_015),
            (false, true, 1072),
        ] {
            let (top, mid) = (top.clone(), mid.clone());
            engine
                .register_callback("osr", move |h: &mut Hypercall<'_>| {
                    let transfers = Transfers::new(&h.engine());
                    let frames = transfers.walk(&h.guest_state());
                    let [m, t] = frames.as_slice() else {
                        return Err(format!("{} frames, expected 2", frames.len()).into());
                    };
                    assert_eq!(
                        (m.version.function.as_str(), m.site),
                        ("mid", Some(SiteId(2)))
                    );
                    assert_eq!(
                        (t.version.function.as_str(), t.site),
                        ("top", Some(SiteId(1)))
                    );
                    assert!(m.frame_pointer < t.frame_pointer);
                    assert_eq!(t.stack_pointer, m.frame_pointer + 16);
                    assert_eq!(t.return_address_slot, m.frame_pointer + 8);
                    if move_mid {
                        let p = transfers.prepare(m, &mid).map_err(failed)?;
                        transfers.patch(m, &p).map_err(failed)?;
                    }
                    if move_top {
                        let p = transfers.prepare(t, &top).map_err(failed)?;
                        transfers.patch(t, &p).map_err(failed)?;
                    }
                    as_result(7)
                })
                .unwrap();
            assert_eq!(engine.call("top", &[5]).unwrap(), expected, "{opt}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Fail closed
// ---------------------------------------------------------------------------------------------

#[test]
fn frames_that_do_not_match_their_target_keep_running_old_code() {
    for opt in LEVELS {
        let engine = engine("two_functions.ll", opt);
        let (top, mid) = two_targets(&engine);
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&errors);
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                let (m, t) = (&frames[0], &frames[1]);
                let mut errors = seen.lock().unwrap();
                // Wrong site: mid's target for top's frame.
                errors.push(transfers.prepare(t, &mid).map(|_| ()));
                // Wrong value count.
                let short = Target {
                    values: vec![ValueKind::I64],
                    ..top.clone()
                };
                errors.push(transfers.prepare(t, &short).map(|_| ()));
                // No continuation.
                let null = Target {
                    continuation: 0,
                    ..mid.clone()
                };
                errors.push(transfers.prepare(m, &null).map(|_| ()));
                // A prepared transfer for another frame.
                let p = transfers.prepare(m, &mid).map_err(failed)?;
                errors.push(transfers.patch(t, &p));
                as_result(7)
            })
            .unwrap();
        assert_eq!(engine.call("top", &[5]).unwrap(), 127, "{opt}: old code");
        let errors = errors.lock().unwrap();
        assert!(
            matches!(
                errors[0],
                Err(Error::SiteMismatch {
                    expected: SiteId(2),
                    found: SiteId(1),
                    ..
                })
            ),
            "{errors:?}"
        );
        assert!(
            matches!(
                errors[1],
                Err(Error::ValueCountMismatch {
                    expected: 1,
                    found: 2,
                    ..
                })
            ),
            "{errors:?}"
        );
        assert!(
            matches!(errors[2], Err(Error::InvalidTarget { .. })),
            "{errors:?}"
        );
        assert!(
            matches!(errors[3], Err(Error::WrongPrepared { .. })),
            "{errors:?}"
        );
    }
}

#[test]
fn frames_without_a_site_are_refused() {
    let engine = engine("kinds.ll", OptLevel::O2);
    let continuation = engine.entry("cont_void").unwrap();
    let error = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&error);
    engine
        .register_callback("osr", move |h: &mut Hypercall<'_>| {
            let transfers = Transfers::new(&h.engine());
            let frames = transfers.walk(&h.guest_state());
            // produce_void made the hypercall with a plain call: no record there.
            let target = Target {
                site: SiteId(9),
                continuation,
                values: vec![],
                result: None,
            };
            *seen.lock().unwrap() = Some(transfers.prepare(&frames[0], &target).map(|_| ()));
            as_result(0)
        })
        .unwrap();
    let expected = fnv(kinds_values(3));
    assert_eq!(engine.call("kinds", &[3, 8]).unwrap(), expected);
    let error = error.lock().unwrap().clone().unwrap();
    // No record at that return address; compiled lazily, in a unit of its own, the function
    // has no stack map at all: refused either way.
    assert!(
        matches!(
            error,
            Err(Error::Refused {
                reason: Refusal::NoRecord | Refusal::NoMetadata { .. },
                ..
            })
        ),
        "{error:?}"
    );
}

#[test]
fn a_cancelled_transfer_falls_back_to_old_code_at_run_time() {
    for opt in LEVELS {
        let engine = engine("two_functions.ll", opt);
        let (top, mid) = two_targets(&engine);
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                for (frame, target) in frames.iter().zip([&mid, &top]) {
                    let p = transfers.prepare(frame, target).map_err(failed)?;
                    transfers.patch(frame, &p).map_err(failed)?;
                    // The stub finds the descriptor disabled and returns to the old code, with
                    // the call's result (rax) as it was.
                    transfers.cancel(&p);
                    assert!(!p.is_enabled());
                }
                as_result(7)
            })
            .unwrap();
        let transfers = Transfers::new(&engine);
        let (moved, fell_back) = (transfers.frames_transferred(), transfers.frames_fell_back());
        assert_eq!(engine.call("top", &[5]).unwrap(), 127, "{opt}");
        assert_eq!(transfers.frames_transferred(), moved);
        assert_eq!(transfers.frames_fell_back() - fell_back, 2);
        // A fresh prepare after a cancel makes a working descriptor again.
        let (top, mid) = two_targets(&engine);
        engine
            .register_callback("osr", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let frames = transfers.walk(&h.guest_state());
                for (frame, target) in frames.iter().zip([&mid, &top]) {
                    let p = transfers.prepare(frame, target).map_err(failed)?;
                    assert!(p.is_enabled());
                    transfers.patch(frame, &p).map_err(failed)?;
                }
                as_result(7)
            })
            .unwrap();
        assert_eq!(engine.call("top", &[5]).unwrap(), 1_057_015, "{opt}");
    }
}

// ---------------------------------------------------------------------------------------------
// The walker's guard rails, and the engine's one instance
// ---------------------------------------------------------------------------------------------

#[test]
fn walks_from_made_up_states_find_nothing() {
    let engine = engine("loop.ll", OptLevel::O0);
    let transfers = Transfers::new(&engine);
    let local = 0u64;
    let here = &local as *const u64 as u64;
    for state in [
        GuestState {
            rsp: 0,
            rbp: 0,
            return_address: 0,
        },
        GuestState {
            rsp: 16,
            rbp: 32,
            return_address: 1,
        },
        // This thread's stack, but no JIT frame there.
        GuestState {
            rsp: (here + 64) & !15,
            rbp: (here + 128) & !15,
            return_address: 0x1234,
        },
        GuestState {
            rsp: !15,
            rbp: !15,
            return_address: 0x1234,
        },
    ] {
        assert!(transfers.walk(&state).is_empty(), "{state:?}");
    }
}

#[test]
fn one_engine_has_one_instance() {
    let engine = engine("loop.ll", OptLevel::O0);
    let a = Transfers::new(&engine);
    let b = Transfers::new(&engine.clone());
    quiet(&engine, "osr", 0);
    let continuation = engine.entry("sum_cont").unwrap();
    engine
        .register_callback("osr", move |h: &mut Hypercall<'_>| {
            let transfers = Transfers::new(&h.engine());
            let frames = transfers.walk(&h.guest_state());
            let target = Target {
                site: SiteId(1),
                continuation,
                values: vec![ValueKind::I64; 3],
                result: Some(ValueKind::Ptr),
            };
            let p1 = transfers.prepare(&frames[0], &target).map_err(failed)?;
            let p2 = transfers.prepare(&frames[0], &target).map_err(failed)?;
            assert_eq!(p1.thunk(), p2.thunk(), "cached");
            transfers.patch(&frames[0], &p1).map_err(failed)?;
            as_result(0)
        })
        .unwrap();
    engine.call("sum", &[10]).unwrap();
    assert_eq!(a.frames_transferred(), 1);
    assert_eq!(b.frames_transferred(), 1);
    let other = self::engine("loop.ll", OptLevel::O0);
    assert_eq!(Transfers::new(&other).frames_transferred(), 0);
}

#[test]
fn handles_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Transfers>();
    send_sync::<uppercut_osr::Prepared>();
    send_sync::<Frame>();
}
