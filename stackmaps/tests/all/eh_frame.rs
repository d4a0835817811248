//! `.eh_frame` queries on objects compiled by llc-19, against hand-checked rows and against
//! `llvm-dwarfdump-19 --eh-frame` when it is installed.

use uppercut_stackmaps::{
    Cfa, DwarfReg, EhFrameSection, Error, RegisterRule, ReturnAddress, StackMap,
};

use crate::support::{fixture, object_fixtures, run_tool};

#[test]
fn frame_pointer_function_with_callee_saved_pushes() {
    // callsite_records.O2.o, f_sm at 0..0x48:
    //   0: push rbp; 1: mov rbp, rsp; 4: push r15; push r14; push r13; push r12; push rbx;
    //   d: push rax; ...; 23: call g; 28: ...; 3d..46: pops; 47: ret
    let bytes = fixture("callsite_records.O2.o");
    let cfi = EhFrameSection::from_object(&bytes).unwrap();
    assert_eq!(cfi.fde_range(0x28).unwrap(), 0..0x48);

    let entry = cfi.frame_info(0).unwrap();
    assert_eq!(
        entry.cfa,
        Cfa {
            register: DwarfReg::RSP,
            offset: 8
        }
    );
    assert_eq!(entry.return_address, RegisterRule::AtCfaOffset(-8));
    assert!(
        entry
            .callee_saved
            .iter()
            .all(|saved| saved.rule == RegisterRule::Unchanged)
    );

    let after_push = cfi.frame_info(1).unwrap();
    assert_eq!(after_push.cfa.offset, 16);
    assert_eq!(
        after_push.rule(DwarfReg::RBP),
        Some(RegisterRule::AtCfaOffset(-16))
    );
    assert_eq!(
        after_push.rule(DwarfReg::RBX),
        Some(RegisterRule::Unchanged)
    );

    // At the call (the stack map record of f_sm sits at 0x28, right after it).
    let map = StackMap::from_object(&bytes).unwrap();
    let record = map.records().next().unwrap();
    assert_eq!(record.return_address(), ReturnAddress(0x28));
    let at_call = cfi
        .frame_info_for_return_address(record.return_address())
        .unwrap();
    assert_eq!(at_call.address, 0x27);
    assert_eq!(at_call.function, 0..0x48);
    assert_eq!(
        at_call.cfa,
        Cfa {
            register: DwarfReg::RBP,
            offset: 16
        }
    );
    let expected = [
        (DwarfReg::RBX, -56),
        (DwarfReg::RBP, -16),
        (DwarfReg::R12, -48),
        (DwarfReg::R13, -40),
        (DwarfReg::R14, -32),
        (DwarfReg::R15, -24),
    ];
    for (saved, (register, offset)) in at_call.callee_saved.iter().zip(expected) {
        assert_eq!(saved.register, register);
        assert_eq!(saved.rule, RegisterRule::AtCfaOffset(offset), "{register}");
    }
    assert_eq!(at_call.return_address.slot(0x7000), Some(0x6ff8));
    assert_eq!(at_call.cfa.value(0x6ff0), 0x7000);

    // At `ret` the CFA is back on rsp.
    assert_eq!(cfi.frame_info(0x47).unwrap().cfa.register, DwarfReg::RSP);
    // Alignment padding between functions has no FDE.
    assert_eq!(
        cfi.frame_info(0x4a).unwrap_err(),
        Error::NoFdeForAddress { address: 0x4a }
    );
    assert!(cfi.frame_info_for_return_address(ReturnAddress(0)).is_err());
}

#[test]
fn call_sites_in_frame_pointer_functions_have_cfa_rbp_16() {
    for name in [
        "statepoints.O0.o",
        "statepoints.O2.o",
        "callsite_records.O0.o",
        "callsite_records.O2.o",
    ] {
        let bytes = fixture(name);
        let map = StackMap::from_object(&bytes).unwrap();
        let cfi = EhFrameSection::from_object(&bytes).unwrap();
        for record in map.records() {
            // Every record lies inside an FDE.
            cfi.frame_info(record.return_address().0).unwrap();
            if name.starts_with("callsite") && record.id().0 != 3 {
                continue; // only the statepoints there are call sites
            }
            let frame = cfi
                .frame_info_for_return_address(record.return_address())
                .unwrap();
            assert_eq!(
                frame.cfa,
                Cfa {
                    register: DwarfReg::RBP,
                    offset: 16
                },
                "{name}: record {}",
                record.id()
            );
            assert_eq!(frame.return_address, RegisterRule::AtCfaOffset(-8));
            assert_eq!(
                frame.rule(DwarfReg::RBP),
                Some(RegisterRule::AtCfaOffset(-16))
            );
        }
    }
}

