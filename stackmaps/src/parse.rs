//! Parsing a version-3 stack map once into an index of offsets, and typed accessors over the
//! borrowed bytes.
//!
//! [`StackMap::parse`] checks the whole layout up front (every count against the bytes left,
//! every record's locations, live-outs and padding, every location kind and constant index), so the
//! accessors afterwards are infallible and never read out of bounds.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::ids::ReturnAddress;
use crate::ids::{CodeOffset, ConstantIndex, DwarfReg, FunctionIndex, PatchpointId, RecordIndex};
use crate::lookup::AddressTable;
use crate::raw::{self, RawFunction, RawHeader, RawLiveOut, RawLocation};

/// A parsed version-3 LLVM stack map (the contents of one `.llvm_stackmaps` section, or one of
/// the maps a linker concatenated into it).
///
/// It borrows the section bytes: parsing builds only an index of record offsets, the record to
/// function mapping and a table sorted by return address for [`StackMap::lookup`].
#[derive(Clone, Debug)]
pub struct StackMap<'data> {
    /// Exactly the bytes of this map.
    data: &'data [u8],
    header: RawHeader,
    /// Absolute address of each function: the raw field unless replaced by
    /// [`StackMap::with_function_addresses`] (relocations of an object file, say).
    function_addresses: Vec<u64>,
    /// Index of each function's first record, plus one past the last record at the end.
    function_first_record: Vec<u32>,
    constants_offset: usize,
    records: Vec<RecordEntry>,
    by_address: AddressTable,
}

/// Where a record lies, found while validating it.
#[derive(Clone, Copy, Debug)]
struct RecordEntry {
    /// Offset of the record in the map.
    offset: usize,
    /// The function that the record belongs to.
    function: u32,
    num_locations: u16,
    /// Offset of the first live-out in the map.
    live_outs_offset: usize,
    num_live_outs: u16,
    /// Size of the record including padding.
    size: usize,
}

/// Builds errors with offsets relative to the whole input, for maps that start inside it.
struct Input<'data> {
    data: &'data [u8],
    /// Offset of `data` in the whole input.
    base: usize,
    /// Length of the whole input.
    total_len: usize,
}

impl<'data> Input<'data> {
    fn array<const N: usize>(&self, offset: usize, what: &'static str) -> Result<[u8; N]> {
        raw::array_at(self.data, offset).ok_or_else(|| self.truncated(what, offset, N as u64))
    }

    fn truncated(&self, what: &'static str, offset: usize, size: u64) -> Error {
        Error::Truncated {
            what,
            offset: self.abs(offset),
            size,
            len: self.total_len as u64,
        }
    }

    /// Checks that `size` bytes are present at `offset`, returning the end offset.
    fn span(&self, offset: usize, size: usize, what: &'static str) -> Result<usize> {
        match offset.checked_add(size) {
            Some(end) if end <= self.data.len() => Ok(end),
            _ => Err(self.truncated(what, offset, size as u64)),
        }
    }

    fn abs(&self, offset: usize) -> u64 {
        (self.base as u64).saturating_add(offset as u64)
    }

    /// Checks that `count` entries of `entry_size` bytes fit from `offset` on.
    fn count_fits(
        &self,
        what: &'static str,
        count_field: usize,
        count: u32,
        entry_size: usize,
        offset: usize,
    ) -> Result<usize> {
        let available = self.data.len().saturating_sub(offset);
        let needed = u64::from(count) * entry_size as u64;
        if needed > available as u64 {
            return Err(Error::CountOverflow {
                what,
                offset: self.abs(count_field),
                count: u64::from(count),
                available: available as u64,
            });
        }
        // `needed` fits in `available`, a usize.
        Ok(offset + needed as usize)
    }
}

impl<'data> StackMap<'data> {
    /// Parses a section that holds exactly one stack map, as a JIT memory manager captures it
    /// (function addresses already relocated).
    ///
    /// Fails if the map is malformed, if bytes follow it ([`Error::TrailingBytes`]), or if the
    /// section's length is not a multiple of 8 ([`Error::Misaligned`]): every part of a version-3
    /// map is padded to 8 bytes.
    pub fn parse(section: &'data [u8]) -> Result<Self> {
        let map = Self::parse_at(section, 0)?;
        if section.len() % raw::ALIGN != 0 {
            return Err(Error::Misaligned {
                offset: section.len() as u64,
                align: raw::ALIGN as u64,
            });
        }
        if map.data.len() != section.len() {
            return Err(Error::TrailingBytes {
                offset: map.data.len() as u64,
                len: (section.len() - map.data.len()) as u64,
            });
        }
        Ok(map)
    }

    /// Parses the stack map at the start of `data` and ignores whatever follows it, as
    /// `llvm-readobj` does. [`StackMap::size`] tells where the map ended.
    pub fn parse_first(data: &'data [u8]) -> Result<Self> {
        Self::parse_at(data, 0)
    }

