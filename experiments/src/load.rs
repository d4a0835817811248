//! A closed-loop HTTP load generator: it measures what a server does to its clients while
//! Uppercut changes the server's code under it.
//!
//! [`run`] opens [`LoadConfig::connections`] keep-alive connections, one thread each; every
//! thread sends a request, waits for its response, and sends the next (a *closed loop*: the
//! offered load follows the server's speed, and a server that stalls shows up as a gap in the
//! [`Timeline`], not as a queue). The targets come from a [`Mix`], in a fixed order shared by
//! all connections. The run ends after a duration or a number of requests ([`Until`]).
//!
//! Every response is read in full and checked ([`crate::http`]): a refused or failed connection,
//! a response that breaks the protocol and a status other than 2xx each count as a
//! [`Failures`]; after a failure the connection is replaced. Each well-formed response records
//! its latency (from the first byte sent to the last byte read) and its completion time.
//!
//! A [`Control`] is a request sent at a given time on a connection of its own, outside the
//! mix: e.g. `/control?extended=1` at one second, to switch the server's configuration while
//! the load runs. The report gives the time each was sent and answered, so a transition can be
//! lined up with the [`Timeline`].
//!
//! ```no_run
//! use std::time::Duration;
//! use uppercut_experiments::load::{self, Control, LoadConfig, Mix, Until};
//!
//! let addr = "127.0.0.1:8080".parse().unwrap();
//! let mix = Mix::weighted([("/hello?name=x", 8), ("/compute?n=2000", 1), ("/", 1)])?;
//! let mut config = LoadConfig::new(addr, mix, Until::Elapsed(Duration::from_secs(2)));
//! config.connections = 8;
//! config.controls = vec![Control::new(Duration::from_secs(1), "/control?extended=1")];
//! let report = load::run(&config)?;
//! println!(
//!     "{} requests, {} failed, {:.0}/s, p99 {:?}, longest gap {:?} at {:?}",
//!     report.requests,
//!     report.failures.total(),
//!     report.requests_per_second(),
//!     report.latency.p99,
//!     report.longest_gap.length,
//!     report.longest_gap.start,
//! );
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::http::Connection;

/// The most connections a run may open.
pub const MAX_CONNECTIONS: usize = 4096;
/// The longest cycle a weighted [`Mix`] may have (the sum of its weights).
pub const MAX_MIX_CYCLE: u64 = 100_000;
/// How many failure messages a [`LoadReport`] keeps.
const KEPT_ERRORS: usize = 16;

/// The request targets of a run and how often each is asked for.
///
/// Requests take their targets from a fixed cycle in which each target appears as many times
/// as its weight, spread out evenly (smooth weighted round robin: weights 2 and 1 give
/// `a b a a b a ...`). Request number `n` of the run, counted over all connections, has the
/// target at `n` modulo the cycle's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    targets: Vec<(String, u32)>,
    cycle: Vec<usize>,
}

impl Mix {
    /// Every target in turn.
    pub fn round_robin<I, S>(targets: I) -> Result<Mix>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Mix::weighted(targets.into_iter().map(|t| (t, 1)))
    }

    /// Each target as many times per cycle as its weight. Targets must be request targets
    /// (`/path?query`, printable ASCII without spaces); the weights must not all be zero and
    /// must add up to at most [`MAX_MIX_CYCLE`].
    pub fn weighted<I, S>(entries: I) -> Result<Mix>
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let targets: Vec<(String, u32)> = entries.into_iter().map(|(t, w)| (t.into(), w)).collect();
        for (target, _) in &targets {
            if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(format!("`{target}` is not a request target")));
            }
        }
        let total: u64 = targets.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 || total > MAX_MIX_CYCLE {
            return Err(invalid(format!(
                "the weights add up to {total} (expected 1..={MAX_MIX_CYCLE})"
            )));
        }
        // Smooth weighted round robin: each step every target gains its weight, the richest
        // is picked and pays the total.
        let mut credit = vec![0i64; targets.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            for (c, &(_, w)) in credit.iter_mut().zip(&targets) {
                *c += i64::from(w);
            }
            let pick = (0..targets.len())
                .max_by_key(|&i| (credit[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            credit[pick] -= total as i64;
            cycle.push(pick);
        }
        Ok(Mix { targets, cycle })
    }

    /// The targets and their weights, in the order given.
    pub fn targets(&self) -> impl Iterator<Item = (&str, u32)> {
        self.targets.iter().map(|(t, w)| (t.as_str(), *w))
    }

    /// The index (into [`Mix::targets`]) of request `n`'s target.
    pub fn index(&self, n: u64) -> usize {
        self.cycle[(n % self.cycle.len() as u64) as usize]
    }

    /// Request `n`'s target.
    pub fn target(&self, n: u64) -> &str {
        &self.targets[self.index(n)].0
    }
}

/// When a run stops sending requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Once this long has passed since the start (requests in flight are finished).
    Elapsed(Duration),
    /// Once this many requests (failures included) have been sent.
    Requests(u64),
}

