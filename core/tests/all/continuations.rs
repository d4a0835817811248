//! Continuations through the engine's API: per-site and multi-entry, how they appear among the
//! versions, and the shape of a multi-entry continuation's per-site entries. (Frames moved into
//! them are tested in `uppercut-osr`, which moves frames.)

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use uppercut_core::{
    Engine, EngineOptions, Error, Instrumentation, OptLevel, SiteId, SiteKind, VersionKind,
};

/// `work` has two loops and four calls of `tick`, which reaches a hypercall: six sites. One
/// more call of `tick` has an `i128` live across it, which OSR state cannot carry: it is
/// refused a site. `work` is `noinline optnone`, as clang -O0 leaves every function, which
/// versions above O0 lift.
const GUEST: &str = r#"
@tick.name = private unnamed_addr constant [5 x i8] c"tick\00"
@scale = global i64 3
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @tick(i64 %x) {
  %r = call ptr @PerformCustomCallback(ptr @tick.name, ptr null)
  %ri = ptrtoint ptr %r to i64
  %m = mul i64 %x, 3
  %s = add i64 %m, %ri
  ret i64 %s
}

define i64 @leaf(i64 %x) {
  %y = mul i64 %x, %x
  ret i64 %y
}

define i64 @work(i64 %n) noinline optnone {
entry:
  %a = call i64 @tick(i64 %n)
  br label %loop1
loop1:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop1 ]
  %acc = phi i64 [ %a, %entry ], [ %acc1, %loop1 ]
  %x = xor i64 %acc, %i
  %acc1 = mul i64 %x, 31
  %i1 = add i64 %i, 1
  %c1 = icmp ult i64 %i1, %n
  br i1 %c1, label %loop1, label %mid
mid:
  %wide = zext i64 %acc1 to i128
  %b = call i64 @tick(i64 %acc1)
  %sh = shl i128 %wide, 64
  %hi = lshr i128 %sh, 70
  %hi64 = trunc i128 %hi to i64
  %d = add i64 %b, %hi64
  br label %loop2
loop2:
  %j = phi i64 [ 0, %mid ], [ %j1, %latch ]
  %acc2 = phi i64 [ %d, %mid ], [ %acc3, %latch ]
  %odd = and i64 %j, 1
  %is_odd = icmp ne i64 %odd, 0
  br i1 %is_odd, label %odd_j, label %latch
odd_j:
  %t = call i64 @tick(i64 %j)
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
  %scale = load i64, ptr @scale
  %fs = mul i64 %f, %scale
  %r = xor i64 %fs, %a
  ret i64 %r
}
"#;

fn instrumented(opt: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level: opt,
        instrument: Some(Instrumentation::default()),
        ..EngineOptions::default()
    };
    Engine::from_bytes(GUEST.as_bytes(), "multi.ll", options).expect("loads")
}

/// The sites of `work` that carry state, by ascending id.
fn carried_sites(engine: &Engine) -> Vec<SiteId> {
    let osr = engine.osr().unwrap();
    osr.sites()
        .iter()
        .filter(|s| s.function == "work" && s.refused.is_none())
        .map(|s| s.id)
        .collect()
}

#[test]
fn the_guest_has_call_and_loop_sites_and_one_refused_call() {
    let engine = instrumented(OptLevel::O2);
    let osr = engine.osr().unwrap();
    let work: Vec<_> = osr
        .sites()
        .iter()
        .filter(|s| s.function == "work")
        .collect();
    let loops = work.iter().filter(|s| s.kind == SiteKind::Loop).count();
    let calls = work
        .iter()
        .filter(|s| matches!(s.kind, SiteKind::Call { .. }) && s.refused.is_none())
        .count();
    let refused = work.iter().filter(|s| s.refused.is_some()).count();
    assert_eq!((loops, calls, refused), (2, 4, 1), "{work:#?}");
}

#[test]
fn a_multi_entry_continuation_has_an_entry_per_carried_site_and_one_body() {
    for opt in [OptLevel::O0, OptLevel::O2] {
        let engine = instrumented(opt);
        let sites = carried_sites(&engine);
        engine.compile().unwrap();
        let entries_before = engine.versions("work");
        let multi = engine.compile_multi_continuation("work", opt, &[]).unwrap();

        assert_eq!(
            multi.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            sites,
            "{opt}: one entry per site that carries state, by id"
        );
        let body = &multi.version;
        assert_eq!(body.function, "work");
        assert_eq!(body.kind, VersionKind::MultiContinuation);
        assert_eq!(body.opt_level, opt);
        assert!(body.size > 0);

        // A frame running the body is a frame of `work`.
        let inside = engine.version_at(body.entry + body.size / 2).unwrap();
        assert_eq!(inside, *body, "{opt}");

        // Each entry is a continuation of its site, in the body's unit.
        let all = engine.all_versions();
        for &(site, address) in &multi.entries {
            assert_eq!(multi.entry(site), Some(address));
            let v = all.iter().find(|v| v.entry == address).unwrap();
            assert_eq!(v.kind, VersionKind::Continuation(site), "{opt}");
            assert_eq!((v.function.as_str(), v.unit), ("work", body.unit), "{opt}");
        }
        let refused = engine
            .osr()
            .unwrap()
            .sites()
            .iter()
            .find(|s| s.function == "work" && s.refused.is_some())
            .unwrap()
            .id;
        assert_eq!(multi.entry(refused), None);

        // Neither is among the function's entries: calls of `work` still reach its own code.
        assert_eq!(engine.versions("work"), entries_before, "{opt}");
        assert!(multi.times.ir > std::time::Duration::ZERO);
        assert_eq!(multi.times.link, std::time::Duration::ZERO);
    }
}

