//! Integration tests of `uppercut-core`.

mod continuations;
mod engine;
mod lifetime;
mod shadow;
