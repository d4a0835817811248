//! What the benchmarks share: the clang that compiles their guests, clang's IR of a C file or
//! text, and the hand-written recursion fixture. Each benchmark includes this folder as
//! `mod common` and uses what it needs.
#![allow(dead_code)]

#[path = "../../tests/common/clang.rs"]
mod clang_probe;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uppercut_core::{Engine, EngineOptions, OptLevel, SiteId, ValueKind};
use uppercut_osr::Target;

/// The clang to use (see `tests/common/clang.rs`); panics with advice naming `bench` when
/// there is none.
pub(crate) fn clang(bench: &str) -> PathBuf {
    clang_probe::find_clang().unwrap_or_else(|tried| {
        panic!(
            "{bench} needs clang 19 to compile its guest: none found (tried {tried:?}); \
             install clang-19 (scripts/setup) or set {}",
            clang_probe::CLANG_ENV
        )
    })
}

/// A kernel of `benches/kernels/`, by file name.
pub(crate) fn kernel(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/kernels")
        .join(file)
}

/// `clang <opt> -S -emit-llvm` of the C file `source`, as text.
pub(crate) fn ir_of_file(bench: &str, opt: &str, source: &Path) -> String {
    let clang = clang(bench);
    let out = Command::new(&clang)
        .args([opt, "-S", "-emit-llvm", "-o", "-"])
        .arg(source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", clang.display()));
    assert!(
        out.status.success(),
        "{} {opt} -S -emit-llvm {} failed:\n{}",
        clang.display(),
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("clang prints UTF-8 IR")
}

/// `clang <opt> -S -emit-llvm` of the C text `source`, as text.
pub(crate) fn ir_of_source(bench: &str, opt: &str, source: &str) -> String {
    let clang = clang(bench);
    let mut child = Command::new(&clang)
        .args([opt, "-S", "-emit-llvm", "-x", "c", "-", "-o", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", clang.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(source.as_bytes())
        .expect("write the guest to clang");
    drop(stdin);
    let out = child.wait_with_output().expect("wait for clang");
    assert!(
        out.status.success(),
        "{} {opt} -S -emit-llvm failed:\n{}",
        clang.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("clang prints UTF-8 IR")
}

/// `tests/ir/recursion.ll` on an O2 engine, and the target that moves a `rec` frame at its site
/// into `rec_double` (which doubles each frame's share of the result).
pub(crate) fn recursion() -> (Engine, Target) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ir/recursion.ll");
    let text = std::fs::read_to_string(path).expect("read recursion.ll");
    let options = EngineOptions {
        opt_level: OptLevel::O2,
        ..Default::default()
    };
    let engine = Engine::from_bytes(text.as_bytes(), "recursion.ll", options).expect("load");
    let target = Target {
        site: SiteId(1),
        continuation: engine.entry("rec_double").expect("rec_double"),
        values: vec![ValueKind::I64],
        result: Some(ValueKind::I64),
    };
    (engine, target)
}