/// A request sent once, at a given time, on a connection of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// When to send it, from the start of the run.
    pub at: Duration,
    /// Its target, e.g. `/control?extended=1`.
    pub target: String,
}

impl Control {
    /// `GET target` at `at`.
    pub fn new(at: Duration, target: impl Into<String>) -> Control {
        Control {
            at,
            target: target.into(),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server.
    pub addr: SocketAddr,
    /// Concurrent connections, one thread each (default 4).
    pub connections: usize,
    /// The targets.
    pub mix: Mix,
    /// When to stop.
    pub until: Until,
    /// Requests sent at given times besides the mix (default none). They are sent even if
    /// the mix has finished by then: the run lasts until the last of them is answered.
    pub controls: Vec<Control>,
    /// The width of a [`Timeline`] bucket (default 10 ms).
    pub bucket: Duration,
    /// The limit on connecting and on each read and write (default 5 s).
    pub timeout: Duration,
}

impl LoadConfig {
    /// A run of `mix` against `addr` until `until`, with the defaults above.
    pub fn new(addr: SocketAddr, mix: Mix, until: Until) -> LoadConfig {
        LoadConfig {
            addr,
            connections: 4,
            mix,
            until,
            controls: Vec::new(),
            bucket: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Failed requests, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// The connection could not be opened.
    pub connect: u64,
    /// The connection failed or closed before the whole response arrived.
    pub io: u64,
    /// The response broke the protocol.
    pub malformed: u64,
    /// A well-formed response whose status is not 2xx.
    pub status: u64,
}

impl Failures {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.malformed + self.status
    }

    fn add(&mut self, other: &Failures) {
        self.connect += other.connect;
        self.io += other.io;
        self.malformed += other.malformed;
        self.status += other.status;
    }
}

/// The latency distribution of the requests that got a well-formed response.
///
/// Percentiles are nearest-rank: `p99` is the smallest latency that at least 99% of the
/// requests did not exceed. All zero when there was no response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// How many latencies were recorded.
    pub count: u64,
    /// Their mean.
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The 99.9th percentile.
    pub p999: Duration,
    /// The longest.
    pub max: Duration,
}

impl Latency {
    /// The distribution of `samples` (sorted in place).
    pub fn from_samples(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        let total: Duration = samples.iter().sum();
        Latency {
            count: n as u64,
            mean: total / n as u32,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: samples[n - 1],
        }
    }
}

/// Completed requests per interval of the run: bucket `i` counts the well-formed responses
/// whose last byte arrived in `[i * bucket, (i + 1) * bucket)` from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The width of a bucket.
    pub bucket: Duration,
    /// Responses per bucket, covering the whole run.
    pub completed: Vec<u64>,
}

impl Timeline {
    /// The throughput of bucket `i`, in responses per second.
    pub fn rate(&self, i: usize) -> f64 {
        self.completed.get(i).copied().unwrap_or(0) as f64 / self.bucket.as_secs_f64()
    }

