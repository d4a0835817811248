//! Looking inside: gdb's backtraces of guest code (units registered with GDB's JIT interface),
//! `perf report` over guest code (a jitdump), and the perf map.
//!
//! The gdb and perf tests skip, saying why, where the tool is missing or not allowed to run
//! (`scripts/setup` installs both).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Scratch, clang, run_build_step};

/// A fault two calls deep, after a loop hot enough for tier-up (`mid`'s loop moves to O2 in the
/// middle, so the fault happens in the continuation's callee). With an argument it does not
/// fault.
const FAULT: &str = r#"#include <stdio.h>
__attribute__((noinline)) int leaf(int *p) { return *p + 1; }
__attribute__((noinline)) long mid(int *p, long n) {
  long s = 0;
  for (long i = 0; i < n; i++) {
    s += i * i % 7;
    if (i == n - 1) s += leaf(p);
  }
  return s;
}
int main(int argc, char **argv) {
  int *p = argc > 1 ? &argc : NULL;
  printf("%ld\n", mid(p, 100000));
  return 0;
}
"#;

/// One hot function.
const HOT: &str = r#"#include <stdio.h>
__attribute__((noinline)) double burn(long n) {
  double s = 0;
  for (long i = 1; i < n; i++) s += 1.0 / (double)(i * i % 1000003 + 1);
  return s;
}
int main(void) {
  double t = 0;
  for (int k = 0; k < 8; k++) t += burn(10000000);
  printf("%f\n", t);
  return 0;
}
"#;

/// Writes `source` as `name.c` and compiles it with debug info at clang `-O0` into `name.ll`.
fn guest_with_debug_info(scratch: &Scratch, name: &str, source: &str) -> PathBuf {
    let c = scratch.path().join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let ll = scratch.path().join(format!("{name}.ll"));
    run_build_step(
        Command::new(clang())
            .args(["-g", "-O0", "-S", "-emit-llvm"])
            .arg(&c)
            .arg("-o")
            .arg(&ll),
    );
    ll
}

/// Whether `tool --version` runs; says so on stderr when it does not.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: `{tool}` is not installed (scripts/setup installs it)");
    }
    ok
}

/// What `bt` prints in gdb when `uppercut run ARGS` faults.
fn backtrace(args: &[&str], guest: &Path) -> String {
    let out = Command::new("gdb")
        .args(["-q", "-batch", "-nx", "-ex", "run", "-ex", "bt", "--args"])
        .arg(env!("CARGO_BIN_EXE_uppercut"))
        .arg("run")
        .args(args)
        .arg(guest)
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn gdb_names_guest_frames_with_file_and_line_at_o0_at_o2_and_after_tier_up() {
    if !have("gdb") {
        return;
    }
    let scratch = Scratch::new("gdb");
    let guest = guest_with_debug_info(&scratch, "fault", FAULT);
    for level in ["-O0", "-O2"] {
        let bt = backtrace(&[level], &guest);
        assert!(bt.contains("leaf (p=0x0) at "), "{level}:\n{bt}");
        assert!(bt.contains("fault.c:2"), "{level}: leaf's line:\n{bt}");
        assert!(bt.contains(" mid (p=0x0, n=100000) at "), "{level}:\n{bt}");
        assert!(bt.contains(" main ("), "{level}:\n{bt}");
        assert!(bt.contains("fault.c:13"), "{level}: main's line:\n{bt}");
    }
    // Tier-up moves `mid`'s frame into an O2 continuation of its loop's site mid-loop: the frame
    // says what it continues, with the line it is at.
    for transfer in ["--osr-transfer=lazy", "--osr-transfer=eager"] {
        // In the foreground, so that the frame has moved when `leaf` faults; with its sites, so
        // that `leaf` stays a frame of its own (final code may inline it).
        let flags = [
            "-O0",
            "--osr=tier",
            "--osr-compile=sync",
            "--osr-tiered=sites",
            "--osr-threshold=50",
            transfer,
        ];
        let bt = backtrace(&flags, &guest);
        assert!(bt.contains("leaf (p=0x0) at "), "{transfer}:\n{bt}");
        let continuation = bt
            .lines()
            .find(|l| l.contains(" in mid [O2, continuation of site"))
            .unwrap_or_else(|| panic!("{transfer}: no continuation frame:\n{bt}"));
        assert!(continuation.contains("fault.c:7"), "{transfer}:\n{bt}");
        assert!(bt.contains(" main ("), "{transfer}:\n{bt}");
    }
}

/// Runs `perf record -k 1` over `uppercut run --perf=jitdump ARGS`, injects the jitdump, and
/// returns `perf report`'s symbol lines; `None` (with the reason on stderr) when perf may not
/// record here.
fn perf_report(scratch: &Scratch, args: &[&str], guest: &Path, label: &str) -> Option<String> {
    let data = scratch.path().join(format!("{label}.data"));
    let injected = scratch.path().join(format!("{label}.jit.data"));
    let record = Command::new("perf")
        .args(["record", "-k", "1", "-e", "cpu-clock", "-o"])
        .arg(&data)
        .arg(env!("CARGO_BIN_EXE_uppercut"))
        .args(["run", "--perf=jitdump"])
        .args(args)
        .arg(guest)
        .env("JITDUMPDIR", scratch.path())
        .output()
        .expect("perf runs");
    if !record.status.success() {
        eprintln!(
            "skipped: perf record is not allowed here: {}",
            String::from_utf8_lossy(&record.stderr)
        );
        return None;
    }
    run_build_step(
        Command::new("perf")
            .args(["inject", "--jit", "-i"])
            .arg(&data)
            .arg("-o")
            .arg(&injected),
    );
    let report = Command::new("perf")
        .args(["report", "--stdio", "--sort", "sym", "-i"])
        .arg(&injected)
        .output()
        .expect("perf report runs");
    assert!(report.status.success(), "{report:?}");
    let text = String::from_utf8_lossy(&report.stdout);
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect(),
    )
}

