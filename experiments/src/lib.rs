//! Uppercut's experiment harness: the guest programs the experiments run, and the tools that
//! run and measure them.
//!
//! - [`kernels`]: a suite of classic benchmark kernels in C (fannkuch-redux, n-body,
//!   spectral-norm, mandelbrot, fasta, binary-trees, nsieve, matrix multiply, a bytecode
//!   interpreter), each with a small and a full size.
//! - [`clang`]: compiling a C source with clang 19 to LLVM IR (for `uppercut run`) or to a
//!   native executable (the baseline).
//! - [`corpus`]: real programs of 10,000+ lines (SQLite, zstd) with drivers, built from
//!   crates.io sources into bitcode and native executables by `experiments/corpus/build.sh`.
//! - [`httpd`]: an HTTP/1.1 server guest whose configuration global `extended_status` is the
//!   design note's Apache `ap_extended_status`, and a handle on a running server process.
//! - [`http`] and [`load`]: a strict HTTP/1.1 client and a closed-loop load generator that
//!   records latencies, failures and a throughput timeline, and can switch the server's
//!   configuration at given times.
//!
//! - [`report`] and [`harness`]: the results format every experiment binary writes, and what
//!   the binaries share (command line, progress bar, interleaved repetitions, medians).
//!
//! ```no_run
//! use uppercut_core::OptLevel;
//! use uppercut_experiments::{Clang, kernels};
//!
//! let clang = Clang::find()?;
//! for k in kernels::kernels() {
//!     let ir = clang.compile_ir(k.name, k.source, OptLevel::O2)?;
//!     println!("uppercut run --osr=tier {} {}", ir.path().display(), k.full.join(" "));
//! }
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```

pub mod clang;
pub mod corpus;
pub mod cpu;
pub mod cputime;
mod error;
pub mod harness;
pub mod http;
pub mod httpd;
pub mod kernels;
pub mod load;
pub mod osr_stats;
pub mod report;

pub use clang::{Artifact, Clang};
pub use error::{Error, Output, Result};
pub use kernels::{Kernel, Size};
pub use load::{LoadConfig, LoadReport};
