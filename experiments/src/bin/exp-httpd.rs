//! Experiment 6, the web server of the design note: the configuration global `extended_status`
//! (Apache's `ap_extended_status`) is switched at run time under load, and Uppercut specialises
//! the live server on each value it is given.
//!
//! The server (`experiments/guests/httpd.c`, clang -O2 IR) runs under
//! `uppercut run --osr-specialize=extended_status --osr-stats`. The load generator
//! ([`load`]: real sockets on loopback, four keep-alive
//! connections in a closed loop, a mix of `/hello`, `/` and `/status`) drives it for a
//! warm-up and four phases, and at the start of phases 2 to 4 sends a control request on a
//! connection of its own, `GET /control?extended=V`: the guest stores `V`, the store's
//! hypercall rebuilds every function that reads the flag (at clang -O2: `main`, into which the
//! poll loop and the whole request path are inlined, and `respond`) with `V` folded in, and
//! their live frames (`main`'s: one per switch) move into the new code before the control is
//! answered.
//!
//! Phases (key `phase`), in one server run:
//!
//! - `initial`: before any store. Under `uppercut-osr` this is the *generic* code: the
//!   [`Specialise`](uppercut_osr::policy::Specialise) policy acts only after a store (until then
//!   it cannot know that the value will not change), so the functions run the unspecialised
//!   base code (O2, with the store sites' hypercalls and the call sites' deopt records),
//!   loading `extended_status` (0) at every use.
//! - `extended=0`: after `/control?extended=0`: specialised on 0, the cheap path (the same value
//!   as before, but now a constant: the bookkeeping branches are gone);
//! - `extended=1`: after `/control?extended=1`: every frame assuming 0 is deoptimised and the
//!   readers are specialised again on 1 (the extended bookkeeping on every request);
//! - `extended=0-again`: after `/control?extended=0`: back to the cheap path.
//!
//! A closed-loop phase's requests are those that began after the control that opened it was
//! answered (plus 10 ms) and ended before the next control was sent: transitions are measured
//! apart (a phase left with less than 100 ms by a transition as long as itself, on a busy
//! machine, is left out of that repetition, with a note).
//!
//! Servers (key `server`), each with the same load and schedule unless said otherwise:
//!
//! - `uppercut-osr`: as above;
//! - `uppercut-plain`: the same IR under `uppercut run` without OSR (the stores are plain);
//! - `native`: the same source compiled by clang -O2 to an executable;
//! - `hand-specialised`: the source with `#define HTTPD_EXTENDED_STATUS V` in front (the flag a
//!   compile-time constant, `/control` a no-op), under `uppercut run` without OSR; two server
//!   runs, one per value, each a warm-up and one phase named `extended=V`.
//!
//! The code's own speed. Under the closed-loop load a request costs two system calls and a
//! loopback round trip, which hide the flag's few nanoseconds, and the machine's other
//! processes move throughput and latency by tens of percent. So each repetition ends with a
//! *pipelined comparison* (key `load`: `pipelined`; the closed-loop rows have `closed-loop`):
//! all five servers run at once, idle but for their turn; in each of the phases `initial`,
//! `extended=0` and `extended=1` (the servers with a flag get the control before the last two;
//! each hand-specialised server takes part in the phase of its value), rounds of 100 ms slices
//! give each server in turn one connection that writes 128 `GET /hello` requests at once and
//! reads the 128 answers, again and again. The measure is the server's CPU time per request
//! ([`cpu`], `/proc/PID/task/*/schedstat`: user and kernel, all
//! threads), in which one poll, two receives and one send are shared by 128 requests; and the
//! comparisons take ratios between the slices of one round, a fraction of a second apart, so
//! that a busy spell of the machine hits both sides of a ratio.
//!
//! Every request of both loads must be answered with a 2xx (else the experiment fails), and
//! `/quit` must end every server with status 0.
//!
//! Rows (values are medians over the repetitions, unless said otherwise):
//!
//! - key `{server, load: closed-loop, phase}`: `requests_per_s`; `p50_us`, `p90_us`, `p99_us`,
//!   `p999_us`, `max_us`, `mean_us` (latency of one request, first byte sent to last byte
//!   read); `cpu_us_per_request`; `server_cpu_ratio`, the share of the wall time the server
//!   ran; `requests` (in the phase's window); `failed` (failed requests of the whole run,
//!   summed over the repetitions: 0);
//! - key `{server, load: pipelined, phase}`, over every slice of every repetition:
//!   `cpu_us_per_request` (the median slice), `cpu_min_us_per_request` (the least),
//!   `requests_per_s`, `server_cpu_ratio`, `requests` (per repetition), `failed` (0);
//! - key `{server, transition, to}` (`transition` 0, 1, 2 of the closed-loop load; `to`
//!   `extended=0` etc.): `pause_ms`, the longest stretch without any response completed that
//!   overlaps the control's request (`pause_max_ms`: the largest over the repetitions);
//!   `control_ms`, the control request's own latency (the store and its hypercall happen
//!   inside it); `in_flight_max_ms`, the longest latency of a mix request in flight meanwhile;
//!   `at_ms`, when the control was sent in the first repetition (the one whose timeline is
//!   reported);
//! - key `{server: uppercut-osr, series: osr-stats}`: the `--osr-stats` counts of a
//!   closed-loop run (three stores of a new value): `transitions_count`, `frames_count`,
//!   `recompiles_count`, `max_stall_ms` (the longest hypercall of the run: the longest
//!   transition's stall);
//! - key `{server, series: startup}`: `startup_ms`, from spawning the server to its
//!   `listening on PORT` line (the JIT compiles the guest meanwhile);
//! - key `{series: timeline, server: uppercut-osr, t_ms}`: `requests` completed in the 10 ms
//!   bucket starting at `t_ms`, over the whole closed-loop load of the first `uppercut-osr`
//!   run (transitions at the transition rows' `at_ms`);
//! - key `{series: fraction-kept, phase}` for `extended=0` and `extended=1`, from the pipelined
//!   comparison, each ratio the median over every round of every repetition:
//!   `kept_ratio`, `hand-specialised`'s CPU per request over `uppercut-osr`'s in the phase:
//!   the share of hand specialisation's performance that specialisation by OSR keeps
//!   (OSRKit's measure: 94.1% in its worst case); `hand_speedup_ratio`, `uppercut-plain`'s
//!   over `hand-specialised`'s; `kept_rps_ratio`, the closed-loop requests/s of
//!   `uppercut-osr` over `hand-specialised`'s. `extended=0` only: `osr_speedup_ratio`,
//!   Uppercut's specialisation against its own generic code, as the ratio of `uppercut-osr`
//!   over `uppercut-plain` in `initial` to the same in `extended=0`; `noise_ratio`, how far
//!   the same ratio of ratios lies from 1 for `native` over `uppercut-plain`, whose code does
//!   not change; `gain_kept_ratio`, `(osr_speedup - 1) / (hand_speedup - 1)`, only when hand
//!   specialisation gains more than 2% and more than twice `noise_ratio`.
//!
//! Checked by `reproduce --check`: `failed` (exactly), `transitions_count` and `frames_count`
//! (exactly), `kept_ratio` (within 25%: the noise seen on a shared two-core machine).
//!
//! What to expect: the extended bookkeeping (a few counter updates and two `clock_gettime`
//! calls per request) shows only under the pipelined load, as some 10% more CPU per request
//! with `extended=1`, in every server alike. Specialising on 0 removes loads of the flag and
//! well-predicted branches: below what these measurements resolve, so hand specialisation
//! gains nothing measurable over the unspecialised code either, and `gain_kept_ratio` is
//! usually absent. The mix avoids `/compute`, whose CPU work does not depend on the flag and
//! would only dilute it further.
//!
//! `cargo run --release -p uppercut-experiments --bin exp-httpd -- [--quick] [--out FILE]`

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use uppercut_core::OptLevel;
use uppercut_experiments::cpu::{self, Sampler, Samples};
use uppercut_experiments::harness::{self, Args, Progress};
use uppercut_experiments::http::{self, Connection};
use uppercut_experiments::httpd::{self, Server};
use uppercut_experiments::load::{self, Control, LoadConfig, LoadReport, Mix, Until};
use uppercut_experiments::osr_stats::OsrCounts;
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result};

