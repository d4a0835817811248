//! Integration tests of `uppercut-stackmaps` on object files compiled by LLVM 19 (see
//! `tests/fixtures/README.md`), compared with LLVM's own tools where they are installed.

mod eh_frame;
mod golden;
mod object_files;
mod support;
