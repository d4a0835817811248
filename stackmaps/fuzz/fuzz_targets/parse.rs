//! Stack map sections of arbitrary bytes: parse (strict, first map, all maps), walk everything,
//! look every record up, print. Nothing may panic; lookups must find what the records say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uppercut_stackmaps::{ReturnAddress, StackMap, write_llvm_readobj};

fn exercise(map: &StackMap<'_>) {
    for function in map.functions() {
        let _ = (
            function.address(),
            function.stack_size(),
            function.records().count(),
        );
    }
    let _ = map.constants().fold(0u64, u64::wrapping_add);
    for record in map.records() {
        let ra = record.return_address();
        assert!(map.lookup_all(ra).any(|r| r.index() == record.index()));
        assert_eq!(map.lookup(ra).map(|r| r.return_address()), Some(ra));
        assert_eq!(
            record.locations().count(),
            usize::from(record.num_locations())
        );
        assert_eq!(
            record.live_outs().count(),
            usize::from(record.num_live_outs())
        );
        for location in record.locations() {
            let _ = (location.size(), location.register(), location.constant());
        }
        let _ = map.lookup(ReturnAddress(ra.0.wrapping_add(1)));
        let _ = map.records_with_id(record.id()).count();
        let _ = record.bytes();
    }
    assert_eq!(map.records_by_address().count(), map.num_records() as usize);
    let mut text = String::new();
    write_llvm_readobj(map, &mut text).unwrap();
    assert!(text.starts_with("LLVM StackMap Version: 3\n"));

    // Moving every function must keep the table consistent (or report an overflow).
    let moved: Vec<u64> = map
        .functions()
        .map(|f| f.address().wrapping_add(0x1000))
        .collect();
    if let Ok(moved) = map.clone().with_function_addresses(moved) {
        for record in moved.records() {
            assert!(moved.lookup(record.return_address()).is_some());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = StackMap::parse(data) {
        assert_eq!(map.size(), data.len());
        exercise(&map);
    }
    if let Ok(map) = StackMap::parse_first(data) {
        exercise(&map);
    }
    if let Ok(maps) = StackMap::parse_all(data) {
        assert_eq!(maps.iter().map(|m| m.size()).sum::<usize>(), data.len());
        maps.iter().for_each(exercise);
    }
    let _ = uppercut_stackmaps::dump_section(data);
});
