//! Reader for LLVM StackMap v3 sections (`.llvm_stackmaps`).
