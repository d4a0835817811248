//! What every experiment binary shares: its command line, the `uppercut` binary, running a
//! child under a time limit, repetitions interleaved across configurations, medians, and a
//! progress bar.
//!
//! Every experiment binary takes the same arguments:
//!
//! ```text
//! exp-NAME [--quick] [--out FILE] [--quiet] [--only NAME[,NAME...]]
//! ```
//!
//! `--quick` runs the small configuration (seconds, for CI's smoke run), `--out` names the results
//! file (default `results/NAME.json`), `--quiet` turns the progress bar off (it is drawn only
//! while stderr is a terminal anyway), `--only` runs only the named guests, for fast iteration
//! (`exp-overhead --only nsieve,fib`: a binary that takes it says what it names; the others
//! ignore it). On success the binary
//! prints one line naming the file; on failure, one line on stderr and exit status 2.
//!
//! ```no_run
//! use uppercut_experiments::harness::{self, Progress};
//! use uppercut_experiments::report::Row;
//!
//! fn main() {
//!     harness::main("example", "An example experiment", |args, report| {
//!         let reps = if args.quick { 3 } else { 11 };
//!         let progress = Progress::new(args, "example", reps);
//!         for rep in 0..reps {
//!             report.push(Row::new().key("rep", rep).value("value_ns", 1.0));
//!             progress.step("");
//!         }
//!         Ok(())
//!     })
//! }
//! ```

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

use crate::error::{Error, Result};
use crate::report::Report;

/// Environment variable naming the `uppercut` binary to run guests with.
pub const UPPERCUT_BIN_ENV: &str = "UPPERCUT_BIN";

/// An experiment binary's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// Run the small configuration.
    pub quick: bool,
    /// Where to write the results.
    pub out: PathBuf,
    /// No progress bar.
    pub quiet: bool,
    /// `--only`: the guests to run, by name (empty: every guest). Binaries that take it say
    /// what it names and fail on a name they do not know; the others ignore it.
    pub only: Vec<String>,
}

impl Args {
    /// Parses `args` (without the program name) for the experiment `name`.
    pub fn parse<I, S>(name: &str, args: I) -> Result<Args>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parsed = Args {
            quick: false,
            out: PathBuf::from("results").join(format!("{name}.json")),
            quiet: false,
            only: Vec::new(),
        };
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => parsed.quick = true,
                "--quiet" => parsed.quiet = true,
                "--out" => {
                    parsed.out = args
                        .next()
                        .map(PathBuf::from)
                        .ok_or_else(|| usage(name, "--out needs a file"))?;
                }
                "--only" => {
                    let names = args
                        .next()
                        .ok_or_else(|| usage(name, "--only needs a list of names"))?;
                    parsed.only = only_list(name, &names)?;
                }
                other => {
                    if let Some(file) = other.strip_prefix("--out=") {
                        parsed.out = PathBuf::from(file);
                    } else if let Some(names) = other.strip_prefix("--only=") {
                        parsed.only = only_list(name, names)?;
                    } else {
                        return Err(usage(name, &format!("unknown argument `{other}`")));
                    }
                }
            }
        }
        Ok(parsed)
    }

    /// Whether the guest `name` is to run: it is named by `--only`, or `--only` was not given.
    pub fn selects(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|n| n == name)
    }
}

/// The names of an `--only` list: comma-separated, none empty.
fn only_list(name: &str, list: &str) -> Result<Vec<String>> {
    let names: Vec<String> = list.split(',').map(|n| n.trim().to_owned()).collect();
    if names.iter().any(String::is_empty) {
        return Err(usage(
            name,
            &format!("--only takes NAME[,NAME...], not `{list}`"),
        ));
    }
    Ok(names)
}

fn usage(name: &str, what: &str) -> Error {
    Error::InvalidConfig {
        reason: format!(
            "{what} (usage: exp-{name} [--quick] [--out FILE] [--quiet] [--only NAME[,NAME...]])"
        ),
    }
}

/// Runs an experiment binary: parses the command line, runs `run` on a fresh [`Report`], times
/// it, writes the report, and exits (status 2 with one line on stderr on any error).
pub fn main<F>(name: &str, title: &str, run: F) -> !
where
    F: FnOnce(&Args, &mut Report) -> Result<()>,
{
    let code = match run_main(name, title, run) {
        Ok(path) => {
            println!("exp-{name}: results in {}", path.display());
            0
        }
        Err(e) => {
            eprintln!("exp-{name}: {e}");
            2
        }
    };
    std::process::exit(code)
}