/// The phases of the OSR, plain and native runs, in order.
const PHASES: [&str; 4] = ["initial", "extended=0", "extended=1", "extended=0-again"];

/// The control that opens each phase after the first.
const CONTROLS: [(&str, &str); 3] = [
    ("/control?extended=0", "extended=0"),
    ("/control?extended=1", "extended=1"),
    ("/control?extended=0", "extended=0"),
];

/// A closed-loop phase whose window (after its control was answered) is shorter than this is
/// not measured in that repetition.
const MIN_WINDOW: Duration = Duration::from_millis(100);

/// Requests that began this soon after a control was answered are left out of the phase.
const SETTLE: Duration = Duration::from_millis(10);

/// Pipelined load: connections.
const PIPE_CONNECTIONS: usize = 1;
/// Pipelined load: requests written at once on each connection.
const PIPE_BATCH: usize = 128;
/// Pipelined load: the request.
const PIPE_TARGET: &str = "/hello?name=pipe";

/// How often the server's CPU time is read.
const SAMPLE_PERIOD: Duration = Duration::from_millis(5);

/// Load connections.
const CONNECTIONS: usize = 4;

/// The limit on the server's start (the JIT compiles it) and exit.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The mix: light requests, where the per-request bookkeeping weighs most.
const MIX: [(&str, u32); 3] = [("/hello?name=load", 6), ("/", 3), ("/status", 1)];

/// How a server is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Osr,
    Plain,
    Native,
    /// Hand-specialised on the value.
    Hand(u8),
}