    /// The bucket that holds time `t` from the start.
    pub fn bucket_of(&self, t: Duration) -> usize {
        (t.as_nanos() / self.bucket.as_nanos().max(1)) as usize
    }
}

/// A stretch of the run with no response completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    /// When it began (the previous completion, or the start), from the start of the run.
    pub start: Duration,
    /// How long it lasted.
    pub length: Duration,
}

/// One well-formed response to a request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When its last byte arrived, from the start of the run.
    pub done: Duration,
    /// From the first byte of the request to the last byte of the response.
    pub latency: Duration,
    /// Its target, as an index into [`Mix::targets`].
    pub target: usize,
    /// Its status.
    pub status: u16,
}

/// What happened to one [`Control`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlOutcome {
    /// Its target.
    pub target: String,
    /// When it was due, from the start of the run.
    pub scheduled: Duration,
    /// When it was sent (its connection opened), from the start of the run.
    pub sent: Duration,
    /// From sending to the end of the response (or to the failure).
    pub latency: Duration,
    /// The response's status, or why there was no well-formed response.
    pub outcome: std::result::Result<u16, String>,
}

impl ControlOutcome {
    /// Whether it got a 2xx response.
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Ok(status) if (200..300).contains(&status))
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests of the mix sent (or attempted: a refused connection counts), failures
    /// included; [`Control`]s are not counted here.
    pub requests: u64,
    /// The requests that failed.
    pub failures: Failures,
    /// From the start to the end of the last request or control.
    pub elapsed: Duration,
    /// Latencies of the requests with a well-formed response (non-2xx included).
    pub latency: Latency,
    /// Responses per interval.
    pub timeline: Timeline,
    /// The longest stretch without a response, between the start and the end.
    pub longest_gap: Gap,
    /// Every well-formed response, in the order they completed.
    pub samples: Vec<Sample>,
    /// Successful (2xx) requests per target, in the mix's order.
    pub per_target: Vec<(String, u64)>,
    /// Connections opened for the mix.
    pub connections_opened: u64,
    /// The controls, in the order they were sent.
    pub controls: Vec<ControlOutcome>,
    /// The first few failures, described (for diagnostics).
    pub errors: Vec<String>,
}

impl LoadReport {
    /// Requests that got a 2xx response.
    pub fn succeeded(&self) -> u64 {
        self.requests - self.failures.total()
    }

    /// Every stretch of at least `min` without a response, between the start and the end, in
    /// order.
    pub fn gaps(&self, min: Duration) -> Vec<Gap> {
        gaps(self.samples.iter().map(|s| s.done), self.elapsed)
            .filter(|g| g.length >= min)
            .collect()
    }

    /// Successful requests per second over the whole run.
    pub fn requests_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.succeeded() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs the load `config` describes and reports what it measured.
///
/// Failed requests are counted, not returned: the error cases are a configuration that cannot
/// run ([`Error::InvalidConfig`]) and a thread that cannot be started.
pub fn run(config: &LoadConfig) -> Result<LoadReport> {
    if config.connections == 0 || config.connections > MAX_CONNECTIONS {
        return Err(invalid(format!(
            "{} connections (expected 1..={MAX_CONNECTIONS})",
            config.connections
        )));
    }
    if config.bucket.is_zero() || config.timeout.is_zero() {
        return Err(invalid("the bucket width and the timeout must be positive"));
    }
    for control in &config.controls {
        Mix::round_robin([control.target.as_str()])?;
    }
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let (workers, controls) = thread::scope(|scope| -> Result<_> {
        let mut handles = Vec::with_capacity(config.connections);
        for i in 0..config.connections {
            let next = &next;
            let handle = thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn_scoped(scope, move || worker(config, start, next))
                .map_err(|e| Error::io("starting a load thread", e))?;
            handles.push(handle);
        }
        let controls = thread::Builder::new()
            .name("load-control".to_owned())
            .spawn_scoped(scope, move || send_controls(config, start))
            .map_err(|e| Error::io("starting the control thread", e))?;
        let workers: Vec<Worker> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect();
        let controls = controls
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        Ok((workers, controls))
    })?;
    let elapsed = start.elapsed();
    Ok(report(config, workers, controls, elapsed))
}

/// What one connection's thread saw.
#[derive(Debug, Default)]
struct Worker {
    requests: u64,
    samples: Vec<Sample>,
    failures: Failures,
    per_target: Vec<u64>,
    opened: u64,
    errors: Vec<String>,
}

impl Worker {
    fn note(&mut self, what: String) {
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(what);
        }
    }
}

