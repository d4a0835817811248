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

/// `struct timespec` of x86-64 Linux.
#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// `struct timeval` of x86-64 Linux.
#[repr(C)]
#[derive(Clone, Copy)]
struct Timeval {
    tv_sec: i64,
    tv_usec: i64,
}

/// `struct rusage` of x86-64 Linux: the two times, then fourteen `long` counters.
#[repr(C)]
struct Rusage {
    ru_utime: Timeval,
    ru_stime: Timeval,
    counters: [i64; 14],
}

/// `CLOCK_THREAD_CPUTIME_ID` of Linux.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
/// `RUSAGE_CHILDREN` of Linux.
const RUSAGE_CHILDREN: i32 = -1;

unsafe extern "C" {
    fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`); zero if the clock
/// cannot be read.
pub fn thread() -> Duration {
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable `struct timespec`; the call writes only it.
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Context switches (voluntary and involuntary) of every child process this process has
/// waited for (`getrusage(RUSAGE_CHILDREN)`, threads included); zero if it cannot be read.
/// As with [`children`], the difference across one child's run is that child's.
pub fn children_context_switches() -> u64 {
    let zero = Timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut usage = Rusage {
        ru_utime: zero,
        ru_stime: zero,
        counters: [0; 14],
    };
    // SAFETY: `usage` is a valid, writable `struct rusage`; the call writes only it.
    let ok = unsafe { getrusage(RUSAGE_CHILDREN, &mut usage) } == 0;
    if !ok {
        return 0;
    }
    // `ru_nvcsw` and `ru_nivcsw`, the last two counters.
    (usage.counters[12].max(0) + usage.counters[13].max(0)) as u64
}

/// The user and system CPU time of every child process this process has waited for
/// (`getrusage(RUSAGE_CHILDREN)`), threads included; zero if it cannot be read. The difference
/// across a run of one child (started and waited for while no other child ends) is that
/// child's CPU time.
pub fn children() -> Duration {
    let zero = Timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut usage = Rusage {
        ru_utime: zero,
        ru_stime: zero,
        counters: [0; 14],
    };
    // SAFETY: `usage` is a valid, writable `struct rusage`; the call writes only it.
    let ok = unsafe { getrusage(RUSAGE_CHILDREN, &mut usage) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    let time = |t: Timeval| {
        Duration::new(t.tv_sec.max(0) as u64, 0)
            + Duration::from_micros(t.tv_usec.clamp(0, 999_999) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
