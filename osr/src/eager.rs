//! Eager transfer: a frame's whole state is read at the safepoint, in the same pass that
//! rewrites its return address, and kept per thread until its callee returns.
//!
//! ```text
//!   safepoint (a site hypercall), one pass over the chosen frames:
//!     frame k: values (record slots) + callee-saved slots + caller's rbp ──> Record{fp, ...}
//!              return-address slot := thunk
//!   ...
//!   callee returns ──> thunk ──> stub ──> resume: this thread's records, innermost last:
//!     records of frames below the returning one (gone through longjmp) are dropped,
//!     the returning frame's record fills the transfer buffer ──> continuation
//! ```
//!
//! After the pass the old frame's slots are dead: nothing reads them again (with
//! [`Transfers::set_scrub`](crate::Transfers::set_scrub) they are overwritten to prove it),
//! and the old version's stack map and call-frame information are not needed either. A frame
//! whose record is missing at its return (cannot happen unless something rewrote the stack)
//! falls back to the lazy path, reading the frame as it is.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::arch::RESTORED;

/// What an eager transfer keeps of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    /// The frame's `rbp`: the frame's identity while it lives.
    fp: u64,
    /// The descriptor (by address) whose thunk the frame's return address points at.
    descriptor: usize,
    /// Its values: `words[start..start + len]`, as the transfer buffer takes them.
    start: usize,
    len: usize,
    /// The callee-saved registers its prologue saved (in [`RESTORED`] order; meaningful where
    /// the descriptor has a save slot).
    saves: [u64; RESTORED.len()],
    /// The caller's `rbp`, saved at the frame's CFA - 16.
    caller_fp: u64,
}

/// A frame's captured state, as [`lookup`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Captured {
    /// The descriptor (by address) the record was made for.
    pub(crate) descriptor: usize,
    pub(crate) values: Vec<u64>,
    pub(crate) saves: [u64; RESTORED.len()],
    pub(crate) caller_fp: u64,
}

/// This thread's records, sorted by frame pointer from the outermost (highest) to the
/// innermost (lowest): the order in which frames return, reversed. A walk meets frames
/// innermost first, so a pass pushes at the front; returns pop at the back.
#[derive(Default)]
struct Records {
    records: VecDeque<Record>,
    words: Vec<u64>,
    /// Words that records still use.
    live: usize,
}

thread_local! {
    static RECORDS: RefCell<Records> = RefCell::new(Records::default());
}

impl Records {
    fn position(&self, fp: u64) -> Result<usize, usize> {
        // Sorted by decreasing fp.
        self.records.binary_search_by(|r| fp.cmp(&r.fp))
    }

    fn remove(&mut self, fp: u64) -> Option<Record> {
        let at = self.position(fp).ok()?;
        let record = self.records.remove(at)?;
        self.live -= record.len;
        self.tidy();
        Some(record)
    }

    fn pop_back(&mut self) -> Option<Record> {
        let record = self.records.pop_back()?;
        self.live -= record.len;
        Some(record)
    }

    /// Drops the words of records that are gone, once they are most of the buffer.
    fn tidy(&mut self) {
        if self.records.is_empty() {
            self.words.clear();
            return;
        }
        if self.words.len() > 1024 && self.words.len() > 4 * self.live {
            let mut words = Vec::with_capacity(2 * self.live);
            for r in &mut self.records {
                let start = words.len();
                words.extend_from_slice(&self.words[r.start..r.start + r.len]);
                r.start = start;
            }
            self.words = words;
        }
    }
}

/// Records the state of the frame at `fp`, which now returns into `descriptor`'s thunk
/// (replacing an earlier record of the same frame). On a thread past its thread-local
/// destructors nothing is recorded: the frame is read where it is when its callee returns.
pub(crate) fn push(
    fp: u64,
    descriptor: usize,
    values: &[u64],
    saves: [u64; RESTORED.len()],
    caller_fp: u64,
) {
    let _ = RECORDS.try_with(|cell| {
        let mut records = cell.borrow_mut();
        let start = records.words.len();
        records.words.extend_from_slice(values);
        let record = Record {
            fp,
            descriptor,
            start,
            len: values.len(),
            saves,
            caller_fp,
        };
        records.live += record.len;
        // A pass meets frames innermost first: each new record is usually the outermost yet.
        if records.records.front().is_none_or(|r| r.fp < fp) {
            records.records.push_front(record);
            return;
        }
        match records.position(fp) {
            Ok(at) => {
                let old = std::mem::replace(&mut records.records[at], record);
                records.live -= old.len;
            }
            Err(0) => records.records.push_front(record),
            Err(at) => records.records.insert(at, record),
        }
        records.tidy();
    });
}