    /// Parses every stack map in `data`, one after the other: a linker concatenates the
    /// `.llvm_stackmaps` sections of its inputs, each with its own header. Empty data holds no
    /// maps.
    pub fn parse_all(data: &'data [u8]) -> Result<Vec<Self>> {
        if data.len() % raw::ALIGN != 0 {
            return Err(Error::Misaligned {
                offset: data.len() as u64,
                align: raw::ALIGN as u64,
            });
        }
        let mut maps = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let map = Self::parse_at(data, start)?;
            start += map.data.len();
            maps.push(map);
        }
        Ok(maps)
    }

    fn parse_at(whole: &'data [u8], start: usize) -> Result<Self> {
        let input = Input {
            data: whole.get(start..).unwrap_or_default(),
            base: start,
            total_len: whole.len(),
        };
        let header = RawHeader::decode(input.array(0, "stack map header")?);
        if header.version != raw::VERSION {
            return Err(Error::UnsupportedVersion {
                version: header.version,
            });
        }
        if header.reserved0 != 0 {
            return Err(Error::ReservedNotZero {
                offset: input.abs(raw::header::RESERVED0),
                value: header.reserved0.into(),
            });
        }
        if header.reserved1 != 0 {
            return Err(Error::ReservedNotZero {
                offset: input.abs(raw::header::RESERVED1),
                value: header.reserved1.into(),
            });
        }

        let functions_offset = raw::HEADER_SIZE;
        let constants_offset = input.count_fits(
            "functions",
            raw::header::NUM_FUNCTIONS,
            header.num_functions,
            raw::FUNCTION_SIZE,
            functions_offset,
        )?;
        let records_offset = input.count_fits(
            "constants",
            raw::header::NUM_CONSTANTS,
            header.num_constants,
            raw::CONSTANT_SIZE,
            constants_offset,
        )?;
        input.count_fits(
            "records",
            raw::header::NUM_RECORDS,
            header.num_records,
            raw::MIN_RECORD_SIZE,
            records_offset,
        )?;

        // Records belong to functions in order, `record_count` each.
        let mut function_addresses = Vec::with_capacity(header.num_functions as usize);
        let mut function_first_record = Vec::with_capacity(header.num_functions as usize + 1);
        let mut sum: u64 = 0;
        for i in 0..header.num_functions as usize {
            let offset = functions_offset + i * raw::FUNCTION_SIZE;
            let function = RawFunction::decode(input.array(offset, "function")?);
            function_addresses.push(function.address);
            function_first_record.push(u32::try_from(sum).unwrap_or(u32::MAX));
            sum = sum.saturating_add(function.record_count);
        }
        if sum != u64::from(header.num_records) {
            return Err(Error::RecordCountMismatch {
                num_records: header.num_records,
                sum_of_function_counts: sum,
            });
        }
        function_first_record.push(header.num_records);

        let mut records = Vec::with_capacity(header.num_records as usize);
        let mut offset = records_offset;
        let mut function = 0usize;
        for index in 0..header.num_records {
            // Skip functions without records; the counts add up, so one is found.
            while function_first_record
                .get(function + 1)
                .is_some_and(|&next| next <= index)
            {
                function += 1;
            }
            let entry = parse_record(&input, offset, header.num_constants, function as u32)?;
            offset += entry.size;
            records.push(entry);
        }

        let mut map = StackMap {
            data: input.data.get(..offset).unwrap_or_default(),
            header,
            function_addresses,
            function_first_record,
            constants_offset,
            records,
            by_address: AddressTable::default(),
        };
        map.by_address = AddressTable::build(&map)?;
        Ok(map)
    }

    /// Replaces the function addresses, for maps whose address fields are not final: the fields
    /// of a relocatable object file are 0 until relocated, for example (see
    /// [`StackMap::from_object`]). `addresses` has one entry per function, in order. Rebuilds the
    /// return-address table.
    pub fn with_function_addresses(mut self, addresses: Vec<u64>) -> Result<Self> {
        if addresses.len() != self.function_addresses.len() {
            return Err(Error::FunctionCountMismatch {
                expected: self.header.num_functions,
                found: addresses.len(),
            });
        }
        self.function_addresses = addresses;
        self.by_address = AddressTable::build(&self)?;
        Ok(self)
    }

    /// The bytes of this map, from its header to the end of its last record.
    pub fn data(&self) -> &'data [u8] {
        self.data
    }

    /// Size of this map in bytes.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// The format version: always 3.
    pub fn version(&self) -> u8 {
        self.header.version
    }

    /// Number of functions (`NumFunctions`).
    pub fn num_functions(&self) -> u32 {
        self.header.num_functions
    }

    /// Number of large constants (`NumConstants`).
    pub fn num_constants(&self) -> u32 {
        self.header.num_constants
    }

    /// Number of call-site records (`NumRecords`).
    pub fn num_records(&self) -> u32 {
        self.header.num_records
    }

    /// The function at `index`, if there is one.
    pub fn function(&self, index: FunctionIndex) -> Option<Function<'_, 'data>> {
        (index.0 < self.header.num_functions).then_some(Function { map: self, index })
    }

    /// All functions, in section order.
    pub fn functions(&self) -> Functions<'_, 'data> {
        Functions {
            map: self,
            range: 0..self.header.num_functions,
        }
    }

    /// The large constant at `index`, if there is one.
    pub fn constant(&self, index: ConstantIndex) -> Option<u64> {
        if index.0 >= self.header.num_constants {
            return None;
        }
        raw::u64_at(
            self.data,
            self.constants_offset + index.0 as usize * raw::CONSTANT_SIZE,
        )
    }

    /// All large constants, in section order.
    pub fn constants(&self) -> Constants<'_, 'data> {
        Constants {
            map: self,
            range: 0..self.header.num_constants,
        }
    }

    /// The record at `index`, if there is one.
    pub fn record(&self, index: RecordIndex) -> Option<Record<'_, 'data>> {
        let entry = self.records.get(index.0 as usize)?;
        Some(Record {
            map: self,
            index,
            entry,
        })
    }

    /// All records, in section order (grouped by function).
    pub fn records(&self) -> Records<'_, 'data> {
        Records {
            map: self,
            range: 0..self.header.num_records,
        }
    }

    pub(crate) fn function_address(&self, index: u32) -> u64 {
        self.function_addresses
            .get(index as usize)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn raw_function(&self, index: u32) -> RawFunction {
        raw::array_at(
            self.data,
            raw::HEADER_SIZE + index as usize * raw::FUNCTION_SIZE,
        )
        .map(RawFunction::decode)
        .unwrap_or(RawFunction {
            address: 0,
            stack_size: 0,
            record_count: 0,
        })
    }

    pub(crate) fn by_address(&self) -> &AddressTable {
        &self.by_address
    }
}

