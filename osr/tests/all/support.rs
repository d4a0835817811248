//! Shared helpers for the integration tests: the guest-program corpus in `tests/programs/`, its
//! `uppercut-test:` directives, compiling with clang-19, running a command with arguments and
//! standard input under a time limit, and comparing two runs with a readable report.
//!
//! The directive convention is documented in `tests/programs/README.md`; the parser here is the
//! reference.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable naming the JIT runner instead of `uppercut run`: a command line split on
/// whitespace, e.g. `lli-19 --jit-kind=mcjit`. A debugging aid; see the programs' README.
pub(crate) const RUNNER_ENV: &str = "UPPERCUT_DIFF_RUNNER";
/// Environment variable overriding the per-run time limit, in seconds.
pub(crate) const TIMEOUT_ENV: &str = "UPPERCUT_DIFF_TIMEOUT";
/// Environment variable: when set, compiled artefacts are kept and their folder is printed.
pub(crate) const KEEP_ENV: &str = "UPPERCUT_DIFF_KEEP";
/// Environment variable naming the clang to use (default: `clang-19` on the `PATH`).
pub(crate) use clang_probe::CLANG_ENV;

#[path = "../common/clang.rs"]
mod clang_probe;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The folder holding the C programs of the corpus.
pub(crate) fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs")
}

/// The source file of the corpus program `name` (without `.c` or `.cpp`): the C++ one when
/// there is one.
pub(crate) fn program_source(name: &str) -> PathBuf {
    let cxx = programs_dir().join(format!("{name}.cpp"));
    if cxx.exists() {
        return cxx;
    }
    programs_dir().join(format!("{name}.c"))
}

/// The source extensions of the corpus: C and C++.
const SOURCE_EXTENSIONS: [&str; 2] = ["c", "cpp"];

/// Whether `source` is C++ (compiled by clang++, which links libstdc++).
pub(crate) fn is_cxx(source: &Path) -> bool {
    source.extension() == Some(OsStr::new("cpp"))
}

/// Names (without extension) of every C and C++ program directly in `tests/programs/`, sorted.
pub(crate) fn corpus_program_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(programs_dir())
        .expect("read tests/programs")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|e| SOURCE_EXTENSIONS.iter().any(|x| OsStr::new(x) == e))
        })
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// Directives
// ---------------------------------------------------------------------------------------------

/// How a run must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Exited with this status (0..=255).
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl End {
    /// How `status` ended.
    pub(crate) fn of(status: ExitStatus) -> Option<End> {
        match (status.code(), status.signal()) {
            (Some(code), _) => Some(End::Code(code)),
            (None, Some(signal)) => Some(End::Signal(signal)),
            (None, None) => None,
        }
    }
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Code(code) => write!(f, "exit status {code}"),
            End::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// One run of a program, from one `// uppercut-test:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Case {
    /// 1-based line of the directive in the source (0 for the implicit default case).
    pub(crate) line: usize,
    /// Arguments after the program name.
    pub(crate) args: Vec<OsString>,
    /// Bytes fed to standard input (empty: standard input is empty, never inherited).
    pub(crate) stdin: Vec<u8>,
    /// How the native run must end (`exit=`, `signal=`; default exit status 0).
    pub(crate) end: End,
    /// Free-form labels (`tags=`), e.g. `setjmp` for programs an OSR engine may refuse.
    pub(crate) tags: Vec<String>,
    /// Why `lli` cannot match native here (`lli-differs=`); such cases are skipped under lli.
    pub(crate) lli_differs: Option<String>,
}

impl Case {
    fn default_at(line: usize) -> Case {
        Case {
            line,
            args: Vec::new(),
            stdin: Vec::new(),
            end: End::Code(0),
            tags: Vec::new(),
            lli_differs: None,
        }
    }

    /// A short human description: the line and the arguments.
    pub(crate) fn describe(&self) -> String {
        let args = if self.args.is_empty() {
            "no arguments".to_string()
        } else {
            format!("args [{}]", shell_words(&self.args))
        };
        let stdin = if self.stdin.is_empty() {
            String::new()
        } else {
            format!(", {} bytes of stdin", self.stdin.len())
        };
        if self.line == 0 {
            format!("default case ({args}{stdin})")
        } else {
            format!("case at line {} ({args}{stdin})", self.line)
        }
    }
}

