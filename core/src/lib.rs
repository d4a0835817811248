//! Uppercut's JIT engine.

pub mod code_memory;
mod sys;