/// Validates the record at `offset` and says where its parts are.
fn parse_record(
    input: &Input<'_>,
    offset: usize,
    num_constants: u32,
    function: u32,
) -> Result<RecordEntry> {
    let header: [u8; raw::RECORD_HEADER_SIZE] = input.array(offset, "record header")?;
    let num_locations = u16::from_le_bytes([
        header[raw::record::NUM_LOCATIONS],
        header[raw::record::NUM_LOCATIONS + 1],
    ]);
    let locations_offset = offset + raw::RECORD_HEADER_SIZE;
    let locations_end = input.span(
        locations_offset,
        usize::from(num_locations) * raw::LOCATION_SIZE,
        "locations",
    )?;
    for i in 0..usize::from(num_locations) {
        let at = locations_offset + i * raw::LOCATION_SIZE;
        let location = RawLocation::decode(input.array(at, "location")?);
        match location.kind {
            raw::kind::REGISTER | raw::kind::DIRECT | raw::kind::INDIRECT | raw::kind::CONSTANT => {
            }
            raw::kind::CONSTANT_INDEX => {
                let index = location.offset_or_constant as u32;
                if index >= num_constants {
                    return Err(Error::ConstantIndexOutOfRange {
                        offset: input.abs(at),
                        index,
                        num_constants,
                    });
                }
            }
            kind => {
                return Err(Error::UnknownLocationKind {
                    offset: input.abs(at),
                    kind,
                });
            }
        }
    }

    // Padding to 8, then a u16 of padding and the u16 live-out count.
    let live_out_header = raw::align_up(locations_end)
        .ok_or_else(|| input.truncated("live-out count", locations_end, 4))?;
    let count: [u8; raw::LIVE_OUT_HEADER_SIZE] = input.array(live_out_header, "live-out count")?;
    let num_live_outs = u16::from_le_bytes([count[2], count[3]]);
    let live_outs_offset = live_out_header + raw::LIVE_OUT_HEADER_SIZE;
    let live_outs_end = input.span(
        live_outs_offset,
        usize::from(num_live_outs) * raw::LIVE_OUT_SIZE,
        "live-outs",
    )?;
    let end = raw::align_up(live_outs_end)
        .ok_or_else(|| input.truncated("record padding", live_outs_end, 4))?;
    input.span(live_outs_end, end - live_outs_end, "record padding")?;

    Ok(RecordEntry {
        offset,
        function,
        num_locations,
        live_outs_offset,
        num_live_outs,
        size: end - offset,
    })
}

/// One function entry: its address, frame size and records.
#[derive(Clone, Copy, Debug)]
pub struct Function<'a, 'data> {
    map: &'a StackMap<'data>,
    index: FunctionIndex,
}