/// One row of `llvm-dwarfdump --eh-frame`: `0x4: CFA=RBP+16: RBP=[CFA-16], RIP=[CFA-8]`.
struct DumpRow {
    address: u64,
    cfa: Cfa,
    rules: Vec<(DwarfReg, i64)>,
}

fn register(name: &str) -> Option<DwarfReg> {
    Some(match name {
        "RSP" => DwarfReg::RSP,
        "RBP" => DwarfReg::RBP,
        "RBX" => DwarfReg::RBX,
        "R12" => DwarfReg::R12,
        "R13" => DwarfReg::R13,
        "R14" => DwarfReg::R14,
        "R15" => DwarfReg::R15,
        "RIP" => DwarfReg::RA,
        _ => return None,
    })
}

fn parse_dump(text: &str) -> (Vec<std::ops::Range<u64>>, Vec<DumpRow>) {
    let mut ranges = Vec::new();
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(pc) = line.split(" pc=").nth(1).filter(|_| line.contains(" FDE ")) {
            let (start, end) = pc.split_once("...").unwrap();
            ranges.push(
                u64::from_str_radix(start, 16).unwrap()..u64::from_str_radix(end, 16).unwrap(),
            );
            continue;
        }
        let Some(rest) = line.trim().strip_prefix("0x") else {
            continue;
        };
        let mut parts = rest.split(": ");
        let address = u64::from_str_radix(parts.next().unwrap(), 16).unwrap();
        let cfa = parts.next().unwrap().strip_prefix("CFA=").unwrap();
        let (reg, offset) = cfa.split_once('+').unwrap();
        let cfa = Cfa {
            register: register(reg).unwrap(),
            offset: offset.parse().unwrap(),
        };
        let mut rules = Vec::new();
        for rule in parts.next().unwrap_or("").split(", ") {
            let Some((reg, slot)) = rule.split_once('=') else {
                continue;
            };
            let offset = slot
                .strip_prefix("[CFA")
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or_else(|| panic!("unexpected rule {rule}"));
            if let Some(reg) = register(reg) {
                rules.push((reg, offset.parse().unwrap()));
            }
        }
        rows.push(DumpRow {
            address,
            cfa,
            rules,
        });
    }
    (ranges, rows)
}

#[test]
fn every_row_matches_llvm_dwarfdump() {
    let mut compared = 0;
    for path in object_fixtures() {
        let Some(dump) = run_tool("llvm-dwarfdump-19", &["--eh-frame"], &path) else {
            return;
        };
        let (ranges, rows) = parse_dump(&dump);
        let bytes = std::fs::read(&path).unwrap();
        let cfi = EhFrameSection::from_object(&bytes).unwrap();
        assert_eq!(
            cfi.fde_ranges().collect::<Vec<_>>(),
            ranges,
            "{}",
            path.display()
        );
        for row in rows {
            let info = cfi.frame_info(row.address).unwrap();
            assert_eq!(
                info.cfa,
                row.cfa,
                "{} at {:#x}",
                path.display(),
                row.address
            );
            let mut expected_saved = DwarfReg::CALLEE_SAVED.map(|r| (r, RegisterRule::Unchanged));
            let mut expected_ra = RegisterRule::Undefined;
            for (reg, offset) in row.rules {
                if reg == DwarfReg::RA {
                    expected_ra = RegisterRule::AtCfaOffset(offset);
                } else if let Some(slot) = expected_saved.iter_mut().find(|(r, _)| *r == reg) {
                    slot.1 = RegisterRule::AtCfaOffset(offset);
                }
            }
            assert_eq!(info.return_address, expected_ra);
            for (reg, rule) in expected_saved {
                assert_eq!(
                    info.rule(reg),
                    Some(rule),
                    "{} at {:#x}: {reg}",
                    path.display(),
                    row.address
                );
            }
            compared += 1;
        }
    }
    assert!(compared > 50, "compared only {compared} rows");
}
