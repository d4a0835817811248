//! The printer against `llvm-readobj-19 --stackmap`: committed goldens, and the live tool.

use std::path::Path;

use crate::support::{object_fixtures, run_tool};

const READOBJ: &str = "llvm-readobj-19";

/// `llvm-readobj --stackmap` output from the line `LLVM StackMap Version: 3` on.
fn trim_readobj(output: &str) -> String {
    let start = output
        .find("LLVM StackMap Version: 3")
        .expect("llvm-readobj printed a stack map");
    output[start..].to_string()
}

fn golden_path(object: &Path) -> std::path::PathBuf {
    object.with_extension("readobj.txt")
}

#[test]
fn printer_matches_llvm_readobj_on_every_fixture() {
    let bless = std::env::var_os("UPPERCUT_BLESS").is_some_and(|v| v == "1");
    for object in object_fixtures() {
        let bytes = std::fs::read(&object).unwrap();
        let ours = uppercut_stackmaps::dump_object_file(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", object.display()));
        let live = run_tool(READOBJ, &["--stackmap"], &object).map(|out| trim_readobj(&out));

        let golden = golden_path(&object);
        if bless {
            let live = live
                .as_ref()
                .unwrap_or_else(|| panic!("UPPERCUT_BLESS=1 needs {READOBJ} on PATH"));
            std::fs::write(&golden, live).unwrap();
            eprintln!("blessed {}", golden.display());
        }
        let expected = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
        assert_eq!(
            ours,
            expected,
            "{} differs from the golden",
            object.display()
        );
        if let Some(live) = live {
            assert_eq!(ours, live, "{} differs from {READOBJ}", object.display());
        }
    }
}

#[test]
fn goldens_cover_every_location_kind_and_live_outs() {
    // Guards the fixtures themselves: the comparison above means little if they lose variety.
    let all: String = object_fixtures()
        .iter()
        .map(|o| std::fs::read_to_string(golden_path(o)).unwrap())
        .collect();
    for needle in [
        "Register R#",
        "Direct R#",
        "Indirect [R#",
        "Constant 4294967295",
        "ConstantIndex #3 (",
        "-bytes) ]",
        "0 locations:",
    ] {
        assert!(all.contains(needle), "no fixture prints {needle:?}");
    }
}
