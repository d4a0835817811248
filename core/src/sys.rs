//! System calls for code memory (placeholder, being written).
