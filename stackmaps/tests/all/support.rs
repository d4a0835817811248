//! Fixture paths and LLVM tools.

use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every committed object file, sorted. Fails if there are none, so that no test passes on an
/// empty directory.
pub(crate) fn object_fixtures() -> Vec<PathBuf> {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "o"))
        .collect();
    objects.sort();
    assert!(
        objects.len() >= 8,
        "expected the committed fixtures, found {objects:?}"
    );
    objects
}

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Standard output of an LLVM tool, or `None` when the tool is not installed.
pub(crate) fn run_tool(tool: &str, args: &[&str], file: &Path) -> Option<String> {
    let output = match Command::new(tool).args(args).arg(file).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: {tool} not found; skipping the comparison with it");
            return None;
        }
        Err(e) => panic!("running {tool}: {e}"),
    };
    assert!(
        output.status.success(),
        "{tool} {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("UTF-8 output"))
}
