//! The kernel suite: classic benchmark programs in plain C99 (`experiments/kernels/*.c`).
//!
//! Each kernel reads its size from `argv[1]` (with a default), prints a deterministic result
//! (checksums, and floating-point values with a fixed number of decimals, the same at `-O0` and
//! `-O2`) and exits 0; a bad size is a message on stderr and exit status 2. Each comes with two
//! argument lists: [`Size::Small`] runs natively in a few tens of milliseconds even at `-O0`
//! (for tests), [`Size::Full`] in roughly one to three seconds at `-O2` (for measurements).
//! None of them makes a hypercall: whatever Uppercut does to them must not change what they
//! print.
//!
//! ```
//! use uppercut_experiments::kernels::{self, Size};
//!
//! let names: Vec<&str> = kernels::kernels().iter().map(|k| k.name).collect();
//! assert!(names.contains(&"fannkuch"));
//! let k = kernels::kernel("nbody").unwrap();
//! assert_eq!(k.args(Size::Small), ["20000"]);
//! assert!(k.source.contains("int main"));
//! ```

/// One kernel of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernel {
    /// Its name, also the stem of its source file.
    pub name: &'static str,
    /// What it computes, in a line.
    pub description: &'static str,
    /// Its C source.
    pub source: &'static str,
    /// Arguments for a run of a few tens of milliseconds natively at `-O0`.
    pub small: &'static [&'static str],
    /// Arguments for a run of roughly one to three seconds natively at `-O2`.
    pub full: &'static [&'static str],
}

/// Which of a kernel's argument lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// [`Kernel::small`].
    Small,
    /// [`Kernel::full`].
    Full,
}

impl Kernel {
    /// The arguments for `size`.
    pub fn args(&self, size: Size) -> &'static [&'static str] {
        match size {
            Size::Small => self.small,
            Size::Full => self.full,
        }
    }
}

macro_rules! kernel {
    ($name:literal, $description:literal, small: $small:expr, full: $full:expr $(,)?) => {
        Kernel {
            name: $name,
            description: $description,
            source: include_str!(concat!("../kernels/", $name, ".c")),
            small: $small,
            full: $full,
        }
    };
}

static KERNELS: [Kernel; 9] = [
    kernel!(
        "fannkuch",
        "fannkuch-redux: pancake flips over every permutation of 1..n",
        small: &["8"],
        full: &["11"],
    ),
    kernel!(
        "nbody",
        "n-body: symplectic integration of the Jovian planets",
        small: &["20000"],
        full: &["40000000"],
    ),
    kernel!(
        "spectralnorm",
        "spectral-norm: power method on an infinite matrix",
        small: &["200"],
        full: &["6000"],
    ),
    kernel!(
        "mandelbrot",
        "mandelbrot: escape-time bitmap of the Mandelbrot set, hashed",
        small: &["300"],
        full: &["6000"],
    ),
    kernel!(
        "fasta",
        "fasta: DNA sequences from a repeated string and a weighted random generator, hashed",
        small: &["20000"],
        full: &["15000000"],
    ),
    kernel!(
        "binarytrees",
        "binary-trees: allocating, walking and freeing perfect binary trees",
        small: &["12"],
        full: &["19"],
    ),
    kernel!(
        "nsieve",
        "nsieve: the sieve of Eratosthenes at three sizes",
        small: &["5"],
        full: &["12", "3"],
    ),
    kernel!(
        "matmul",
        "matrix multiply: dense doubles, naive i-k-j loops",
        small: &["120"],
        full: &["1600"],
    ),
    kernel!(
        "interp",
        "bytecode interpreter: a switch-dispatched stack machine running Collatz chains",
        small: &["3000"],
        full: &["500000"],
    ),
];

/// Every kernel, in a fixed order.
pub fn kernels() -> &'static [Kernel] {
    &KERNELS
}

/// The kernel called `name`.
pub fn kernel(name: &str) -> Option<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_their_sources() {
        for (i, k) in kernels().iter().enumerate() {
            assert!(
                kernels()[..i].iter().all(|other| other.name != k.name),
                "{} twice",
                k.name
            );
            assert!(
                k.source.contains(&format!("usage: {} [N", k.name)),
                "{}.c does not document its usage under its own name",
                k.name
            );
            assert!(!k.small.is_empty() && !k.full.is_empty());
        }
        assert!(kernel("no such kernel").is_none());
    }
}