impl Kind {
    fn server(self) -> &'static str {
        match self {
            Kind::Osr => "uppercut-osr",
            Kind::Plain => "uppercut-plain",
            Kind::Native => "native",
            Kind::Hand(_) => "hand-specialised",
        }
    }

    /// The phases this server's run measures with closed-loop load.
    fn phases(self) -> Vec<&'static str> {
        match self {
            Kind::Hand(0) => vec!["extended=0"],
            Kind::Hand(_) => vec!["extended=1"],
            _ => PHASES.to_vec(),
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::Osr,
    Kind::Plain,
    Kind::Native,
    Kind::Hand(0),
    Kind::Hand(1),
];

/// One phase of one run.
#[derive(Debug, Clone, Default)]
struct PhaseStats {
    values: BTreeMap<&'static str, f64>,
}

/// One transition of one run.
#[derive(Debug, Clone)]
struct TransitionStats {
    to: &'static str,
    pause_ms: f64,
    control_ms: f64,
    in_flight_max_ms: f64,
    at_ms: f64,
}

/// What one server run measured.
struct RunStats {
    /// `(load, phase, stats)`.
    phases: Vec<(&'static str, &'static str, PhaseStats)>,
    transitions: Vec<TransitionStats>,
    failed: u64,
    startup_ms: f64,
    osr: Option<OsrCounts>,
    timeline: Vec<u64>,
}

fn main() {
    harness::main(
        "httpd",
        "A web server specialised on its configuration flag under load",
        run,
    )
}

fn bad(reason: String) -> Error {
    Error::Measurement { reason }
}

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let (warmup, phase, slice, rounds, reps) = if args.quick {
        (
            Duration::from_millis(400),
            Duration::from_millis(1200),
            Duration::from_millis(100),
            6,
            1,
        )
    } else {
        (
            Duration::from_millis(1000),
            Duration::from_millis(2500),
            Duration::from_millis(100),
            10,
            3,
        )
    };
    let schedule = Schedule {
        warmup,
        phase,
        slice,
        rounds,
    };
    let clang = Clang::find()?;
    let uppercut = harness::uppercut()?;
    report.environment.clang = clang.version().to_owned();
    let ir = clang.compile_ir(httpd::NAME, httpd::SOURCE, OptLevel::O2)?;
    let native = clang.compile_native(httpd::NAME, httpd::SOURCE, OptLevel::O2)?;
    let hand: Vec<_> = [0u8, 1]
        .iter()
        .map(|v| {
            let source = format!("#define HTTPD_EXTENDED_STATUS {v}\n{}", httpd::SOURCE);
            clang.compile_ir(&format!("httpd-hand-{v}"), &source, OptLevel::O2)
        })
        .collect::<Result<_>>()?;
    report.setting("warmup_ms", warmup.as_millis() as u64);
    report.setting("phase_ms", phase.as_millis() as u64);
    report.setting("pipelined_slice_ms", slice.as_millis() as u64);
    report.setting("pipelined_rounds", rounds);
    report.setting(
        "pipelined",
        format!("{PIPE_CONNECTIONS} connections, {PIPE_BATCH} x GET {PIPE_TARGET} per write"),
    );
    report.setting("repetitions", reps);
    report.setting("connections", CONNECTIONS);
    report.setting(
        "mix",
        MIX.iter()
            .map(|(t, w)| format!("{t} x{w}"))
            .collect::<Vec<_>>(),
    );
    report.setting(
        "servers",
        KINDS
            .iter()
            .map(|k| match k {
                Kind::Hand(v) => format!("hand-specialised (extended_status = {v})"),
                k => k.server().to_owned(),
            })
            .collect::<Vec<_>>(),
    );
    report.setting(
        "guest",
        "experiments/guests/httpd.c, clang -O2 IR; uppercut run -O2 \
         [--osr-specialize=extended_status --osr-stats]; native: clang -O2",
    );
    let mix = Mix::weighted(MIX)?;
    let progress = Progress::new(args, "httpd", reps * (KINDS.len() + 1));
    let command = |kind: Kind| match kind {
        Kind::Osr => {
            let mut c = Command::new(&uppercut);
            c.args([
                "run",
                "--osr-specialize=extended_status",
                "--osr-stats=json",
            ])
            .arg(ir.path());
            c
        }
        Kind::Plain => {
            let mut c = Command::new(&uppercut);
            c.arg("run").arg(ir.path());
            c
        }
        Kind::Native => Command::new(native.path()),
        Kind::Hand(v) => {
            let mut c = Command::new(&uppercut);
            c.arg("run").arg(hand[usize::from(v)].path());
            c
        }
    };
    let mut runs: Vec<Vec<RunStats>> = (0..KINDS.len()).map(|_| Vec::new()).collect();
    let mut pipes = Vec::with_capacity(reps);
    // Repetitions interleave the servers, so that a slow phase of the machine hits all alike.
    for rep in 0..reps {
        for (i, &kind) in KINDS.iter().enumerate() {
            let stats = serve(kind, command(kind), &mix, &schedule)?;
            progress.step(&format!("{} rep {rep}", kind.server()));
            runs[i].push(stats);
        }
        pipes.push(pipelined_stage(KINDS.map(command), &schedule)?);
        progress.step(&format!("pipelined rep {rep}"));
    }
    summarise(report, &runs, &pipes, warmup, phase);
    Ok(())
}

