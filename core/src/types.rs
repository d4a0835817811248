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

    pub(crate) fn codegen(self) -> inkwell::OptimizationLevel {
        use inkwell::OptimizationLevel as L;
        match self {
            OptLevel::O0 => L::None,
            OptLevel::O1 => L::Less,
            OptLevel::O2 => L::Default,
            OptLevel::O3 => L::Aggressive,
        }
    }
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
