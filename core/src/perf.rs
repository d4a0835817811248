//! What profilers see of guest code ([`PerfMode`]): a perf map (`/tmp/perf-PID.map`) that names
//! every version's code while it lives, or a jitdump written by LLVM's perf listener for
//! `perf inject --jit` (source lines and disassembly).
//!
//! The map is the process's: every engine with [`PerfMode::Map`] adds its versions as they are
//! published, and a freed unit's entries are taken out (the file is written again without them),
//! so that perf never names code by what used to be at its address.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use crate::engine::VersionInfo;

/// How guest code is shown to `perf` ([`EngineOptions::perf`](crate::EngineOptions::perf)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PerfMode {
    /// Nothing is written.
    #[default]
    Off,
    /// `/tmp/perf-PID.map`: `perf report` names each version (`hot [O2]`,
    /// `hot [O2, continuation of site7]`).
    Map,
    /// A jitdump (`jit-PID.dump` under `$JITDUMPDIR`, else `~/.debug/jit`) from LLVM's perf
    /// listener: `perf record -k 1`, then `perf inject --jit` gives symbols, source lines and
    /// annotated disassembly.
    Jitdump,
}

impl PerfMode {
    /// The mode that the `UPPERCUT_PERF` environment variable asks for (`map` or `jitdump`),
    /// [`PerfMode::Off`] when it is unset or empty.
    ///
    /// # Errors
    /// When it is set to anything else.
    pub fn from_env() -> Result<PerfMode, String> {
        match std::env::var("UPPERCUT_PERF") {
            Ok(value) if !value.is_empty() => value
                .parse()
                .map_err(|e: String| format!("UPPERCUT_PERF: {e}")),
            _ => Ok(PerfMode::Off),
        }
    }
}

impl FromStr for PerfMode {
    type Err = String;

    fn from_str(s: &str) -> Result<PerfMode, String> {
        match s {
            "off" => Ok(PerfMode::Off),
            "map" => Ok(PerfMode::Map),
            "jitdump" => Ok(PerfMode::Jitdump),
            other => Err(format!(
                "unknown perf mode `{other}` (expected off, map or jitdump)"
            )),
        }
    }
}

impl fmt::Display for PerfMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PerfMode::Off => "off",
            PerfMode::Map => "map",
            PerfMode::Jitdump => "jitdump",
        })
    }
}

/// The process's perf map: live code by start address, with its size and name.
struct PerfMap {
    path: PathBuf,
    entries: BTreeMap<u64, (u64, String)>,
}

static MAP: Mutex<Option<PerfMap>> = Mutex::new(None);

/// One line of a perf map.
fn map_line(start: u64, size: u64, name: &str) -> String {
    format!("{start:x} {size:x} {name}\n")
}

/// Where perf looks for this process's map.
pub fn map_path() -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()))
}

/// Starts the process's perf map (once; later engines share it).
pub(crate) fn enable_map() -> std::io::Result<()> {
    let mut map = MAP.lock().unwrap_or_else(|e| e.into_inner());
    if map.is_some() {
        return Ok(());
    }
    let path = map_path();
    std::fs::File::create(&path)?;
    *map = Some(PerfMap {
        path,
        entries: BTreeMap::new(),
    });
    Ok(())
}

/// Adds code that just became callable.
pub(crate) fn published(code: impl IntoIterator<Item = (u64, u64, String)>) {
    let mut guard = MAP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(map) = guard.as_mut() else {
        return;
    };
    let mut lines = String::new();
    for (start, size, name) in code {
        if size == 0 {
            continue;
        }
        lines.push_str(&map_line(start, size, &name));
        map.entries.insert(start, (size, name));
    }
    // Appending is enough for new code: nothing else is at those addresses now.
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .open(&map.path)
        .and_then(|mut f| f.write_all(lines.as_bytes()));
    if let Err(e) = appended {
        eprintln!("uppercut: perf map {}: {e}", map.path.display());
    }
}

/// Adds the versions of a unit that was just published.
pub(crate) fn published_versions(versions: &[VersionInfo]) {
    published(versions.iter().map(|v| (v.entry, v.size, v.label())));
}

/// Takes out the code that starts at `starts` (a freed unit's), writing the map again.
pub(crate) fn freed(starts: &[u64]) {
    let mut guard = MAP.lock().unwrap_or_else(|e| e.into_inner());
    let Some(map) = guard.as_mut() else {
        return;
    };
    let before = map.entries.len();
    for start in starts {
        map.entries.remove(start);
    }
    if map.entries.len() == before {
        return;
    }
    let mut text = String::new();
    for (start, (size, name)) in &map.entries {
        text.push_str(&map_line(*start, *size, name));
    }
    // Written beside it and renamed over it: perf never reads half a map.
    let partial = map.path.with_extension("map.partial");
    let written =
        std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, &map.path));
    if let Err(e) = written {
        eprintln!("uppercut: perf map {}: {e}", map.path.display());
    }
}