/// How long each part of a server run lasts.
struct Schedule {
    warmup: Duration,
    phase: Duration,
    /// One pipelined slice.
    slice: Duration,
    /// Pipelined rounds per phase.
    rounds: usize,
}

/// Starts a server with `command` (plus the port argument), runs the closed-loop load on it
/// (warm-up, `initial`, then `extended=0`, `extended=1` and `extended=0-again` each opened by
/// its control; `hand-specialised`: warm-up and its one phase), quits it.
fn serve(kind: Kind, mut command: Command, mix: &Mix, schedule: &Schedule) -> Result<RunStats> {
    let server_name = kind.server();
    command.arg("0");
    let started = Instant::now();
    let server = Server::start(command, START_TIMEOUT)?;
    let startup_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut measured = Vec::new();
    let phases = kind.phases();
    let total = schedule.warmup + schedule.phase * phases.len() as u32;
    let mut config = LoadConfig::new(server.addr(), mix.clone(), Until::Elapsed(total));
    config.connections = CONNECTIONS;
    config.timeout = Duration::from_secs(10);
    if phases.len() == PHASES.len() {
        config.controls = CONTROLS
            .iter()
            .enumerate()
            .map(|(k, (target, _))| {
                Control::new(schedule.warmup + schedule.phase * (k as u32 + 1), *target)
            })
            .collect();
    }
    let sampler = Sampler::start(server.id(), Instant::now(), SAMPLE_PERIOD)?;
    let load = load::run(&config);
    let cpu = sampler.stop();
    let load = load?;
    let failed = load.failures.total();
    if failed > 0 || load.controls.iter().any(|c| !c.succeeded()) {
        return Err(bad(format!(
            "{server_name}: {failed} requests failed ({:?}); controls {:?}; first errors {:?}",
            load.failures,
            load.controls.iter().map(|c| &c.outcome).collect::<Vec<_>>(),
            load.errors
        )));
    }
    for (name, stats) in phase_stats(&load, &cpu, &phases, schedule.warmup) {
        measured.push(("closed-loop", name, stats));
    }
    let quit = http::get(server.addr(), "/quit");
    let finished = server.wait(Duration::from_secs(30))?;
    if !quit.is_ok_and(|r| r.is_success()) || !finished.status.success() {
        return Err(bad(format!(
            "{server_name}: /quit did not end the server cleanly ({}): {}",
            finished.status,
            finished.stderr.trim_end()
        )));
    }
    let osr = if kind == Kind::Osr {
        Some(OsrCounts::parse(&finished.stderr).ok_or_else(|| {
            bad(format!(
                "{server_name}: no --osr-stats line in {:?}",
                finished.stderr
            ))
        })?)
    } else {
        None
    };
    Ok(RunStats {
        phases: measured,
        transitions: transition_stats(&load),
        failed,
        startup_ms,
        osr,
        timeline: load.timeline.completed.clone(),
    })
}

/// Sends a control request; an error unless it is answered with a 2xx.
fn control(server: &Server, target: &str) -> Result<()> {
    let response = http::get(server.addr(), target)?;
    if !response.is_success() {
        return Err(bad(format!("{target}: status {}", response.status)));
    }
    Ok(())
}

/// The phases of the pipelined comparison.
const PIPE_PHASES: [&str; 3] = ["initial", "extended=0", "extended=1"];

/// Whether `kind` is measured in pipelined phase `phase`: the hand-specialised servers only in
/// the phase of their value.
fn measured_in(kind: Kind, phase: &str) -> bool {
    match kind {
        Kind::Hand(0) => phase == "extended=0",
        Kind::Hand(_) => phase == "extended=1",
        _ => true,
    }
}

/// One pipelined slice on one server.
#[derive(Debug, Clone, Copy)]
struct Slice {
    requests: f64,
    cpu_ns: f64,
    seconds: f64,
}

impl Slice {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_ns / 1e3 / self.requests.max(1.0)
    }
}

/// One repetition of the pipelined comparison: `slices[server][phase][round]`, servers in
/// [`KINDS`] order, phases in [`PIPE_PHASES`] order (empty where not measured).
struct PipeRun {
    slices: Vec<Vec<Vec<Slice>>>,
}

