//! Integration tests of `uppercut-core`.

mod engine;
mod shadow;
