//! The experiments crate's integration tests, one binary (`cargo test -p uppercut-experiments`).
//!
//! - `kernels`: every kernel's reference results, and each at its small size natively and
//!   under `uppercut run` (plain, tier-up, stress) at `-O0` and `-O2`;
//! - `httpd`: the server guest's protocol cases and a second of load with its configuration
//!   switched mid-run, natively and under `uppercut run --osr-specialize=extended_status`;
//! - `load`: the load generator against a scripted server.
//!
//! `support` finds `uppercut` (building it if needed) and clang 19.

mod httpd;
mod kernels;
mod load;
mod support;
