//! Printing a stack map exactly as `llvm-readobj --stackmap` prints it (LLVM 19's
//! `StackMapPrinter.h`), so that dumps can be compared with LLVM's own tool line for line.
//!
//! The printer shows the raw fields: in a relocatable object file the function addresses are 0,
//! as in `llvm-readobj`'s output, whatever [`StackMap::with_function_addresses`] set.

use std::fmt;

use crate::elf;
use crate::error::Result;
use crate::parse::{Location, StackMap};

/// Writes one location as `llvm-readobj-19 --stackmap` prints it, e.g.
/// `Indirect [R#7 + -8], size: 8`.
pub fn write_location<W: fmt::Write + ?Sized>(location: &Location, out: &mut W) -> fmt::Result {
    match *location {
        Location::Register { reg, .. } => write!(out, "Register R#{}", reg.0)?,
        Location::Direct { reg, offset, .. } => write!(out, "Direct R#{} + {}", reg.0, offset)?,
        Location::Indirect { reg, offset, .. } => {
            write!(out, "Indirect [R#{} + {}]", reg.0, offset)?
        }
        // LLVM reads the small constant as a uint32_t.
        Location::Constant { value, .. } => write!(out, "Constant {}", value as u32)?,
        Location::ConstantIndex { index, value, .. } => {
            write!(out, "ConstantIndex #{} ({})", index.0, value)?
        }
    }
    write!(out, ", size: {}", location.size())
}

/// Writes `map` as `llvm-readobj-19 --stackmap` prints it, from the line
/// `LLVM StackMap Version: 3` on.
///
/// Small constants are printed as unsigned 32-bit numbers (`Constant 4294967295` for -1) and
/// offsets as signed ones (`Indirect [R#7 + -8]`), as LLVM does.
pub fn write_llvm_readobj<W: fmt::Write + ?Sized>(map: &StackMap<'_>, out: &mut W) -> fmt::Result {
    writeln!(out, "LLVM StackMap Version: {}", map.version())?;
    writeln!(out, "Num Functions: {}", map.num_functions())?;
    for function in map.functions() {
        writeln!(
            out,
            "  Function address: {}, stack size: {}, callsite record count: {}",
            function.raw_address(),
            function.stack_size(),
            function.record_count()
        )?;
    }
    writeln!(out, "Num Constants: {}", map.num_constants())?;
    for (i, constant) in map.constants().enumerate() {
        writeln!(out, "  #{}: {}", i + 1, constant)?;
    }
    writeln!(out, "Num Records: {}", map.num_records())?;
    for record in map.records() {
        writeln!(
            out,
            "  Record ID: {}, instruction offset: {}",
            record.id(),
            record.instruction_offset()
        )?;
        writeln!(out, "    {} locations:", record.num_locations())?;
        for (i, location) in record.locations().enumerate() {
            write!(out, "      #{}: ", i + 1)?;
            write_location(&location, out)?;
            writeln!(out)?;
        }
        write!(out, "    {} live-outs: [ ", record.num_live_outs())?;
        for live_out in record.live_outs() {
            write!(out, "R#{} ({}-bytes) ", live_out.reg.0, live_out.size)?;
        }
        writeln!(out, "]")?;
    }
    Ok(())
}

/// The `llvm-readobj --stackmap` dump of raw `.llvm_stackmaps` bytes (the first map in them, as
/// `llvm-readobj` prints only that one).
pub fn dump_section(section: &[u8]) -> Result<String> {
    let map = StackMap::parse_first(section)?;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_llvm_readobj(&map, &mut out);
    Ok(out)
}

/// The `llvm-readobj --stackmap` dump of an ELF object file's `.llvm_stackmaps` section, from
/// the line `LLVM StackMap Version: 3` on: what `uppercut stackmaps FILE.o` prints.
///
/// Reads the first section named `.llvm_stackmaps`, as `llvm-readobj` does, and prints its raw
/// fields (so the function addresses of a relocatable object are 0). Where `llvm-readobj` prints
/// nothing because there is no such section, this returns [`Error::MissingSection`]; a malformed
/// section is an error too (`llvm-readobj` warns or reads past it).
///
/// ```no_run
/// let bytes = std::fs::read("module.o")?;
/// print!("{}", uppercut_stackmaps::dump_object_file(&bytes)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`Error::MissingSection`]: crate::Error::MissingSection
pub fn dump_object_file(bytes: &[u8]) -> Result<String> {
    let file = elf::open(bytes)?;
    let section = elf::section_data(&file, elf::STACKMAP_SECTION)?;
    dump_section(section)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::StackMapBuilder;
    use crate::ids::{CodeOffset, DwarfReg, PatchpointId};
    use crate::parse::LiveOut;

    #[test]
    fn prints_every_location_kind_like_llvm() {
        let mut b = StackMapBuilder::new();
        let big = b.constant(10_000_000_000);
        b.function(0x1000, 24);
        b.record(
            PatchpointId(2),
            CodeOffset(1),
            &[
                Location::Register {
                    reg: DwarfReg(5),
                    size: 8,
                },
                Location::Constant { value: -1, size: 4 },
                Location::ConstantIndex {
                    index: big,
                    value: 0,
                    size: 8,
                },
                Location::Direct {
                    reg: DwarfReg(4),
                    offset: -8,
                    size: 8,
                },
                Location::Indirect {
                    reg: DwarfReg(6),
                    offset: -16,
                    size: 8,
                },
            ],
            &[LiveOut {
                reg: DwarfReg(7),
                size: 8,
            }],
        );
        let text = dump_section(&b.build()).unwrap();
        assert_eq!(
            text,
            "LLVM StackMap Version: 3
Num Functions: 1
  Function address: 4096, stack size: 24, callsite record count: 1
Num Constants: 1
  #1: 10000000000
Num Records: 1
  Record ID: 2, instruction offset: 1
    5 locations:
      #1: Register R#5, size: 8
      #2: Constant 4294967295, size: 4
      #3: ConstantIndex #0 (10000000000), size: 8
      #4: Direct R#4 + -8, size: 8
      #5: Indirect [R#6 + -16], size: 8
    1 live-outs: [ R#7 (8-bytes) ]
"
        );
    }

    #[test]
    fn prints_an_empty_map() {
        let text = dump_section(&StackMapBuilder::new().build()).unwrap();
        assert_eq!(
            text,
            "LLVM StackMap Version: 3\nNum Functions: 0\nNum Constants: 0\nNum Records: 0\n"
        );
    }

    #[test]
    fn dump_object_file_rejects_non_objects() {
        assert!(matches!(
            dump_object_file(b"not an object file"),
            Err(crate::Error::Object { .. })
        ));
    }
}
