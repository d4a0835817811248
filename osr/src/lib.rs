//! On-stack replacement for LLVM-JITted code, and the `uppercut` command line.
//!
//! The OSR machinery (instrumentation, continuations, stack walking, frame transfer, policies)
//! arrives with the OSR issues; today this crate hosts the command line, whose `run` verb drives
//! [`uppercut_core::Engine`].

pub mod cli;