/// The marker that starts a directive line.
pub(crate) const DIRECTIVE: &str = "// uppercut-test:";

/// Parses every `// uppercut-test:` line of `source` into a case. A source without any gets one
/// default case: no arguments, empty standard input, exit status 0.
pub(crate) fn parse_cases(source: &str) -> Result<Vec<Case>, String> {
    let mut cases = Vec::new();
    for (index, line) in source.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix(DIRECTIVE) {
            let case =
                parse_directive(rest, index + 1).map_err(|e| format!("line {}: {e}", index + 1))?;
            cases.push(case);
        }
    }
    if cases.is_empty() {
        cases.push(Case::default_at(0));
    }
    Ok(cases)
}

/// Parses the text after `// uppercut-test:` on line `line`.
pub(crate) fn parse_directive(text: &str, line: usize) -> Result<Case, String> {
    let mut case = Case::default_at(line);
    let mut seen: Vec<String> = Vec::new();
    let mut repeat = 1usize;
    let mut end_given = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &text[key_start..i];
        if i == bytes.len() || bytes[i] != b'=' {
            return Err(format!("expected `{key}=VALUE`"));
        }
        i += 1;
        let value = if bytes.get(i) == Some(&b'"') {
            let (value, next) = parse_quoted(bytes, i + 1)?;
            i = next;
            value
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            bytes[start..i].to_vec()
        };
        if key != "arg" {
            if seen.iter().any(|k| k == key) {
                return Err(format!("`{key}` given twice"));
            }
            seen.push(key.to_string());
        }
        let as_text = |value: Vec<u8>| {
            String::from_utf8(value).map_err(|_| format!("`{key}` must be UTF-8 text"))
        };
        match key {
            "args" => case.args.extend(
                value
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|word| !word.is_empty())
                    .map(|word| OsString::from_vec(word.to_vec())),
            ),
            "arg" => case.args.push(OsString::from_vec(value)),
            "stdin" => case.stdin = value,
            "stdin-repeat" => {
                repeat = as_text(value)?
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("`stdin-repeat` must be a positive integer")?;
            }
            "exit" | "signal" => {
                if end_given {
                    return Err("give `exit` or `signal`, not both".into());
                }
                end_given = true;
                let n: i32 = as_text(value)?
                    .parse()
                    .map_err(|_| format!("`{key}` must be an integer"))?;
                case.end = if key == "exit" {
                    if !(0..=255).contains(&n) {
                        return Err("`exit` must be in 0..=255".into());
                    }
                    End::Code(n)
                } else {
                    if !(1..=64).contains(&n) {
                        return Err("`signal` must be in 1..=64".into());
                    }
                    End::Signal(n)
                };
            }
            "tags" => {
                case.tags = as_text(value)?
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "lli-differs" => {
                let reason = as_text(value)?;
                if reason.trim().is_empty() {
                    return Err("`lli-differs` needs a reason".into());
                }
                case.lli_differs = Some(reason);
            }
            _ => return Err(format!("unknown key `{key}`")),
        }
    }
    case.stdin = case.stdin.repeat(repeat);
    Ok(case)
}

