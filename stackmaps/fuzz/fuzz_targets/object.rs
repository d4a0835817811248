//! Object files of arbitrary bytes: our ELF handling (section lookup, relocations of
//! `.llvm_stackmaps` and `.eh_frame`) and the dump. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uppercut_stackmaps::{EhFrameSection, StackMap};

fuzz_target!(|data: &[u8]| {
    if let Ok(map) = StackMap::from_object(data) {
        for record in map.records() {
            assert!(map.lookup(record.return_address()).is_some());
        }
    }
    if let Ok(cfi) = EhFrameSection::from_object(data) {
        let starts: Vec<u64> = cfi.fde_ranges().map(|r| r.start).take(16).collect();
        for start in starts {
            let _ = cfi.frame_info(start);
        }
    }
    let _ = uppercut_stackmaps::dump_object_file(data);
});
