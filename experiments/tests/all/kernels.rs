//! The kernel suite: what each kernel computes, and that Uppercut does not change it.
//!
//! The differential test of a kernel compiles it with clang at `-O0` and at `-O2`, natively and
//! to LLVM IR, runs it at its small size natively and under
//!
//! ```text
//! uppercut run -On K.ll ARGS
//! uppercut run -On --osr=tier --osr-threshold=50 --osr-stats K.ll ARGS
//! uppercut run -On --osr=stress=7 --osr-stats K.ll ARGS
//! ```
//!
//! and requires the same stdout, the same stderr (less the stats line) and the same exit
//! status, and that OSR did move frames: tier-up at `-O0` (at `-O2` there is no slower code to
//! leave), stress at both levels.

use std::collections::BTreeSet;
use std::process::Command;

use uppercut_core::OptLevel;
use uppercut_experiments::kernels::{self, Kernel, Size};

use crate::support::{clang, osr_stat, run, uppercut, without_stats};

fn kernel(name: &str) -> &'static Kernel {
    kernels::kernel(name).unwrap_or_else(|| panic!("no kernel `{name}` in the catalog"))
}

fn differential(name: &str) {
    let k = kernel(name);
    let args = k.args(Size::Small);
    for opt in [OptLevel::O0, OptLevel::O2] {
        let exe = clang().compile_native(k.name, k.source, opt).unwrap();
        let ir = clang().compile_ir(k.name, k.source, opt).unwrap();
        let native = run({
            let mut c = Command::new(exe.path());
            c.args(args);
            c
        });
        assert!(
            native.status.success() && native.stderr.is_empty() && !native.stdout.is_empty(),
            "{name} -{opt} natively: {native:?}"
        );
        let level = format!("-O{}", opt.as_u8());
        let under = |flags: &[&str]| {
            let mut c = Command::new(uppercut());
            c.arg("run")
                .arg(&level)
                .args(flags)
                .arg(ir.path())
                .args(args);
            run(c)
        };

        let plain = under(&[]);
        assert_eq!(
            plain, native,
            "{name} -{opt}: `uppercut run` differs from native"
        );

        for (mode, moved_expected) in [
            // Waiting for its code, tier-up moves the hot loop's frame at once; in the
            // background (the default), a run this short may end first.
            (
                &["--osr=tier", "--osr-compile=sync", "--osr-threshold=50"][..],
                opt == OptLevel::O0,
            ),
            (&["--osr=tier", "--osr-threshold=50"][..], false),
            (&["--osr=stress=7"][..], true),
        ] {
            let osr = under(&[mode, &["--osr-stats"]].concat());
            let what = format!("{name} -{opt} {}", mode.join(" "));
            assert_eq!(
                osr.stdout, native.stdout,
                "{what}: stdout differs from native"
            );
            assert_eq!(
                osr.status, native.status,
                "{what}: exit status differs from native"
            );
            assert_eq!(
                without_stats(&osr.stderr),
                native.stderr,
                "{what}: stderr differs"
            );
            if moved_expected {
                assert!(
                    osr_stat(&osr.stderr, "frames") > 0,
                    "{what}: no frame moved: {}",
                    osr.stderr
                );
            }
        }
    }
}

macro_rules! differential_tests {
    ($($test:ident: $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                differential($name);
            }
        )*

        /// Every kernel has a differential test above.
        const TESTED: &[&str] = &[$($name),*];
    };
}

differential_tests! {
    fannkuch_runs_the_same_under_uppercut: "fannkuch",
    nbody_runs_the_same_under_uppercut: "nbody",
    spectralnorm_runs_the_same_under_uppercut: "spectralnorm",
    mandelbrot_runs_the_same_under_uppercut: "mandelbrot",
    fasta_runs_the_same_under_uppercut: "fasta",
    binarytrees_runs_the_same_under_uppercut: "binarytrees",
    nsieve_runs_the_same_under_uppercut: "nsieve",
    matmul_runs_the_same_under_uppercut: "matmul",
    interp_runs_the_same_under_uppercut: "interp",
}

