//! The `uppercut` command line, as a library so that tests and embedders can drive it.
//!
//! ```text
//! uppercut run [-O0|-O1|-O2|-O3] [--compile=lazy|eager] [--osr=off|tier|stress=SEED] [--osr-specialize=GLOBAL]...
//!              [--osr-transfer=lazy|eager] [--osr-compile=sync|background] [--osr-stats]
//!              [--osr-tiered=final|sites] [--osr-continuations=per-site|multi] [--osr-threshold=N]
//!              [--osr-log=FILE] [--osr-log-format=json|chrome] [--osr-stats=text|json]
//!              [--perf=off|map|jitdump] [--gdb=on|off] [--dump-code=DIR]
//!              [--load PLUGIN.so]... FILE.ll|FILE.bc [ARGS...]
//! uppercut stackmaps FILE.o
//! ```
//!
//! Every failure of the tool itself (bad usage, unreadable or invalid input, a missing `main`,
//! an unresolved symbol, an unknown callback) is one line on stderr and exit status 2.
//!
//! The arguments are read with clap; [`USAGE`] is the help of every command, and clap's own
//! multi-line errors (usage, tips) are cut down to that one line.

mod run;
mod stackmaps;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ColorChoice, Parser, Subcommand};

/// Usage text.
pub const USAGE: &str = "\
usage: uppercut run [-O0|-O1|-O2|-O3] [--compile=lazy|eager] [--osr=off|tier|stress=SEED]
                    [--osr-specialize=GLOBAL]...
                    [--osr-transfer=lazy|eager] [--osr-compile=sync|background] [--osr-stats]
                    [--osr-tiered=final|sites] [--osr-continuations=per-site|multi] [--osr-threshold=N]
                    [--osr-log=FILE] [--osr-log-format=json|chrome] [--osr-stats=text|json]
                    [--perf=off|map|jitdump] [--gdb=on|off] [--dump-code=DIR]
                    [--load PLUGIN.so]... FILE.ll|FILE.bc [ARGS...]
       uppercut stackmaps FILE.o

run        runs main(argc, argv) of an LLVM IR or bitcode program under Uppercut's JIT and
           exits with its result, as lli does. Options take their value after `=` (but for
           -O and --load, which also take the next argument: -O 2, --load PLUGIN.so); every
           argument after FILE is the program's, even one that looks like an option
  -O0..-O3                 level of the first compilation (default -O2)
  --compile=lazy           each function is compiled on its first call (default)
  --compile=eager          the whole program is compiled before main, as lli does
  --osr=off                no on-stack replacement (default)
  --osr=tier               hot functions (by calls) and hot loops (by passes) of slower code
                           move to O2 code, loops mid-loop
  --osr=stress=SEED        random frames move between O0 and O2 code at random sites (seeded)
  --osr-specialize=GLOBAL  after each store to GLOBAL, functions reading it run with its value
                           folded in; frames assuming an older value are deoptimised
  --osr-transfer=lazy      a moved frame's state is read when its callee returns (default)
  --osr-transfer=eager     every moved frame's state is read at once, at the safepoint (and
                           its old slots poisoned: nothing may read them again)
  --osr-compile=background a hot loop goes on in its old code while the new code is compiled,
                           and moves at a later pass once it is ready (default)
  --osr-compile=sync       a hot loop waits for its new code
  --osr-tiered=final       tiered-up code keeps no counters and no call sites: its frames
                           stay, its calls may be inlined (default)
  --osr-tiered=sites       tiered-up code keeps every site, so its frames can move again
  --osr-continuations=per-site
                           a moved frame resumes in a continuation built for its site (default)
  --osr-continuations=multi
                           ... in one multi-entry continuation per function and spec
  --osr-threshold=N        passes of a loop header, or calls of a function, before its site
                           fires (tier: 1000, per 100 instructions of the function)
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

/// The command line as clap reads it.
#[derive(Debug, Parser)]
#[command(
    name = "uppercut",
    override_help = USAGE,
    color = ColorChoice::Never,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs `main` of an LLVM IR or bitcode program under the JIT.
    #[command(override_help = USAGE)]
    Run(run::RunArgs),
    /// Prints an object file's `.llvm_stackmaps` section.
    #[command(override_help = USAGE)]
    Stackmaps(stackmaps::StackmapsArgs),
}

/// Runs the command line with `args` (without the program name).
pub fn main(args: &[String]) -> Result<ExitCode, CliError> {
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            print!("{e}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(one_line(&e, args)),
    };
    match cli.command {
        Command::Run(run) => run::main(run),
        Command::Stackmaps(stackmaps) => stackmaps::main(stackmaps),
    }
}

fn parse(args: &[String]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("uppercut").chain(args.iter().map(String::as_str)))
}