fn run_main<F>(name: &str, title: &str, run: F) -> Result<PathBuf>
where
    F: FnOnce(&Args, &mut Report) -> Result<()>,
{
    let args = Args::parse(name, std::env::args().skip(1))?;
    let started = Instant::now();
    let mut report = Report::new(name, title, args.quick);
    run(&args, &mut report)?;
    report.seconds = started.elapsed().as_secs_f64();
    report.write(&args.out)?;
    Ok(args.out)
}

/// The `uppercut` binary: `$UPPERCUT_BIN` if set, else `uppercut` beside this executable (cargo
/// puts every binary of a workspace build in one folder).
pub fn uppercut() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(UPPERCUT_BIN_ENV) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
    let beside = exe.with_file_name("uppercut");
    if beside.is_file() {
        return Ok(beside);
    }
    // A test or an example runs from `<profile>/deps` or `<profile>/examples`.
    if let Some(up) = exe
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("uppercut"))
        && up.is_file()
    {
        return Ok(up);
    }
    Err(Error::MissingProgram {
        reason: format!(
            "no `uppercut` beside {}: build it with `cargo build --release -p uppercut-osr` or \
             set {UPPERCUT_BIN_ENV}",
            exe.display()
        ),
    })
}

/// What a child run under [`run_timed`] did.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub wall: Duration,
}

/// Runs `command` with stdin closed, capturing its output, killing it after `timeout`.
pub fn run_timed(command: &mut Command, timeout: Duration) -> Result<Timed> {
    let (what, started, mut child) = spawn_piped(command)?;
    let mut stdout = child.stdout.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = read_stderr(&mut child);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::io(format!("waiting for {what}"), e))?
        {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Timeout {
                what,
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    Ok(Timed {
        status,
        stdout,
        stderr,
        wall,
    })
}

/// What a child run under [`run_to_first_line`] did.
#[derive(Debug, Clone)]
pub struct FirstLine {
    /// Wall time from spawn to the end of the first line on its stdout.
    pub first_line: Duration,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// All it printed on stdout.
    pub stdout: String,
}

/// Runs `command` with stdin closed to its exit, timing when its first stdout line arrived (a
/// program's start-up, when it prints first thing); a run that fails is an error with its
/// stderr.
pub fn run_to_first_line(command: &mut Command) -> Result<FirstLine> {
    let (what, started, mut child) = spawn_piped(command)?;
    let err = read_stderr(&mut child);
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut out = String::new();
    stdout
        .read_line(&mut out)
        .map_err(|e| Error::io(format!("reading {what}"), e))?;
    let first_line = started.elapsed();
    stdout
        .read_to_string(&mut out)
        .map_err(|e| Error::io(format!("reading {what}"), e))?;
    let status = child
        .wait()
        .map_err(|e| Error::io(format!("waiting for {what}"), e))?;
    let wall = started.elapsed();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
        return Err(Error::Measurement {
            reason: format!("{what} failed ({status}): {stderr}"),
        });
    }
    Ok(FirstLine {
        first_line,
        wall,
        stdout: out,
    })
}

/// Starts `command` with stdin closed and stdout and stderr piped: its description for errors,
/// when it started, and the child.
fn spawn_piped(command: &mut Command) -> Result<(String, Instant, Child)> {
    let what = format!("{command:?}");
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting {what}"), e))?;
    Ok((what, started, child))
}

/// Reads a piped child's stderr to its end on a thread of its own (so that a full pipe never
/// blocks the child).
fn read_stderr(child: &mut Child) -> std::thread::JoinHandle<Vec<u8>> {
    let mut stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    })
}

/// The median of `samples` (the mean of the middle two for an even count); NaN when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Runs `measure` on each configuration `repetitions` times, round-robin (configuration 0, 1,
/// ..., then again), so that a slow phase of a shared machine hits every configuration alike;
/// returns the samples per configuration, in `configs` order.
pub fn interleave<C, F>(configs: &[C], repetitions: usize, mut measure: F) -> Result<Vec<Vec<f64>>>
where
    F: FnMut(&C) -> Result<f64>,
{
    let mut samples = vec![Vec::with_capacity(repetitions); configs.len()];
    for _ in 0..repetitions {
        for (i, config) in configs.iter().enumerate() {
            samples[i].push(measure(config)?);
        }
    }
    Ok(samples)
}