/// With `--osr-compile=background`, a kernel whose loops get hot shortly before it exits can
/// exit while the compiler thread is still compiling: the exit must wait for that compilation
/// (LLVM's static state is torn down at exit) and lose nothing. Each kernel runs three times;
/// all runs must match native.
#[test]
fn kernels_run_the_same_with_background_compilation() {
    for k in kernels::kernels() {
        let args = k.args(Size::Small);
        let exe = clang()
            .compile_native(k.name, k.source, OptLevel::O0)
            .unwrap();
        let ir = clang().compile_ir(k.name, k.source, OptLevel::O0).unwrap();
        let native = run({
            let mut c = Command::new(exe.path());
            c.args(args);
            c
        });
        for attempt in 0..3 {
            let mut c = Command::new(uppercut());
            c.args(["run", "-O0", "--osr=tier", "--osr-threshold=50"])
                .arg("--osr-compile=background")
                .arg(ir.path())
                .args(args);
            let jit = run(c);
            assert_eq!(jit, native, "{} attempt {attempt}", k.name);
        }
    }
}

#[test]
fn the_catalog_lists_every_source_and_every_kernel_is_tested() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = kernels::kernels()
        .iter()
        .map(|k| k.name.to_owned())
        .collect();
    assert_eq!(listed, files);
    assert_eq!(
        TESTED
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        files
    );
    assert!(files.len() >= 9);
    for k in kernels::kernels() {
        let on_disk = std::fs::read_to_string(dir.join(format!("{}.c", k.name))).unwrap();
        assert_eq!(
            k.source, on_disk,
            "{}: the catalog's source is stale",
            k.name
        );
    }
}

#[test]
fn kernels_and_the_server_compile_without_warnings() {
    let sources = kernels::kernels()
        .iter()
        .map(|k| (k.name, k.source))
        .chain([(
            uppercut_experiments::httpd::NAME,
            uppercut_experiments::httpd::SOURCE,
        )]);
    for (name, source) in sources {
        let warnings = clang().warnings(name, source).unwrap();
        assert!(warnings.is_empty(), "{name}.c:\n{warnings}");
    }
}

#[test]
fn a_bad_size_is_refused_with_status_2() {
    let k = kernel("nbody");
    let exe = clang()
        .compile_native(k.name, k.source, OptLevel::O0)
        .unwrap();
    for bad in ["", "12x", "-5"] {
        let out = run({
            let mut c = Command::new(exe.path());
            c.arg(bad);
            c
        });
        assert_eq!(out.status.code(), Some(2), "nbody {bad:?}: {out:?}");
        assert!(out.stdout.is_empty() && out.stderr.contains("size must be"));
    }
}

/// What kernel `name` prints with `args`, natively at -O2.
fn native_output(name: &str, args: &[&str]) -> String {
    let k = kernel(name);
    let exe = clang()
        .compile_native(k.name, k.source, OptLevel::O2)
        .unwrap();
    let out = run({
        let mut c = Command::new(exe.path());
        c.args(args);
        c
    });
    assert!(out.status.success(), "{name} {args:?}: {out:?}");
    out.stdout
}

