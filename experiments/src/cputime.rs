//! CPU time: of the calling thread, and of the children this process has waited for.
//!
//! On a shared machine a run's wall time includes the time other processes held its core; its
//! CPU time does not. The experiments that compare configurations a few percent apart time
//! with these clocks (and record wall time beside them).
//!
//! ```
//! use uppercut_experiments::cputime;
//!
//! let before = cputime::thread();
//! let mut x = 0u64;
//! for i in 0..1_000_000u64 {
//!     x = std::hint::black_box(x.wrapping_add(i));
//! }
//! assert!(cputime::thread() >= before);
//!
//! let children = cputime::children();
//! std::process::Command::new("true").status().unwrap();
//! assert!(cputime::children() >= children);
//! ```

use std::time::Duration;

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`); zero if the clock
/// cannot be read.
pub fn thread() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable `struct timespec`; the call writes only it.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// `getrusage(RUSAGE_CHILDREN)`: the resources of every child process this process has waited
/// for, threads included; `None` if it cannot be read.
fn children_usage() -> Option<libc::rusage> {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `struct rusage`; the call writes only it.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } == 0;
    ok.then_some(usage)
}

/// Context switches (voluntary and involuntary) of every child process this process has
/// waited for (`getrusage(RUSAGE_CHILDREN)`, threads included); zero if it cannot be read.
/// As with [`children`], the difference across one child's run is that child's.
pub fn children_context_switches() -> u64 {
    children_usage().map_or(0, |u| (u.ru_nvcsw.max(0) + u.ru_nivcsw.max(0)) as u64)
}

/// The user and system CPU time of every child process this process has waited for
/// (`getrusage(RUSAGE_CHILDREN)`), threads included; zero if it cannot be read. The difference
/// across a run of one child (started and waited for while no other child ends) is that
/// child's CPU time.
pub fn children() -> Duration {
    let time = |t: libc::timeval| {
        Duration::new(t.tv_sec.max(0) as u64, 0)
            + Duration::from_micros(t.tv_usec.clamp(0, 999_999) as u64)
    };
    children_usage().map_or(Duration::ZERO, |u| time(u.ru_utime) + time(u.ru_stime))
}