/// A progress bar on stderr, drawn by indicatif while stderr is a terminal: nothing in a log or
/// a pipe (CI, `scripts/reproduce` into a file), nothing with `--quiet`. The bar stays on its
/// line when it is dropped, where it got to (an experiment that failed shows how far it went).
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

/// `label [#######.......] 3/14 ~12s left what-was-done`.
const PROGRESS_TEMPLATE: &str = "{prefix} [{bar:30}] {pos}/{len} ~{eta} left {msg}";

impl Progress {
    /// A bar of `total` steps labelled `label`.
    pub fn new(args: &Args, label: &str, total: usize) -> Progress {
        let target = if args.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Progress::with_target(label, total, target)
    }

    fn with_target(label: &str, total: usize, target: ProgressDrawTarget) -> Progress {
        let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
            .expect("a valid template")
            .progress_chars("#.");
        let bar = ProgressBar::with_draw_target(Some(total.max(1) as u64), target)
            .with_style(style)
            .with_prefix(label.to_owned())
            .with_finish(ProgressFinish::Abandon);
        Progress { bar }
    }

    /// One step done; `what` says which (shown beside the bar).
    pub fn step(&self, what: &str) {
        self.bar.set_message(what.to_owned());
        self.bar.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_defaults_and_errors() {
        let a = Args::parse("x", Vec::<String>::new()).unwrap();
        assert!(!a.quick && !a.quiet);
        assert_eq!(a.out, Path::new("results/x.json"));
        let a = Args::parse("x", ["--quick", "--out", "o.json", "--quiet"]).unwrap();
        assert!(a.quick && a.quiet);
        assert_eq!(a.out, Path::new("o.json"));
        assert_eq!(
            Args::parse("x", ["--out=p.json"]).unwrap().out,
            Path::new("p.json")
        );
        let e = Args::parse("x", ["--fast"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown argument `--fast`") && e.contains("usage"),
            "{e}"
        );
        assert!(Args::parse("x", ["--out"]).is_err());
    }

    #[test]
    fn args_parse_only() {
        let a = Args::parse("x", Vec::<String>::new()).unwrap();
        assert!(a.only.is_empty() && a.selects("anything"));
        let a = Args::parse("x", ["--only", "nsieve,fib"]).unwrap();
        assert_eq!(a.only, ["nsieve", "fib"]);
        assert!(a.selects("fib") && !a.selects("nbody"));
        assert_eq!(Args::parse("x", ["--only=zstd"]).unwrap().only, ["zstd"]);
        for bad in [&["--only"][..], &["--only", "a,,b"], &["--only="]] {
            let e = Args::parse("x", bad.iter().copied())
                .unwrap_err()
                .to_string();
            assert!(e.contains("--only") && e.contains("usage"), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn median_and_interleave() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let mut order = Vec::new();
        let samples = interleave(&['a', 'b'], 2, |c| {
            order.push(*c);
            Ok(order.len() as f64)
        })
        .unwrap();
        assert_eq!(order, ['a', 'b', 'a', 'b']);
        assert_eq!(samples, [vec![1.0, 3.0], vec![2.0, 4.0]]);
    }

    #[test]
    fn run_timed_captures_and_times_out() {
        let t = run_timed(
            Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(t.stdout, "hi\n");
        assert_eq!(t.stderr, "err\n");
        assert_eq!(t.status.code(), Some(3));
        let e = run_timed(Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
    }

    /// What a progress bar drew, line by line, as a terminal would show it.
    #[derive(Debug, Clone, Default)]
    struct Screen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Screen {
        fn lines(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_owned());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.write_line(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn progress_shows_the_fraction_and_what_was_done() {
        let screen = Screen::default();
        let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
        let p = Progress::with_target("x", 4, target);
        p.step("first");
        p.step("half");
        assert_eq!(p.bar.position(), 2);
        drop(p);
        let lines = screen.lines();
        let last = lines.iter().rfind(|l| !l.trim().is_empty()).expect("drawn");
        assert!(
            last.starts_with("x [###############...............] 2/4 ~"),
            "{lines:?}"
        );
        assert!(last.ends_with(" left half"), "{lines:?}");
    }

    #[test]
    fn quiet_progress_is_hidden() {
        let args = Args::parse("x", ["--quiet"]).unwrap();
        let p = Progress::new(&args, "x", 4);
        assert!(p.bar.is_hidden());
        p.step("quiet: draws nothing");
        assert_eq!(p.bar.position(), 1);
    }
}