/// The share of samples `perf report` gives symbols whose name contains `name`.
fn share_of(report: &str, name: &str) -> f64 {
    report
        .lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_suffix('%')?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

#[test]
fn perf_report_names_the_hot_guest_function_before_and_after_tier_up() {
    if !have("perf") {
        return;
    }
    let scratch = Scratch::new("perf");
    let guest = guest_with_debug_info(&scratch, "hot", HOT);
    let Some(plain) = perf_report(&scratch, &["-O0"], &guest, "plain") else {
        return;
    };
    assert!(share_of(&plain, "burn") > 50.0, "{plain}");
    // Tiered: `burn`'s loop moves into an O2 continuation (`burn.osr...`), later calls run its
    // O2 version: every one of them is `burn`'s.
    let tiered = perf_report(
        &scratch,
        &["-O0", "--osr=tier", "--osr-threshold=1000"],
        &guest,
        "tiered",
    )
    .expect("perf recorded once already");
    assert!(share_of(&tiered, "burn") > 50.0, "{tiered}");
}

#[test]
fn the_perf_map_names_every_version_while_it_lives() {
    let scratch = Scratch::new("perf-map");
    let guest = guest_with_debug_info(&scratch, "hot", HOT);
    let child = Command::new(env!("CARGO_BIN_EXE_uppercut"))
        .args([
            "run",
            "-O0",
            "--osr=tier",
            "--osr-compile=sync",
            "--osr-threshold=1000",
            "--perf=map",
        ])
        .arg(&guest)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("uppercut runs");
    let map_path = PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
    let status = child.wait_with_output().expect("uppercut finishes").status;
    let map = std::fs::read_to_string(&map_path);
    let _ = std::fs::remove_file(&map_path);
    assert!(status.success(), "{status:?}");
    let map = map.expect("the perf map was written");
    let names: Vec<&str> = map
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let start = parts.next().unwrap();
            let size = parts.next().unwrap();
            assert!(u64::from_str_radix(start, 16).is_ok(), "{l}");
            assert!(u64::from_str_radix(size, 16).is_ok_and(|s| s > 0), "{l}");
            parts.next().unwrap()
        })
        .collect();
    for expected in ["main [O0]", "burn [O0]", "burn [O2 final]"] {
        assert!(names.contains(&expected), "no `{expected}` in\n{map}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("burn [O2 final, continuation of site")),
        "no continuation in\n{map}"
    );
}

/// Each line of a JSON-lines log, parsed.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn the_event_log_of_a_stress_run_counts_what_the_statistics_count() {
    let scratch = Scratch::new("osr-log");
    let guest = guest_with_debug_info(&scratch, "fault", FAULT);
    let log = scratch.path().join("log.jsonl");
    let chrome = scratch.path().join("log.trace.json");
    let run = |log_flags: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_uppercut"))
            .args(["run", "-O0", "--osr=stress=5", "--osr-stats=json"])
            .args(log_flags)
            .arg(&guest)
            .arg("no-fault")
            .output()
            .expect("uppercut runs");
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stats = stderr
            .lines()
            .find_map(|l| l.strip_prefix("uppercut: osr "))
            .unwrap_or_else(|| panic!("no statistics in {stderr}"));
        let stats: serde_json::Value = serde_json::from_str(stats).expect("JSON statistics");
        stats
    };
    let stats = run(&[format!("--osr-log={}", log.display())]);
    let events = json_lines(&std::fs::read_to_string(&log).unwrap());
    let named = |name: &str| {
        events
            .iter()
            .filter(|e| e["event"] == name)
            .collect::<Vec<_>>()
    };
    let transfers = named("transfer");
    let moved = transfers
        .iter()
        .filter(|t| t.get("refused").is_none())
        .count();
    assert!(moved > 0, "stress moved nothing: {stats}");
    assert_eq!(moved as u64, stats["patched"].as_u64().unwrap(), "{stats}");
    let refused = transfers.len() - moved;
    assert_eq!(
        refused as u64,
        stats["refused"].as_u64().unwrap(),
        "{stats}"
    );
    for t in &transfers {
        assert!(t["dur_us"].is_u64() && t["ts_us"].is_u64(), "{t}");
        assert!(t["site"].as_str().unwrap().starts_with("site"), "{t}");
        assert!(t["thread"].is_string(), "{t}");
    }
    // Every unit compiled is in the log with its size and times; the first is the guest's base.
    let compiles = named("compile");
    assert!(
        compiles.len() as u64 > stats["recompiles"].as_u64().unwrap(),
        "{stats}"
    );
    for c in &compiles {
        assert!(c["code_bytes"].is_u64() && c["codegen_us"].is_u64(), "{c}");
        assert!(c["tier"] == "O0" || c["tier"] == "O2", "{c}");
    }
    assert!(compiles.iter().any(|c| c["continuation"] == true));
    assert!(!named("relink").is_empty());
    let last = events.last().unwrap();
    assert_eq!(last["event"], "stats");
    assert_eq!(last["patched"], stats["patched"]);

    // The same run as a Chrome trace: one JSON array of trace events.
    let _ = run(&[
        format!("--osr-log={}", chrome.display()),
        "--osr-log-format=chrome".to_owned(),
    ]);
    let trace: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&chrome).unwrap()).expect("a JSON array");
    let trace = trace.as_array().expect("an array of trace events");
    assert!(!trace.is_empty());
    for e in trace {
        assert!(
            e["name"].is_string() && e["ts"].is_u64() && e["tid"].is_i64(),
            "{e}"
        );
        match e["ph"].as_str() {
            Some("X") => assert!(e["dur"].is_u64(), "{e}"),
            Some("i") => {}
            other => panic!("phase {other:?}: {e}"),
        }
    }
    assert!(
        trace
            .iter()
            .any(|e| e["name"] == "transfer" && e["ph"] == "X")
    );
    assert!(
        trace
            .iter()
            .any(|e| e["name"] == "compile" && e["ph"] == "X")
    );
}

