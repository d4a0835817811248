//! The compiler thread: LLVM runs on a thread of its own, with a stack of its own.
//!
//! A site hypercall runs on the guest's stack, below every live guest frame: 100,000 frames
//! deep, what is left of an 8 MiB main-thread stack is not enough for LLVM's passes and code
//! generation. So every version and continuation the runtime compiles is compiled here, either
//! while the guest thread waits ([`Compiler::run`]) or while it goes on running its old code
//! ([`Compiler::spawn`], background compilation). Jobs run one at a time, in order.

//!
//! At process exit, LLVM's own static destructors run, and a job still compiling would crash in
//! LLVM's torn-down state. So the first compiler thread registers a hook that waits for the job
//! in progress, and every job after it is dropped unrun (a waiting [`Compiler::run`] gets
//! `None`: the frame keeps its old code). It runs before any exit handler when the guest exits
//! (`uppercut_core::before_exit`), and as an `atexit` handler otherwise.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, MutexGuard, Once};

/// Held by a compiler thread while it runs a job.
static COMPILING: Mutex<()> = Mutex::new(());
/// Set when the process is exiting: no job runs any more.
static EXITING: AtomicBool = AtomicBool::new(false);

extern "C" fn wait_for_compilation_at_exit() {
    EXITING.store(true, Ordering::SeqCst);
    // The job in progress finishes; the next ones see `EXITING` under the lock.
    drop(COMPILING.lock().unwrap_or_else(|e| e.into_inner()));
}

fn wait_at_exit() {
    wait_for_compilation_at_exit();
}

fn lock_compiling() -> MutexGuard<'static, ()> {
    COMPILING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stack of the compiler thread: LLVM's recursive passes on large functions need more than a
/// default thread's 2 MiB.
const STACK_BYTES: usize = 64 << 20;

type Job = Box<dyn FnOnce() + Send>;

/// A compiler thread, started on first use (and again in a forked child, which has no threads).
#[derive(Default)]
pub(crate) struct Compiler {
    worker: Mutex<Option<Worker>>,
}

struct Worker {
    jobs: Sender<Job>,
    /// The process that started it.
    pid: u32,
}

impl Compiler {
    fn worker(&self) -> MutexGuard<'_, Option<Worker>> {
        self.worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`; `false` when no compiler thread can be started.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) -> bool {
        if EXITING.load(Ordering::SeqCst) {
            return false;
        }
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            // Before `exit` runs any handler when the guest exits (LLVM registers the
            // destructors of some of its statics lazily, during a compilation: they would run
            // before a handler registered now). The `atexit` handler covers other exits.
            uppercut_core::before_exit(wait_at_exit);
            // SAFETY: registers a plain function that lives as long as the process. Should
            // registration fail (out of memory), exit is as unguarded as before.
            unsafe { libc::atexit(wait_for_compilation_at_exit) };
        });
        let mut worker = self.worker();
        let pid = std::process::id();
        let mut job: Job = Box::new(job);
        if let Some(w) = worker.as_ref().filter(|w| w.pid == pid) {
            match w.jobs.send(job) {
                Ok(()) => return true,
                // The thread is gone: start another.
                Err(mpsc::SendError(back)) => job = back,
            }
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("uppercut-compiler".to_owned())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                for job in queue {
                    let _compiling = lock_compiling();
                    if EXITING.load(Ordering::SeqCst) {
                        // Dropped unrun: LLVM is being torn down.
                        continue;
                    }
                    // A job reports its own failures; a panic must not end the thread.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            });
        if started.is_err() {
            *worker = None;
            return false;
        }
        let sent = jobs.send(job).is_ok();
        *worker = Some(Worker { jobs, pid });
        sent
    }

    /// Runs `job` on the compiler thread and waits for its result (after the jobs queued
    /// before it). `None` when no compiler thread can be started, or `job` panicked.
    pub(crate) fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = mpsc::channel();
        let queued = self.spawn(move || {
            let _ = done.send(job());
        });
        if !queued {
            return None;
        }
        result.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_a_big_stack_in_order() {
        let compiler = Compiler::default();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let order = std::sync::Arc::clone(&order);
            assert!(compiler.spawn(move || order.lock().unwrap().push(i)));
        }
        // A deep recursion that a 2 MiB stack would not hold.
        fn deep(n: u64) -> u64 {
            let pad = std::hint::black_box([n; 64]);
            if n == 0 { 0 } else { deep(n - 1) + pad[3] % 2 }
        }
        assert_eq!(compiler.run(|| deep(50_000)), Some(25_000));
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        let name = compiler.run(|| std::thread::current().name().map(str::to_owned));
        assert_eq!(name, Some(Some("uppercut-compiler".to_owned())));
        // A panicking job yields None and leaves the thread running.
        assert_eq!(compiler.run(|| -> u32 { panic!("boom") }), None);
        assert_eq!(compiler.run(|| 7), Some(7));
    }
}