/// Parses a quoted value starting just after its opening quote; returns the bytes and the index
/// after the closing quote. Escapes: `\\ \" \n \t \r \0 \xHH`.
fn parse_quoted(bytes: &[u8], mut i: usize) -> Result<(Vec<u8>, usize), String> {
    let mut out = Vec::new();
    loop {
        match bytes.get(i) {
            None => return Err("unterminated quoted value".into()),
            Some(b'"') => return Ok((out, i + 1)),
            Some(b'\\') => {
                let escaped = match bytes.get(i + 1) {
                    Some(b'\\') => b'\\',
                    Some(b'"') => b'"',
                    Some(b'n') => b'\n',
                    Some(b't') => b'\t',
                    Some(b'r') => b'\r',
                    Some(b'0') => 0,
                    Some(b'x') => {
                        let hex = bytes
                            .get(i + 2..i + 4)
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or("`\\x` needs two hex digits")?;
                        out.push(hex);
                        i += 4;
                        continue;
                    }
                    Some(other) => return Err(format!("unknown escape `\\{}`", *other as char)),
                    None => return Err("unterminated quoted value".into()),
                };
                out.push(escaped);
                i += 2;
            }
            Some(&b) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Reads and parses the cases of corpus program `name`.
pub(crate) fn program_cases(name: &str) -> Vec<Case> {
    let path = program_source(name);
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_cases(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Compiling
// ---------------------------------------------------------------------------------------------

/// The optimisation level a program is compiled at (and, for the JIT, run at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OptLevel {
    O0,
    O2,
}

impl OptLevel {
    /// The flag for clang, `lli` and `uppercut run`.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            OptLevel::O0 => "-O0",
            OptLevel::O2 => "-O2",
        }
    }
}

/// Which form of LLVM IR the JIT is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IrFormat {
    /// Textual IR (`clang -S -emit-llvm`).
    Text,
    /// Bitcode (`clang -c -emit-llvm`).
    Bitcode,
}

impl IrFormat {
    /// The file extension, without the dot.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            IrFormat::Text => "ll",
            IrFormat::Bitcode => "bc",
        }
    }
}

/// The clang used for guest programs: `$UPPERCUT_CLANG`, else `clang-19`, else LLVM 19's own
/// folder. Panics with advice when none runs.
pub(crate) fn clang() -> &'static Path {
    static CLANG: OnceLock<PathBuf> = OnceLock::new();
    CLANG.get_or_init(|| {
        clang_probe::find_clang().unwrap_or_else(|tried| {
            panic!("no clang 19 found (tried {tried:?}); run scripts/setup or set {CLANG_ENV}")
        })
    })
}

/// Flags common to the native and the IR compilation of a program.
const COMMON_FLAGS: &[&str] = &["-pthread"];

/// The compiler for `source`: clang for C, clang++ (its `++` twin) for C++.
fn compiler_for(source: &Path) -> PathBuf {
    if !is_cxx(source) {
        return clang().to_owned();
    }
    static CLANGXX: OnceLock<PathBuf> = OnceLock::new();
    CLANGXX
        .get_or_init(|| {
            let clang = clang();
            let name = clang.file_name().unwrap().to_string_lossy();
            let twin = match name.strip_prefix("clang") {
                Some(rest) => format!("clang++{rest}"),
                None => panic!("cannot name the clang++ of {}", clang.display()),
            };
            clang.with_file_name(twin)
        })
        .clone()
}

/// Compiles `source` at `opt` into a native executable in `dir`.
pub(crate) fn compile_native(source: &Path, opt: OptLevel, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{}{}.native", stem(source), opt.flag()));
    let mut command = Command::new(compiler_for(source));
    command
        .arg(opt.flag())
        .args(COMMON_FLAGS)
        .arg(source)
        .arg("-o")
        .arg(&out)
        .arg("-lm");
    run_build_step(&mut command);
    out
}