impl<'a, 'data> Function<'a, 'data> {
    /// Its index in the map.
    pub fn index(&self) -> FunctionIndex {
        self.index
    }

    /// The function's address: the raw field, unless the map's function addresses were replaced
    /// (relocations of an object file; see [`StackMap::with_function_addresses`]).
    pub fn address(&self) -> u64 {
        self.map.function_address(self.index.0)
    }

    /// The function address field exactly as stored in the section (what `llvm-readobj` prints;
    /// 0 in a relocatable object file).
    pub fn raw_address(&self) -> u64 {
        self.map.raw_function(self.index.0).address
    }

    /// Size of the function's stack frame, in bytes (`u64::MAX` if dynamic).
    pub fn stack_size(&self) -> u64 {
        self.map.raw_function(self.index.0).stack_size
    }

    /// Number of records that belong to this function.
    pub fn record_count(&self) -> u64 {
        self.map.raw_function(self.index.0).record_count
    }

    /// The records that belong to this function, in order.
    pub fn records(&self) -> Records<'a, 'data> {
        let first = &self.map.function_first_record;
        let i = self.index.0 as usize;
        let start = first.get(i).copied().unwrap_or_default();
        let end = first.get(i + 1).copied().unwrap_or(start);
        Records {
            map: self.map,
            range: start..end,
        }
    }
}

/// One call-site record: ID, place, and where each value lives.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a, 'data> {
    map: &'a StackMap<'data>,
    index: RecordIndex,
    entry: &'a RecordEntry,
}

impl<'a, 'data> Record<'a, 'data> {
    /// Its index in the map.
    pub fn index(&self) -> RecordIndex {
        self.index
    }

    /// The patchpoint ID (`PatchPoint ID`); several records may share one.
    pub fn id(&self) -> PatchpointId {
        PatchpointId(self.u64_field(raw::record::ID))
    }

    /// Offset of the instruction from the start of the function.
    pub fn instruction_offset(&self) -> CodeOffset {
        CodeOffset(self.u32_field(raw::record::INSTRUCTION_OFFSET))
    }

    /// The record flags (reserved; LLVM writes 0).
    pub fn flags(&self) -> u16 {
        raw::u16_at(self.map.data, self.entry.offset + raw::record::FLAGS).unwrap_or_default()
    }

    /// The function this record belongs to.
    pub fn function(&self) -> Function<'a, 'data> {
        Function {
            map: self.map,
            index: FunctionIndex(self.entry.function),
        }
    }

    /// Function address plus instruction offset: for a call site, the call's return address.
    pub fn return_address(&self) -> ReturnAddress {
        // AddressTable::build checked that this does not overflow.
        ReturnAddress(
            self.function()
                .address()
                .wrapping_add(u64::from(self.instruction_offset().0)),
        )
    }

    /// Number of locations.
    pub fn num_locations(&self) -> u16 {
        self.entry.num_locations
    }

    /// The location at `index`, if there is one.
    pub fn location(&self, index: u16) -> Option<Location> {
        (index < self.entry.num_locations).then(|| {
            decode_location(
                self.map,
                self.entry.offset
                    + raw::RECORD_HEADER_SIZE
                    + usize::from(index) * raw::LOCATION_SIZE,
            )
        })
    }

    /// The locations, in operand order.
    pub fn locations(&self) -> Locations<'a, 'data> {
        Locations {
            map: self.map,
            offset: self.entry.offset + raw::RECORD_HEADER_SIZE,
            range: 0..self.entry.num_locations,
        }
    }

    /// Number of live-outs.
    pub fn num_live_outs(&self) -> u16 {
        self.entry.num_live_outs
    }

    /// The live-outs: registers live across a patchpoint.
    pub fn live_outs(&self) -> LiveOuts<'data> {
        LiveOuts {
            data: self.map.data,
            offset: self.entry.live_outs_offset,
            range: 0..self.entry.num_live_outs,
        }
    }

    /// Offset of the record from the start of the map.
    pub fn offset(&self) -> usize {
        self.entry.offset
    }

    /// The record's bytes, padding included.
    pub fn bytes(&self) -> &'data [u8] {
        let data: &'data [u8] = self.map.data;
        data.get(self.entry.offset..self.entry.offset + self.entry.size)
            .unwrap_or_default()
    }

    fn u64_field(&self, field: usize) -> u64 {
        raw::u64_at(self.map.data, self.entry.offset + field).unwrap_or_default()
    }

    fn u32_field(&self, field: usize) -> u32 {
        raw::u32_at(self.map.data, self.entry.offset + field).unwrap_or_default()
    }
}

/// The kind of a [`Location`], as encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocationKind {
    /// 1: the value is in a register.
    Register,
    /// 2: the value is a frame address: register plus offset.
    Direct,
    /// 3: the value is in memory at register plus offset (a spill slot).
    Indirect,
    /// 4: the value is a small constant.
    Constant,
    /// 5: the value is a large constant in the constant pool.
    ConstantIndex,
}