/// The instructions of a version's code.
fn disassemble(entry: u64, size: u64) -> Vec<Instruction> {
    // SAFETY: `entry..entry + size` is a version's code, which the engine keeps mapped and
    // readable as long as the engine lives; the caller holds the engine.
    let bytes = unsafe { std::slice::from_raw_parts(entry as *const u8, size as usize) };
    let mut decoder = Decoder::with_ip(64, bytes, entry, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let i = decoder.decode();
        let end = matches!(i.mnemonic(), Mnemonic::Jmp | Mnemonic::Ret);
        out.push(i);
        if end {
            break;
        }
    }
    out
}

/// Where code that ends in a jump goes: `jmp rel32`, or (the JIT's large code model)
/// `mov reg, imm64 ... jmp reg`.
fn jump_target(code: &[Instruction]) -> Option<u64> {
    use iced_x86::OpKind;
    let (last, before) = code.split_last()?;
    if last.mnemonic() != Mnemonic::Jmp {
        return None;
    }
    match last.op0_kind() {
        OpKind::NearBranch64 => Some(last.near_branch_target()),
        OpKind::Register => before.iter().rev().find_map(|i| {
            (i.mnemonic() == Mnemonic::Mov
                && i.op0_kind() == OpKind::Register
                && i.op0_register() == last.op0_register()
                && i.op1_kind() == OpKind::Immediate64)
                .then(|| i.immediate64())
        }),
        _ => None,
    }
}

#[test]
fn every_entry_jumps_to_the_body_without_a_frame_of_its_own() {
    for opt in [OptLevel::O0, OptLevel::O2] {
        let engine = instrumented(opt);
        let multi = engine.compile_multi_continuation("work", opt, &[]).unwrap();
        let all = engine.all_versions();
        for &(site, address) in &multi.entries {
            let v = all.iter().find(|v| v.entry == address).unwrap();
            let code = disassemble(address, v.size);
            let listing: Vec<String> = code.iter().map(|i| format!("{i}")).collect();
            assert_eq!(
                jump_target(&code),
                Some(multi.version.entry),
                "{opt} {site}: {listing:#?}"
            );
            assert!(
                code.iter().all(|i| i.mnemonic() != Mnemonic::Call),
                "{opt} {site}: an entry must not leave a frame behind: {listing:#?}"
            );
            assert!(code.len() <= 8, "{opt} {site}: {listing:#?}");
        }
    }
}

#[test]
fn per_site_and_multi_entry_continuations_coexist() {
    let engine = instrumented(OptLevel::O2);
    let sites = carried_sites(&engine);
    let single = engine
        .compile_continuation("work", sites[1], OptLevel::O2, &[])
        .unwrap();
    let multi = engine
        .compile_multi_continuation("work", OptLevel::O2, &[])
        .unwrap();
    let again = engine
        .compile_multi_continuation("work", OptLevel::O2, &[])
        .unwrap();
    assert_eq!(single.version.kind, VersionKind::Continuation(sites[1]));
    assert_ne!(
        multi.version.unit, again.version.unit,
        "each call compiles anew"
    );
    assert_ne!(multi.entry(sites[1]), Some(single.version.entry));
}

#[test]
fn a_multi_entry_continuation_can_be_specialised() {
    let engine = instrumented(OptLevel::O2);
    let spec = vec![("scale".to_owned(), 5)];
    let multi = engine
        .compile_multi_continuation("work", OptLevel::O2, &spec)
        .unwrap();
    assert_eq!(multi.version.specialisation, spec);
    let all = engine.all_versions();
    for &(_, address) in &multi.entries {
        let v = all.iter().find(|v| v.entry == address).unwrap();
        assert_eq!(v.specialisation, spec);
    }
}

#[test]
fn multi_entry_continuations_refuse_what_they_cannot_build() {
    let plain = Engine::from_bytes(GUEST.as_bytes(), "plain.ll", EngineOptions::default()).unwrap();
    assert!(matches!(
        plain.compile_multi_continuation("work", OptLevel::O2, &[]),
        Err(Error::Osr(_))
    ));
    let engine = instrumented(OptLevel::O2);
    assert!(matches!(
        engine.compile_multi_continuation("nothing", OptLevel::O2, &[]),
        Err(Error::NoSuchFunction(_))
    ));
    // `leaf` reaches no hypercall: it has no site to resume after.
    let none = engine.compile_multi_continuation("leaf", OptLevel::O2, &[]);
    assert!(matches!(none, Err(Error::Osr(_))), "{none:?}");
    let unknown_global = [("nowhere".to_owned(), 1)];
    assert!(matches!(
        engine.compile_multi_continuation("work", OptLevel::O2, &unknown_global),
        Err(Error::Osr(_))
    ));
}
