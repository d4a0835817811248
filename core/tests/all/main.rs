//! Integration tests of `uppercut-core`.

mod continuations;
mod engine;
mod lazy;
mod lifetime;
mod shadow;
mod sites;
