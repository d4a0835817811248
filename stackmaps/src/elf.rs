//! Input from ELF object files on disk (through `object`): finding `.llvm_stackmaps` and
//! `.eh_frame`, and applying a relocatable object's relocations to them.
//!
//! In a relocatable object (`llc -filetype=obj`), the stack map's function addresses and the
//! FDEs' start addresses are relocations. This module resolves them the way a static link at
//! address 0 would: every section is taken to start at address 0, so an address is an offset in
//! its section (what `objdump -d` shows for a single `.text`). With several code sections
//! (`-function-sections`), addresses of different sections overlap.
//!
//! Linked files (executables, shared objects) are read as they are: their fields hold final
//! addresses.

use std::borrow::Cow;

use object::elf;
use object::{Object, ObjectKind, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget};

use crate::eh_frame::EhFrameSection;
use crate::error::{Error, Result};
use crate::parse::StackMap;
use crate::raw;

/// Name of the stack map section in ELF files.
pub const STACKMAP_SECTION: &str = ".llvm_stackmaps";

/// Name of the call frame information section.
pub const EH_FRAME_SECTION: &str = ".eh_frame";

/// Opens a 64-bit little-endian x86-64 ELF file.
pub(crate) fn open(bytes: &[u8]) -> Result<object::File<'_>> {
    let file = object::File::parse(bytes)?;
    if file.format() != object::BinaryFormat::Elf {
        return Err(Error::UnsupportedObject {
            reason: "not an ELF file",
        });
    }
    if !file.is_64() || !file.is_little_endian() {
        return Err(Error::UnsupportedObject {
            reason: "not a 64-bit little-endian file",
        });
    }
    if file.architecture() != object::Architecture::X86_64 {
        return Err(Error::UnsupportedObject {
            reason: "not an x86-64 file",
        });
    }
    Ok(file)
}

/// The first section called `name`.
fn section<'data, 'file>(
    file: &'file object::File<'data>,
    name: &'static str,
) -> Result<object::Section<'data, 'file>> {
    file.section_by_name(name)
        .ok_or(Error::MissingSection { name })
}

/// The raw bytes of the first section called `name`.
pub(crate) fn section_data<'data>(
    file: &object::File<'data>,
    name: &'static str,
) -> Result<&'data [u8]> {
    Ok(section(file, name)?.data()?)
}

/// A relocation's effect: `size` bytes holding `value` (truncated to that size) at an offset.
struct Patch {
    offset: usize,
    size: usize,
    value: u64,
}

/// Computes what one relocation writes. `data` is the section's unrelocated contents (for
/// implicit addends), `section_address` where the section is taken to be (for PC-relative ones).
fn resolve(
    file: &object::File<'_>,
    section_name: &'static str,
    section_address: u64,
    data: &[u8],
    offset: u64,
    relocation: &object::Relocation,
) -> Result<Patch> {
    let unsupported = |r_type| Error::UnsupportedRelocation {
        section: section_name,
        offset,
        r_type,
    };
    let RelocationFlags::Elf { r_type } = relocation.flags() else {
        return Err(unsupported(0));
    };
    let (size, pc_relative, signed) = match r_type {
        elf::R_X86_64_64 => (8, false, false),
        elf::R_X86_64_PC64 => (8, true, true),
        elf::R_X86_64_PC32 => (4, true, true),
        elf::R_X86_64_32 => (4, false, false),
        elf::R_X86_64_32S => (4, false, true),
        elf::R_X86_64_NONE => {
            return Ok(Patch {
                offset: 0,
                size: 0,
                value: 0,
            });
        }
        _ => return Err(unsupported(r_type)),
    };
    let at = usize::try_from(offset).map_err(|_| unsupported(r_type))?;
    let field = data
        .get(at..at.saturating_add(size))
        .filter(|field| field.len() == size)
        .ok_or_else(|| unsupported(r_type))?;

    let symbol_value: u64 = match relocation.target() {
        RelocationTarget::Symbol(index) => {
            let symbol = file.symbol_by_index(index)?;
            if symbol.is_undefined() {
                return Err(unsupported(r_type));
            }
            symbol.address()
        }
        RelocationTarget::Section(index) => file.section_by_index(index)?.address(),
        RelocationTarget::Absolute => 0,
        _ => return Err(unsupported(r_type)),
    };
    let addend = if relocation.has_implicit_addend() {
        if size == 8 {
            raw::u64_at(field, 0).unwrap_or_default() as i64
        } else {
            i64::from(raw::u32_at(field, 0).unwrap_or_default() as i32)
        }
    } else {
        relocation.addend()
    };
    let mut value = i128::from(symbol_value) + i128::from(addend);
    if pc_relative {
        value -= i128::from(section_address) + i128::from(offset);
    }
    let fits = match (size, signed) {
        (8, false) => (0..=i128::from(u64::MAX)).contains(&value),
        (8, true) => (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&value),
        (_, false) => (0..=i128::from(u32::MAX)).contains(&value),
        (_, true) => (i128::from(i32::MIN)..=i128::from(i32::MAX)).contains(&value),
    };
    if !fits {
        return Err(Error::RelocationOverflow {
            section: section_name,
            offset,
            value,
        });
    }
    Ok(Patch {
        offset: at,
        size,
        value: value as u64,
    })
}