/// The pipelined comparison: every server runs at once (idle but for its turn); in each phase,
/// `rounds` rounds give each server measured there one slice of pipelined load in turn (the
/// order rotating from round to round), so that the slices of one round, a fraction of a second
/// apart, see the machine alike, and ratios within a round cancel its busy spells. Before
/// `extended=0` and `extended=1`, the servers with a flag get the control.
fn pipelined_stage(commands: [Command; 5], schedule: &Schedule) -> Result<PipeRun> {
    let servers = commands
        .into_iter()
        .map(|mut c| {
            c.arg("0");
            Server::start(c, START_TIMEOUT)
        })
        .collect::<Result<Vec<Server>>>()?;
    let mut slices = vec![vec![Vec::new(); PIPE_PHASES.len()]; KINDS.len()];
    for (p, &phase) in PIPE_PHASES.iter().enumerate() {
        for (&kind, server) in KINDS.iter().zip(&servers) {
            if p > 0 && !matches!(kind, Kind::Hand(_)) {
                control(server, &format!("/control?{phase}"))?;
            }
            if measured_in(kind, phase) {
                // Warm the connection path and the caches; not measured.
                pipelined_slice(server, schedule.slice / 4)?;
            }
        }
        for round in 0..schedule.rounds {
            for j in 0..KINDS.len() {
                let i = (round + j) % KINDS.len();
                if measured_in(KINDS[i], phase) {
                    slices[i][p].push(pipelined_slice(&servers[i], schedule.slice)?);
                }
            }
        }
    }
    for (kind, server) in KINDS.iter().zip(servers) {
        let quit = http::get(server.addr(), "/quit");
        let finished = server.wait(Duration::from_secs(30))?;
        if !quit.is_ok_and(|r| r.is_success()) || !finished.status.success() {
            return Err(bad(format!(
                "{} (pipelined): /quit did not end the server cleanly ({}): {}",
                kind.server(),
                finished.status,
                finished.stderr.trim_end()
            )));
        }
    }
    Ok(PipeRun { slices })
}