/// Where one live value is, at a record's instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// In register `reg`.
    Register {
        /// The register.
        reg: DwarfReg,
        /// Size of the value in bytes.
        size: u16,
    },
    /// The value is the address `reg + offset` (an `alloca`).
    Direct {
        /// The base register.
        reg: DwarfReg,
        /// The offset from it.
        offset: i32,
        /// Size of the value in bytes.
        size: u16,
    },
    /// The value is in memory at `[reg + offset]`.
    Indirect {
        /// The base register.
        reg: DwarfReg,
        /// The offset from it.
        offset: i32,
        /// Size of the value in bytes.
        size: u16,
    },
    /// The value is a constant that fits in 32 bits (sign-extended to the value's size).
    Constant {
        /// The constant.
        value: i32,
        /// Size of the value in bytes.
        size: u16,
    },
    /// The value is the large constant `value`, entry `index` of the constant pool.
    ConstantIndex {
        /// Index into the constant pool.
        index: ConstantIndex,
        /// The constant itself.
        value: u64,
        /// Size of the value in bytes.
        size: u16,
    },
}

impl Location {
    /// The kind of location.
    pub fn kind(&self) -> LocationKind {
        match self {
            Location::Register { .. } => LocationKind::Register,
            Location::Direct { .. } => LocationKind::Direct,
            Location::Indirect { .. } => LocationKind::Indirect,
            Location::Constant { .. } => LocationKind::Constant,
            Location::ConstantIndex { .. } => LocationKind::ConstantIndex,
        }
    }

    /// Size of the value in bytes.
    pub fn size(&self) -> u16 {
        match *self {
            Location::Register { size, .. }
            | Location::Direct { size, .. }
            | Location::Indirect { size, .. }
            | Location::Constant { size, .. }
            | Location::ConstantIndex { size, .. } => size,
        }
    }

    /// The register, for Register, Direct and Indirect locations.
    pub fn register(&self) -> Option<DwarfReg> {
        match *self {
            Location::Register { reg, .. }
            | Location::Direct { reg, .. }
            | Location::Indirect { reg, .. } => Some(reg),
            Location::Constant { .. } | Location::ConstantIndex { .. } => None,
        }
    }

    /// The constant, for Constant (sign-extended to 64 bits) and ConstantIndex locations.
    pub fn constant(&self) -> Option<u64> {
        match *self {
            Location::Constant { value, .. } => Some(i64::from(value) as u64),
            Location::ConstantIndex { value, .. } => Some(value),
            _ => None,
        }
    }
}

fn decode_location(map: &StackMap<'_>, offset: usize) -> Location {
    let raw = raw::array_at(map.data, offset)
        .map(RawLocation::decode)
        .unwrap_or(RawLocation {
            kind: raw::kind::CONSTANT,
            size: 0,
            dwarf_reg: 0,
            offset_or_constant: 0,
        });
    let reg = DwarfReg(raw.dwarf_reg);
    let size = raw.size;
    let offset = raw.offset_or_constant;
    match raw.kind {
        raw::kind::REGISTER => Location::Register { reg, size },
        raw::kind::DIRECT => Location::Direct { reg, offset, size },
        raw::kind::INDIRECT => Location::Indirect { reg, offset, size },
        raw::kind::CONSTANT_INDEX => {
            let index = ConstantIndex(offset as u32);
            Location::ConstantIndex {
                index,
                value: map.constant(index).unwrap_or_default(),
                size,
            }
        }
        // Parsing rejected every other kind.
        _ => Location::Constant {
            value: offset,
            size,
        },
    }
}

/// A register live across a patchpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LiveOut {
    /// The register.
    pub reg: DwarfReg,
    /// Size of its live part in bytes.
    pub size: u8,
}

/// Iterator over a map's functions.
#[derive(Clone, Debug)]
pub struct Functions<'a, 'data> {
    map: &'a StackMap<'data>,
    range: Range<u32>,
}

