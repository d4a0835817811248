//! Integration tests of `uppercut-osr`: the differential corpus (`tests/programs/`) run natively
//! and under `uppercut run`, and the helpers they share.

mod cli;
mod cxx;
mod differential;
mod discovery;
mod introspect;
mod lifetime;
mod multi;
mod policies;
mod scale;
mod support;
mod transfer;
