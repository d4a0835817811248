//! Renders the paper template from an existing results folder, without running anything:
//! `cargo run -p uppercut-papers --example render -- RESULTS_DIR OUT_DIR [TEMPLATE]`.
//!
//! Only the experiments whose results are in `RESULTS_DIR` are loaded, so a template that
//! names only those renders (the full template needs all of them; `reproduce --no-run` is the
//! usual way).

use std::path::PathBuf;

use uppercut_experiments::report::Report;
use uppercut_papers::{EXPERIMENTS, Results, paper};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: render RESULTS_DIR OUT_DIR [TEMPLATE]";
    let results_dir = PathBuf::from(args.next().ok_or(usage)?);
    let out = PathBuf::from(args.next().ok_or(usage)?);
    let template = match args.next() {
        Some(path) => paper::read_template(path.as_ref())?,
        None => paper::TEMPLATE.to_owned(),
    };
    let reports = EXPERIMENTS
        .iter()
        .map(|(name, _)| Report::path_in(&results_dir, name))
        .filter(|p| p.is_file())
        .map(|p| Report::read(&p))
        .collect::<Result<Vec<_>, _>>()?;
    let figures = paper::render(&template, &Results::from_reports(reports), &out)?;
    println!(
        "{} ({} figures)",
        out.join("paper.md").display(),
        figures.len()
    );
    Ok(())
}
