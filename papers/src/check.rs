//! Check mode: does a new run agree with the committed results?
//!
//! Each experiment names the values that are comparable between runs on the same machine (ratios
//! and counts, not raw wall times) and the relative tolerance within which they should agree
//! (see [`uppercut_experiments::report::Checked`]). A check compares those values row by row
//! and lists every one that moved beyond its tolerance, and every row that disappeared.

use std::fmt::Write as _;

use uppercut_experiments::report::{self, Comparison};

use crate::results::Results;

/// The outcome of a check, per experiment.
#[derive(Debug, Clone, Default)]
pub struct Check {
    /// `(experiment, comparison)` in the paper's order.
    pub experiments: Vec<(String, Comparison)>,
}

impl Check {
    /// Whether nothing moved and nothing is missing.
    pub fn passed(&self) -> bool {
        self.experiments
            .iter()
            .all(|(_, c)| c.moved.is_empty() && c.missing.is_empty())
    }

    /// A human-readable account: a line per experiment, then one per moved value.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (name, c) in &self.experiments {
            let _ = writeln!(
                out,
                "{name}: {} values compared, {} moved, {} missing",
                c.compared,
                c.moved.len(),
                c.missing.len()
            );
            for m in &c.moved {
                let _ = writeln!(
                    out,
                    "  moved: {} {}: {:.4} -> {:.4} ({:+.1}%, tolerance {:.0}%)",
                    m.key,
                    m.value,
                    m.reference,
                    m.now,
                    (m.now - m.reference) / m.reference.abs().max(f64::MIN_POSITIVE) * 100.0,
                    m.tolerance * 100.0
                );
            }
            for k in &c.missing {
                let _ = writeln!(out, "  missing: {k}");
            }
        }
        out
    }
}

/// Compares every experiment of `now` with the same experiment of `reference`; experiments
/// missing from either side are skipped.
pub fn check(reference: &Results, now: &Results) -> Check {
    let mut result = Check::default();
    for old in reference.reports() {
        if let Ok(new) = now.report(&old.experiment, "check") {
            result
                .experiments
                .push((old.experiment.clone(), report::compare(old, new)));
        }
    }
    result
}
