//! The committed paper is what its committed results give, and `reproduce` fails clearly.

use std::path::{Path, PathBuf};
use std::process::Command;

use uppercut_papers::{Results, check, paper};

fn papers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// Rendering the committed template from the committed results gives the committed paper and
/// figures, byte for byte: nothing in `paper.md` was edited by hand, and nothing is stale.
#[test]
fn committed_paper_is_generated_from_committed_results() {
    let dir = papers_dir();
    let results = Results::read(&dir.join("results")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let template = paper::read_template(&dir.join("paper.md.in")).unwrap();
    let figures = paper::render(&template, &results, out.path()).unwrap();
    assert!(figures.len() >= 8, "only {figures:?}");
    let rendered = std::fs::read_to_string(out.path().join("paper.md")).unwrap();
    let committed = std::fs::read_to_string(dir.join("paper.md")).unwrap();
    assert!(
        rendered == committed,
        "papers/paper.md differs from a render of papers/results (run `scripts/reproduce --no-run`)"
    );
    for name in figures {
        let file = format!("figures/{name}.svg");
        let rendered = std::fs::read(out.path().join(&file)).unwrap();
        let committed = std::fs::read(dir.join(&file)).unwrap_or_default();
        assert!(rendered == committed, "papers/{file} is stale");
    }
    assert!(
        !results.reports().any(|r| r.quick),
        "the committed results are the full run"
    );
}

/// The committed results agree with themselves under the check, and a doctored copy does not.
#[test]
fn check_flags_a_moved_ratio() {
    let dir = papers_dir().join("results");
    let reference = Results::read(&dir).unwrap();
    assert!(check::check(&reference, &reference).passed());
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, copy.path().join(path.file_name().unwrap())).unwrap();
    }
    let kernels = copy.path().join("kernels.json");
    let mut report = uppercut_experiments::report::Report::read(&kernels).unwrap();
    let row = report
        .rows
        .iter_mut()
        .find(|r| r.key_of("config") == Some("uppercut"))
        .unwrap();
    let ratio = row.values.get_mut("ratio").unwrap();
    *ratio *= 3.0;
    report.write(&kernels).unwrap();
    let outcome = check::check(&reference, &Results::read(copy.path()).unwrap());
    assert!(!outcome.passed());
    assert!(
        outcome.summary().contains("moved: config=uppercut"),
        "{}",
        outcome.summary()
    );
}

fn reproduce(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reproduce"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_command_lines_and_missing_results_are_one_line_errors() {
    let (code, _, err) = reproduce(&["--bogus"]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("reproduce: unknown argument `--bogus`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) = reproduce(&["--only", "kernels,nonesuch"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown experiment `nonesuch`"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = reproduce(&["--no-run", "--out", empty.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no results of experiment `kernels`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// `--no-run` re-renders a results folder; `--check` against itself passes (exit 0) and against
/// a doctored reference fails (exit 1).
#[test]
fn no_run_renders_and_check_exits_by_outcome() {
    let out = tempfile::tempdir().unwrap();
    let results = out.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    for entry in std::fs::read_dir(papers_dir().join("results")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, results.join(path.file_name().unwrap())).unwrap();
    }
    let out_arg = out.path().to_str().unwrap();
    let reference = papers_dir().join("results");
    let (code, stdout, err) = reproduce(&[
        "--no-run",
        "--out",
        out_arg,
        "--check",
        "--reference",
        reference.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("within its tolerance"), "{stdout}");
    assert!(out.path().join("paper.md").is_file());
    assert!(out.path().join("figures/kernels.svg").is_file());

    let kernels = results.join("kernels.json");
    let mut report = uppercut_experiments::report::Report::read(&kernels).unwrap();
    for row in &mut report.rows {
        if let Some(ratio) = row.values.get_mut("ratio") {
            *ratio *= 3.0;
        }
    }
    report.write(&kernels).unwrap();
    let (code, stdout, _) = reproduce(&[
        "--no-run",
        "--out",
        out_arg,
        "--check",
        "--reference",
        reference.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("moved beyond their tolerance"), "{stdout}");
}

/// The template also renders from a quick run's results (smaller sweeps, fewer kernels with a
/// measurable O2 gain): what CI's `scripts/reproduce --quick` renders.
#[test]
fn template_renders_from_quick_results() {
    let dir = papers_dir();
    let results = Results::read(&dir.join("results-quick")).unwrap();
    assert!(
        results.reports().all(|r| r.quick),
        "results-quick holds a quick run"
    );
    let out = tempfile::tempdir().unwrap();
    let template = paper::read_template(&dir.join("paper.md.in")).unwrap();
    paper::render(&template, &results, out.path()).unwrap();
    let text = std::fs::read_to_string(out.path().join("paper.md")).unwrap();
    assert!(text.contains("the quick configuration"));
    assert!(!text.contains("{{"), "a placeholder was left unexpanded");
}
