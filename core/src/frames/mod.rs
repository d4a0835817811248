//! Frame metadata and frame walking, with one owner: the engine.
//!
//! ```text
//!   publish a unit ──> its .llvm_stackmaps + .eh_frame, parsed once
//!        └─ FrameTable: one FrameRow per return address, sorted
//!             site id, live values decoded by the site convention (SiteState),
//!             callee-saved save slots from the CFI (CalleeSaves), fixed frame size,
//!             or a typed Refusal saying why a frame suspended there cannot move
//!        └─ UnitCode { versions, table } ──> Engine::code_map(): an immutable CodeMap
//!                                            snapshot, rebuilt when units come or go
//!   a walk ──> FrameCursor over (CodeMap, StackMemory): each JIT frame with its unit,
//!              version, row and callee-saved register locations, no lock held
//!        users: Engine::jit_frames, uppercut-osr's walk, transfers and shadow discovery
//! ```
//!
//! The site convention (what the instrumentation writes into each `"deopt"` bundle and what a
//! record says back) is [`convention`]; the frame layout every JIT frame has is [`layout`].

pub mod convention;
mod cursor;
pub mod layout;
mod table;

pub use convention::{FrameBase, RecordValue, SiteState};
pub use cursor::{
    CodeMap, CursorFrame, FrameCursor, SavedAt, StackMemory, ThreadStack, UnitCode, WalkStart,
    no_patches,
};
pub use layout::CalleeSaves;
pub use table::{FrameRow, FrameTable, Refusal};
