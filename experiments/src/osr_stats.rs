//! The counts `uppercut run --osr-stats` prints on stderr at exit:
//!
//! ```text
//! uppercut: osr transitions=N frames=M recompiles=K caught_up=C background=B max_stall_us=S
//! uppercut: osr {"transitions":N,"frames":M,...}      (--osr-stats=json, which the experiments use)
//! ```
//!
//! ```
//! use uppercut_experiments::osr_stats::OsrCounts;
//!
//! let stderr = "uppercut: osr transitions=2 frames=7 recompiles=3 max_stall_us=1500\n";
//! let counts = OsrCounts::parse(stderr).unwrap();
//! assert_eq!(counts.get("frames"), Some(7));
//! assert_eq!(counts.get("missing"), None);
//! ```

use std::collections::BTreeMap;

/// The prefix of the `--osr-stats` line.
pub const PREFIX: &str = "uppercut: osr ";

/// The `name=value` counts of an `--osr-stats` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsrCounts {
    counts: BTreeMap<String, u64>,
}

impl OsrCounts {
    /// The counts of the last `--osr-stats` line in `stderr`; `None` if there is none or it
    /// does not parse.
    pub fn parse(stderr: &str) -> Option<OsrCounts> {
        let line = stderr.lines().rev().find_map(|l| l.strip_prefix(PREFIX))?;
        if line.starts_with('{') {
            // `--osr-stats=json`: one object of counts.
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(line).ok()?;
            let counts = object
                .into_iter()
                .map(|(k, v)| Some((k, v.as_u64()?)))
                .collect::<Option<BTreeMap<String, u64>>>()?;
            return Some(OsrCounts { counts });
        }
        let counts = line
            .split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect::<Option<BTreeMap<String, u64>>>()?;
        Some(OsrCounts { counts })
    }

    /// One count by name.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counts.get(name).copied()
    }

    /// Every count, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(k, &v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_statistics_count_the_same() {
        let text = "uppercut: osr {\"frames\":3,\"patched\":4}\n";
        let c = OsrCounts::parse(text).unwrap();
        assert_eq!(c.get("frames"), Some(3));
        assert_eq!(c.get("patched"), Some(4));
        assert!(OsrCounts::parse("uppercut: osr {\"frames\":-1}\n").is_none());
    }

    #[test]
    fn the_last_stats_line_counts() {
        let text = "noise\nuppercut: osr frames=1\nuppercut: osr frames=2 recompiles=5\n";
        let c = OsrCounts::parse(text).unwrap();
        assert_eq!((c.get("frames"), c.get("recompiles")), (Some(2), Some(5)));
        assert_eq!(c.iter().count(), 2);
        assert!(OsrCounts::parse("uppercut: osr frames=x\n").is_none());
        assert!(OsrCounts::parse("nothing here\n").is_none());
    }
}
