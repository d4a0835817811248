//! The crate's error type: why a frame cannot be walked, decoded, prepared or patched.
//!
//! Every refusal is fail-closed: the frame keeps running its old code. Each variant carries the
//! return address of the frame it is about (and the site, when known), so a policy can log one
//! line per refused frame and go on with the others.

use std::fmt;

use uppercut_core::frames::Refusal;
use uppercut_core::{SiteId, ValueKind};

/// Why a frame was not transferred (or could not be inspected).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The return address lies in no JIT version of the engine.
    NotJitCode {
        /// The return address.
        return_address: u64,
    },
    /// The engine's frame table refuses the frame: no metadata, no record, a record that is
    /// not an OSR site or whose values a transfer cannot read, or call-frame information that
    /// does not fit.
    Refused {
        /// The return address.
        return_address: u64,
        /// Why, as the frame table says.
        reason: Refusal,
    },
    /// The record is a site, but not the one the target is for.
    SiteMismatch {
        /// The return address.
        return_address: u64,
        /// The target's site.
        expected: SiteId,
        /// The record's site.
        found: SiteId,
    },
    /// The record holds a different number of values than the target expects (for example a
    /// multi-frame deopt state left by inlining).
    ValueCountMismatch {
        /// The return address.
        return_address: u64,
        /// The record's site.
        site: SiteId,
        /// The target's count.
        expected: usize,
        /// The record's count (deopt locations after the site id).
        found: usize,
    },
    /// A value's stack slot is smaller than its kind.
    SizeMismatch {
        /// The return address.
        return_address: u64,
        /// The record's site.
        site: SiteId,
        /// The value's index in the site's value list.
        index: usize,
        /// The target's kind.
        kind: ValueKind,
        /// The slot's size in bytes.
        size: u16,
    },
    /// A descriptor for this return address and continuation exists with other value kinds.
    TargetConflict {
        /// The return address.
        return_address: u64,
        /// The continuation.
        continuation: u64,
    },
    /// The target is not usable (a null continuation).
    InvalidTarget {
        /// The return address.
        return_address: u64,
        /// Why.
        reason: String,
    },
    /// The frame is not what the walk saw any more: its return-address slot holds something
    /// else, or lies outside this thread's live stack.
    StaleFrame {
        /// The return address the frame was expected to hold.
        return_address: u64,
        /// The slot.
        slot: u64,
        /// Why.
        reason: String,
    },
    /// A [`Prepared`](crate::Prepared) was used with another frame or another engine's
    /// transfers.
    WrongPrepared {
        /// The frame's return address.
        return_address: u64,
        /// The prepared transfer's return address.
        prepared_for: u64,
    },
    /// Thunk memory could not be allocated or published.
    ThunkMemory {
        /// The code-memory error.
        reason: String,
    },
    /// Frame transfer is not implemented for this architecture.
    Unsupported,
    /// OSR needs an engine created with instrumentation (`EngineOptions::instrument`).
    NotInstrumented,
    /// The engine refused a request (its error, as text).
    Engine(String),
    /// Shadow-stack discovery found a frame it cannot turn into a transferable
    /// [`Frame`](crate::Frame): what the shadow-stack frame records does not match a suspended
    /// call of its function (see [`ShadowDiscovery`](crate::ShadowDiscovery)).
    Undiscoverable {
        /// The shadow-stack frame's address.
        shadow_frame: u64,
        /// Its function.
        function: String,
        /// Why.
        reason: String,
    },
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotJitCode { return_address } => {
                write!(f, "{return_address:#x} is not in JIT code")
            }
            Error::Refused {
                return_address,
                reason,
            } => write!(f, "frame at {return_address:#x}: {reason}"),
            Error::SiteMismatch {
                return_address,
                expected,
                found,
            } => write!(
                f,
                "the record at {return_address:#x} is {found}, the target is for {expected}"
            ),
            Error::ValueCountMismatch {
                return_address,
                site,
                expected,
                found,
            } => write!(
                f,
                "{site} at {return_address:#x} records {found} values, the target expects {expected}"
            ),
            Error::SizeMismatch {
                return_address,
                site,
                index,
                kind,
                size,
            } => write!(
                f,
                "{site} at {return_address:#x}: value {index} ({kind}) is in a {size}-byte slot"
            ),
            Error::TargetConflict {
                return_address,
                continuation,
            } => write!(
                f,
                "a transfer from {return_address:#x} to {continuation:#x} was prepared with other value kinds"
            ),
            Error::InvalidTarget {
                return_address,
                reason,
            } => write!(f, "frame at {return_address:#x}: invalid target: {reason}"),
            Error::StaleFrame {
                return_address,
                slot,
                reason,
            } => write!(
                f,
                "frame at {return_address:#x} (return address slot {slot:#x}) is stale: {reason}"
            ),
            Error::WrongPrepared {
                return_address,
                prepared_for,
            } => write!(
                f,
                "frame at {return_address:#x}: the transfer was prepared for {prepared_for:#x} or by other transfers"
            ),
            Error::ThunkMemory { reason } => write!(f, "thunk memory: {reason}"),
            Error::Unsupported => {
                f.write_str("frame transfer is not implemented for this architecture")
            }
            Error::NotInstrumented => f.write_str(
                "the engine was created without OSR instrumentation (EngineOptions::instrument)",
            ),
            Error::Engine(e) => f.write_str(e),
            Error::Undiscoverable {
                shadow_frame,
                function,
                reason,
            } => write!(
                f,
                "the frame of `{function}` (shadow-stack frame {shadow_frame:#x}) cannot be transferred: {reason}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// A hypercall handler can pass a refusal on with `?`: the guest is then stopped with its text.
impl From<Error> for uppercut_core::CallbackError {
    fn from(error: Error) -> Self {
        uppercut_core::CallbackError(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_frame() {
        let e = Error::SiteMismatch {
            return_address: 0x1234,
            expected: SiteId(1),
            found: SiteId(2),
        };
        assert_eq!(
            e.to_string(),
            "the record at 0x1234 is site2, the target is for site1"
        );
        let e = Error::ValueCountMismatch {
            return_address: 0x10,
            site: SiteId(3),
            expected: 2,
            found: 5,
        };
        assert_eq!(
            e.to_string(),
            "site3 at 0x10 records 5 values, the target expects 2"
        );
    }
}
