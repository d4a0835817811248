//! The crate's one error type.

use std::fmt;

use crate::ids::DwarfReg;

/// Result type of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading stack maps, object files, `.eh_frame` or shadow-stack
/// frames.
///
/// Variants carry the offending offset (from the start of the section being read) or address and
/// the offending value, so that one line is enough to find the bad byte. New variants may be added.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The data ends before a field or structure: `size` bytes were needed at `offset`, but the
    /// data is only `len` bytes long.
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset of the first byte needed.
        offset: u64,
        /// Number of bytes needed from `offset`.
        size: u64,
        /// Length of the data.
        len: u64,
    },
    /// The stack map header names a version other than 3.
    UnsupportedVersion {
        /// The version byte found.
        version: u8,
    },
    /// A reserved header field that must be zero is not.
    ReservedNotZero {
        /// Offset of the field.
        offset: u64,
        /// Its value.
        value: u32,
    },
    /// A count whose entries cannot fit in the rest of the data (reported before anything is
    /// allocated for them).
    CountOverflow {
        /// What is counted.
        what: &'static str,
        /// Offset of the count field.
        offset: u64,
        /// The count.
        count: u64,
        /// Bytes left for the entries.
        available: u64,
    },
    /// The functions' record counts do not add up to the header's number of records.
    RecordCountMismatch {
        /// `NumRecords` in the header.
        num_records: u32,
        /// Sum of the functions' record counts (saturating).
        sum_of_function_counts: u64,
    },
    /// A length or an address that must be a multiple of `align` is not.
    Misaligned {
        /// The offending length, offset or address.
        offset: u64,
        /// The required alignment.
        align: u64,
    },
    /// Bytes follow the stack map in data that should hold exactly one.
    TrailingBytes {
        /// Offset where the stack map ended.
        offset: u64,
        /// Number of bytes after it.
        len: u64,
    },
    /// A location's kind byte is none of Register (1), Direct (2), Indirect (3), Constant (4),
    /// ConstantIndex (5).
    UnknownLocationKind {
        /// Offset of the location.
        offset: u64,
        /// The kind byte.
        kind: u8,
    },
    /// A `ConstantIndex` location names a constant that the map does not have.
    ConstantIndexOutOfRange {
        /// Offset of the location.
        offset: u64,
        /// The index found.
        index: u32,
        /// Number of constants in the map.
        num_constants: u32,
    },
    /// Function address plus instruction offset does not fit in 64 bits.
    AddressOverflow {
        /// The function's address.
        function_address: u64,
        /// The record's instruction offset.
        instruction_offset: u32,
    },
    /// A list of function addresses has the wrong length for the map.
    FunctionCountMismatch {
        /// Number of functions in the map.
        expected: u32,
        /// Number of addresses given.
        found: usize,
    },
    /// The object file could not be read.
    Object {
        /// The object reader's message.
        message: String,
    },
    /// The object file is not a 64-bit little-endian x86-64 ELF file.
    UnsupportedObject {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A section that the operation needs is missing.
    MissingSection {
        /// The section's name.
        name: &'static str,
    },
    /// A relocation this crate cannot apply (type, place or target).
    UnsupportedRelocation {
        /// The section being relocated.
        section: &'static str,
        /// Offset of the relocated field within that section.
        offset: u64,
        /// The ELF relocation type (`R_X86_64_*`), or 0 when not an ELF relocation.
        r_type: u32,
    },
    /// A relocated value does not fit its field.
    RelocationOverflow {
        /// The section being relocated.
        section: &'static str,
        /// Offset of the relocated field within that section.
        offset: u64,
        /// The value that does not fit.
        value: i128,
    },
    /// The `.eh_frame` data could not be parsed or evaluated.
    EhFrame {
        /// Offset in the section of the entry being read, or the address being queried.
        offset: u64,
        /// gimli's description of the problem.
        error: gimli::Error,
    },
    /// No FDE in `.eh_frame` covers this address.
    NoFdeForAddress {
        /// The address queried.
        address: u64,
    },
    /// The CFA at this address is given by a DWARF expression, which this crate does not evaluate.
    UnsupportedCfaRule {
        /// The address queried.
        address: u64,
    },
    /// A register's CFI rule at this address is one this crate does not represent (an
    /// expression, `val_offset`, architectural or constant rule).
    UnsupportedRegisterRule {
        /// The address queried.
        address: u64,
        /// The register.
        register: DwarfReg,
    },
    /// A pointer that must not be null is null.
    NullPointer {
        /// What the pointer is.
        what: &'static str,
        /// Address of the pointer field.
        address: u64,
    },
    /// A count that must not be negative is.
    NegativeCount {
        /// What is counted.
        what: &'static str,
        /// Address of the count field.
        address: u64,
        /// The value.
        value: i32,
    },
    /// A count exceeds the limit the reader accepts.
    CountTooLarge {
        /// What is counted.
        what: &'static str,
        /// Address of the count field.
        address: u64,
        /// The value.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// A memory reader could not read `len` bytes at `address`.
    Unreadable {
        /// First address wanted.
        address: u64,
        /// Number of bytes wanted.
        len: u64,
    },
    /// A shadow-stack chain is longer than the walk's limit, or loops.
    ChainTooLong {
        /// Address of the entry where the walk stopped.
        address: u64,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated {
                what,
                offset,
                size,
                len,
            } => write!(
                f,
                "truncated {what}: {size} bytes needed at offset {offset:#x}, but the data is {len} bytes long"
            ),
            Error::UnsupportedVersion { version } => write!(
                f,
                "unsupported stack map version {version} (only version 3 is supported)"
            ),
            Error::ReservedNotZero { offset, value } => {
                write!(
                    f,
                    "reserved field at offset {offset:#x} is {value:#x}, not 0"
                )
            }
            Error::CountOverflow {
                what,
                offset,
                count,
                available,
            } => write!(
                f,
                "{count} {what} (count at offset {offset:#x}) cannot fit in the {available} bytes left"
            ),
            Error::RecordCountMismatch {
                num_records,
                sum_of_function_counts,
            } => write!(
                f,
                "the header declares {num_records} records but the functions' record counts add up to {sum_of_function_counts}"
            ),
            Error::Misaligned { offset, align } => {
                write!(f, "{offset:#x} is not a multiple of {align}")
            }
            Error::TrailingBytes { offset, len } => {
                write!(
                    f,
                    "{len} unexpected bytes after the stack map at offset {offset:#x}"
                )
            }
            Error::UnknownLocationKind { offset, kind } => {
                write!(f, "unknown location kind {kind} at offset {offset:#x}")
            }
            Error::ConstantIndexOutOfRange {
                offset,
                index,
                num_constants,
            } => write!(
                f,
                "location at offset {offset:#x} names constant #{index}, but the map has {num_constants}"
            ),
            Error::AddressOverflow {
                function_address,
                instruction_offset,
            } => write!(
                f,
                "function address {function_address:#x} + instruction offset {instruction_offset:#x} overflows"
            ),
            Error::FunctionCountMismatch { expected, found } => write!(
                f,
                "{found} function addresses given for a map of {expected} functions"
            ),
            Error::Object { message } => write!(f, "object file: {message}"),
            Error::UnsupportedObject { reason } => {
                write!(f, "unsupported object file: {reason}")
            }
            Error::MissingSection { name } => write!(f, "no {name} section"),
            Error::UnsupportedRelocation {
                section,
                offset,
                r_type,
            } => write!(
                f,
                "unsupported relocation (type {r_type}) at offset {offset:#x} of {section}"
            ),
            Error::RelocationOverflow {
                section,
                offset,
                value,
            } => write!(
                f,
                "relocated value {value:#x} does not fit the field at offset {offset:#x} of {section}"
            ),
            Error::EhFrame { offset, error } => write!(f, ".eh_frame at {offset:#x}: {error}"),
            Error::NoFdeForAddress { address } => {
                write!(f, "no .eh_frame FDE covers address {address:#x}")
            }
            Error::UnsupportedCfaRule { address } => write!(
                f,
                "the CFA at {address:#x} is a DWARF expression, which is not supported"
            ),
            Error::UnsupportedRegisterRule { address, register } => write!(
                f,
                "unsupported CFI rule for register {register} at {address:#x}"
            ),
            Error::NullPointer { what, address } => {
                write!(f, "null {what} (field at {address:#x})")
            }
            Error::NegativeCount {
                what,
                address,
                value,
            } => write!(f, "negative {what} {value} (field at {address:#x})"),
            Error::CountTooLarge {
                what,
                address,
                value,
                max,
            } => write!(
                f,
                "{what} {value} exceeds the limit {max} (field at {address:#x})"
            ),
            Error::Unreadable { address, len } => {
                write!(f, "cannot read {len} bytes at {address:#x}")
            }
            Error::ChainTooLong { address, limit } => write!(
                f,
                "shadow-stack chain longer than {limit} entries, or looping (at {address:#x})"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<object::read::Error> for Error {
    fn from(error: object::read::Error) -> Self {
        Error::Object {
            message: error.to_string(),
        }
    }
}
