//! The `uppercut` command line: `run`'s error contract and plugins.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn uppercut() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uppercut"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn clang(args: &[&str]) {
    let status = Command::new("clang-19")
        .args(args)
        .status()
        .expect("clang-19 runs");
    assert!(status.success(), "clang-19 {args:?} failed");
}

/// Asserts the tool's own failure: exit status 2 and exactly one line on stderr, which
/// contains `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("uppercut: "), "{stderr:?}");
    assert!(
        stderr.contains(needle),
        "{stderr:?} does not mention {needle:?}"
    );
}

#[test]
fn run_reports_bad_input_in_one_line_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let out = uppercut()
        .args(["run", "/nonexistent/prog.ll"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot read /nonexistent/prog.ll");

    let bad = write(d, "bad.ll", "define i32 @main( {\n");
    let out = uppercut().arg("run").arg(&bad).output().unwrap();
    assert_one_line_error(&out, "invalid IR or bitcode");

    let bad_bc = d.join("bad.bc");
    std::fs::write(&bad_bc, b"BC\xc0\xde garbage").unwrap();
    let out = uppercut().arg("run").arg(&bad_bc).output().unwrap();
    assert_one_line_error(&out, "invalid IR or bitcode");

    let no_main = write(d, "nomain.ll", "define i32 @f() {\n  ret i32 0\n}\n");
    let out = uppercut().arg("run").arg(&no_main).output().unwrap();
    assert_one_line_error(&out, "no `main`");

    let unresolved = write(
        d,
        "unresolved.ll",
        "declare void @uppercut_missing_fn()\ndefine i32 @main() {\n  call void @uppercut_missing_fn()\n  ret i32 0\n}\n",
    );
    let out = uppercut().arg("run").arg(&unresolved).output().unwrap();
    assert_one_line_error(&out, "unresolved symbol `uppercut_missing_fn`");

    let unknown = write(
        d,
        "unknown.c",
        "void *PerformCustomCallback(const char *, void *);\n\
         #include <stdio.h>\n\
         int main(void) { printf(\"before\\n\"); PerformCustomCallback(\"no.such.callback\", 0); printf(\"after\\n\"); return 0; }\n",
    );
    let ll = d.join("unknown.ll");
    clang(&[
        "-O2",
        "-S",
        "-emit-llvm",
        unknown.to_str().unwrap(),
        "-o",
        ll.to_str().unwrap(),
    ]);
    let out = uppercut().arg("run").arg(&ll).output().unwrap();
    assert_one_line_error(&out, "unknown callback `no.such.callback`");
    // What the guest printed before it was stopped is flushed; nothing after.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n");

    let out = uppercut().args(["run", "-O9", "x.ll"]).output().unwrap();
    assert_one_line_error(&out, "-O9");
    let out = uppercut().arg("frobnicate").output().unwrap();
    assert_one_line_error(&out, "unknown command");
    let out = uppercut()
        .args(["run", "--load", "/nonexistent/p.so", "x.ll"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot load plugin /nonexistent/p.so");
}

#[test]
fn run_passes_arguments_stdin_and_exit_status_through() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "echo.c",
        r#"#include <stdio.h>
int main(int argc, char **argv) {
  long sum = 0, x;
  while (scanf("%ld", &x) == 1) sum += x;
  for (int i = 1; i < argc; i++) printf("arg %s\n", argv[i]);
  printf("sum %ld\n", sum);
  return argc + 40;
}
"#,
    );
    let ll = dir.path().join("echo.ll");
    clang(&[
        "-O0",
        "-S",
        "-emit-llvm",
        src.to_str().unwrap(),
        "-o",
        ll.to_str().unwrap(),
    ]);
    let mut child = uppercut()
        .args(["run", "-O0"])
        .arg(&ll)
        .args(["one", "-O3", "--load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1 2 3 39\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "arg one\narg -O3\narg --load\nsum 45\n"
    );
    assert_eq!(out.status.code(), Some(44));
}

#[test]
fn plugins_register_callbacks_with_the_c_abi() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plugin = write(
        d,
        "plugin.c",
        r#"#include <stdint.h>
int registerCustomCallback(const char *name, void *(*fn)(void *, void *), void *ctx);
static long offset = 1000;
static void *add(void *args, void *ctx) {
  long *pair = args;
  return (void *)(intptr_t)(pair[0] + pair[1] + *(long *)ctx);
}
__attribute__((constructor)) static void init(void) {
  if (registerCustomCallback("plugin.add", add, &offset) != 0) __builtin_trap();
  if (registerCustomCallback("", add, 0) != -1) __builtin_trap();
}
"#,
    );
    let so = d.join("plugin.so");
    clang(&[
        "-shared",
        "-fPIC",
        "-O2",
        plugin.to_str().unwrap(),
        "-o",
        so.to_str().unwrap(),
    ]);
    let guest = write(
        d,
        "guest.c",
        r#"#include <stdio.h>
#include <stdint.h>
void *PerformCustomCallback(const char *name, void *args);
int main(void) {
  long pair[2] = {20, 22};
  const char *dynamic = "plugin.add";
  printf("%ld\n", (long)(intptr_t)PerformCustomCallback("plugin.add", pair));
  pair[0] = 1;
  printf("%ld\n", (long)(intptr_t)PerformCustomCallback(dynamic, pair));
  return 0;
}
"#,
    );
    let ll = d.join("guest.ll");
    clang(&[
        "-O2",
        "-S",
        "-emit-llvm",
        guest.to_str().unwrap(),
        "-o",
        ll.to_str().unwrap(),
    ]);
    let out = uppercut()
        .arg("run")
        .arg("--load")
        .arg(&so)
        .arg(&ll)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1042\n1023\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_demo_recompiles_its_own_hot_function_while_it_runs() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/demo/hotswap.c");
    if !demo.exists() {
        panic!("{} is missing", demo.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let ll = dir.path().join("hotswap.ll");
    clang(&[
        "-O0",
        "-S",
        "-emit-llvm",
        demo.to_str().unwrap(),
        "-o",
        ll.to_str().unwrap(),
    ]);
    let out = uppercut().args(["run", "-O0"]).arg(&ll).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("recompiled"), "{stdout}");
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stackmaps/tests/fixtures")
}

/// `uppercut stackmaps FILE.o` prints exactly what `llvm-readobj-19 --stackmap` prints, from
/// `LLVM StackMap Version: 3` on: against the committed goldens, and against the live tool.
#[test]
fn stackmaps_prints_what_llvm_readobj_prints() {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objects.sort();
    assert!(objects.len() >= 8, "fixtures missing: {objects:?}");
    for object in objects {
        let out = uppercut().arg("stackmaps").arg(&object).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = String::from_utf8(out.stdout).unwrap();
        let golden = std::fs::read_to_string(object.with_extension("readobj.txt")).unwrap();
        assert_eq!(ours, golden, "{}", object.display());
        let live = Command::new("llvm-readobj-19")
            .arg("--stackmap")
            .arg(&object)
            .output()
            .unwrap();
        let live = String::from_utf8(live.stdout).unwrap();
        let start = live
            .find("LLVM StackMap Version: 3")
            .expect("llvm-readobj prints a stack map");
        assert_eq!(ours, &live[start..], "{}", object.display());
    }
}

#[test]
fn stackmaps_rejects_corrupt_and_non_elf_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = write(dir.path(), "not-elf.o", "hello, world\n");
    let out = uppercut().arg("stackmaps").arg(&text).output().unwrap();
    assert_one_line_error(&out, "not-elf.o");

    // A real object cut short: its section headers (at the end) are gone.
    let good = std::fs::read(fixtures().join("statepoints.O2.o")).unwrap();
    let path = dir.path().join("truncated.o");
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let out = uppercut().arg("stackmaps").arg(&path).output().unwrap();
    assert_one_line_error(&out, "truncated.o");

    // An object without a stack map section.
    let plain = write(dir.path(), "plain.c", "int f(int x) { return x + 1; }\n");
    let object = dir.path().join("plain.o");
    clang(&[
        "-c",
        "-O2",
        plain.to_str().unwrap(),
        "-o",
        object.to_str().unwrap(),
    ]);
    let out = uppercut().arg("stackmaps").arg(&object).output().unwrap();
    assert_one_line_error(&out, "plain.o");

    let out = uppercut()
        .args(["stackmaps", "/nonexistent.o"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "cannot read /nonexistent.o");
    let out = uppercut().arg("stackmaps").output().unwrap();
    assert_one_line_error(&out, "usage");
}

#[test]
fn threads_the_guest_starts_can_make_hypercalls() {
    let dir = tempfile::tempdir().unwrap();
    let src = write(
        dir.path(),
        "threads.c",
        r#"#include <pthread.h>
#include <stdio.h>
#include <string.h>
void *PerformCustomCallback(const char *name, void *args);
static void *worker(void *arg) {
  const char *dynamic = arg;
  /* A constant name (linked to its slot) and a dynamic one, from a thread of the guest's own. */
  /* A reply lives until the thread's next built-in hypercall. */
  const char *a = PerformCustomCallback("uppercut.code_info", "worker");
  int ok = strncmp(a, "worker v", 8) == 0;
  const char *b = PerformCustomCallback(dynamic, "worker");
  return (void *)(long)(ok && strncmp(b, "worker v", 8) == 0);
}
int main(void) {
  pthread_t t[4];
  char name[] = "uppercut.code_info";
  for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, name);
  int ok = 0;
  for (int i = 0; i < 4; i++) { void *r; pthread_join(t[i], &r); ok += (int)(long)r; }
  printf("%d threads got answers\n", ok);
  return ok == 4 ? 0 : 1;
}
"#,
    );
    let ll = dir.path().join("threads.ll");
    clang(&[
        "-O2",
        "-S",
        "-emit-llvm",
        src.to_str().unwrap(),
        "-o",
        ll.to_str().unwrap(),
    ]);
    let out = uppercut().arg("run").arg(&ll).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "4 threads got answers\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn osr_options_report_bad_use_in_one_line_and_count_what_moved() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prog = write(
        d,
        "loop.ll",
        "@g = global i64 0\n\
         define i32 @main() {\n\
         entry:\n  br label %loop\n\
         loop:\n  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]\n\
           %v = load i64, ptr @g\n  %v1 = add i64 %v, %i\n  store i64 %v1, ptr @g\n\
           %i1 = add i64 %i, 1\n  %c = icmp ult i64 %i1, 5000\n  br i1 %c, label %loop, label %done\n\
         done:\n  %r = load i64, ptr @g\n  %t = trunc i64 %r to i32\n  %m = and i32 %t, 127\n  ret i32 %m\n}\n",
    );
    let expected = ((0..5000u64).sum::<u64>() & 127) as i32;

    for bad in [
        "--osr=fast",
        "--osr=stress",
        "--osr=stress=x",
        "--osr-threshold=0",
    ] {
        let out = uppercut().args(["run", bad]).arg(&prog).output().unwrap();
        assert_one_line_error(&out, "--osr");
    }
    let out = uppercut()
        .args(["run", "--osr-specialize=nope"])
        .arg(&prog)
        .output()
        .unwrap();
    assert_one_line_error(&out, "no such global");

    // Tier-up waits for its code here: in the background, a run this short may end first.
    for mode in ["--osr=tier --osr-compile=sync", "--osr=stress=5"] {
        let out = uppercut()
            .args(["run", "-O0", "--osr-threshold=100", "--osr-stats"])
            .args(mode.split(' '))
            .arg(&prog)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(expected), "{mode}: {stderr}");
        let line = stderr.lines().last().unwrap_or_default();
        assert!(
            line.starts_with("uppercut: osr transitions="),
            "{mode}: {stderr}"
        );
        let counts: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('=')?.1.parse().ok())
            .collect();
        // transitions, frames, recompiles, caught_up, background, max_stall_us, patched
        assert_eq!(counts.len(), 7, "{line}");
        assert!(counts[6] >= counts[1], "{mode}: patched < frames: {line}");
        assert!(
            counts[0] > 0 && counts[1] > 0 && counts[2] > 0,
            "{mode}: {line}"
        );
    }
}

