//! Code memory (placeholder, being written).