#[test]
fn a_code_dump_lists_every_stack_map_record_after_its_call() {
    let scratch = Scratch::new("dump-code");
    let guest = guest_with_debug_info(&scratch, "fault", FAULT);
    let dir = scratch.path().join("code");
    let out = Command::new(env!("CARGO_BIN_EXE_uppercut"))
        .args(["run", "-O0", "--osr=stress=3"])
        .arg(format!("--dump-code={}", dir.display()))
        .arg(&guest)
        .arg("no-fault")
        .output()
        .expect("uppercut runs");
    assert!(out.status.success(), "{out:?}");
    let mut records = 0;
    let mut labels = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        files += 1;
        let header = text.lines().next().unwrap();
        let declared: usize = header
            .split(", ")
            .find_map(|p| p.strip_suffix(" stack-map record(s)"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("header: {header}"));
        let lines: Vec<&str> = text.lines().collect();
        let mut listed = 0;
        for (i, line) in lines.iter().enumerate() {
            if line.trim_start().starts_with("; stack-map record ") {
                listed += 1;
                // At an instruction boundary: right after the call whose return address it is.
                assert!(!line.contains("not where an instruction"), "{line}");
                let at = line.rsplit_once("return address ").unwrap().1;
                let at = u64::from_str_radix(at.split(':').next().unwrap(), 16).unwrap();
                let call = lines[..i]
                    .iter()
                    .rev()
                    .find(|l| !l.trim_start().starts_with(';'))
                    .unwrap();
                assert!(call.contains("call"), "{call} / {line}");
                let call_ip = u64::from_str_radix(call.split_whitespace().next().unwrap(), 16);
                let bytes = call.split_whitespace().nth(1).unwrap().len() as u64 / 2;
                assert_eq!(call_ip.unwrap() + bytes, at, "{call} / {line}");
            }
            if let Some(label) = line.strip_suffix(':').or_else(|| {
                line.split_once(':')
                    .filter(|(l, rest)| !l.starts_with(' ') && rest.contains("bytes"))
                    .map(|(l, _)| l)
            }) && !line.starts_with(' ')
                && !line.starts_with(';')
            {
                labels.push(label.to_owned());
            }
        }
        assert_eq!(listed, declared, "{text}");
        records += listed;
    }
    assert!(files > 3, "{files} units dumped");
    assert!(records > 0, "no stack-map record in any unit");
    for name in ["main [O0]", "mid [O0]", "leaf [O0]"] {
        assert!(
            labels.iter().any(|l| l == name),
            "no `{name}` in {labels:?}"
        );
    }
    assert!(
        labels.iter().any(|l| l.contains("continuation of site")),
        "no continuation among {labels:?}"
    );
}
