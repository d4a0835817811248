//! Uppercut's JIT engine.
