//! Reading stack maps from relocatable object files: relocated function addresses, return
//! addresses, lookups.

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use uppercut_stackmaps::{Error, PatchpointId, ReturnAddress, StackMap};

use crate::support::{fixture, object_fixtures};

/// Defined function symbols of an object: (address, size, name), by address.
fn function_symbols(bytes: &[u8]) -> Vec<(u64, u64, String)> {
    let file = object::File::parse(bytes).unwrap();
    let mut symbols: Vec<_> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition())
        .map(|s| (s.address(), s.size(), s.name().unwrap().to_string()))
        .collect();
    symbols.sort();
    symbols
}

fn text(bytes: &[u8]) -> Vec<u8> {
    let file = object::File::parse(bytes).unwrap();
    file.section_by_name(".text")
        .unwrap()
        .data()
        .unwrap()
        .to_vec()
}

#[test]
fn function_addresses_are_resolved_to_their_symbols() {
    for path in object_fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let map = StackMap::from_object(&bytes).unwrap();
        let symbols = function_symbols(&bytes);
        let mut previous = None;
        for function in map.functions() {
            // The raw field of a relocatable object is 0, as llvm-readobj shows.
            assert_eq!(function.raw_address(), 0);
            let (address, size, name) = symbols
                .iter()
                .find(|(address, ..)| *address == function.address())
                .unwrap_or_else(|| {
                    panic!("{}: no symbol at {:#x}", path.display(), function.address())
                });
            // Functions are listed in emission order.
            assert!(previous < Some(*address), "{name} out of order");
            previous = Some(*address);
            for record in function.records() {
                let ra = record.return_address().0;
                assert!(
                    (*address..=address + size).contains(&ra),
                    "{}: record {} at {ra:#x} outside {name}",
                    path.display(),
                    record.id()
                );
                assert!(
                    map.lookup_all(record.return_address())
                        .any(|r| r.index() == record.index())
                );
            }
        }
    }
}

#[test]
fn statepoint_records_sit_at_return_addresses() {
    // DESIGN.md: a statepoint's record offset is the call's return address at every level.
    for name in ["statepoints.O0.o", "statepoints.O2.o"] {
        let bytes = fixture(name);
        let map = StackMap::from_object(&bytes).unwrap();
        let code = text(&bytes);
        assert_eq!(map.num_records(), 4);
        for record in map.records() {
            let ra = record.return_address().0 as usize;
            // A direct `call rel32` (opcode E8) ends exactly there.
            assert_eq!(
                code[ra - 5],
                0xe8,
                "{name}: record {} at {ra:#x}",
                record.id()
            );
        }
    }
}

#[test]
fn lookups_in_a_real_map() {
    let bytes = fixture("stackmap_constants.O2.o");
    let map = StackMap::from_object(&bytes).unwrap();
    let symbols = function_symbols(&bytes);
    let spills = symbols.iter().find(|s| s.2 == "spills").unwrap().0;
    let addresses: Vec<u64> = map.functions().map(|f| f.address()).collect();
    let named = |n: &str| symbols.iter().find(|s| s.2 == n).unwrap().0;
    assert_eq!(addresses, [named("consts"), spills, named("empty_record")]);

    // Two records share ID 20; their return addresses tell them apart.
    let with_id: Vec<_> = map.records_with_id(PatchpointId(20)).collect();
    assert_eq!(with_id.len(), 2);
    assert_ne!(with_id[0].return_address(), with_id[1].return_address());
    for record in &with_id {
        let found = map.lookup(record.return_address()).unwrap();
        assert_eq!(found.index(), record.index());
        assert_eq!(found.function().address(), spills);
    }
    // The three records of `consts` are all at one offset: lookup_all gives them in order.
    let consts: Vec<u64> = map
        .lookup_all(ReturnAddress(named("consts") + 7))
        .map(|r| r.id().0)
        .collect();
    assert_eq!(consts, [10, 11, 12]);
    assert!(map.lookup(ReturnAddress(spills)).is_none());
}

#[test]
fn raw_section_and_object_agree() {
    for path in object_fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let section = file.section_by_name(".llvm_stackmaps").unwrap();
        let raw = section.data().unwrap();
        let map = StackMap::parse(raw).unwrap();
        assert_eq!(
            uppercut_stackmaps::dump_section(raw).unwrap(),
            uppercut_stackmaps::dump_object_file(&bytes).unwrap()
        );
        assert_eq!(
            map.num_records(),
            StackMap::from_object(&bytes).unwrap().num_records()
        );
    }
}

#[test]
fn objects_without_a_stack_map() {
    // This test binary is an x86-64 ELF file without `.llvm_stackmaps`.
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(
        uppercut_stackmaps::dump_object_file(&exe).unwrap_err(),
        Error::MissingSection {
            name: ".llvm_stackmaps"
        }
    );
    assert!(matches!(
        StackMap::from_object(&exe),
        Err(Error::MissingSection { .. })
    ));
}

#[test]
fn truncated_object_files_fail_cleanly() {
    let bytes = fixture("patchpoints.O2.o");
    for len in (0..bytes.len()).step_by(7) {
        let prefix = &bytes[..len];
        let _ = StackMap::from_object(prefix);
        let _ = uppercut_stackmaps::EhFrameSection::from_object(prefix);
        let _ = uppercut_stackmaps::dump_object_file(prefix);
    }
}
