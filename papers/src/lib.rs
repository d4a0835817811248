//! The reproducible paper: `reproduce` runs Uppercut's experiments, writes their results, and
//! regenerates every table and figure of the paper from them.
//!
//! ```text
//!   exp-kernels, exp-overhead, ... (uppercut-experiments)   one binary per experiment
//!        │ results/NAME.json (uppercut_experiments::report::Report)
//!        ▼
//!   Results (results.rs) ──> content.rs: tables, figures, values by name
//!        │                        │
//!        ▼                        ▼
//!   check.rs: a run vs the     paper.rs: paper.md.in with {{table|figure|value NAME}}
//!   committed results             → paper.md + figures/NAME.svg (figure.rs, plotters)
//! ```
//!
//! The committed paper (`papers/paper.md`), its figures and the full-size results it was made
//! from are in this crate's folder; `scripts/reproduce` rebuilds everything, and `--quick`
//! makes a small version in a few minutes.
//!
//! ```
//! use uppercut_experiments::report::{Report, Row};
//! use uppercut_papers::{Results, paper};
//!
//! let mut report = Report::new("kernels", "The kernel suite", true);
//! for (config, ms) in [("native", 10.0), ("uppercut", 11.0), ("uppercut-sites", 11.5)] {
//!     report.push(Row::new().key("kernel", "nbody").key("config", config)
//!         .value("median_ms", ms).value("ratio", ms / 10.0));
//! }
//! let results = Results::from_reports([report]);
//! let dir = tempfile::tempdir()?;
//! paper::render("JIT vs native:\n\n{{table kernels}}\n", &results, dir.path())?;
//! let text = std::fs::read_to_string(dir.path().join("paper.md"))?;
//! assert!(text.contains("| nbody |"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod check;
pub mod content;
mod error;
pub mod figure;
pub mod paper;
pub mod results;
pub mod run;

pub use error::{Error, Result};
pub use results::{EXPERIMENTS, Results};
