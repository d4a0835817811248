//! Small value types shared across the engine.

use std::fmt;
use std::str::FromStr;

/// An optimisation level, as `-O0` to `-O3` on LLVM's command lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum OptLevel {
    /// No optimisation.
    O0,
    /// Light optimisation.
    O1,
    /// The default optimisation pipeline.
    #[default]
    O2,
    /// Aggressive optimisation.
    O3,
}

impl OptLevel {
    /// The level as a number, 0 to 3.
    pub fn as_u8(self) -> u8 {
        match self {
            OptLevel::O0 => 0,
            OptLevel::O1 => 1,
            OptLevel::O2 => 2,
            OptLevel::O3 => 3,
        }
    }

    /// The level from a number, 0 to 3.
    pub fn from_u8(level: u8) -> Option<OptLevel> {
        Some(match level {
            0 => OptLevel::O0,
            1 => OptLevel::O1,
            2 => OptLevel::O2,
            3 => OptLevel::O3,
            _ => return None,
        })
    }
}

/// What a version keeps of the OSR sites that instrumentation placed in its function.
///
/// A version built [`Readiness::Final`] is a last tier: nothing moves its frames again, so it
/// pays for no readiness. Its loops and entry count nothing, its calls are plain calls (so the
/// optimiser may inline callees that have sites), and its unit has no stack-map records for
/// them; only store sites stay (specialisation on a watched global needs every store's
/// hypercall, in any code). A frame of a final version is never transferred: a walk lists it
/// without a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Readiness {
    /// Every site of the function: its frames can move again.
    #[default]
    Sites,
    /// Only store sites: a last tier whose frames stay where they are. It cannot be
    /// specialised (nothing could leave it when a value it assumes changes).
    Final,
}

impl fmt::Display for OptLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "O{}", self.as_u8())
    }
}

impl FromStr for OptLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.trim_start_matches("-").trim_start_matches(['O', 'o']);
        digits
            .parse::<u8>()
            .ok()
            .and_then(OptLevel::from_u8)
            .ok_or_else(|| format!("unknown optimisation level `{s}` (expected O0, O1, O2 or O3)"))
    }
}

/// Identifies one compiled version of one guest function, unique within an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionId(pub u32);

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Identifies one compile unit (one MCJIT object), unique within an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitId(pub u32);

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unit{}", self.0)
    }
}

/// An absolute address in the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub u64);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Identifies one OSR site of an instrumented guest module, unique within an engine.
///
/// Every compiled version of a function records its sites in `.llvm_stackmaps` (statepoint
/// records at the site's return address), and the first deopt location of each record is the
/// site id as a constant: `[Constant(site), value 0, …, value n-1]`, the values in the order of
/// the site's [`ValueKind`] list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(pub u32);

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site{}", self.0)
    }
}

/// The LLVM type of one value of an OSR site's state, or of a call's result.
///
/// In a transfer buffer every value takes one 64-bit slot holding its bits, zero-extended:
/// integers narrower than 64 bits in the low bits, `float` as its 32 bits, `double` as its 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `i1`.
    I1,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `ptr` (address space 0).
    Ptr,
    /// `float`.
    F32,
    /// `double`.
    F64,
}

impl ValueKind {
    /// Whether the x86-64 System V ABI returns a value of this kind in `xmm0` (else `rax`).
    pub fn is_float(self) -> bool {
        matches!(self, ValueKind::F32 | ValueKind::F64)
    }

    /// The value's size in bytes (1 for `i1`).
    pub fn size(self) -> u32 {
        match self {
            ValueKind::I1 | ValueKind::I8 => 1,
            ValueKind::I16 => 2,
            ValueKind::I32 | ValueKind::F32 => 4,
            ValueKind::I64 | ValueKind::Ptr | ValueKind::F64 => 8,
        }
    }

    /// Keeps the bits that belong to a value of this kind and clears the rest.
    pub fn mask(self, bits: u64) -> u64 {
        match self.size() {
            8 => bits,
            n => bits & ((1u64 << (n * 8)) - 1),
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueKind::I1 => "i1",
            ValueKind::I8 => "i8",
            ValueKind::I16 => "i16",
            ValueKind::I32 => "i32",
            ValueKind::I64 => "i64",
            ValueKind::Ptr => "ptr",
            ValueKind::F32 => "float",
            ValueKind::F64 => "double",
        })
    }
}