/// clap's error about `args` as one line, without its usage and tips.
fn one_line(e: &clap::Error, args: &[String]) -> CliError {
    let command = args
        .first()
        .map(String::as_str)
        .filter(|c| ["run", "stackmaps"].contains(c));
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.as_str(),
        _ => "",
    };
    // clap's "did you mean" for a misspelt option or command.
    let suggestion = match (
        e.get(ContextKind::SuggestedArg),
        e.get(ContextKind::SuggestedSubcommand),
    ) {
        (Some(ContextValue::String(arg)), _) => format!(" (did you mean `{arg}`?)"),
        (_, Some(ContextValue::Strings(commands))) if !commands.is_empty() => {
            format!(" (did you mean `{}`?)", commands[0])
        }
        _ => String::new(),
    };
    let hint = if suggestion.is_empty() {
        " (try `uppercut --help`)"
    } else {
        &suggestion
    };
    let message = match (e.kind(), command) {
        (ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, _) => {
            "no command given (try `uppercut run FILE.ll` or `uppercut --help`)".to_owned()
        }
        (ErrorKind::InvalidSubcommand, _) => format!(
            "unknown command `{}`{hint}",
            context(ContextKind::InvalidSubcommand)
        ),
        // Every value parser of `run` names its option in its message.
        (ErrorKind::ValueValidation, Some("run")) => match std::error::Error::source(e) {
            Some(why) => why.to_string(),
            None => first_line(e),
        },
        (_, Some("stackmaps")) => "usage: uppercut stackmaps FILE.o".to_owned(),
        (ErrorKind::MissingRequiredArgument, Some("run")) => {
            "`uppercut run` needs a FILE.ll or FILE.bc".to_owned()
        }
        (ErrorKind::NoEquals, _) => format!(
            "`{}` takes its value after `=`",
            context(ContextKind::InvalidArg)
        ),
        (ErrorKind::InvalidValue, Some("run"))
            if context(ContextKind::InvalidArg).starts_with("--load") =>
        {
            "--load needs a shared library path".to_owned()
        }
        (ErrorKind::UnknownArgument, Some(command)) => format!(
            "unknown option `{}` for `uppercut {command}`{suggestion}",
            context(ContextKind::InvalidArg)
        ),
        (ErrorKind::UnknownArgument, None) => {
            format!(
                "unknown option `{}`{hint}",
                context(ContextKind::InvalidArg)
            )
        }
        _ => first_line(e),
    };
    CliError(message)
}

/// The first line of clap's rendering of `e`, without its `error: `.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The `--name` options of `uppercut run` in `text`.
    fn long_options(text: &str) -> std::collections::BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2 && w != &"--help")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_usage_and_the_readme_name_every_option_clap_reads() {
        let command = Cli::command();
        let run = command.find_subcommand("run").unwrap();
        let clap: std::collections::BTreeSet<String> = run
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|&l| l != "help")
            .map(|l| format!("--{l}"))
            .collect();
        let (synopsis, table) = USAGE.split_once("\n\n").unwrap();
        assert_eq!(long_options(synopsis), clap, "USAGE's synopsis");
        let table: String = table
            .lines()
            .filter(|l| l.trim_start().starts_with('-'))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(long_options(&table), clap, "USAGE's table");
        let readme = include_str!("../../../README.md");
        let section = readme.find("## The command line").unwrap();
        let start = section + readme[section..].find("uppercut run [").unwrap();
        let synopsis = &readme[start..];
        let synopsis: String = synopsis[..synopsis.find("```\n\n").unwrap()]
            .lines()
            .map(|l| l.split('#').next().unwrap())
            .collect();
        assert_eq!(long_options(&synopsis), clap, "README");
        assert_eq!(
            run.get_arguments()
                .filter_map(|a| a.get_short())
                .filter(|&s| s != 'h')
                .collect::<Vec<_>>(),
            ['O']
        );
    }

    #[test]
    fn help_is_the_usage_and_bad_commands_are_one_line() {
        for args in [&["--help"][..], &["-h"], &["help"], &["run", "--help"]] {
            let e = parse(&strings(args)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.to_string().trim_end(), USAGE, "{args:?}");
        }
        for (args, needle) in [
            (&[][..], "no command given"),
            (&["frobnicate"][..], "unknown command `frobnicate`"),
            (
                &["stackmap"][..],
                "unknown command `stackmap` (did you mean `stackmaps`?)",
            ),
            (
                &["run", "--osr-stat", "x.ll"][..],
                "unknown option `--osr-stat` for `uppercut run` (did you mean `--osr-stats`?)",
            ),
            (&["--frobnicate"][..], "unknown option `--frobnicate`"),
            (&["stackmaps"][..], "usage: uppercut stackmaps FILE.o"),
            (
                &["stackmaps", "a.o", "b.o"][..],
                "usage: uppercut stackmaps FILE.o",
            ),
        ] {
            let args = strings(args);
            let e = main(&args).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
            assert_eq!(e.0.lines().count(), 1, "{args:?}: {e}");
        }
    }
}
