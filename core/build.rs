//! Builds the small C++ part of the IR layer (`src/ir/extract.cpp`, `src/ir/debug.cpp`,
//! `src/ir/jit.cpp`): what LLVM's C API lacks for compiling function by function (materializing
//! lazily loaded bodies, extracting a few functions into a module of their own, code generation
//! and loading with target machines kept across units) and for keeping units visible to
//! debuggers and profilers. It is compiled against the same LLVM 19 that
//! `llvm-sys` links, found the way `llvm-sys` finds it.

use std::path::PathBuf;
use std::process::Command;

fn llvm_config() -> PathBuf {
    if let Some(prefix) = std::env::var_os("LLVM_SYS_191_PREFIX") {
        return PathBuf::from(prefix).join("bin").join("llvm-config");
    }
    for candidate in ["llvm-config-19", "llvm-config"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "uppercut-core: llvm-config-19 not found (install llvm-19-dev, or set LLVM_SYS_191_PREFIX)"
    );
}

fn query(config: &PathBuf, arg: &str) -> String {
    let out = Command::new(config)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("uppercut-core: running {} {arg}: {e}", config.display()));
    assert!(
        out.status.success(),
        "uppercut-core: {} {arg} failed",
        config.display()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn main() {
    let sources = ["src/ir/extract.cpp", "src/ir/debug.cpp", "src/ir/jit.cpp"];
    for source in sources {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=LLVM_SYS_191_PREFIX");
    let config = llvm_config();
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .files(sources)
        .include(query(&config, "--includedir"))
        .flag("-std=c++17")
        .flag("-fno-exceptions")
        .warnings(false);
    if query(&config, "--has-rtti") != "YES" {
        build.flag("-fno-rtti");
    }
    for define in [
        "__STDC_CONSTANT_MACROS",
        "__STDC_FORMAT_MACROS",
        "__STDC_LIMIT_MACROS",
    ] {
        build.define(define, None);
    }
    build.compile("uppercut_extract");
}