/// The kernels compute what they claim: published results of the Computer Language
/// Benchmarks Game, known values, or a second implementation here.
#[test]
fn kernels_print_the_reference_results() {
    assert_eq!(
        native_output("fannkuch", &["7"]),
        "228\nPfannkuchen(7) = 16\n"
    );
    assert_eq!(
        native_output("nbody", &["1000"]),
        "-0.169075164\n-0.169087605\n"
    );
    assert_eq!(native_output("spectralnorm", &["100"]), "1.274219991\n");
    assert_eq!(
        native_output("binarytrees", &["10"]),
        "stretch tree of depth 11\t check: 4095\n\
         1024\t trees of depth 4\t check: 31744\n\
         256\t trees of depth 6\t check: 32512\n\
         64\t trees of depth 8\t check: 32704\n\
         16\t trees of depth 10\t check: 32752\n\
         long lived tree of depth 10\t check: 2047\n"
    );
    // pi(40000), pi(20000), pi(10000), twice.
    assert_eq!(
        native_output("nsieve", &["2", "2"]),
        "Primes up to    40000     4203\n\
         Primes up to    20000     2262\n\
         Primes up to    10000     1229\n\
         total over 2 rounds: 15388\n"
    );
    // Hashes of the text the benchmark's reference implementation prints for 1000.
    let fasta = native_output("fasta", &["1000"]);
    let hashes: Vec<&str> = fasta
        .lines()
        .filter_map(|l| l.split(", hash ").nth(1))
        .collect();
    assert_eq!(
        hashes,
        ["bd0ba98e0b97c6d2", "2f776381c5d5cbae", "5ef9529d3848e581"]
    );
    assert!(
        fasta.starts_with("ONE: 2000 nucleotides, 34 lines,"),
        "{fasta}"
    );

    let interp = native_output("interp", &["10000"]);
    let (total, best_i, best) = collatz(10000);
    assert!(
        interp.starts_with(&format!("{total}\n{best_i}\n{best}\n")),
        "{interp}"
    );
    assert_eq!((best_i, best), (6171, 261));

    assert_eq!(native_output("mandelbrot", &["200"]), mandelbrot(200));
    assert_eq!(native_output("matmul", &["60"]), matmul(60));
}

/// The sum of the Collatz chain lengths of 1..=n, the first i with the longest, its length.
fn collatz(n: i64) -> (i64, i64, i64) {
    let (mut total, mut best_i, mut best) = (0, 0, 0);
    for i in 1..=n {
        let (mut x, mut steps) = (i, 0);
        while x != 1 {
            x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
            steps += 1;
        }
        total += steps;
        if steps > best {
            (best, best_i) = (steps, i);
        }
    }
    (total, best_i, best)
}

/// mandelbrot.c's output, computed here.
fn mandelbrot(n: u64) -> String {
    let mut hash: u64 = 14695981039346656037;
    let mut points = 0;
    for y in 0..n {
        let ci = 2.0 * y as f64 / n as f64 - 1.0;
        let (mut bits, mut nbits) = (0u32, 0);
        for x in 0..n {
            let cr = 2.0 * x as f64 / n as f64 - 1.5;
            let (mut zr, mut zi, mut tr, mut ti) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            let mut i = 0;
            while i < 50 && tr + ti <= 4.0 {
                zi = 2.0 * zr * zi + ci;
                zr = tr - ti + cr;
                tr = zr * zr;
                ti = zi * zi;
                i += 1;
            }
            let inside = u32::from(tr + ti <= 4.0);
            points += u64::from(inside);
            bits = bits << 1 | inside;
            nbits += 1;
            if nbits == 8 || x == n - 1 {
                bits <<= 8 - nbits;
                hash = (hash ^ u64::from(bits & 0xff)).wrapping_mul(1099511628211);
                (bits, nbits) = (0, 0);
            }
        }
    }
    format!("mandelbrot {n}: {points} points inside, hash {hash:016x}\n")
}

/// matmul.c's output, computed here (same operations in the same order).
fn matmul(n: usize) -> String {
    let at = |i: usize, j: usize| ((31 * i + 17 * j) % 101) as f64 / 50.0 - 1.0;
    let bt = |i: usize, j: usize| ((13 * i + 7 * j) % 89) as f64 / 44.0 - 1.0;
    let mut c = vec![0.0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = at(i, k);
            for j in 0..n {
                c[i * n + j] += aik * bt(k, j);
            }
        }
    }
    let (mut trace, mut sum) = (0.0, 0.0);
    for i in 0..n {
        trace += c[i * n + i];
        for j in 0..n {
            sum += c[i * n + j];
        }
    }
    format!(
        "matmul {n}: trace {trace:.6}, sum {sum:.6}, c[n/2][n/3] {:.6}\n",
        c[(n / 2) * n + n / 3]
    )
}
