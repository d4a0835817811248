//! Reading the metadata that LLVM leaves beside JIT-compiled code, for on-stack replacement:
//! stack maps (`.llvm_stackmaps`, format version 3), call frame information (`.eh_frame`) and
//! shadow-stack GC frames.
//!
//! A stack walk finds return addresses. [`StackMap::lookup`] turns one into the call-site
//! [`Record`] that says where each live value is (a register, a stack slot, a constant);
//! [`EhFrameSection::frame_info_for_return_address`] says where the frame's CFA is and where the
//! caller's callee-saved registers were saved. The crate knows nothing of LLVM's libraries: it
//! reads bytes, never panics on them, and is fuzzed.
//!
//! ```
//! use uppercut_stackmaps::{EhFrameSection, ReturnAddress, StackMap};
//! # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
//! # let object_file = std::fs::read(format!("{dir}statepoints.O2.o"))?;
//! // From an object file on disk (`llc -filetype=obj`); a JIT passes the captured section
//! // bytes to `StackMap::parse` and `EhFrameSection::new` instead.
//! let map = StackMap::from_object(&object_file)?;
//! let cfi = EhFrameSection::from_object(&object_file)?;
//! for record in map.records() {
//!     let ra = record.return_address();
//!     assert_eq!(map.lookup(ra).map(|r| r.index()), Some(record.index()));
//!     let frame = cfi.frame_info_for_return_address(ra)?;
//!     println!("{} at {ra}: CFA = {} + {}", record.id(), frame.cfa.register, frame.cfa.offset);
//!     for location in record.locations() {
//!         println!("  {location:?}");
//!     }
//! }
//! // What `llvm-readobj --stackmap` prints:
//! let text = uppercut_stackmaps::dump_object_file(&object_file)?;
//! assert!(text.starts_with("LLVM StackMap Version: 3\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The stack map section
//!
//! Little-endian; every part padded to 8 bytes. Records are variable-length, so
//! [`StackMap::parse`] walks them once, checks everything, and keeps their offsets.
//!
//! ```text
//! Header          u8 version = 3 | u8 reserved = 0 | u16 reserved = 0
//!                 u32 NumFunctions | u32 NumConstants | u32 NumRecords
//! Functions[NumFunctions]   u64 address | u64 stack size | u64 record count     (24 bytes)
//! Constants[NumConstants]   u64 large constant                                   (8 bytes)
//! Records[NumRecords]       (belong to the functions in order, record count each)
//!   u64 patchpoint ID | u32 instruction offset | u16 flags | u16 NumLocations
//!   Locations[NumLocations]                                                      (12 bytes)
//!     u8 kind | u8 reserved | u16 size | u16 DWARF reg | u16 reserved | i32 offset/constant
//!       kind: 1 Register, 2 Direct (reg + off), 3 Indirect ([reg + off]),
//!             4 Constant (small), 5 ConstantIndex (into Constants)
//!   padding to 8 | u16 padding | u16 NumLiveOuts
//!   LiveOuts[NumLiveOuts]     u16 DWARF reg | u8 reserved | u8 size              (4 bytes)
//!   padding to 8
//! ```
//!
//! A record's absolute address (the return address, for a call site) is its function's address
//! plus its instruction offset.
//!
//! # Modules by job
//!
//! - `raw`: the byte layout; `parse`: [`StackMap`] and its accessors; `lookup`: records by
//!   return address; `build`: [`StackMapBuilder`] for synthetic maps.
//! - `elf`: reading object files ([`StackMap::from_object`], [`EhFrameSection::from_object`]).
//! - `eh_frame`: [`EhFrameSection`] and [`FrameInfo`].
//! - `shadow_stack`: [`FrameMap`], [`StackEntry`] and [`MemoryReader`].
//! - `readobj`: [`write_llvm_readobj`], [`write_location`] and [`dump_object_file`], LLVM's
//!   dump format.

mod build;
mod eh_frame;
mod elf;
mod error;
mod ids;
mod lookup;
mod parse;
mod raw;
mod readobj;
mod shadow_stack;

pub use build::StackMapBuilder;
pub use eh_frame::{Cfa, EhFrameSection, FrameInfo, RegisterRule, SavedRegister};
pub use elf::{EH_FRAME_SECTION, STACKMAP_SECTION};
pub use error::{Error, Result};
pub use ids::{
    CodeOffset, ConstantIndex, DwarfReg, FunctionIndex, PatchpointId, RecordIndex, ReturnAddress,
};
pub use parse::{
    Constants, Function, Functions, LiveOut, LiveOuts, Location, LocationKind, Locations, Record,
    Records, StackMap,
};
pub use readobj::{dump_object_file, dump_section, write_llvm_readobj, write_location};
pub use shadow_stack::{
    ChainWalk, FRAME_MAP_MAX_COUNT, FRAME_MAP_META_OFFSET, FrameMap, MemoryReader, POINTER_SIZE,
    STACK_ENTRY_MAP_OFFSET, STACK_ENTRY_ROOTS_OFFSET, SliceMemory, StackEntry, walk_chain,
};
