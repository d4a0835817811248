//! The reproducible paper.
//!
//! Not built yet: `reproduce` arrives with the experiments issue. The crate exists so that the
//! workspace shape is fixed from the start.