/// Compiles `source` at `opt` into LLVM IR (`.ll` or `.bc`) in `dir`.
pub(crate) fn compile_ir(source: &Path, opt: OptLevel, format: IrFormat, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{}{}.{}",
        stem(source),
        opt.flag(),
        format.extension()
    ));
    let mut command = Command::new(compiler_for(source));
    command
        .arg(opt.flag())
        .args(COMMON_FLAGS)
        .arg(match format {
            IrFormat::Text => "-S",
            IrFormat::Bitcode => "-c",
        })
        .arg("-emit-llvm")
        .arg(source)
        .arg("-o")
        .arg(&out);
    run_build_step(&mut command);
    out
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Runs a build command and panics with its output if it fails.
pub(crate) fn run_build_step(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "build step failed: {command:?}\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A scratch folder for one test's artefacts: removed afterwards unless `$UPPERCUT_DIFF_KEEP`
/// is set, in which case it is kept and its path printed.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new scratch folder whose name starts with `label`.
    pub(crate) fn new(label: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(&format!("uppercut-{label}-"))
            .tempdir()
            .expect("create a scratch folder");
        Scratch { dir }
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept artefacts in {}", self.dir.path().display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/// What a run produced.
#[derive(Clone, Debug)]
pub(crate) struct Outcome {
    /// The command line, shell-quoted, for reports.
    pub(crate) command: String,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) status: ExitStatus,
    /// True when the run was killed for exceeding the time limit.
    pub(crate) timed_out: bool,
}

impl Outcome {
    /// How the run ended.
    pub(crate) fn end(&self) -> Option<End> {
        End::of(self.status)
    }

    /// The end, in words, including a time-out.
    pub(crate) fn describe_end(&self) -> String {
        let end = self
            .end()
            .map_or_else(|| format!("{:?}", self.status), |e| e.to_string());
        if self.timed_out {
            format!("{end} (killed after the time limit)")
        } else {
            end
        }
    }
}

/// The per-run time limit: `$UPPERCUT_DIFF_TIMEOUT` seconds, default 60.
pub(crate) fn time_limit() -> Duration {
    std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

/// Runs `program args...` in `cwd` with `stdin` as standard input, capturing standard output
/// and error; kills it after [`time_limit`].
pub(crate) fn run(program: &Path, args: &[OsString], stdin: &[u8], cwd: &Path) -> Outcome {
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, stdin, cwd)
}

/// Runs a prepared command like [`run`].
pub(crate) fn run_command(mut command: Command, stdin: &[u8], cwd: &Path) -> Outcome {
    let description = describe_command(&command);
    command
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));

    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    // A program may exit without reading its input: ignore the broken pipe.
    let writer = std::thread::spawn(move || {
        let _ = child_stdin.write_all(&input);
    });
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let reader_out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let reader_err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });

    let limit = time_limit();
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait for the killed child");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Outcome {
        command: description,
        stdout: reader_out.join().expect("stdout reader"),
        stderr: reader_err.join().expect("stderr reader"),
        status,
        timed_out,
    }
}

/// A command line, shell-quoted.
pub(crate) fn describe_command(command: &Command) -> String {
    let mut words = vec![command.get_program().to_os_string()];
    words.extend(command.get_args().map(OsStr::to_os_string));
    shell_words(&words)
}

