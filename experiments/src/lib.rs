//! Experiment harness for Uppercut.
//!
//! Not built yet: the experiment binaries arrive with the experiments issue, once both OSR
//! issues have landed. The crate exists so that the workspace shape is fixed from the start.