impl<'a, 'data> Iterator for Functions<'a, 'data> {
    type Item = Function<'a, 'data>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.range.next()?;
        Some(Function {
            map: self.map,
            index: FunctionIndex(index),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Functions<'_, '_> {}

/// Iterator over a map's large constants.
#[derive(Clone, Debug)]
pub struct Constants<'a, 'data> {
    map: &'a StackMap<'data>,
    range: Range<u32>,
}

impl Iterator for Constants<'_, '_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let index = self.range.next()?;
        self.map.constant(ConstantIndex(index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Constants<'_, '_> {}

/// Iterator over records (of a map, or of one function).
#[derive(Clone, Debug)]
pub struct Records<'a, 'data> {
    map: &'a StackMap<'data>,
    range: Range<u32>,
}

impl<'a, 'data> Iterator for Records<'a, 'data> {
    type Item = Record<'a, 'data>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.range.next()?;
        self.map.record(RecordIndex(index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl DoubleEndedIterator for Records<'_, '_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let index = self.range.next_back()?;
        self.map.record(RecordIndex(index))
    }
}

impl ExactSizeIterator for Records<'_, '_> {}

/// Iterator over a record's locations.
#[derive(Clone, Debug)]
pub struct Locations<'a, 'data> {
    map: &'a StackMap<'data>,
    /// Offset of the first location.
    offset: usize,
    range: Range<u16>,
}

impl Iterator for Locations<'_, '_> {
    type Item = Location;

    fn next(&mut self) -> Option<Location> {
        let index = self.range.next()?;
        Some(decode_location(
            self.map,
            self.offset + usize::from(index) * raw::LOCATION_SIZE,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Locations<'_, '_> {}

/// Iterator over a record's live-outs.
#[derive(Clone, Debug)]
pub struct LiveOuts<'data> {
    data: &'data [u8],
    /// Offset of the first live-out.
    offset: usize,
    range: Range<u16>,
}

impl Iterator for LiveOuts<'_> {
    type Item = LiveOut;

    fn next(&mut self) -> Option<LiveOut> {
        let index = self.range.next()?;
        let raw = raw::array_at(
            self.data,
            self.offset + usize::from(index) * raw::LIVE_OUT_SIZE,
        )
        .map(RawLiveOut::decode)?;
        Some(LiveOut {
            reg: DwarfReg(raw.dwarf_reg),
            size: raw.size,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for LiveOuts<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::StackMapBuilder;

    /// Three functions (the middle one without records), two constants, every location kind,
    /// live-outs, and records whose location lists need padding and whose lists do not.
    fn sample() -> Vec<u8> {
        let mut b = StackMapBuilder::new();
        let big = b.constant(10_000_000_000);
        let other = b.constant(u64::MAX);
        b.function(0x1000, 40);
        b.record(
            PatchpointId(1),
            CodeOffset(0x10),
            &[
                Location::Register {
                    reg: DwarfReg::RBX,
                    size: 8,
                },
                Location::Direct {
                    reg: DwarfReg::RBP,
                    offset: -16,
                    size: 8,
                },
                Location::Indirect {
                    reg: DwarfReg::RSP,
                    offset: 24,
                    size: 4,
                },
            ],
            &[],
        );
        b.record(
            PatchpointId(1),
            CodeOffset(0x30),
            &[
                Location::Constant { value: -5, size: 8 },
                Location::ConstantIndex {
                    index: big,
                    value: 0,
                    size: 8,
                },
            ],
            &[
                LiveOut {
                    reg: DwarfReg::RAX,
                    size: 8,
                },
                LiveOut {
                    reg: DwarfReg(17),
                    size: 16,
                },
            ],
        );
        b.function(0x2000, 8);
        b.function(0x3000, 16);
        b.record(
            PatchpointId(9),
            CodeOffset(4),
            &[Location::ConstantIndex {
                index: other,
                value: 0,
                size: 8,
            }],
            &[LiveOut {
                reg: DwarfReg::R12,
                size: 8,
            }],
        );
        b.build()
    }

    /// Offset of the first record in `sample()`.
    const RECORDS: usize = raw::HEADER_SIZE + 3 * raw::FUNCTION_SIZE + 2 * raw::CONSTANT_SIZE;

    #[test]
    fn parses_everything_in_a_valid_map() {
        let bytes = sample();
        let map = StackMap::parse(&bytes).unwrap();
        assert_eq!(map.version(), 3);
        assert_eq!(
            (map.num_functions(), map.num_constants(), map.num_records()),
            (3, 2, 3)
        );
        assert_eq!(map.size(), bytes.len());
        assert_eq!(
            map.constants().collect::<Vec<_>>(),
            [10_000_000_000, u64::MAX]
        );

        let functions: Vec<_> = map.functions().collect();
        assert_eq!(functions.len(), 3);
        assert_eq!(functions[1].address(), 0x2000);
        assert_eq!(functions[1].stack_size(), 8);
        assert_eq!(functions[1].records().count(), 0);
        assert_eq!(
            functions[2].records().map(|r| r.id()).collect::<Vec<_>>(),
            [PatchpointId(9)]
        );

        let records: Vec<_> = map.records().collect();
        assert_eq!(records[0].offset(), RECORDS);
        // 16 + 3 * 12 = 52, padded to 56, + 4 = 60, padded to 64.
        assert_eq!(records[0].bytes().len(), 64);
        assert_eq!(records[0].function().index(), FunctionIndex(0));
        assert_eq!(records[1].function().index(), FunctionIndex(0));
        assert_eq!(records[2].function().index(), FunctionIndex(2));
        assert_eq!(records[1].return_address(), ReturnAddress(0x1030));
        assert_eq!(records[2].return_address(), ReturnAddress(0x3004));
        assert_eq!(records[0].flags(), 0);
        assert_eq!(
            records[0].locations().collect::<Vec<_>>(),
            [
                Location::Register {
                    reg: DwarfReg::RBX,
                    size: 8
                },
                Location::Direct {
                    reg: DwarfReg::RBP,
                    offset: -16,
                    size: 8
                },
                Location::Indirect {
                    reg: DwarfReg::RSP,
                    offset: 24,
                    size: 4
                },
            ]
        );
        let constants: Vec<_> = records[1].locations().map(|l| l.constant()).collect();
        assert_eq!(constants, [Some(-5i64 as u64), Some(10_000_000_000)]);
        assert_eq!(
            records[1].location(1).map(|l| l.kind()),
            Some(LocationKind::ConstantIndex)
        );
        assert_eq!(records[1].location(2), None);
        assert_eq!(records[1].live_outs().len(), 2);
        assert_eq!(
            records[1].live_outs().nth(1),
            Some(LiveOut {
                reg: DwarfReg(17),
                size: 16
            })
        );
        assert_eq!(
            records[2].location(0).and_then(|l| l.constant()),
            Some(u64::MAX)
        );
        assert_eq!(map.record(RecordIndex(3)).map(|r| r.index()), None);
        assert!(map.function(FunctionIndex(3)).is_none());
        assert_eq!(map.constant(ConstantIndex(2)), None);
        assert_eq!(
            map.records().next_back().map(|r| r.index()),
            Some(RecordIndex(2))
        );
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let prefix = &bytes[..len];
            assert!(
                StackMap::parse(prefix).is_err(),
                "prefix of {len} bytes parsed"
            );
            assert!(StackMap::parse_first(prefix).is_err());
            let _ = StackMap::parse_all(prefix);
        }
        assert_eq!(
            StackMap::parse(&bytes[..15]).unwrap_err(),
            Error::Truncated {
                what: "stack map header",
                offset: 0,
                size: 16,
                len: 15
            }
        );
        // The last record: 16 + 12 = 28, padded to 32; live-out count at 32; one live-out at 36.
        let record = bytes.len() - 40;
        for (cut, what, offset, size) in [
            (4, "live-outs", 36, 4),
            (8, "live-out count", 32, 4),
            (12, "live-out count", 32, 4),
            (16, "locations", 16, 12),
        ] {
            assert_eq!(
                StackMap::parse(&bytes[..bytes.len() - cut]).unwrap_err(),
                Error::Truncated {
                    what,
                    offset: (record + offset) as u64,
                    size,
                    len: (bytes.len() - cut) as u64
                },
                "cut {cut}"
            );
        }
    }

    #[test]
    fn the_last_record_needs_its_padding() {
        // 16 + 2 * 12 = 40 (aligned), live-out count at 40..44, padding 44..48.
        let mut b = StackMapBuilder::new();
        b.record(
            PatchpointId(1),
            CodeOffset(0),
            &[Location::Constant { value: 1, size: 8 }; 2],
            &[],
        );
        let bytes = b.build();
        let record = bytes.len() - 48;
        assert_eq!(
            StackMap::parse(&bytes[..bytes.len() - 4]).unwrap_err(),
            Error::Truncated {
                what: "record padding",
                offset: (record + 44) as u64,
                size: 4,
                len: (bytes.len() - 4) as u64
            }
        );
    }

    #[test]
    fn every_single_byte_change_is_ok_or_an_error() {
        let bytes = sample();
        for at in 0..bytes.len() {
            for value in [0x00, 0x01, 0x05, 0x06, 0x7f, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[at] = value;
                if let Ok(map) = StackMap::parse(&changed) {
                    for record in map.records() {
                        let _ = record.locations().count() + record.live_outs().count();
                        let _ = map.lookup(record.return_address());
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_version() {
        let mut bytes = sample();
        bytes[0] = 2;
        assert_eq!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::UnsupportedVersion { version: 2 }
        );
    }

    #[test]
    fn reserved_header_fields_must_be_zero() {
        let mut bytes = sample();
        bytes[2] = 1;
        assert_eq!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::ReservedNotZero {
                offset: 2,
                value: 1
            }
        );
    }

    #[test]
    fn counts_that_overflow_the_section() {
        for (field, what) in [(4, "functions"), (8, "constants"), (12, "records")] {
            let mut bytes = sample();
            bytes[field..field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            match StackMap::parse(&bytes).unwrap_err() {
                Error::CountOverflow {
                    what: found,
                    offset,
                    count,
                    ..
                } => {
                    assert_eq!(
                        (found, offset, count),
                        (what, field as u64, u64::from(u32::MAX))
                    );
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn record_counts_must_add_up() {
        let mut bytes = sample();
        // First function claims 5 records.
        let field = raw::HEADER_SIZE + raw::function::RECORD_COUNT;
        bytes[field..field + 8].copy_from_slice(&5u64.to_le_bytes());
        assert_eq!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::RecordCountMismatch {
                num_records: 3,
                sum_of_function_counts: 6
            }
        );
        bytes[field..field + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::RecordCountMismatch {
                sum_of_function_counts: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn unknown_location_kind() {
        for kind in [0, 6, 0xff] {
            let mut bytes = sample();
            let location = RECORDS + raw::RECORD_HEADER_SIZE + raw::LOCATION_SIZE;
            bytes[location] = kind;
            assert_eq!(
                StackMap::parse(&bytes).unwrap_err(),
                Error::UnknownLocationKind {
                    offset: location as u64,
                    kind
                }
            );
        }
    }

    #[test]
    fn constant_index_out_of_range() {
        let mut bytes = sample();
        // The second record's second location is ConstantIndex #0.
        let location = RECORDS + 64 + raw::RECORD_HEADER_SIZE + raw::LOCATION_SIZE;
        assert_eq!(bytes[location], raw::kind::CONSTANT_INDEX);
        bytes[location + 8..location + 12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::ConstantIndexOutOfRange {
                offset: location as u64,
                index: 2,
                num_constants: 2
            }
        );
    }

    #[test]
    fn misaligned_and_trailing_input() {
        let mut bytes = sample();
        let len = bytes.len();
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::Misaligned {
                offset: len as u64 + 4,
                align: 8
            }
        );
        assert!(matches!(
            StackMap::parse_all(&bytes),
            Err(Error::Misaligned { .. })
        ));
        bytes.extend_from_slice(&[0; 4]);
        assert_eq!(
            StackMap::parse(&bytes).unwrap_err(),
            Error::TrailingBytes {
                offset: len as u64,
                len: 8
            }
        );
        // `parse_first` reads the map and ignores what follows, as llvm-readobj does.
        assert_eq!(StackMap::parse_first(&bytes).unwrap().size(), len);
    }

    #[test]
    fn concatenated_maps() {
        let first = sample();
        let mut b = StackMapBuilder::new();
        b.function(0x9000, 0);
        b.record(PatchpointId(3), CodeOffset(1), &[], &[]);
        let second = b.build();
        let mut bytes = first.clone();
        bytes.extend_from_slice(&second);
        let maps = StackMap::parse_all(&bytes).unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].data(), &first[..]);
        assert_eq!(maps[1].data(), &second[..]);
        assert_eq!(
            maps[1].lookup(ReturnAddress(0x9001)).map(|r| r.id()),
            Some(PatchpointId(3))
        );
        assert!(StackMap::parse_all(&[]).unwrap().is_empty());

        // Errors in a later map carry offsets in the whole input.
        bytes[first.len()] = 9;
        assert_eq!(
            StackMap::parse_all(&bytes).unwrap_err(),
            Error::UnsupportedVersion { version: 9 }
        );
        bytes[first.len()] = 3;
        bytes[first.len() + 12] = 2; // NumRecords 1 -> 2
        assert!(matches!(
            StackMap::parse_all(&bytes).unwrap_err(),
            Error::CountOverflow { offset, .. } if offset == first.len() as u64 + 12
        ));
    }

    #[test]
    fn address_overflow_and_function_addresses() {
        let mut b = StackMapBuilder::new();
        b.function(u64::MAX, 0);
        b.record(PatchpointId(0), CodeOffset(1), &[], &[]);
        assert_eq!(
            StackMap::parse(&b.build()).unwrap_err(),
            Error::AddressOverflow {
                function_address: u64::MAX,
                instruction_offset: 1
            }
        );

        let bytes = sample();
        let map = StackMap::parse(&bytes).unwrap();
        assert_eq!(
            map.clone().with_function_addresses(vec![1]).unwrap_err(),
            Error::FunctionCountMismatch {
                expected: 3,
                found: 1
            }
        );
        let map = map
            .with_function_addresses(vec![0x10_0000, 0x20_0000, 0x30_0000])
            .unwrap();
        let first = map.functions().next().unwrap();
        assert_eq!((first.address(), first.raw_address()), (0x10_0000, 0x1000));
        assert_eq!(
            map.lookup(ReturnAddress(0x10_0030)).map(|r| r.index()),
            Some(RecordIndex(1))
        );
        assert!(map.lookup(ReturnAddress(0x1030)).is_none());
    }

    #[test]
    fn empty_map() {
        let bytes = StackMapBuilder::new().build();
        let map = StackMap::parse(&bytes).unwrap();
        assert_eq!(map.records().count(), 0);
        assert_eq!(map.functions().count(), 0);
        assert!(map.lookup(ReturnAddress(0)).is_none());
    }
}
