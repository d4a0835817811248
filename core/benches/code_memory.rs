//! Criterion benchmarks of changing published code: the scoped writable step
//! ([`CodeRegion::patch`]: `mprotect` to `rw-`, copy, `mprotect` back to `r-x`) against a live
//! patch ([`CodeRegion::patch_live`]: map a writable alias of the page, one atomic 8-byte
//! store, unmap it). Each is measured alone, and while another thread of the process runs on
//! another CPU: every protection change or unmap must then flush that CPU's TLB too.
//!
//! `cargo bench -p uppercut-core --bench code_memory`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use uppercut_core::code_memory::{ArenaConfig, CodeArena, CodeRegion, RegionRequest};

/// `mov eax, 42; ret`
const MOV_EAX_42_RET: [u8; 6] = [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];

fn published(arena: &CodeArena) -> CodeRegion {
    let mut region = arena
        .allocate(RegionRequest::code(MOV_EAX_42_RET.len()))
        .expect("allocates");
    region
        .as_mut_slice()
        .expect("writable")
        .copy_from_slice(&MOV_EAX_42_RET);
    region.publish().expect("publishes");
    region
}

fn bench_both(c: &mut Criterion, name: &str, region: &mut CodeRegion) {
    let mut group = c.benchmark_group(name);
    let mut value = 0u32;
    group.bench_function("patch_mprotect", |b| {
        b.iter(|| {
            value = value.wrapping_add(1);
            region.patch(1, black_box(&value.to_le_bytes())).unwrap()
        })
    });
    group.bench_function("patch_live", |b| {
        b.iter(|| {
            value = value.wrapping_add(1);
            region
                .patch_live(1, black_box(&value.to_le_bytes()))
                .unwrap()
        })
    });
    group.finish();
}

fn patch_published_code(c: &mut Criterion) {
    let arena = CodeArena::with_config(ArenaConfig::new().size(16 << 20)).expect("arena");
    let mut region = published(&arena);
    bench_both(c, "patch_alone", &mut region);

    // Another thread of the process, busy on another CPU (not in the patched code: the scoped
    // step would fault it).
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n = black_box(n + 1);
            }
        })
    };
    bench_both(c, "patch_while_another_thread_runs", &mut region);
    stop.store(true, Ordering::Relaxed);
    spinner.join().expect("the spinner stops");
}

criterion_group!(benches, patch_published_code);
criterion_main!(benches);
