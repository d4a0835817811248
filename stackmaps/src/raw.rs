//! The raw, little-endian layout of a version-3 `.llvm_stackmaps` section: sizes, field offsets,
//! and fixed-size structs decoded from checked byte arrays.
//!
//! Everything here is plain data; the checks that make the layout safe to walk live in
//! [`crate::parse`]. Reads go through [`array_at`], which returns `None` instead of going out of
//! bounds, so no `unsafe` is needed anywhere.

/// The only stack map version this crate reads.
pub(crate) const VERSION: u8 = 3;

/// Size of the header: version, two reserved fields, and the three counts.
pub(crate) const HEADER_SIZE: usize = 16;
/// Size of one function entry (`StkSizeRecord`).
pub(crate) const FUNCTION_SIZE: usize = 24;
/// Size of one large constant.
pub(crate) const CONSTANT_SIZE: usize = 8;
/// Size of a record's fixed part: ID, instruction offset, flags, number of locations.
pub(crate) const RECORD_HEADER_SIZE: usize = 16;
/// Size of one location.
pub(crate) const LOCATION_SIZE: usize = 12;
/// Size of one live-out.
pub(crate) const LIVE_OUT_SIZE: usize = 4;
/// Size of the padding-and-count word before the live-outs.
pub(crate) const LIVE_OUT_HEADER_SIZE: usize = 4;
/// Everything in the section is padded to this alignment.
pub(crate) const ALIGN: usize = 8;
/// The smallest possible record: header, no locations, live-out count, no live-outs, padding.
pub(crate) const MIN_RECORD_SIZE: usize = 24;

/// Offsets of the header's fields.
pub(crate) mod header {
    pub(crate) const VERSION: usize = 0;
    pub(crate) const RESERVED0: usize = 1;
    pub(crate) const RESERVED1: usize = 2;
    pub(crate) const NUM_FUNCTIONS: usize = 4;
    pub(crate) const NUM_CONSTANTS: usize = 8;
    pub(crate) const NUM_RECORDS: usize = 12;
}

/// Offsets of a function entry's fields.
pub(crate) mod function {
    pub(crate) const ADDRESS: usize = 0;
    pub(crate) const STACK_SIZE: usize = 8;
    pub(crate) const RECORD_COUNT: usize = 16;
}

/// Offsets of a record header's fields.
pub(crate) mod record {
    pub(crate) const ID: usize = 0;
    pub(crate) const INSTRUCTION_OFFSET: usize = 8;
    pub(crate) const FLAGS: usize = 12;
    pub(crate) const NUM_LOCATIONS: usize = 14;
}

/// The location kinds, as encoded.
pub(crate) mod kind {
    pub(crate) const REGISTER: u8 = 1;
    pub(crate) const DIRECT: u8 = 2;
    pub(crate) const INDIRECT: u8 = 3;
    pub(crate) const CONSTANT: u8 = 4;
    pub(crate) const CONSTANT_INDEX: u8 = 5;
}

/// `N` bytes at `offset`, or `None` when they are not all inside `data`.
pub(crate) fn array_at<const N: usize>(data: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    data.get(offset..end)?.try_into().ok()
}

/// A little-endian `u16` at `offset`.
pub(crate) fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    array_at(data, offset).map(u16::from_le_bytes)
}

/// A little-endian `u32` at `offset`.
pub(crate) fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    array_at(data, offset).map(u32::from_le_bytes)
}

/// A little-endian `u64` at `offset`.
pub(crate) fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    array_at(data, offset).map(u64::from_le_bytes)
}

/// Rounds `n` up to the next multiple of [`ALIGN`], or `None` on overflow.
pub(crate) fn align_up(n: usize) -> Option<usize> {
    Some(n.checked_add(ALIGN - 1)? & !(ALIGN - 1))
}

/// The stack map header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawHeader {
    pub(crate) version: u8,
    pub(crate) reserved0: u8,
    pub(crate) reserved1: u16,
    pub(crate) num_functions: u32,
    pub(crate) num_constants: u32,
    pub(crate) num_records: u32,
}

impl RawHeader {
    pub(crate) fn decode(b: [u8; HEADER_SIZE]) -> Self {
        let u32_field = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        RawHeader {
            version: b[header::VERSION],
            reserved0: b[header::RESERVED0],
            reserved1: u16::from_le_bytes([b[header::RESERVED1], b[header::RESERVED1 + 1]]),
            num_functions: u32_field(header::NUM_FUNCTIONS),
            num_constants: u32_field(header::NUM_CONSTANTS),
            num_records: u32_field(header::NUM_RECORDS),
        }
    }
}

/// One function entry (`StkSizeRecord`), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawFunction {
    pub(crate) address: u64,
    pub(crate) stack_size: u64,
    pub(crate) record_count: u64,
}

impl RawFunction {
    pub(crate) fn decode(b: [u8; FUNCTION_SIZE]) -> Self {
        let u64_field = |at: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(word)
        };
        RawFunction {
            address: u64_field(function::ADDRESS),
            stack_size: u64_field(function::STACK_SIZE),
            record_count: u64_field(function::RECORD_COUNT),
        }
    }
}

/// One location, decoded but not interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawLocation {
    pub(crate) kind: u8,
    pub(crate) size: u16,
    pub(crate) dwarf_reg: u16,
    /// Offset (Direct, Indirect), small constant (Constant) or index (ConstantIndex).
    pub(crate) offset_or_constant: i32,
}

impl RawLocation {
    pub(crate) fn decode(b: [u8; LOCATION_SIZE]) -> Self {
        // Byte 1 and bytes 6..8 are reserved.
        RawLocation {
            kind: b[0],
            size: u16::from_le_bytes([b[2], b[3]]),
            dwarf_reg: u16::from_le_bytes([b[4], b[5]]),
            offset_or_constant: i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// One live-out, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawLiveOut {
    pub(crate) dwarf_reg: u16,
    pub(crate) size: u8,
}

impl RawLiveOut {
    pub(crate) fn decode(b: [u8; LIVE_OUT_SIZE]) -> Self {
        // Byte 2 is reserved.
        RawLiveOut {
            dwarf_reg: u16::from_le_bytes([b[0], b[1]]),
            size: b[3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let data = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(u16_at(&data, 0), Some(0x0201));
        assert_eq!(u32_at(&data, 4), Some(0x0807_0605));
        assert_eq!(u64_at(&data, 0), Some(0x0807_0605_0403_0201));
        assert_eq!(u64_at(&data, 1), None);
        assert_eq!(u16_at(&data, 7), None);
        assert_eq!(u16_at(&data, usize::MAX), None);
    }

    #[test]
    fn align_up_rounds_and_does_not_overflow() {
        assert_eq!(align_up(0), Some(0));
        assert_eq!(align_up(1), Some(8));
        assert_eq!(align_up(16), Some(16));
        assert_eq!(align_up(17), Some(24));
        assert_eq!(align_up(usize::MAX), None);
    }

    #[test]
    fn decodes_a_location() {
        let loc = RawLocation::decode([3, 0, 8, 0, 7, 0, 0, 0, 0xf8, 0xff, 0xff, 0xff]);
        assert_eq!(
            loc,
            RawLocation {
                kind: kind::INDIRECT,
                size: 8,
                dwarf_reg: 7,
                offset_or_constant: -8
            }
        );
    }
}
