//! The `uppercut` command line, as a library so that tests and embedders can drive it.
//!
//! ```text
//! uppercut run [-O0|-O1|-O2|-O3] [--compile=lazy|eager] [--osr=off|tier|stress=SEED] [--osr-specialize=GLOBAL]...
//!              [--osr-transfer=lazy|eager] [--osr-compile=sync|background] [--osr-stats]
//!              [--osr-continuations=per-site|multi] [--osr-threshold=N]
//!              [--osr-log=FILE] [--osr-log-format=json|chrome] [--osr-stats=text|json]
//!              [--perf=off|map|jitdump] [--gdb=on|off] [--dump-code=DIR]
//!              [--load PLUGIN.so]... FILE.ll|FILE.bc [ARGS...]
//! uppercut stackmaps FILE.o
//! ```
//!
//! Every failure of the tool itself (bad usage, unreadable or invalid input, a missing `main`,
//! an unresolved symbol, an unknown callback) is one line on stderr and exit status 2.

mod run;
mod stackmaps;

use std::process::ExitCode;

/// Usage text.
pub const USAGE: &str = "\
usage: uppercut run [-O0|-O1|-O2|-O3] [--compile=lazy|eager] [--osr=off|tier|stress=SEED]
                    [--osr-specialize=GLOBAL]...
                    [--osr-transfer=lazy|eager] [--osr-compile=sync|background] [--osr-stats]
                    [--osr-continuations=per-site|multi] [--osr-threshold=N]
                    [--osr-log=FILE] [--osr-log-format=json|chrome] [--osr-stats=text|json]
                    [--perf=off|map|jitdump] [--gdb=on|off] [--dump-code=DIR]
                    [--load PLUGIN.so]... FILE.ll|FILE.bc [ARGS...]
       uppercut stackmaps FILE.o

run        runs main(argc, argv) of an LLVM IR or bitcode program under Uppercut's JIT and
           exits with its result, as lli does
  -O0..-O3                 level of the first compilation (default -O2)
  --compile=lazy           each function is compiled on its first call (default)
  --compile=eager          the whole program is compiled before main, as lli does
  --osr=off                no on-stack replacement (default)
  --osr=tier               loops of slower code move to O2 code mid-loop once hot
  --osr=stress=SEED        random frames move between O0 and O2 code at random sites (seeded)
  --osr-specialize=GLOBAL  after each store to GLOBAL, functions reading it run with its value
                           folded in; frames assuming an older value are deoptimised
  --osr-transfer=lazy      a moved frame's state is read when its callee returns (default)
  --osr-transfer=eager     every moved frame's state is read at once, at the safepoint (and
                           its old slots poisoned: nothing may read them again)
  --osr-compile=sync       a hot loop waits for its new code (default)
  --osr-compile=background a hot loop goes on in its old code while the new code is compiled,
                           and moves at a later pass once it is ready
  --osr-continuations=per-site
                           a moved frame resumes in a continuation built for its site (default)
  --osr-continuations=multi
                           ... in one multi-entry continuation per function and spec
  --osr-threshold=N        passes of a loop header before its site fires (tier: 1000)
  --osr-stats              print `uppercut: osr transitions=N frames=M recompiles=K ...` at exit
  --osr-stats=json         ... as one JSON object: `uppercut: osr {\"transitions\":N,...}`
  --osr-log=FILE           write every compilation, relink, retirement, transfer and
                           deoptimisation to FILE, one JSON object per line, with timestamps
  --osr-log-format=chrome  ... as Chrome trace events instead (open in Perfetto)
  --perf=map               write /tmp/perf-PID.map, naming every version's code for perf
  --perf=jitdump           write a jitdump (with source lines) for `perf inject --jit`
                           (default: $UPPERCUT_PERF, else off)
  --gdb=off                do not register units with GDB's JIT interface (default on)
  --dump-code=DIR          write each unit's machine code into DIR as it is compiled,
                           disassembled, with its functions' names and stack-map records
  --load PLUGIN.so         load a shared library that registers callbacks
stackmaps  prints the .llvm_stackmaps section of an object file as llvm-readobj --stackmap does";

/// A command-line failure: printed as `uppercut: <message>`, exit status 2.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<uppercut_core::Error> for CliError {
    fn from(e: uppercut_core::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Runs the command line with `args` (without the program name).
pub fn main(args: &[String]) -> Result<ExitCode, CliError> {
    match args.first().map(String::as_str) {
        Some("run") => run::main(&args[1..]),
        Some("stackmaps") => stackmaps::main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(CliError(format!(
            "unknown command `{other}` (try `uppercut --help`)"
        ))),
        None => Err(CliError(
            "no command given (try `uppercut run FILE.ll` or `uppercut --help`)".to_owned(),
        )),
    }
}