fn worker(config: &LoadConfig, start: Instant, next: &AtomicU64) -> Worker {
    let mut w = Worker {
        per_target: vec![0; config.mix.targets.len()],
        ..Worker::default()
    };
    let mut conn: Option<Connection> = None;
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let done = match config.until {
            Until::Requests(limit) => n >= limit,
            Until::Elapsed(limit) => start.elapsed() >= limit,
        };
        if done {
            break;
        }
        w.requests += 1;
        let index = config.mix.index(n);
        let target = config.mix.target(n);
        if conn.is_none() {
            match Connection::open(config.addr, config.timeout) {
                Ok(c) => {
                    w.opened += 1;
                    conn = Some(c);
                }
                Err(e) => {
                    w.failures.connect += 1;
                    w.note(format!("{target}: {e}"));
                    // Do not spin on a server that is gone.
                    thread::sleep(Duration::from_millis(2));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let sent = Instant::now();
        match c.get(target) {
            Ok(response) => {
                let now = Instant::now();
                w.samples.push(Sample {
                    done: now - start,
                    latency: now - sent,
                    target: index,
                    status: response.status,
                });
                if response.is_success() {
                    w.per_target[index] += 1;
                } else {
                    w.failures.status += 1;
                    w.note(format!("{target}: status {}", response.status));
                }
                if response.closes() {
                    conn = None;
                }
            }
            Err(e) => {
                match e {
                    Error::MalformedResponse { .. } => w.failures.malformed += 1,
                    _ => w.failures.io += 1,
                }
                w.note(format!("{target}: {e}"));
                conn = None;
            }
        }
    }
    w
}

fn send_controls(config: &LoadConfig, start: Instant) -> Vec<ControlOutcome> {
    let mut controls = config.controls.clone();
    controls.sort_by_key(|c| c.at);
    let mut outcomes = Vec::with_capacity(controls.len());
    for control in controls {
        if let Some(wait) = control.at.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
        let sent = Instant::now();
        let outcome = Connection::open(config.addr, config.timeout)
            .and_then(|mut c| c.get(&control.target))
            .map(|r| r.status)
            .map_err(|e| e.to_string());
        outcomes.push(ControlOutcome {
            target: control.target,
            scheduled: control.at,
            sent: sent - start,
            latency: sent.elapsed(),
            outcome,
        });
    }
    outcomes
}

fn report(
    config: &LoadConfig,
    workers: Vec<Worker>,
    controls: Vec<ControlOutcome>,
    elapsed: Duration,
) -> LoadReport {
    let mut failures = Failures::default();
    let mut per_target = vec![0u64; config.mix.targets.len()];
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let (mut requests, mut opened) = (0, 0);
    for w in workers {
        requests += w.requests;
        opened += w.opened;
        failures.add(&w.failures);
        for (total, n) in per_target.iter_mut().zip(&w.per_target) {
            *total += n;
        }
        samples.extend(w.samples);
        errors.extend(w.errors);
    }
    errors.truncate(KEPT_ERRORS);
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let latency = Latency::from_samples(&mut latencies);
    samples.sort_by_key(|s| s.done);
    let mut timeline = Timeline {
        bucket: config.bucket,
        completed: Vec::new(),
    };
    timeline.completed = vec![0; timeline.bucket_of(elapsed) + 1];
    for t in samples.iter().map(|s| s.done) {
        let i = timeline.bucket_of(t).min(timeline.completed.len() - 1);
        timeline.completed[i] += 1;
    }
    LoadReport {
        requests,
        failures,
        elapsed,
        latency,
        timeline,
        longest_gap: longest_gap(samples.iter().map(|s| s.done), elapsed),
        samples,
        per_target: config
            .mix
            .targets
            .iter()
            .map(|(t, _)| t.clone())
            .zip(per_target)
            .collect(),
        connections_opened: opened,
        controls,
        errors,
    }
}

/// The stretches of `[0, end]` between the times of `done` (ascending), the start and the end.
fn gaps(done: impl Iterator<Item = Duration>, end: Duration) -> impl Iterator<Item = Gap> {
    let mut previous = Duration::ZERO;
    done.chain([end]).map(move |t| {
        let t = t.max(previous);
        let gap = Gap {
            start: previous,
            length: t - previous,
        };
        previous = t;
        gap
    })
}

/// The longest of [`gaps`] (the first of the longest).
fn longest_gap(done: impl Iterator<Item = Duration>, end: Duration) -> Gap {
    gaps(done, end)
        .max_by_key(|g| (g.length, std::cmp::Reverse(g.start)))
        .unwrap_or_default()
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn weighted_mixes_spread_their_targets() {
        let mix = Mix::weighted([("/a", 2), ("/b", 1)]).unwrap();
        let seq: Vec<&str> = (0..6).map(|n| mix.target(n)).collect();
        assert_eq!(seq, ["/a", "/b", "/a", "/a", "/b", "/a"]);
        let mix = Mix::weighted([("/a", 5), ("/b", 0), ("/c", 3)]).unwrap();
        let mut counts = [0; 3];
        for n in 0..800 {
            counts[mix.index(n)] += 1;
        }
        assert_eq!(counts, [500, 0, 300]);
        // Never two /c in a row: the cycle interleaves.
        assert!((0..8).all(|n| !(mix.index(n) == 2 && mix.index(n + 1) == 2)));
        let rr = Mix::round_robin(["/x", "/y", "/z"]).unwrap();
        assert_eq!(rr.target(4), "/y");
        assert_eq!(rr.targets().count(), 3);
    }

    #[test]
    fn bad_mixes_are_refused() {
        assert!(Mix::round_robin(Vec::<String>::new()).is_err());
        assert!(Mix::weighted([("/a", 0)]).is_err());
        assert!(Mix::round_robin(["no-slash"]).is_err());
        assert!(Mix::round_robin(["/with space"]).is_err());
        assert!(Mix::weighted([("/a", u32::MAX)]).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=1000).rev().map(ms).collect();
        let l = Latency::from_samples(&mut samples);
        assert_eq!(l.count, 1000);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (ms(500), ms(900), ms(990), ms(999), ms(1000))
        );
        assert_eq!(l.mean, Duration::from_micros(500_500));
        let one = Latency::from_samples(&mut [ms(7)]);
        assert_eq!((one.p50, one.p999, one.max), (ms(7), ms(7), ms(7)));
        assert_eq!(Latency::from_samples(&mut []), Latency::default());
    }

    #[test]
    fn gaps_include_the_start_and_the_end() {
        let done = [ms(5), ms(10), ms(40), ms(45)];
        assert_eq!(
            longest_gap(done.into_iter(), ms(50)),
            Gap {
                start: ms(10),
                length: ms(30)
            }
        );
        assert_eq!(
            longest_gap(done.into_iter(), ms(100)),
            Gap {
                start: ms(45),
                length: ms(55)
            }
        );
        let all: Vec<Gap> = gaps(done.into_iter(), ms(50)).collect();
        assert_eq!(all.len(), 5);
        assert_eq!(all.iter().map(|g| g.length).sum::<Duration>(), ms(50));
        assert_eq!(
            longest_gap(std::iter::empty(), ms(20)),
            Gap {
                start: ms(0),
                length: ms(20)
            }
        );
    }

    #[test]
    fn timelines_bucket_completions() {
        let t = Timeline {
            bucket: ms(10),
            completed: vec![3, 0, 5],
        };
        assert_eq!(t.bucket_of(ms(25)), 2);
        assert_eq!(t.rate(2), 500.0);
        assert_eq!(t.rate(9), 0.0);
    }
}