/// One slice of pipelined load for `duration`: [`PIPE_CONNECTIONS`] threads each write
/// [`PIPE_BATCH`] requests at once, then read the answers (all must be 2xx). The system calls
/// and the loopback round trip are shared by a batch, so the server's own code per request
/// weighs more than under the closed-loop load.
fn pipelined_slice(server: &Server, duration: Duration) -> Result<Slice> {
    let addr = server.addr();
    let request = format!("GET {PIPE_TARGET} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let batch = request.repeat(PIPE_BATCH).into_bytes();
    let gone = || bad(format!("the server (process {}) is gone", server.id()));
    let cpu_before = cpu::used(server.id()).ok_or_else(gone)?;
    let start = Instant::now();
    let counts: Vec<Result<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..PIPE_CONNECTIONS)
            .map(|_| {
                scope.spawn(|| -> Result<u64> {
                    let mut c = Connection::open(addr, Duration::from_secs(10))?;
                    let mut n = 0;
                    while start.elapsed() < duration {
                        c.send_raw(&batch)?;
                        for _ in 0..PIPE_BATCH {
                            let r = c.receive(false)?;
                            if !r.is_success() {
                                return Err(bad(format!(
                                    "pipelined {PIPE_TARGET}: status {}",
                                    r.status
                                )));
                            }
                        }
                        n += PIPE_BATCH as u64;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let cpu_ns = cpu::used(server.id()).ok_or_else(gone)? - cpu_before;
    let requests = counts.into_iter().sum::<Result<u64>>()? as f64;
    Ok(Slice {
        requests,
        cpu_ns,
        seconds,
    })
}

/// The phases' windows and what happened in them.
fn phase_stats(
    load: &LoadReport,
    cpu: &Samples,
    phases: &[&'static str],
    warmup: Duration,
) -> Vec<(&'static str, PhaseStats)> {
    let mut out = Vec::with_capacity(phases.len());
    for (k, &name) in phases.iter().enumerate() {
        let begin = match k {
            0 => warmup,
            _ => {
                let c = &load.controls[k - 1];
                c.sent + c.latency + SETTLE
            }
        };
        let end = load.controls.get(k).map_or(load.elapsed, |c| c.sent);
        let mut latencies: Vec<Duration> = load
            .samples
            .iter()
            .filter(|s| s.done.saturating_sub(s.latency) >= begin && s.done <= end)
            .map(|s| s.latency)
            .collect();
        let n = latencies.len();
        if end < begin + MIN_WINDOW || n == 0 {
            // A transition that lasted (almost) as long as the phase left nothing to measure.
            out.push((name, PhaseStats::default()));
            continue;
        }
        let l = load::Latency::from_samples(&mut latencies);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let seconds = end.saturating_sub(begin).as_secs_f64().max(1e-9);
        let cpu_ns = cpu.between(begin, end);
        let mut stats = PhaseStats::default();
        for (value, v) in [
            ("requests_per_s", n as f64 / seconds),
            ("cpu_us_per_request", cpu_ns / 1e3 / (n as f64).max(1.0)),
            ("server_cpu_ratio", cpu_ns / 1e9 / seconds),
            ("p50_us", us(l.p50)),
            ("p90_us", us(l.p90)),
            ("p99_us", us(l.p99)),
            ("p999_us", us(l.p999)),
            ("max_us", us(l.max)),
            ("mean_us", us(l.mean)),
            ("requests", n as f64),
        ] {
            stats.values.insert(value, v);
        }
        out.push((name, stats));
    }
    out
}

/// The pause around each control request.
fn transition_stats(load: &LoadReport) -> Vec<TransitionStats> {
    let gaps = load.gaps(Duration::ZERO);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    load.controls
        .iter()
        .zip(CONTROLS)
        .map(|(c, (_, to))| {
            let (from, until) = (c.sent, c.sent + c.latency);
            let pause = gaps
                .iter()
                .filter(|g| g.start <= until && g.start + g.length >= from)
                .map(|g| g.length)
                .max()
                .unwrap_or_default();
            let in_flight = load
                .samples
                .iter()
                .filter(|s| s.done.saturating_sub(s.latency) <= until && s.done >= from)
                .map(|s| s.latency)
                .max()
                .unwrap_or_default();
            TransitionStats {
                to,
                pause_ms: ms(pause),
                control_ms: ms(c.latency),
                in_flight_max_ms: ms(in_flight),
                at_ms: ms(c.sent),
            }
        })
        .collect()
}

/// The position of `kind` in [`KINDS`].
fn index(kind: Kind) -> usize {
    KINDS
        .iter()
        .position(|&k| k == kind)
        .expect("every kind is in KINDS")
}

/// The pipelined rows: every slice of every repetition, per server and phase.
fn summarise_pipelined<'a>(
    report: &mut Report,
    pipes: &[PipeRun],
    medians: &mut BTreeMap<(&'a str, &'a str, &'a str), BTreeMap<&'a str, f64>>,
) {
    for (i, kind) in KINDS.iter().enumerate() {
        for (p, &phase) in PIPE_PHASES.iter().enumerate() {
            let slices: Vec<Slice> = pipes
                .iter()
                .flat_map(|run| run.slices[i][p].iter().copied())
                .collect();
            if slices.is_empty() {
                continue;
            }
            let per_request: Vec<f64> = slices.iter().map(Slice::cpu_us_per_request).collect();
            let requests: f64 = slices.iter().map(|s| s.requests).sum();
            let cpu_ns: f64 = slices.iter().map(|s| s.cpu_ns).sum();
            let seconds: f64 = slices.iter().map(|s| s.seconds).sum();
            let values = [
                ("requests_per_s", requests / seconds),
                ("cpu_us_per_request", harness::median(&per_request)),
                (
                    "cpu_min_us_per_request",
                    per_request.iter().copied().fold(f64::INFINITY, f64::min),
                ),
                ("server_cpu_ratio", cpu_ns / 1e9 / seconds),
                ("requests", requests / pipes.len() as f64),
                ("failed", 0.0),
            ];
            let mut row = Row::new()
                .key("server", kind.server())
                .key("load", "pipelined")
                .key("phase", phase);
            let m = medians
                .entry(("pipelined", kind.server(), phase))
                .or_default();
            for (name, v) in values {
                m.insert(name, v);
                row = row.value(name, v);
            }
            report.push(row);
        }
    }
}

/// The rows, from every run of every server.
fn summarise(
    report: &mut Report,
    runs: &[Vec<RunStats>],
    pipes: &[PipeRun],
    warmup: Duration,
    phase: Duration,
) {
    // (load, server, phase) -> value -> median.
    let mut medians: BTreeMap<(&str, &str, &str), BTreeMap<&str, f64>> = BTreeMap::new();
    summarise_pipelined(report, pipes, &mut medians);
    for (kind, runs) in KINDS.iter().zip(runs) {
        let server = kind.server();
        let failed: u64 = runs.iter().map(|r| r.failed).sum();
        for (p, &(load, name, _)) in runs[0].phases.iter().enumerate() {
            let measured: Vec<&PhaseStats> = runs
                .iter()
                .map(|r| &r.phases[p].2)
                .filter(|s| !s.values.is_empty())
                .collect();
            let Some(first) = measured.first() else {
                report.note(format!(
                    "{server}, {load} {name}: not measured: in every repetition the transition \
                     before it lasted about as long as the phase"
                ));
                continue;
            };
            if measured.len() < runs.len() {
                report.note(format!(
                    "{server}, {load} {name}: measured in {} of {} repetitions (in the others \
                     the transition before it lasted about as long as the phase)",
                    measured.len(),
                    runs.len()
                ));
            }
            let mut row = Row::new()
                .key("server", server)
                .key("load", load)
                .key("phase", name);
            let values = medians.entry((load, server, name)).or_default();
            for value in first.values.keys() {
                let samples: Vec<f64> = measured.iter().map(|s| s.values[value]).collect();
                let m = harness::median(&samples);
                values.insert(value, m);
                row = row.value(value, m);
            }
            report.push(row.value("failed", failed as f64));
        }
        for t in 0..runs[0].transitions.len() {
            let pauses: Vec<f64> = runs.iter().map(|r| r.transitions[t].pause_ms).collect();
            let of = |f: fn(&TransitionStats) -> f64| {
                harness::median(
                    &runs
                        .iter()
                        .map(|r| f(&r.transitions[t]))
                        .collect::<Vec<_>>(),
                )
            };
            report.push(
                Row::new()
                    .key("server", server)
                    .key("transition", t)
                    .key("to", runs[0].transitions[t].to)
                    .value("pause_ms", harness::median(&pauses))
                    .value("pause_max_ms", pauses.iter().copied().fold(0.0, f64::max))
                    .value("control_ms", of(|s| s.control_ms))
                    .value("in_flight_max_ms", of(|s| s.in_flight_max_ms))
                    .value("at_ms", runs[0].transitions[t].at_ms),
            );
        }
        if *kind != Kind::Hand(1) {
            let startup: Vec<f64> = runs.iter().map(|r| r.startup_ms).collect();
            report.push(
                Row::new()
                    .key("server", server)
                    .key("series", "startup")
                    .value("startup_ms", harness::median(&startup)),
            );
        }
        if *kind == Kind::Osr {
            let count = |name: &str| {
                let samples: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.osr.as_ref()?.get(name))
                    .map(|v| v as f64)
                    .collect();
                harness::median(&samples)
            };
            report.push(
                Row::new()
                    .key("server", server)
                    .key("series", "osr-stats")
                    .value("transitions_count", count("transitions"))
                    .value("frames_count", count("frames"))
                    .value("recompiles_count", count("recompiles"))
                    .value("max_stall_ms", count("max_stall_us") / 1e3),
            );
            for (i, &requests) in runs[0].timeline.iter().enumerate() {
                report.push(
                    Row::new()
                        .key("series", "timeline")
                        .key("server", server)
                        .key("t_ms", i * 10)
                        .value("requests", requests as f64),
                );
            }
        }
    }
    let value = |load: &str, server: &str, phase: &str, name: &str| {
        medians
            .get(&(load, server, phase))
            .and_then(|v| v.get(name))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let rps = |server: &str, phase: &str| value("closed-loop", server, phase, "requests_per_s");
    // The median over the rounds of every repetition of a's CPU time per request over b's,
    // slices of one round side by side.
    let paired = |a: Kind, b: Kind, phase: &str| {
        let (ia, ib) = (index(a), index(b));
        let Some(p) = PIPE_PHASES.iter().position(|&q| q == phase) else {
            return f64::NAN;
        };
        let ratios: Vec<f64> = pipes
            .iter()
            .flat_map(|run| {
                run.slices[ia][p]
                    .iter()
                    .zip(&run.slices[ib][p])
                    .map(|(x, y)| x.cpu_us_per_request() / y.cpu_us_per_request())
            })
            .collect();
        harness::median(&ratios)
    };
    let osr_vs_plain_initial = paired(Kind::Osr, Kind::Plain, "initial");
    let osr_speedup = osr_vs_plain_initial / paired(Kind::Osr, Kind::Plain, "extended=0");
    // The same comparison between two servers whose code does not change: its noise.
    let noise = (paired(Kind::Native, Kind::Plain, "initial")
        / paired(Kind::Native, Kind::Plain, "extended=0")
        - 1.0)
        .abs();
    let mut kept_text = Vec::new();
    for (v, name) in [(0u8, "extended=0"), (1, "extended=1")] {
        let kept = paired(Kind::Hand(v), Kind::Osr, name);
        let hand_speedup = paired(Kind::Plain, Kind::Hand(v), name);
        let mut row = Row::new()
            .key("series", "fraction-kept")
            .key("phase", name)
            .value("kept_ratio", kept)
            .value(
                "kept_rps_ratio",
                rps("uppercut-osr", name) / rps("hand-specialised", name),
            )
            .value("hand_speedup_ratio", hand_speedup);
        if v == 0 {
            row = row
                .value("osr_speedup_ratio", osr_speedup)
                .value("noise_ratio", noise);
            if hand_speedup - 1.0 > (2.0 * noise).max(0.02) {
                row = row.value(
                    "gain_kept_ratio",
                    (osr_speedup - 1.0) / (hand_speedup - 1.0),
                );
            }
        }
        // A phase that was not measured leaves its ratios out.
        row.values.retain(|_, v| v.is_finite());
        report.push(row);
        kept_text.push(format!(
            "{name}: {:.1}% (hand specialisation {:+.1}% against the unspecialised source \
             under plain uppercut)",
            kept * 100.0,
            (hand_speedup - 1.0) * 100.0
        ));
    }
    report.note(format!(
        "pipelined, paired slices: per CPU second, uppercut-osr serves, of what \
         hand-specialised serves, {}; its generic code (initial) costs {:+.1}% CPU per request \
         against plain uppercut's, and its specialisation on 0 changes that by {:+.1}%, where \
         the same comparison between native and plain (nothing changes) moves by {:.1}%; \
         after a switch the poll loop, which never returns, runs in a continuation of main \
         built from the instrumented module (with its sites and deopt records), not in a \
         fresh call of the specialised version",
        kept_text.join("; "),
        (osr_vs_plain_initial - 1.0) * 100.0,
        (1.0 / osr_speedup - 1.0) * 100.0,
        noise * 100.0
    ));
    let change = |server: &str, from: &str, to: &str| {
        let cpu = |phase: &str| value("pipelined", server, phase, "cpu_us_per_request");
        (cpu(to) / cpu(from) - 1.0) * 100.0
    };
    report.note(format!(
        "pipelined, server CPU per request (median slice): extended=1 against extended=0 \
         {:+.1}% under uppercut-osr, {:+.1}% under uppercut-plain, {:+.1}% natively; \
         hand-specialised on 1 against on 0 {:+.1}%",
        change("uppercut-osr", "extended=0", "extended=1"),
        change("uppercut-plain", "extended=0", "extended=1"),
        change("native", "extended=0", "extended=1"),
        change("hand-specialised", "extended=0", "extended=1"),
    ));
    let pause = |server: &str, t: &str| {
        report
            .rows
            .iter()
            .find(|r| r.matches(&[("server", server), ("transition", t)]))
            .and_then(|r| r.get("pause_ms"))
            .unwrap_or(f64::NAN)
    };
    let text = format!(
        "closed-loop pauses at the switches: {:.0}, {:.0} and {:.0} ms under uppercut-osr \
         (its readers of the flag are main, with the poll loop and the whole request path \
         inlined, and respond: a switch rebuilds both at O2 and, for a value not seen before, \
         compiles a continuation of main; the third switch finds it cached), against {:.2}, \
         {:.2} and {:.2} ms under uppercut-plain, where the store is plain",
        pause("uppercut-osr", "0"),
        pause("uppercut-osr", "1"),
        pause("uppercut-osr", "2"),
        pause("uppercut-plain", "0"),
        pause("uppercut-plain", "1"),
        pause("uppercut-plain", "2"),
    );
    report.note(text);
    report.note(format!(
        "phases: {} ms of warm-up, then {} ms each; the timeline covers the first uppercut-osr run",
        warmup.as_millis(),
        phase.as_millis()
    ));
    report.check_with_floor("failed", 0.0, 0.5);
    report.check_with_floor("kept_ratio", 0.25, 0.0);
    report.check_with_floor("transitions_count", 0.0, 0.5);
    report.check_with_floor("frames_count", 0.0, 0.5);
}

#[cfg(test)]
mod tests {
    use super::*;
    use uppercut_experiments::load::{ControlOutcome, Failures, Gap, Latency, Sample, Timeline};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A run of 1 s with a response every millisecond, except while a control stalled it.
    fn report(controls: &[(u64, u64)]) -> LoadReport {
        let stalled = |t: u64| {
            controls
                .iter()
                .any(|&(sent, took)| t > sent && t < sent + took)
        };
        let samples: Vec<Sample> = (1..=1000)
            .filter(|&t| !stalled(t))
            .map(|t| Sample {
                done: ms(t),
                latency: ms(1),
                target: 0,
                status: 200,
            })
            .collect();
        LoadReport {
            requests: samples.len() as u64,
            failures: Failures::default(),
            elapsed: ms(1000),
            latency: Latency::default(),
            timeline: Timeline {
                bucket: ms(10),
                completed: vec![0; 100],
            },
            longest_gap: Gap::default(),
            samples,
            per_target: Vec::new(),
            connections_opened: 1,
            controls: controls
                .iter()
                .zip(CONTROLS)
                .map(|(&(sent, took), (target, _))| ControlOutcome {
                    target: target.to_owned(),
                    scheduled: ms(sent),
                    sent: ms(sent),
                    latency: ms(took),
                    outcome: Ok(200),
                })
                .collect(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn phases_lie_between_the_controls_and_pauses_span_them() {
        let load = report(&[(300, 50), (500, 20), (700, 5)]);
        let phases = phase_stats(&load, &Samples::default(), &PHASES, ms(100));
        let requests = |i: usize| phases[i].1.values["requests"];
        // [100, 300], [360, 500], [530, 700], [715, 1000]: requests that began and ended there.
        assert_eq!(requests(0), 200.0);
        assert_eq!(requests(1), 140.0);
        assert_eq!(requests(3), 285.0);
        let t = transition_stats(&load);
        assert_eq!(t.len(), 3);
        assert!((t[0].pause_ms - 50.0).abs() < 1e-9, "{t:?}");
        assert_eq!(t[1].to, "extended=1");
    }

    #[test]
    fn a_phase_swallowed_by_its_transition_is_not_measured() {
        // The first control took longer than the phase: the second was sent as it ended.
        let load = report(&[(300, 250), (550, 20), (700, 5)]);
        let phases = phase_stats(&load, &Samples::default(), &PHASES, ms(100));
        assert!(phases[1].1.values.is_empty());
        assert!(!phases[2].1.values.is_empty());
    }
}