impl<'data> StackMap<'data> {
    /// Reads the stack map of an x86-64 ELF object file: the first map in its first
    /// `.llvm_stackmaps` section.
    ///
    /// In a relocatable object the function addresses are resolved from the relocations
    /// (symbol value plus addend, every section at address 0), so [`Function::address`] is the
    /// function's offset in its code section and [`Record::return_address`] the record's offset
    /// there. The raw fields, 0, remain what [`Function::raw_address`] returns and what the
    /// `llvm-readobj` printer shows.
    ///
    /// [`Function::address`]: crate::Function::address
    /// [`Function::raw_address`]: crate::Function::raw_address
    /// [`Record::return_address`]: crate::Record::return_address
    pub fn from_object(bytes: &'data [u8]) -> Result<Self> {
        let file = open(bytes)?;
        let section = section(&file, STACKMAP_SECTION)?;
        let data = section.data()?;
        let map = StackMap::parse_first(data)?;
        if file.kind() != ObjectKind::Relocatable {
            return Ok(map);
        }

        let mut addresses: Vec<u64> = map.functions().map(|f| f.raw_address()).collect();
        for (offset, relocation) in section.relocations() {
            if offset >= map.size() as u64 {
                // Belongs to a later map, which this reader does not return.
                continue;
            }
            let patch = resolve(&file, STACKMAP_SECTION, 0, data, offset, &relocation)?;
            if patch.size == 0 {
                continue;
            }
            // Only function address fields are relocated.
            let index = patch
                .offset
                .checked_sub(raw::HEADER_SIZE)
                .filter(|rel| rel % raw::FUNCTION_SIZE == raw::function::ADDRESS)
                .map(|rel| rel / raw::FUNCTION_SIZE)
                .filter(|&i| i < addresses.len() && patch.size == 8);
            match index.and_then(|i| addresses.get_mut(i)) {
                Some(address) => *address = patch.value,
                None => {
                    return Err(Error::UnsupportedRelocation {
                        section: STACKMAP_SECTION,
                        offset,
                        r_type: match relocation.flags() {
                            RelocationFlags::Elf { r_type } => r_type,
                            _ => 0,
                        },
                    });
                }
            }
        }
        map.with_function_addresses(addresses)
    }
}

impl<'data> EhFrameSection<'data> {
    /// Reads the `.eh_frame` section of an x86-64 ELF object file.
    ///
    /// A linked file's section is borrowed, at its address. A relocatable object's section is
    /// copied with its relocations applied, at address 0, every other section at address 0 too:
    /// FDE ranges are then offsets in the code section, as [`StackMap::from_object`] gives
    /// return addresses.
    pub fn from_object(bytes: &'data [u8]) -> Result<Self> {
        let file = open(bytes)?;
        let section = section(&file, EH_FRAME_SECTION)?;
        let data = section.data()?;
        if file.kind() != ObjectKind::Relocatable {
            return EhFrameSection::new(Cow::Borrowed(data), section.address());
        }
        let mut relocated = data.to_vec();
        for (offset, relocation) in section.relocations() {
            let patch = resolve(&file, EH_FRAME_SECTION, 0, data, offset, &relocation)?;
            let bytes = patch.value.to_le_bytes();
            if let (Some(field), Some(value)) = (
                relocated.get_mut(patch.offset..patch.offset + patch.size),
                bytes.get(..patch.size),
            ) {
                field.copy_from_slice(value);
            }
        }
        EhFrameSection::new(Cow::Owned(relocated), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_object() {
        assert!(matches!(
            StackMap::from_object(&[0x7f, b'E', b'L', b'F']),
            Err(Error::Object { .. })
        ));
        assert!(matches!(
            EhFrameSection::from_object(&[]),
            Err(Error::Object { .. })
        ));
    }
}
