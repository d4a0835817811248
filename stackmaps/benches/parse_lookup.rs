//! Parsing and indexing a synthetic stack map of 10,000 records, and looking records up by
//! return address.
//!
//! `cargo bench -p uppercut-stackmaps -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};
use uppercut_stackmaps::{
    CodeOffset, DwarfReg, Location, PatchpointId, ReturnAddress, StackMap, StackMapBuilder,
};

const FUNCTIONS: u32 = 100;
const RECORDS_PER_FUNCTION: u32 = 100;

/// 100 functions of 100 records, each record with a statepoint-like location list (three
/// constants, five stack slots), IDs shared between functions.
fn synthetic_section() -> Vec<u8> {
    let mut builder = StackMapBuilder::new();
    let big = builder.constant(10_000_000_000);
    for f in 0..FUNCTIONS {
        builder.function(0x40_0000 + u64::from(f) * 0x1_0000, 88);
        for r in 0..RECORDS_PER_FUNCTION {
            let mut locations = vec![
                Location::Constant { value: 0, size: 8 },
                Location::Constant { value: 0, size: 8 },
                Location::Constant { value: 5, size: 8 },
            ];
            locations.extend((0..4).map(|slot| Location::Indirect {
                reg: DwarfReg::RSP,
                offset: 8 * slot,
                size: 8,
            }));
            locations.push(Location::ConstantIndex {
                index: big,
                value: 0,
                size: 8,
            });
            builder.record(
                PatchpointId(u64::from(r)),
                CodeOffset(16 + r * 32),
                &locations,
                &[],
            );
        }
    }
    builder.build()
}

fn bench(c: &mut Criterion) {
    let section = synthetic_section();
    let records = u64::from(FUNCTIONS * RECORDS_PER_FUNCTION);

    let mut group = c.benchmark_group("stackmap");
    group.throughput(Throughput::Elements(records));
    group.bench_function("parse_and_index_10k_records", |b| {
        b.iter(|| StackMap::parse(black_box(&section)).unwrap())
    });

    let map = StackMap::parse(&section).unwrap();
    let addresses: Vec<ReturnAddress> = map.records().map(|r| r.return_address()).collect();
    group.bench_function("lookup_each_of_10k_records", |b| {
        b.iter(|| {
            let mut found = 0u64;
            for &address in &addresses {
                if let Some(record) = map.lookup(black_box(address)) {
                    found += u64::from(record.num_locations());
                }
            }
            found
        })
    });
    group.bench_function("lookup_and_read_locations_10k", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for &address in &addresses {
                if let Some(record) = map.lookup(black_box(address)) {
                    for location in record.locations() {
                        if let Location::Indirect { offset, .. } = location {
                            sum += i64::from(offset);
                        }
                    }
                }
            }
            sum
        })
    });
    group.finish();
}

mod group {
    // `criterion_group!` defines an undocumented public function.
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
