//! On-stack replacement for LLVM-JITted code.
