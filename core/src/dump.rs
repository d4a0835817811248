//! Code dumps ([`EngineOptions::dump_code`](crate::EngineOptions::dump_code)): each unit's
//! machine code as text, disassembled with iced-x86, with its versions' names at their entries
//! and its stack-map records (the call sites OSR can transfer at, their locations printed as
//! `llvm-readobj --stackmap` does) after the calls they describe:
//!
//! ```text
//! ; unit4 `prog.ll#mid.4` (O2): 1 code section(s), 3 stack-map record(s)
//!
//! ; code 7fffac40e000..7fffac40e101 (257 bytes)
//!
//! mid [O2]:                                        ; v7, 257 bytes
//!   7fffac40e000  55                      push    rbp
//!   ...
//!   7fffac40e029  e8d2ffffff              call    00007FFFAC40E000h
//!                 ; stack-map record 3 at return address 7fffac40e02e: #1 Constant 3, size: 8  #2 Indirect [R#6 + -24], size: 8
//! ```
//!
//! A record whose return address is not where an instruction ends is listed at the end as such:
//! OSR would refuse it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use uppercut_stackmaps::{STACKMAP_SECTION, StackMap, write_location};

use crate::engine::VersionInfo;
use crate::ir::UnitMemory;
use crate::types::UnitId;

/// One stack-map record as the dump shows it.
struct RecordLine {
    id: u64,
    text: String,
}

/// The unit's records by return address (several records may share one).
fn records(memory: &UnitMemory) -> BTreeMap<u64, Vec<RecordLine>> {
    let mut out: BTreeMap<u64, Vec<RecordLine>> = BTreeMap::new();
    let Some((_, bytes)) = memory.section(STACKMAP_SECTION) else {
        return out;
    };
    // The engine checked the section when the unit was published.
    let Ok(map) = StackMap::parse(bytes) else {
        return out;
    };
    for record in map.records() {
        let locations: Vec<String> = record
            .locations()
            .enumerate()
            .map(|(i, l)| {
                let mut text = format!("#{} ", i + 1);
                let _ = write_location(&l, &mut text);
                text
            })
            .collect();
        out.entry(record.return_address().0)
            .or_default()
            .push(RecordLine {
                id: record.id().0,
                text: locations.join("  "),
            });
    }
    out
}

/// The text of unit `unit`'s dump.
pub(crate) fn unit_text(
    unit: UnitId,
    name: &str,
    memory: &UnitMemory,
    versions: &[VersionInfo],
) -> String {
    let mut records = records(memory);
    let record_count: usize = records.values().map(Vec::len).sum();
    let entries: BTreeMap<u64, &VersionInfo> = versions.iter().map(|v| (v.entry, v)).collect();
    let mut out = String::new();
    let level = versions
        .first()
        .map(|v| format!(" ({})", v.opt_level))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "; {unit} `{name}`{level}: {} code section(s), {record_count} stack-map record(s)",
        memory.code.len()
    );
    let mut formatter = IntelFormatter::new();
    formatter.options_mut().set_first_operand_char_index(8);
    let mut text = String::new();
    for region in &memory.code {
        let start = region.addr() as u64;
        let bytes = region.as_slice();
        let _ = writeln!(
            out,
            "\n; code {start:x}..{:x} ({} bytes)",
            start + bytes.len() as u64,
            bytes.len()
        );
        let mut decoder = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
        let mut instruction = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut instruction);
            let ip = instruction.ip();
            if let Some(v) = entries.get(&ip) {
                let _ = writeln!(
                    out,
                    "\n{}:{:>40}; {}, {} bytes",
                    v.label(),
                    "",
                    v.id,
                    v.size
                );
            }
            text.clear();
            formatter.format(&instruction, &mut text);
            let offset = (ip - start) as usize;
            let raw: String = bytes[offset..offset + instruction.len()]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let _ = writeln!(out, "  {ip:x}  {raw:<22}  {text}");
            if let Some(lines) = records.remove(&instruction.next_ip()) {
                for r in lines {
                    let _ = writeln!(
                        out,
                        "{:16}; stack-map record {} at return address {:x}: {}",
                        "",
                        r.id,
                        instruction.next_ip(),
                        r.text
                    );
                }
            }
        }
    }
    for (address, lines) in records {
        for r in lines {
            let _ = writeln!(
                out,
                "; stack-map record {} at return address {address:x} is not where an \
                 instruction of the unit ends: {}",
                r.id, r.text
            );
        }
    }
    out
}

/// The file unit `unit`'s dump goes to in `dir`.
pub(crate) fn unit_path(dir: &Path, unit: UnitId, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("unit-{:05}-{safe}.s", unit.0))
}
