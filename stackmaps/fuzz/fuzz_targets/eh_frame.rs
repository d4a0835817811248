//! `.eh_frame` bytes at an arbitrary address: index the FDEs, query addresses inside, around
//! and outside them. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uppercut_stackmaps::{EhFrameSection, ReturnAddress};

fuzz_target!(|data: &[u8]| {
    let Some((address, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    // Mostly 0, as in an object file; sometimes elsewhere.
    let address = u64::from_le_bytes(*address) & 0xffff_ffff_ffff_f000;
    let Ok(cfi) = EhFrameSection::new(bytes, address) else {
        return;
    };
    let ranges: Vec<_> = cfi.fde_ranges().collect();
    for range in ranges.iter().take(64) {
        for probe in [
            range.start,
            range.start.wrapping_add(1),
            range
                .start
                .wrapping_add(range.end.wrapping_sub(range.start) / 2),
            range.end.wrapping_sub(1),
            range.end,
        ] {
            if let Ok(info) = cfi.frame_info(probe) {
                assert!(info.function.contains(&probe));
                let _ = info.rule(uppercut_stackmaps::DwarfReg::RBP);
            }
            let _ = cfi.frame_info_for_return_address(ReturnAddress(probe));
        }
    }
    let _ = cfi.frame_info(0);
    let _ = cfi.frame_info(u64::MAX);
});
