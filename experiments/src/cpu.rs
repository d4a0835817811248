//! The CPU time a process has used, sampled while it runs: a measure of a server's own work per
//! request that a busy machine (other processes taking turns on the cores) disturbs much less
//! than its throughput.
//!
//! The time is the sum over the process's threads of the first field of
//! `/proc/PID/task/TID/schedstat` (nanoseconds on a CPU, user and kernel). [`Sampler::start`]
//! reads it every `period` on a thread of its own; [`Samples::between`] interpolates the CPU
//! time used between two instants of the run.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use uppercut_experiments::cpu::Sampler;
//!
//! let start = Instant::now();
//! let sampler = Sampler::start(std::process::id(), start, Duration::from_millis(5))?;
//! std::thread::sleep(Duration::from_millis(100));
//! let samples = sampler.stop();
//! let used = samples.between(Duration::ZERO, Duration::from_millis(100));
//! println!("{used:.0} ns of CPU in 100 ms");
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A thread sampling a process's CPU time.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Samples>,
}

/// CPU time samples: `(time since the start, CPU nanoseconds used so far)`, in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// The samples.
    pub points: Vec<(Duration, f64)>,
}

impl Sampler {
    /// Samples process `pid` every `period`, times measured from `start`. An error if the
    /// process's CPU time cannot be read now.
    pub fn start(pid: u32, start: Instant, period: Duration) -> Result<Sampler> {
        read(pid).ok_or_else(|| Error::Io {
            context: format!("reading /proc/{pid}/task/*/schedstat"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("cpu-sampler".to_owned())
            .spawn(move || {
                let mut samples = Samples::default();
                while !stopping.load(Ordering::Relaxed) {
                    let at = start.elapsed();
                    match read(pid) {
                        Some(ns) => samples.points.push((at, ns)),
                        None => break, // the process is gone
                    }
                    thread::sleep(period);
                }
                samples
            })
            .map_err(|e| Error::io("starting the CPU sampler", e))?;
        Ok(Sampler { stop, thread })
    }

    /// Stops sampling (after one last sample, if the process is still there).
    pub fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl Samples {
    /// The CPU time used at `t`, interpolated between the samples around it (clamped to the
    /// first and last); 0 without samples.
    pub fn at(&self, t: Duration) -> f64 {
        let p = &self.points;
        let Some(&(_, first_ns)) = p.first() else {
            return 0.0;
        };
        let i = p.partition_point(|&(at, _)| at <= t);
        if i == 0 {
            return first_ns;
        }
        if i == p.len() {
            return p[i - 1].1;
        }
        let ((t0, n0), (t1, n1)) = (p[i - 1], p[i]);
        let span = (t1 - t0).as_secs_f64();
        if span <= 0.0 {
            return n1;
        }
        n0 + (n1 - n0) * ((t - t0).as_secs_f64() / span)
    }

    /// The CPU nanoseconds used between `from` and `until`.
    pub fn between(&self, from: Duration, until: Duration) -> f64 {
        (self.at(until) - self.at(from)).max(0.0)
    }
}

/// The CPU nanoseconds process `pid` has used so far, over its live threads; `None` if it is
/// gone.
pub fn used(pid: u32) -> Option<f64> {
    read(pid)
}

fn read(pid: u32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0.0;
    for task in tasks.flatten() {
        // A thread may end between the listing and the read: it then counts no more.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat"))
            && let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|f| f.parse::<f64>().ok())
        {
            total += ns;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_between_samples() {
        let ms = Duration::from_millis;
        let s = Samples {
            points: vec![(ms(0), 0.0), (ms(10), 100.0), (ms(20), 100.0)],
        };
        assert_eq!(s.at(ms(5)), 50.0);
        assert_eq!(s.between(ms(5), ms(15)), 50.0);
        assert_eq!(s.at(ms(30)), 100.0);
        assert_eq!(Samples::default().between(ms(0), ms(1)), 0.0);
    }

    #[test]
    fn this_process_uses_cpu() {
        let start = Instant::now();
        let sampler = Sampler::start(std::process::id(), start, Duration::from_millis(2)).unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(1);
            std::hint::black_box(x);
        }
        let samples = sampler.stop();
        assert!(samples.points.len() >= 2, "{samples:?}");
        assert!(samples.between(Duration::ZERO, start.elapsed()) > 1e6);
    }
}