/// Calls `f` with the descriptor (by address) of each of this thread's records: roots for
/// `uppercut_core::reclaim`, which must not recycle a thunk a record still names.
pub(crate) fn visit_descriptors(f: &mut dyn FnMut(u64)) {
    // During thread teardown the records may be gone already: then there is nothing to visit.
    let _ = RECORDS.try_with(|cell| {
        if let Ok(records) = cell.try_borrow() {
            for record in &records.records {
                f(record.descriptor as u64);
            }
        }
    });
}

/// The captured state of the frame at `fp`, if an eager transfer recorded it.
pub(crate) fn lookup(fp: u64) -> Option<Captured> {
    RECORDS
        .try_with(|cell| {
            let records = cell.borrow();
            let at = records.position(fp).ok()?;
            let r = records.records[at];
            Some(Captured {
                descriptor: r.descriptor,
                values: records.words[r.start..r.start + r.len].to_vec(),
                saves: r.saves,
                caller_fp: r.caller_fp,
            })
        })
        .ok()
        .flatten()
}

/// Forgets the record of the frame at `fp` (it was re-patched lazily, or sent back to its old
/// code).
pub(crate) fn forget(fp: u64) {
    let _ = RECORDS.try_with(|cell| {
        cell.borrow_mut().remove(fp);
    });
}

/// The frame at `fp` returned into `descriptor`'s thunk: drops the records of frames below it
/// (they are gone: their callee never returned, through `longjmp` or thread exit of a
/// coroutine), and hands its record to `f` (values, saves, caller's rbp) if it has one made for
/// this descriptor. Reentrancy (a panic inside `f`) yields `None`.
pub(crate) fn take<R>(
    fp: u64,
    descriptor: usize,
    f: impl FnOnce(&[u64], &[u64; RESTORED.len()], u64) -> R,
) -> Option<R> {
    RECORDS
        .try_with(|cell| {
            let mut records = cell.try_borrow_mut().ok()?;
            while records.records.back().is_some_and(|r| r.fp < fp) {
                records.pop_back();
            }
            let last = *records.records.back()?;
            if last.fp != fp {
                return None;
            }
            records.pop_back();
            let out = (last.descriptor == descriptor).then(|| {
                f(
                    &records.words[last.start..last.start + last.len],
                    &last.saves,
                    last.caller_fp,
                )
            });
            records.tidy();
            out
        })
        .ok()
        .flatten()
}

/// How many frames of this thread wait with an eager record.
pub(crate) fn pending() -> usize {
    RECORDS
        .try_with(|cell| cell.borrow().records.len())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_taken_innermost_first_and_skipped_frames_dropped() {
        push(0x9000, 1, &[1, 2], [0; 5], 0xa000);
        push(0x8000, 2, &[3], [7; 5], 0x9000);
        push(0x7000, 3, &[], [0; 5], 0x8000);
        assert_eq!(pending(), 3);
        assert_eq!(lookup(0x8000).unwrap().values, vec![3]);
        // The frame at 0x7000 went away without returning (longjmp): taking 0x8000 drops it.
        let got = take(0x8000, 2, |v, s, c| (v.to_vec(), s[0], c));
        assert_eq!(got, Some((vec![3], 7, 0x9000)));
        assert_eq!(pending(), 1);
        // A record made for another descriptor is not used (and not kept).
        assert_eq!(take(0x9000, 5, |v, _, _| v.to_vec()), None);
        assert_eq!(pending(), 0);
        // Re-recording a frame replaces its record.
        push(0x9000, 1, &[1], [0; 5], 0);
        push(0x9000, 4, &[5, 6], [0; 5], 0);
        assert_eq!(pending(), 1);
        assert_eq!(take(0x9000, 4, |v, _, _| v.to_vec()), Some(vec![5, 6]));
        forget(0x1234);
        assert_eq!(pending(), 0);
    }
}