/// Words joined with spaces, each quoted for a POSIX shell when needed.
pub(crate) fn shell_words(words: &[OsString]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(word: &OsStr) -> String {
    let bytes = word.as_bytes();
    let plain = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(b));
    if plain {
        return word.to_string_lossy().into_owned();
    }
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return format!("'{}'", word.to_string_lossy().replace('\'', r"'\''"));
    }
    // Non-printable or non-ASCII bytes: bash's $'...' form.
    let mut out = String::from("$'");
    for &b in bytes {
        match b {
            b'\'' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('\'');
    out
}

// ---------------------------------------------------------------------------------------------
// The JIT runner
// ---------------------------------------------------------------------------------------------

/// The command that runs IR: `uppercut run`, or what `$UPPERCUT_DIFF_RUNNER` names.
#[derive(Clone, Debug)]
pub(crate) struct Runner {
    /// The command words before the options (`[uppercut, run]`, or the variable's words).
    pub(crate) prefix: Vec<OsString>,
    /// True for LLVM's `lli`: uppercut-only options are not passed, `lli-differs` cases skipped.
    pub(crate) is_lli: bool,
}

impl Runner {
    /// `uppercut run`, or the runner `$UPPERCUT_DIFF_RUNNER` names.
    pub(crate) fn from_env() -> Runner {
        match std::env::var_os(RUNNER_ENV) {
            Some(value) if !value.as_bytes().iter().all(u8::is_ascii_whitespace) => {
                let prefix: Vec<OsString> = value
                    .as_bytes()
                    .split(u8::is_ascii_whitespace)
                    .filter(|w| !w.is_empty())
                    .map(|w| OsString::from_vec(w.to_vec()))
                    .collect();
                let is_lli = Path::new(&prefix[0])
                    .file_name()
                    .is_some_and(|name| name.as_bytes().starts_with(b"lli"));
                Runner { prefix, is_lli }
            }
            _ => Runner::uppercut(),
        }
    }

    /// `uppercut run` from this package's build.
    pub(crate) fn uppercut() -> Runner {
        Runner {
            prefix: vec![env!("CARGO_BIN_EXE_uppercut").into(), "run".into()],
            is_lli: false,
        }
    }

    /// A short name for reports.
    pub(crate) fn name(&self) -> String {
        shell_words(&self.prefix)
    }

    /// The command running `ir` at `opt` with `extra` runner options and the program's `args`:
    /// `PREFIX -O<n> EXTRA... FILE ARGS...` (`EXTRA` dropped for lli).
    pub(crate) fn command(
        &self,
        opt: OptLevel,
        extra: &[&str],
        ir: &Path,
        args: &[OsString],
    ) -> Command {
        let mut command = Command::new(&self.prefix[0]);
        command.args(&self.prefix[1..]).arg(opt.flag());
        if !self.is_lli {
            command.args(extra);
        }
        command.arg(ir).args(args);
        command
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing
// ---------------------------------------------------------------------------------------------

/// Compares a native run with a JIT run: same end (status or signal), same standard output,
/// same standard error. On a mismatch, returns a report with both command lines and a diff of
/// each stream that differs.
pub(crate) fn compare(native: &Outcome, jitted: &Outcome) -> Result<(), String> {
    let mut report = String::new();
    if native.timed_out || jitted.timed_out || native.end() != jitted.end() {
        let _ = writeln!(
            report,
            "  end differs: native {}, jitted {}",
            native.describe_end(),
            jitted.describe_end()
        );
    }
    for (name, a, b) in [
        ("stdout", &native.stdout, &jitted.stdout),
        ("stderr", &native.stderr, &jitted.stderr),
    ] {
        if a != b {
            let _ = writeln!(report, "  {name} differs (- native, + jitted):");
            report.push_str(&diff(a, b));
        }
    }
    if report.is_empty() {
        return Ok(());
    }
    Err(format!(
        "  native: {}\n  jitted: {}\n{report}",
        native.command, jitted.command
    ))
}

/// A line diff of `a` and `b`: common leading and trailing lines are cut down to three lines of
/// context, and long middles are elided.
pub(crate) fn diff(a: &[u8], b: &[u8]) -> String {
    const CONTEXT: usize = 3;
    const SHOWN: usize = 40;
    let a_lines = split_lines(a);
    let b_lines = split_lines(b);
    let prefix = a_lines
        .iter()
        .zip(&b_lines)
        .take_while(|(x, y)| x == y)
        .count();
    let suffix = a_lines[prefix..]
        .iter()
        .rev()
        .zip(b_lines[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = String::new();
    let context_start = prefix.saturating_sub(CONTEXT);
    if context_start > 0 {
        let _ = writeln!(out, "    @@ first {} lines equal @@", context_start);
    }
    for line in &a_lines[context_start..prefix] {
        let _ = writeln!(out, "     {}", show_line(line));
    }
    for (sign, lines) in [
        ('-', &a_lines[prefix..a_lines.len() - suffix]),
        ('+', &b_lines[prefix..b_lines.len() - suffix]),
    ] {
        for line in lines.iter().take(SHOWN) {
            let _ = writeln!(out, "    {sign}{}", show_line(line));
        }
        if lines.len() > SHOWN {
            let _ = writeln!(out, "    {sign}... {} more lines", lines.len() - SHOWN);
        }
    }
    let tail_start = a_lines.len() - suffix;
    let tail_end = (tail_start + CONTEXT).min(a_lines.len());
    for line in &a_lines[tail_start..tail_end] {
        let _ = writeln!(out, "     {}", show_line(line));
    }
    if a_lines.len() > tail_end {
        let _ = writeln!(
            out,
            "    @@ last {} lines equal @@",
            a_lines.len() - tail_end
        );
    }
    out
}

/// Splits into lines, each keeping its `\n` (so a missing final newline shows).
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|b| *b == b'\n').collect()
}

/// A line for a report: lossy UTF-8, the newline removed, a missing one noted.
fn show_line(line: &[u8]) -> String {
    match line.strip_suffix(b"\n") {
        Some(body) => String::from_utf8_lossy(body).into_owned(),
        None => format!("{}⏎ (no newline at end)", String::from_utf8_lossy(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_without_directives_has_one_default_case() {
        let cases = parse_cases("int main(void) { return 0; }\n").unwrap();
        assert_eq!(cases, vec![Case::default_at(0)]);
    }

    #[test]
    fn directives_parse_every_key() {
        let source = concat!(
            "// about\n",
            "// uppercut-test: args=\"a  b\" arg=\"c d\" arg=\"\" stdin=\"1\\n\\x41\\\"\" ",
            "stdin-repeat=2 exit=44 tags=\"setjmp,slow\" lli-differs=\"order\"\n",
            "  // uppercut-test: args=x signal=6\n",
        );
        let cases = parse_cases(source).unwrap();
        assert_eq!(cases.len(), 2);
        let first = &cases[0];
        assert_eq!(first.line, 2);
        assert_eq!(
            first.args,
            ["a", "b", "c d", ""].map(OsString::from).to_vec()
        );
        assert_eq!(first.stdin, b"1\nA\"1\nA\"");
        assert_eq!(first.end, End::Code(44));
        assert_eq!(first.tags, ["setjmp", "slow"]);
        assert_eq!(first.lli_differs.as_deref(), Some("order"));
        let second = &cases[1];
        assert_eq!((second.line, second.end), (3, End::Signal(6)));
        assert_eq!(second.args, vec![OsString::from("x")]);
        assert!(second.stdin.is_empty());
    }

    #[test]
    fn arguments_may_hold_any_bytes() {
        let case = parse_directive(r#"arg="\xc3\xbc\x01" arg=tab\there"#, 1).unwrap();
        assert_eq!(case.args[0].as_bytes(), b"\xc3\xbc\x01");
        assert_eq!(
            case.args[1],
            OsString::from(r"tab\there"),
            "no escapes outside quotes"
        );
    }

    #[test]
    fn bad_directives_are_rejected() {
        for bad in [
            "args",
            "color=red",
            "exit=256",
            "exit=1 signal=9",
            "signal=0",
            "stdin=\"open",
            "stdin=\"\\q\"",
            "stdin=\"\\x4\"",
            "stdin-repeat=0",
            "args=a args=b",
            "lli-differs=\"\"",
        ] {
            assert!(parse_directive(bad, 1).is_err(), "accepted `{bad}`");
        }
        let err = parse_cases("x\n// uppercut-test: nope=1\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }

    #[test]
    fn diff_shows_the_changed_lines_with_context() {
        let a = b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
        let b = b"1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n";
        let d = diff(a, b);
        assert_eq!(
            d,
            "    @@ first 1 lines equal @@\n     2\n     3\n     4\n    -5\n    +five\n     6\n     7\n     8\n    @@ last 2 lines equal @@\n"
        );
        let d = diff(b"same\nend\n", b"same\nend");
        assert_eq!(d, "     same\n    -end\n    +end⏎ (no newline at end)\n");
    }

    #[test]
    fn shell_quoting_round_trips_through_sh() {
        let words: Vec<OsString> = ["plain", "with space", "it's", "", "a\tb"]
            .map(OsString::from)
            .to_vec();
        let line = shell_words(&words);
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("printf '[%s]' {line}"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[plain][with space][it's][][a\tb]"
        );
    }

    #[test]
    fn run_feeds_stdin_and_captures_both_streams_and_the_status() {
        let dir = Scratch::new("support");
        let out = run(
            Path::new("sh"),
            &["-c", "cat; echo err >&2; exit 3"].map(OsString::from),
            b"input bytes",
            dir.path(),
        );
        assert_eq!(out.stdout, b"input bytes");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.end(), Some(End::Code(3)));
        assert!(!out.timed_out);
        let killed = run(
            Path::new("sh"),
            &["-c", "kill -SEGV $$"].map(OsString::from),
            b"",
            dir.path(),
        );
        assert_eq!(killed.end(), Some(End::Signal(11)));
        let report = compare(&out, &killed).unwrap_err();
        assert!(report.contains("end differs: native exit status 3, jitted killed by signal 11"));
        assert!(
            report.contains("    -input bytes⏎ (no newline at end)"),
            "{report}"
        );
        assert!(compare(&out, &out.clone()).is_ok());
    }
}
