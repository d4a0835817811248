//! `reproduce`: runs Uppercut's experiments and regenerates the paper.
//!
//! ```text
//! reproduce [--quick] [--out DIR] [--only NAME,...] [--no-run] [--check] [--reference DIR]
//! ```
//!
//! - Full (the default): every experiment at full size; results, figures and the paper go to
//!   `papers/` (the committed ones).
//! - `--quick`: a small configuration of every experiment (a few minutes; CI's smoke test),
//!   into `target/paper-quick/`.
//! - `--only NAME,...`: run only these experiments; the others' results must already be in
//!   `DIR/results/`.
//! - `--no-run`: run nothing, re-render the paper from `DIR/results/`.
//! - `--check`: run into `target/paper-check[-quick]/` (never over the committed results) and
//!   compare with the committed results (`papers/results/`, or `papers/results-quick/` with
//!   `--quick`), or `--reference DIR`; exit status 1 if a checked value moved beyond its
//!   tolerance.
//!
//! Exit status 2 with one line on stderr on any error.

use std::path::{Path, PathBuf};

use uppercut_papers::run::Binaries;
use uppercut_papers::{EXPERIMENTS, Error, Result, Results, check, paper};

struct Options {
    quick: bool,
    out: Option<PathBuf>,
    only: Option<Vec<String>>,
    run: bool,
    check: bool,
    reference: Option<PathBuf>,
}

const USAGE: &str = "usage: reproduce [--quick] [--out DIR] [--only NAME,...] [--no-run] [--check] [--reference DIR]";

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options> {
    let mut o = Options {
        quick: false,
        out: None,
        only: None,
        run: true,
        check: false,
        reference: None,
    };
    let mut args = args.into_iter();
    let value = |flag: &str, args: &mut dyn Iterator<Item = String>| {
        args.next()
            .ok_or_else(|| Error::Usage(format!("{flag} needs a value ({USAGE})")))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--no-run" => o.run = false,
            "--check" => o.check = true,
            "--out" => o.out = Some(value("--out", &mut args)?.into()),
            "--reference" => o.reference = Some(value("--reference", &mut args)?.into()),
            "--only" => {
                let names: Vec<String> = value("--only", &mut args)?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                for n in &names {
                    if !EXPERIMENTS.iter().any(|(e, _)| e == n) {
                        let known: Vec<&str> = EXPERIMENTS.iter().map(|(e, _)| *e).collect();
                        return Err(Error::Usage(format!(
                            "unknown experiment `{n}` (one of {})",
                            known.join(", ")
                        )));
                    }
                }
                o.only = Some(names);
            }
            "-h" | "--help" => return Err(Error::Usage(USAGE.into())),
            other => {
                return Err(Error::Usage(format!(
                    "unknown argument `{other}` ({USAGE})"
                )));
            }
        }
    }
    Ok(o)
}

/// This crate's folder, where the committed paper lives.
fn papers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn main() {
    let code = match reproduce() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("reproduce: {e}");
            2
        }
    };
    std::process::exit(code)
}

/// Runs, renders and checks; `Ok(false)` when a check found moved values.
fn reproduce() -> Result<bool> {
    let o = parse(std::env::args().skip(1))?;
    let target = papers_dir().join("..").join("target");
    let out = o.out.clone().unwrap_or_else(|| match (o.check, o.quick) {
        (false, false) => papers_dir(),
        (false, true) => target.join("paper-quick"),
        (true, false) => target.join("paper-check"),
        (true, true) => target.join("paper-check-quick"),
    });
    let results_dir = out.join("results");
    if o.run {
        let binaries = Binaries::beside_self()?;
        let chosen: Vec<&str> = EXPERIMENTS
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| {
                o.only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|n| n == name))
            })
            .collect();
        // Fail before the first long run if a binary is missing.
        for name in &chosen {
            binaries.experiment(name)?;
        }
        for (i, name) in chosen.iter().enumerate() {
            let what = EXPERIMENTS
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, w)| *w);
            eprintln!("reproduce: [{}/{}] {name}: {what}", i + 1, chosen.len());
            binaries.run(name, o.quick, &results_dir)?;
        }
    }
    let results = Results::read(&results_dir)?;
    let template_path = papers_dir().join("paper.md.in");
    let template = paper::read_template(&template_path)?;
    let figures = paper::render(&template, &results, &out)?;
    eprintln!(
        "reproduce: {} with {} figures",
        out.join("paper.md").display(),
        figures.len()
    );
    if !o.check {
        return Ok(true);
    }
    let reference_dir = o
        .reference
        .clone()
        .unwrap_or_else(|| papers_dir().join(if o.quick { "results-quick" } else { "results" }));
    let reference = Results::read(&reference_dir)?;
    let outcome = check::check(&reference, &results);
    print!("{}", outcome.summary());
    if outcome.passed() {
        println!(
            "check: every checked value is within its tolerance of {}",
            reference_dir.display()
        );
    } else {
        println!(
            "check: some values moved beyond their tolerance of {}",
            reference_dir.display()
        );
    }
    Ok(outcome.passed())
}