/// Prints each argument after the program's name on a line of its own; exits with `argc`.
const ECHO_ARGS: &str = "declare i32 @puts(ptr)\n\
define i32 @main(i32 %argc, ptr %argv) {\n\
entry:\n  br label %loop\n\
loop:\n  %i = phi i32 [ 1, %entry ], [ %i1, %body ]\n  %c = icmp slt i32 %i, %argc\n  br i1 %c, label %body, label %done\n\
body:\n  %idx = sext i32 %i to i64\n  %p = getelementptr ptr, ptr %argv, i64 %idx\n  %s = load ptr, ptr %p\n  %r = call i32 @puts(ptr %s)\n  %i1 = add i32 %i, 1\n  br label %loop\n\
done:\n  ret i32 %argc\n}\n";

#[test]
fn arguments_after_the_file_go_to_the_guest_even_when_they_look_like_options() {
    let dir = tempfile::tempdir().unwrap();
    let prog = write(dir.path(), "echo.ll", ECHO_ARGS);
    let guest = ["--osr=tier", "-x", "--", "--help", "-O0", "--osr-stats=xml"];
    for (options, stats) in [
        (&["-O3", "--osr-stats"][..], "uppercut: osr transitions=0 "),
        (
            &["-O", "1", "--osr-stats=text"][..],
            "uppercut: osr transitions=0 ",
        ),
        (&["--osr-stats=json"][..], "uppercut: osr {\"background\":0"),
    ] {
        let out = uppercut()
            .arg("run")
            .args(options)
            .arg(&prog)
            .args(guest)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1 + guest.len() as i32), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            guest.map(|a| format!("{a}\n")).concat()
        );
        assert_eq!(stderr.lines().count(), 1, "{options:?}: {stderr}");
        assert!(stderr.starts_with(stats), "{options:?}: {stderr}");
    }
}

#[test]
fn usage_errors_are_one_line_with_status_2_and_help_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let prog = write(dir.path(), "echo.ll", ECHO_ARGS);
    for (args, needle) in [
        (&["--osr-stats=xml"][..], "--osr-stats"),
        (&["--osr", "tier"][..], "--osr"),
        (&["--gdb=maybe"][..], "--gdb"),
        (&["-O4"][..], "-O4"),
        (&["--frobnicate"][..], "unknown option `--frobnicate`"),
    ] {
        let out = uppercut()
            .arg("run")
            .args(args)
            .arg(&prog)
            .output()
            .unwrap();
        assert_one_line_error(&out, needle);
        assert!(out.stdout.is_empty());
    }
    let out = uppercut().arg("run").output().unwrap();
    assert_one_line_error(&out, "FILE.ll");
    let out = uppercut().output().unwrap();
    assert_one_line_error(&out, "no command given");

    for args in [&["--help"][..], &["-h"], &["run", "--help"]] {
        let out = uppercut().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("usage: uppercut run "), "{stdout}");
        assert!(stdout.contains("--osr-stats=json"), "{stdout}");
    }
}
