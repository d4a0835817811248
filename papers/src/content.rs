//! Every table, figure and value of the paper, by name, computed from the results.
//!
//! This is the one place that knows the shape of each experiment's rows (see the doc comment
//! at the top of each `experiments/src/bin/exp-*.rs`). A name that is not here is a template
//! error; rows that are not in the results are a [`Error::MissingData`] naming what is missing.

use uppercut_experiments::report::{Environment, Report, Row};

use crate::error::{Error, Result};
use crate::figure::{Bars, Chart, Lines};
use crate::paper::Table;
use crate::results::{EXPERIMENTS, Results};

/// The table `name`.
pub fn table(name: &str, r: &Results) -> Result<Table> {
    match name {
        "environment" => environment(r),
        "settings" => settings(r),
        "kernels" => kernels_table(r),
        "overhead-O2" => overhead_table(r, "O2"),
        "overhead-O0" => overhead_table(r, "O0"),
        "overhead-programs" => overhead_programs_table(r),
        "overhead-techniques" => overhead_techniques_table(r),
        "transfer-live" => transfer_table(r, "live"),
        "transfer-depth" => transfer_table(r, "depth"),
        "compile" => compile_table(r),
        "compile-stall" => compile_stall_table(r),
        "tierup" => tierup_table(r),
        "tierup-programs" => tierup_programs_table(r),
        "httpd" => httpd_table(r),
        "httpd-transitions" => httpd_transitions(r),
        "httpd-kept" => httpd_kept(r),
        "deopt" => deopt_table(r),
        "startup" => startup_table(r),
        "startup-reuse" => startup_reuse_table(r),
        "startup-steady" => startup_steady_table(r),
        "published" => published(r),
        _ => Err(unknown("table", name)),
    }
}

/// The figure `name`: its title and chart.
pub fn figure(name: &str, r: &Results) -> Result<(String, Chart)> {
    match name {
        "kernels" => kernels_figure(r),
        "overhead-O2" => overhead_figure(r, "O2"),
        "overhead-O0" => overhead_figure(r, "O0"),
        "transfer-live" => transfer_figure(r, "live"),
        "transfer-depth" => transfer_figure(r, "depth"),
        "compile" => compile_figure(r),
        "tierup" => tierup_figure(r),
        "httpd-timeline" => httpd_timeline(r),
        "deopt" => deopt_figure(r),
        _ => Err(unknown("figure", name)),
    }
}

/// The value `name`, formatted for running text.
pub fn value(name: &str, r: &Results) -> Result<String> {
    match name {
        "commit" => Ok(short_commit(&first(r)?.environment)),
        "cpu" => Ok(first(r)?.environment.cpu.clone()),
        "llvm" => Ok(first(r)?.environment.llvm.clone()),
        "mode" => Ok(if first(r)?.quick {
            "the quick configuration (small sizes, few repetitions; numbers are indicative only)"
        } else {
            "the full configuration"
        }
        .to_owned()),
        "total-minutes" => Ok(format!(
            "{:.0}",
            r.reports().map(|x| x.seconds).sum::<f64>() / 60.0
        )),
        "kernels.geomean" => {
            let ratios = rows(r, "kernels", &[("config", "uppercut")], "kernels.geomean")?
                .iter()
                .filter_map(|row| row.get("ratio"))
                .collect::<Vec<_>>();
            Ok(format!("{:.2}×", geomean(&ratios)))
        }
        _ => experiment_value(name, r),
    }
}

fn unknown(kind: &str, name: &str) -> Error {
    Error::Template {
        line: 0,
        reason: format!("no {kind} named `{name}`"),
    }
}

// ---- helpers ----------------------------------------------------------------------------

fn first(r: &Results) -> Result<&Report> {
    r.reports()
        .next()
        .ok_or_else(|| Error::missing("environment", "experiments at all"))
}

fn short_commit(e: &Environment) -> String {
    let c: String = e.commit.chars().take(12).collect();
    if e.dirty {
        format!("{c} (with uncommitted changes)")
    } else {
        c
    }
}

/// The rows of `experiment` matching `key`, at least one.
fn rows<'a>(
    r: &'a Results,
    experiment: &str,
    key: &[(&str, &str)],
    item: &str,
) -> Result<Vec<&'a Row>> {
    let found: Vec<&Row> = r
        .report(experiment, item)?
        .rows
        .iter()
        .filter(|row| row.matches(key))
        .collect();
    if found.is_empty() {
        return Err(Error::missing(item, format!("`{experiment}` rows {key:?}")));
    }
    Ok(found)
}

/// The distinct values of key `name` among `rows`, in first-seen order.
fn distinct(rows: &[&Row], name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for row in rows {
        if let Some(v) = row.key_of(name)
            && !out.iter().any(|o| o == v)
        {
            out.push(v.to_owned());
        }
    }
    out
}

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        thousands(x.round() as i64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{x:.3}")
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A whole number (a count), with thousands separators.
pub fn count(x: f64) -> String {
    if x.is_finite() {
        thousands(x.round() as i64)
    } else {
        "–".into()
    }
}

/// A signed percentage with one decimal.
pub fn pct(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x.abs() < 0.05 {
        "0.0%".into()
    } else {
        format!("{x:+.1}%")
    }
}

/// The geometric mean of positive values (NaN if none).
pub fn geomean(values: &[f64]) -> f64 {
    let v: Vec<f64> = values
        .iter()
        .copied()
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    if v.is_empty() {
        return f64::NAN;
    }
    (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp()
}

/// A UTC date `YYYY-MM-DD` from Unix seconds (the civil-from-days algorithm).
fn date(unix: u64) -> String {
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

// ---- environment --------------------------------------------------------------------------

fn environment(r: &Results) -> Result<Table> {
    let e = &first(r)?.environment;
    let clang = r
        .reports()
        .map(|x| x.environment.clang.as_str())
        .find(|c| !c.is_empty())
        .unwrap_or("not used");
    let mut t = Table::new(["", ""]);
    t.row([
        "CPU".to_owned(),
        format!("{} ({} logical CPUs)", e.cpu, e.cores),
    ]);
    t.row(["Kernel", &e.kernel]);
    t.row(["LLVM (the JIT)", &e.llvm]);
    t.row(["clang (the guests)", clang]);
    t.row(["Rust", &e.rustc]);
    t.row(["Uppercut commit".to_owned(), short_commit(e)]);
    t.row(["Build", &e.profile]);
    t.row(["Run on".to_owned(), date(e.unix_time)]);
    Ok(t)
}

fn settings(r: &Results) -> Result<Table> {
    let mut t = Table::new(["experiment", "measures", "settings", "minutes"]);
    for (name, what) in EXPERIMENTS {
        let report = r.report(name, "settings")?;
        let settings: Vec<String> = report
            .settings
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect();
        t.row([
            format!("`exp-{name}`"),
            what.to_owned(),
            settings.join("; "),
            format!("{:.1}", report.seconds / 60.0),
        ]);
    }
    Ok(t)
}

// ---- experiment 1: kernels -------------------------------------------------------------------

const KERNEL_CONFIGS: [(&str, &str); 2] = [
    ("uppercut", "uppercut run -O2"),
    ("uppercut-sites", "with OSR sites (--osr=tier)"),
];

fn kernels_table(r: &Results) -> Result<Table> {
    let all = rows(r, "kernels", &[], "kernels")?;
    let mut t = Table::new([
        "kernel",
        "native -O2 (ms)",
        "uppercut run -O2 (ms)",
        "× native",
        "with OSR sites (ms)",
        "× native",
    ]);
    for k in distinct(&all, "kernel") {
        let cell = |config: &str, v: &str| {
            r.value(
                "kernels",
                &[("kernel", &k), ("config", config)],
                v,
                "kernels",
            )
        };
        t.row([
            k.clone(),
            num(cell("native", "median_ms")?),
            num(cell("uppercut", "median_ms")?),
            format!("{:.2}", cell("uppercut", "ratio")?),
            num(cell("uppercut-sites", "median_ms")?),
            format!("{:.2}", cell("uppercut-sites", "ratio")?),
        ]);
    }
    Ok(t)
}

fn kernels_figure(r: &Results) -> Result<(String, Chart)> {
    let all = rows(r, "kernels", &[], "kernels")?;
    let categories = distinct(&all, "kernel");
    let series = KERNEL_CONFIGS
        .iter()
        .map(|(config, label)| {
            let values = categories
                .iter()
                .map(|k| {
                    r.value(
                        "kernels",
                        &[("kernel", k), ("config", config)],
                        "ratio",
                        "kernels",
                    )
                    .ok()
                })
                .collect();
            ((*label).to_owned(), values)
        })
        .collect();
    Ok((
        "Run time relative to the native -O2 binary (1 = native)".into(),
        Chart::Bars(Bars {
            y_label: "time / native".into(),
            categories,
            series,
            reference: Some(1.0),
            log_y: false,
        }),
    ))
}

// ---- experiment 2: never-firing overhead --------------------------------------------------

/// The instrumented configurations of the overhead experiment: `(sites, metadata, label)`.
const OVERHEAD_CONFIGS: [(&str, &str, &str); 4] = [
    ("call", "statepoint", "call sites, statepoints"),
    ("call+loop", "statepoint", "call + loop sites, statepoints"),
    ("call", "shadow", "call sites, shadow chain"),
    ("call+loop", "shadow", "call + loop sites, shadow chain"),
];

fn overhead_cell(r: &Results, kernel: &str, opt: &str, sites: &str, metadata: &str) -> Option<f64> {
    r.report("overhead", "overhead")
        .ok()?
        .find(&[
            ("kernel", kernel),
            ("opt", opt),
            ("sites", sites),
            ("metadata", metadata),
        ])?
        .get("overhead_pct")
}

fn overhead_table(r: &Results, opt: &str) -> Result<Table> {
    let item = format!("overhead-{opt}");
    let all = rows(r, "overhead", &[("opt", opt)], &item)?;
    let kernels: Vec<String> = distinct(&all, "kernel")
        .into_iter()
        .filter(|k| k != "all" && !is_program(k))
        .collect();
    let mut header = vec!["kernel".to_owned(), "uninstrumented (ms)".to_owned()];
    header.extend(
        OVERHEAD_CONFIGS
            .iter()
            .map(|(_, _, label)| (*label).to_owned()),
    );
    let mut t = Table::new(header);
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); OVERHEAD_CONFIGS.len()];
    for k in &kernels {
        let base = r.value(
            "overhead",
            &[("kernel", k), ("opt", opt), ("sites", "none")],
            "median_ms",
            &item,
        )?;
        let mut cells = vec![k.clone(), num(base)];
        for (i, (sites, metadata, _)) in OVERHEAD_CONFIGS.iter().enumerate() {
            let v = overhead_cell(r, k, opt, sites, metadata);
            if let Some(v) = v.filter(|_| in_suite(k)) {
                columns[i].push(v);
            }
            cells.push(v.map_or("–".into(), pct));
        }
        t.row(cells);
    }
    for (label, f) in [
        ("suite median", median as fn(&[f64]) -> f64),
        ("suite worst", worst),
    ] {
        let mut cells = vec![format!("**{label}**"), String::new()];
        cells.extend(columns.iter().map(|c| format!("**{}**", pct(f(c)))));
        t.row(cells);
    }
    Ok(t)
}

/// Whether `kernel` is one of the suite's (the others are the OSR benches' call kernels and
/// the corpus's real programs).
fn in_suite(kernel: &str) -> bool {
    uppercut_experiments::kernels::kernel(kernel).is_some()
}

/// Whether `kernel` is one of the corpus's real programs (`sqlite`, `zstd`).
fn is_program(kernel: &str) -> bool {
    uppercut_experiments::corpus::PROGRAMS.contains(&kernel)
}

/// The instrumented configurations of the real programs: `(sites, metadata, label)`.
const PROGRAM_OVERHEAD_CONFIGS: [(&str, &str, &str); 2] = [
    ("call+loop", "statepoint", "statepoints"),
    ("call+loop", "shadow", "shadow chain"),
];

/// The techniques that make readiness cheap, as the overhead experiment turns them off one at
/// a time (`call+loop`, `statepoint:T`): `(metadata, label)`; the first row has them all on.
const TECHNIQUE_CONFIGS: [(&str, &str); 4] = [
    ("statepoint", "all on"),
    (
        "statepoint:global-counters",
        "off: loop counters in registers (a global per pass)",
    ),
    (
        "statepoint:no-call-graph",
        "off: the call graph (every indirect call a site)",
    ),
    (
        "statepoint:shadow-locals",
        "off: locals in the machine frame (all on the shadow stack)",
    ),
];

/// What each technique buys: never-firing call + loop sites with statepoints, all techniques
/// on and each turned off, as the suite's median and worst overhead and the call kernels'
/// worst, per level. Results from before the techniques give a line saying so.
fn overhead_techniques_table(r: &Results) -> Result<Table> {
    let item = "overhead-techniques";
    let report = r.report("overhead", item)?;
    let measured = report
        .rows
        .iter()
        .any(|row| row.key_of("metadata").is_some_and(|m| m.contains(':')));
    if !measured {
        return Ok(Table::absent(
            "The techniques were not measured one by one in this run (its results predate them).",
        ));
    }
    let mut header = vec!["call + loop sites, statepoints".to_owned()];
    for opt in ["O2", "O0"] {
        header.extend([
            format!("{opt} suite median"),
            format!("{opt} suite worst"),
            format!("{opt} call kernels worst"),
        ]);
    }
    let mut t = Table::new(header);
    for (metadata, label) in TECHNIQUE_CONFIGS {
        let mut cells = vec![label.to_owned()];
        for opt in ["O2", "O0"] {
            let of = |suite: bool| -> Vec<f64> {
                report
                    .rows
                    .iter()
                    .filter(|row| {
                        row.key_of("opt") == Some(opt)
                            && row.key_of("sites") == Some("call+loop")
                            && row.key_of("metadata") == Some(metadata)
                            && row.key_of("kernel").is_some_and(|k| {
                                k != "all" && !is_program(k) && in_suite(k) == suite
                            })
                    })
                    .filter_map(|row| row.get("overhead_pct"))
                    .collect()
            };
            let (suite, calls) = (of(true), of(false));
            for (values, f) in [
                (&suite, median as fn(&[f64]) -> f64),
                (&suite, worst),
                (&calls, worst),
            ] {
                cells.push(if values.is_empty() {
                    "–".into()
                } else {
                    pct(f(values))
                });
            }
        }
        t.row(cells);
    }
    Ok(t)
}

/// The real programs' rows of the overhead experiment: per program and level, the steady-state
/// time uninstrumented and each configuration's overhead, then the first run (mostly lazy
/// compilation) uninstrumented and each configuration's ratio to it. Results from a run that
/// did not measure them give a line saying so.
fn overhead_programs_table(r: &Results) -> Result<Table> {
    let item = "overhead-programs";
    let report = r.report("overhead", item)?;
    let measured: Vec<&Row> = report
        .rows
        .iter()
        .filter(|row| row.key_of("kernel").is_some_and(is_program))
        .collect();
    if measured.is_empty() {
        return Ok(Table::absent(
            "The real programs were not measured in this run (its results predate them).",
        ));
    }
    let mut header = vec![
        "program".to_owned(),
        "level".to_owned(),
        "uninstrumented (ms)".to_owned(),
    ];
    header.extend(
        PROGRAM_OVERHEAD_CONFIGS
            .iter()
            .map(|(_, _, label)| format!("call + loop sites, {label}")),
    );
    header.push("first run, uninstrumented (ms)".to_owned());
    header.extend(
        PROGRAM_OVERHEAD_CONFIGS
            .iter()
            .map(|(_, _, label)| format!("first run, {label}")),
    );
    header.push("call / loop sites".to_owned());
    let mut t = Table::new(header);
    for program in distinct(&measured, "kernel") {
        for opt in ["O0", "O2"] {
            let row = |sites: &str, metadata: &str| {
                report.find(&[
                    ("kernel", &program),
                    ("opt", opt),
                    ("sites", sites),
                    ("metadata", metadata),
                ])
            };
            let Some(base) = row("none", "none") else {
                continue;
            };
            let get = |row: Option<&Row>, value: &str| row.and_then(|r| r.get(value));
            let mut cells = vec![
                program.clone(),
                opt.to_owned(),
                num(base.get("median_ms").unwrap_or(f64::NAN)),
            ];
            for (sites, metadata, _) in PROGRAM_OVERHEAD_CONFIGS {
                cells.push(get(row(sites, metadata), "overhead_pct").map_or("–".into(), pct));
            }
            cells.push(num(base.get("first_run_ms").unwrap_or(f64::NAN)));
            for (sites, metadata, _) in PROGRAM_OVERHEAD_CONFIGS {
                cells.push(
                    get(row(sites, metadata), "first_run_ratio")
                        .map_or("–".into(), |x| format!("{x:.2}×")),
                );
            }
            let (sites, metadata, _) = PROGRAM_OVERHEAD_CONFIGS[0];
            let instrumented = row(sites, metadata);
            cells.push(format!(
                "{} / {}",
                get(instrumented, "call_sites_count").map_or("–".into(), count),
                get(instrumented, "loop_sites_count").map_or("–".into(), count)
            ));
            t.row(cells);
        }
    }
    Ok(t)
}

fn median(v: &[f64]) -> f64 {
    uppercut_experiments::harness::median(v)
}

fn worst(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn overhead_figure(r: &Results, opt: &str) -> Result<(String, Chart)> {
    let item = format!("overhead-{opt}");
    let all = rows(r, "overhead", &[("opt", opt)], &item)?;
    let categories: Vec<String> = distinct(&all, "kernel")
        .into_iter()
        .filter(|k| k != "all" && !is_program(k))
        .collect();
    let series = OVERHEAD_CONFIGS
        .iter()
        .map(|(sites, metadata, label)| {
            let values = categories
                .iter()
                .map(|k| overhead_cell(r, k, opt, sites, metadata))
                .collect();
            ((*label).to_owned(), values)
        })
        .collect();
    Ok((
        format!("Never-firing OSR instrumentation at {opt}: time over the uninstrumented kernel"),
        Chart::Bars(Bars {
            y_label: "overhead (%)".into(),
            categories,
            series,
            reference: Some(0.0),
            log_y: false,
        }),
    ))
}

// ---- experiment 3: transfer cost -----------------------------------------------------------

const TRANSFER_MODES: [(&str, &str); 3] = [
    ("call", "call + return (floor)"),
    ("lazy", "lazy transfer"),
    ("eager", "eager transfer"),
];

fn transfer_points(r: &Results, sweep: &str, mode: &str) -> Result<Vec<(f64, f64)>> {
    let item = format!("transfer-{sweep}");
    let mut points: Vec<(f64, f64)> =
        rows(r, "transfer", &[("sweep", sweep), ("mode", mode)], &item)?
            .iter()
            .filter_map(|row| {
                let x = row.key_of(sweep)?.parse::<f64>().ok()?;
                Some((x, row.get("ns_per_frame")?))
            })
            .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(points)
}

fn transfer_table(r: &Results, sweep: &str) -> Result<Table> {
    let item = format!("transfer-{sweep}");
    let (x_label, other) = if sweep == "live" {
        ("live values", "depth")
    } else {
        ("depth (frames)", "live")
    };
    let fixed = rows(r, "transfer", &[("sweep", sweep)], &item)?
        .first()
        .and_then(|row| row.key_of(other))
        .unwrap_or("?")
        .to_owned();
    let mut t = Table::new([
        format!("{x_label} ({other} {fixed})"),
        "call + return (ns/frame)".into(),
        "lazy (ns/frame)".into(),
        "× floor".into(),
        "eager (ns/frame)".into(),
        "× floor".into(),
    ]);
    let floor = transfer_points(r, sweep, "call")?;
    let lazy = transfer_points(r, sweep, "lazy")?;
    let eager = transfer_points(r, sweep, "eager")?;
    for (x, f) in &floor {
        let at = |points: &[(f64, f64)]| points.iter().find(|p| p.0 == *x).map(|p| p.1);
        let (l, e) = (at(&lazy), at(&eager));
        t.row([
            count(*x),
            num(*f),
            l.map_or("–".into(), num),
            l.map_or("–".into(), |l| format!("{:.1}", l / f)),
            e.map_or("–".into(), num),
            e.map_or("–".into(), |e| format!("{:.1}", e / f)),
        ]);
    }
    Ok(t)
}

fn transfer_figure(r: &Results, sweep: &str) -> Result<(String, Chart)> {
    let series = TRANSFER_MODES
        .iter()
        .map(|(mode, label)| Ok(((*label).to_owned(), transfer_points(r, sweep, mode)?)))
        .collect::<Result<Vec<_>>>()?;
    let (title, x_label, log_x) = if sweep == "live" {
        (
            "Transfer cost per frame by live values",
            "live values per frame",
            false,
        )
    } else {
        (
            "Transfer cost per frame by stack depth",
            "frames transferred (depth)",
            true,
        )
    };
    Ok((
        title.into(),
        Chart::Lines(Lines {
            x_label: x_label.into(),
            y_label: "ns per frame".into(),
            log_x,
            log_y: true,
            series,
            markers: Vec::new(),
            points_only: false,
        }),
    ))
}

// ---- experiment 4: time to transfer -----------------------------------------------------------

const COMPILE_WHATS: [(&str, &str); 3] = [
    ("version", "new version"),
    ("continuation-per-site", "one per-site continuation"),
    ("continuation-multi", "multi-entry continuation"),
];

/// The direct-compile rows (those without a `compile` key) of `guest`, `what`, `opt`.
fn compile_direct<'a>(r: &'a Results, guest: &str, what: &str, opt: &str) -> Option<&'a Row> {
    r.report("compile", "compile")
        .ok()?
        .rows
        .iter()
        .find(|row| {
            row.matches(&[("guest", guest), ("what", what), ("opt", opt)])
                && row.key_of("compile").is_none()
        })
}

fn compile_guests(r: &Results) -> Result<Vec<String>> {
    let all = rows(r, "compile", &[], "compile")?;
    Ok(distinct(&all, "guest"))
}

fn compile_table(r: &Results) -> Result<Table> {
    let mut t = Table::new([
        "guest",
        "target",
        "sites",
        "O0: IR (µs)",
        "O0: total (µs)",
        "O2: IR (µs)",
        "O2: codegen (µs)",
        "O2: link (µs)",
        "O2: total (µs)",
    ]);
    for guest in compile_guests(r)? {
        for (what, label) in COMPILE_WHATS {
            let (Some(o0), Some(o2)) = (
                compile_direct(r, &guest, what, "O0"),
                compile_direct(r, &guest, what, "O2"),
            ) else {
                continue;
            };
            let v = |row: &Row, n: &str| row.get(n).map_or("–".into(), num);
            t.row([
                guest.clone(),
                label.to_owned(),
                o2.get("sites").map_or("–".into(), count),
                v(o0, "ir_us"),
                v(o0, "total_us"),
                v(o2, "ir_us"),
                v(o2, "codegen_us"),
                v(o2, "link_us"),
                v(o2, "total_us"),
            ]);
        }
    }
    if t.rows.is_empty() {
        return Err(Error::missing(
            "compile",
            "direct compile rows at O0 and O2",
        ));
    }
    Ok(t)
}

fn compile_stall_table(r: &Results) -> Result<Table> {
    let all = rows(r, "compile", &[], "compile-stall")?;
    let mut t = Table::new([
        "guest",
        "continuations",
        "compilation",
        "guest paused (µs)",
        "compile time (µs)",
        "run (ms)",
        "frames moved",
    ]);
    for row in all.iter().filter(|row| row.key_of("compile").is_some()) {
        let v = |n: &str| row.get(n).map_or("–".into(), num);
        t.row([
            row.key_of("guest").unwrap_or("").to_owned(),
            row.key_of("what")
                .unwrap_or("")
                .trim_start_matches("continuation-")
                .to_owned(),
            row.key_of("compile").unwrap_or("").to_owned(),
            v("stall_us"),
            v("compile_us"),
            v("run_ms"),
            row.get("moved").map_or("–".into(), count),
        ]);
    }
    if t.rows.is_empty() {
        return Err(Error::missing(
            "compile-stall",
            "foreground/background rows",
        ));
    }
    Ok(t)
}

fn compile_figure(r: &Results) -> Result<(String, Chart)> {
    let categories = compile_guests(r)?;
    let series = COMPILE_WHATS
        .iter()
        .map(|(what, label)| {
            let values = categories
                .iter()
                .map(|g| compile_direct(r, g, what, "O2").and_then(|row| row.get("total_us")))
                .collect();
            ((*label).to_owned(), values)
        })
        .collect();
    Ok((
        "Time to compile a transfer target at O2 (IR work + codegen + link)".into(),
        Chart::Bars(Bars {
            y_label: "µs".into(),
            categories,
            series,
            reference: None,
            log_y: true,
        }),
    ))
}

// ---- experiment 5: tier-up ----------------------------------------------------------------------

/// The kernels of the tier-up results (the corpus programs have no `O0+sites` row).
fn tierup_kernels(r: &Results) -> Result<Vec<String>> {
    let all = rows(r, "tierup", &[], "tierup")?;
    Ok(distinct(&all, "kernel")
        .into_iter()
        .filter(|k| k != "all")
        .filter(|k| {
            r.value(
                "tierup",
                &[("kernel", k), ("config", "O0+sites")],
                "speedup",
                "tierup",
            )
            .is_ok()
        })
        .collect())
}

fn tierup_table(r: &Results) -> Result<Table> {
    let mut t = Table::new([
        "kernel",
        "pure O0 (ms)",
        "O0, sites never firing",
        "O0 with tier-up",
        "tier-up keeping sites",
        "pure O2",
        "kept",
        "tier-up / better of O0, O2",
        "longest stall (ms)",
    ]);
    for k in tierup_kernels(r)? {
        let v = |config: &str, value: &str| {
            r.value(
                "tierup",
                &[("kernel", &k), ("config", config)],
                value,
                "tierup",
            )
        };
        let speedup =
            |config: &str| v(config, "speedup").map_or("–".into(), |s| format!("{s:.2}×"));
        t.row([
            k.clone(),
            num(v("O0", "median_ms")?),
            speedup("O0+sites"),
            speedup("tier"),
            speedup("tier+sites"),
            speedup("O2"),
            v("tier", "kept_pct").map_or("–".into(), |p| format!("{p:.0}%")),
            v("tier", "vs_best").map_or("–".into(), |x| format!("{x:.2}")),
            v("tier", "max_stall_ms").map_or("–".into(), |x| format!("{x:.2}")),
        ]);
    }
    Ok(t)
}

fn tierup_programs_table(r: &Results) -> Result<Table> {
    let all = rows(r, "tierup", &[], "tierup")?;
    let kernels = tierup_kernels(r)?;
    let mut t = Table::new([
        "program",
        "pure O0 (s)",
        "O0 with tier-up (s)",
        "pure O2 (s)",
        "tier-up / better of O0, O2",
        "tier-up / O0",
        "versions compiled",
        "longest stall (ms)",
    ]);
    let programs: Vec<String> = distinct(&all, "kernel")
        .into_iter()
        .filter(|k| k != "all" && !kernels.contains(k))
        .collect();
    if programs.is_empty() {
        return Ok(Table::absent(
            "no corpus program in these results (the quick run takes the short one only)",
        ));
    }
    for p in programs {
        let v = |config: &str, value: &str| {
            r.value(
                "tierup",
                &[("kernel", &p), ("config", config)],
                value,
                "tierup",
            )
        };
        let secs = |config: &str| {
            v(config, "median_ms").map_or("–".into(), |ms| format!("{:.2}", ms / 1e3))
        };
        t.row([
            p.clone(),
            secs("O0"),
            secs("tier"),
            secs("O2"),
            v("tier", "vs_best").map_or("–".into(), |x| format!("{x:.2}")),
            v("tier", "vs_o0").map_or("–".into(), |x| format!("{x:.2}")),
            v("tier", "recompiles_count").map_or("–".into(), count),
            v("tier", "max_stall_ms").map_or("–".into(), |x| format!("{x:.2}")),
        ]);
    }
    Ok(t)
}

fn tierup_figure(r: &Results) -> Result<(String, Chart)> {
    let categories = tierup_kernels(r)?;
    let series = [
        ("O0+sites", "O0, sites never firing"),
        ("tier", "O0 with tier-up"),
        ("O2", "pure O2"),
    ]
    .iter()
    .map(|(config, label)| {
        let values = categories
            .iter()
            .map(|k| {
                r.value(
                    "tierup",
                    &[("kernel", k), ("config", config)],
                    "speedup",
                    "tierup",
                )
                .ok()
            })
            .collect();
        ((*label).to_owned(), values)
    })
    .collect();
    Ok((
        "Speed-up over pure O0".into(),
        Chart::Bars(Bars {
            y_label: "O0 time / time".into(),
            categories,
            series,
            reference: Some(1.0),
            log_y: false,
        }),
    ))
}

// ---- experiment 6: the web server ------------------------------------------------------------

fn httpd_table(r: &Results) -> Result<Table> {
    let all = rows(r, "httpd", &[], "httpd")?;
    let mut t = Table::new([
        "server",
        "load",
        "phase",
        "requests/s",
        "server CPU per request (µs)",
        "p50 (µs)",
        "p99 (µs)",
        "p99.9 (µs)",
        "max (µs)",
        "failed",
    ]);
    for row in all
        .iter()
        .filter(|row| row.key_of("phase").is_some() && row.get("requests_per_s").is_some())
    {
        let v = |n: &str| row.get(n).map_or("–".into(), num);
        t.row([
            row.key_of("server").unwrap_or("").to_owned(),
            row.key_of("load").unwrap_or("").to_owned(),
            row.key_of("phase").unwrap_or("").to_owned(),
            v("requests_per_s"),
            v("cpu_us_per_request"),
            v("p50_us"),
            v("p99_us"),
            v("p999_us"),
            v("max_us"),
            row.get("failed").map_or("–".into(), count),
        ]);
    }
    Ok(t)
}

fn httpd_transitions(r: &Results) -> Result<Table> {
    let all = rows(r, "httpd", &[], "httpd-transitions")?;
    let mut t = Table::new([
        "server",
        "transition",
        "to",
        "pause (ms)",
        "longest pause (ms)",
        "control request (ms)",
        "longest request in flight (ms)",
    ]);
    for row in all.iter().filter(|row| row.key_of("transition").is_some()) {
        let v = |n: &str| row.get(n).map_or("–".into(), num);
        t.row([
            row.key_of("server").unwrap_or("").to_owned(),
            row.key_of("transition").unwrap_or("").to_owned(),
            row.key_of("to").unwrap_or("").to_owned(),
            v("pause_ms"),
            v("pause_max_ms"),
            v("control_ms"),
            v("in_flight_max_ms"),
        ]);
    }
    if t.rows.is_empty() {
        return Err(Error::missing(
            "httpd-transitions",
            "`httpd` transition rows",
        ));
    }
    Ok(t)
}

fn httpd_kept(r: &Results) -> Result<Table> {
    let all = rows(r, "httpd", &[("series", "fraction-kept")], "httpd-kept")?;
    let mut t = Table::new([
        "phase",
        "Uppercut's speed / hand-specialised",
        "hand-specialised / plain",
        "Uppercut specialised / its generic code",
    ]);
    for row in all {
        let ratio = |n: &str| {
            row.get(n)
                .map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
        };
        let times = |n: &str| row.get(n).map_or("–".into(), |v| format!("{v:.3}×"));
        t.row([
            row.key_of("phase").unwrap_or("").to_owned(),
            ratio("kept_ratio"),
            times("hand_speedup_ratio"),
            times("osr_speedup_ratio"),
        ]);
    }
    Ok(t)
}

fn httpd_timeline(r: &Results) -> Result<(String, Chart)> {
    let all = rows(r, "httpd", &[("series", "timeline")], "httpd-timeline")?;
    let mut by_server: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for row in all {
        let server = row.key_of("server").unwrap_or("server").to_owned();
        let (Some(t), Some(n)) = (
            row.key_of("t_ms").and_then(|t| t.parse::<f64>().ok()),
            row.get("requests"),
        ) else {
            continue;
        };
        match by_server.iter_mut().find(|(s, _)| *s == server) {
            Some((_, points)) => points.push((t / 1000.0, n)),
            None => by_server.push((server, vec![(t / 1000.0, n)])),
        }
    }
    for (_, points) in &mut by_server {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let markers = r
        .report("httpd", "httpd-timeline")?
        .rows
        .iter()
        .filter(|row| row.key_of("transition").is_some())
        .filter(|row| {
            by_server
                .iter()
                .any(|(server, _)| row.key_of("server").is_none_or(|s| s == server))
        })
        .filter_map(|row| Some((row.get("at_ms")? / 1000.0, row.key_of("to")?.to_owned())))
        .collect();
    Ok((
        "Requests completed per 10 ms under load, with the configuration changes".into(),
        Chart::Lines(Lines {
            x_label: "time (s)".into(),
            y_label: "requests per 10 ms".into(),
            log_x: false,
            log_y: false,
            series: by_server,
            markers,
            points_only: false,
        }),
    ))
}

// ---- experiment 7: deoptimisation on redefinition -------------------------------------------

/// The deopt experiment's columns: `(value, heading)`.
const DEOPT_COLUMNS: [(&str, &str); 7] = [
    ("redefine_us", "redefining store (µs)"),
    ("redefine_shallow_us", "same store, no frame live (µs)"),
    ("transfer_ns_per_frame", "store, per live frame (ns)"),
    ("unwind_us", "unwind (µs)"),
    ("unwind_ratio", "unwind / specialised unwind"),
    ("ns_per_frame", "redefinition per frame (ns)"),
    ("frames_moved", "frames moved"),
];

fn startup_row<'a>(r: &'a Results, input: &str, runner: &str, item: &str) -> Result<&'a Row> {
    rows(r, "startup", &[("input", input), ("runner", runner)], item)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::missing(item, format!("runner `{runner}` on `{input}`")))
}

fn startup_table(r: &Results) -> Result<Table> {
    let mut t = Table::new([
        "input",
        "runner",
        "first line (ms)",
        "whole run (ms)",
        "× faster than lli (MCJIT, same level)",
    ]);
    for row in rows(r, "startup", &[], "startup")? {
        let (Some(input), Some(runner)) = (row.key_of("input"), row.key_of("runner")) else {
            continue;
        };
        let v = |n: &str| row.get(n).map_or("–".into(), num);
        t.row([
            input.to_owned(),
            runner.to_owned(),
            v("first_line_ms"),
            v("whole_ms"),
            row.get("lli_ratio")
                .map_or("–".into(), |x| format!("{x:.2}")),
        ]);
    }
    if t.rows.is_empty() {
        return Err(Error::missing("startup", "startup rows"));
    }
    Ok(t)
}

fn startup_reuse_table(r: &Results) -> Result<Table> {
    let mut t = Table::new([
        "what",
        "configuration",
        "IR (µs)",
        "codegen (µs)",
        "total (µs)",
    ]);
    for row in rows(r, "startup", &[], "startup-reuse")? {
        let v = |n: &str| row.get(n).map_or("–".into(), num);
        match row.key_of("what") {
            Some("flip") => {
                let cache = row.key_of("cache").unwrap_or("");
                let label = if cache == "on" {
                    format!("version cache on ({} flips reused)", v("reused"))
                } else {
                    "version cache off (each flip compiles)".to_owned()
                };
                t.row([
                    "flip between two specialisations".to_owned(),
                    label,
                    "–".into(),
                    "–".into(),
                    v("flip_us"),
                ]);
            }
            Some("tier") => t.row([
                "compile `work` (about 100 instructions)".to_owned(),
                format!("tier {}", row.key_of("opt").unwrap_or("")),
                v("ir_us"),
                v("codegen_us"),
                v("total_us"),
            ]),
            Some("llvm-floor") => t.row([
                "compile `work` with LLVM alone".to_owned(),
                format!(
                    "`default<{}>` + code generation",
                    row.key_of("opt").unwrap_or("")
                ),
                v("ir_us"),
                v("codegen_us"),
                v("total_us"),
            ]),
            _ => {}
        }
    }
    if t.rows.is_empty() {
        return Err(Error::missing("startup-reuse", "flip and tier rows"));
    }
    Ok(t)
}

fn startup_steady_table(r: &Results) -> Result<Table> {
    let mut t = Table::new(["kernel", "lazy (s)", "eager (s)", "lazy / eager"]);
    for row in rows(r, "startup", &[], "startup-steady")? {
        let Some(kernel) = row.key_of("kernel") else {
            continue;
        };
        let v = |n: &str| row.get(n).map_or("–".into(), num);
        t.row([
            kernel.to_owned(),
            v("lazy_s"),
            v("eager_s"),
            row.get("ratio").map_or("–".into(), |x| format!("{x:.2}")),
        ]);
    }
    if t.rows.is_empty() {
        return Err(Error::missing("startup-steady", "kernel rows"));
    }
    Ok(t)
}

fn deopt_table(r: &Results) -> Result<Table> {
    let all = rows(r, "deopt", &[], "deopt")?;
    let mut header = vec!["depth".to_owned(), "config".to_owned()];
    header.extend(DEOPT_COLUMNS.iter().map(|(_, h)| (*h).to_owned()));
    let mut t = Table::new(header);
    for row in all {
        let mut cells = vec![
            row.key_of("depth")
                .map_or(String::new(), |d| d.parse().map_or(d.to_owned(), count)),
            row.key_of("config").unwrap_or("").to_owned(),
        ];
        cells.extend(DEOPT_COLUMNS.iter().map(|(n, _)| match *n {
            "frames_moved" => row.get(n).map_or("–".into(), count),
            "unwind_ratio" => row.get(n).map_or("–".into(), |v| format!("{v:.2}")),
            _ => row.get(n).map_or("–".into(), num),
        }));
        t.row(cells);
    }
    Ok(t)
}

fn deopt_figure(r: &Results) -> Result<(String, Chart)> {
    let all = rows(r, "deopt", &[], "deopt")?;
    let series = distinct(&all, "config")
        .into_iter()
        .map(|config| {
            let mut points: Vec<(f64, f64)> = all
                .iter()
                .filter(|row| row.key_of("config") == Some(&config))
                .filter_map(|row| {
                    Some((row.key_of("depth")?.parse().ok()?, row.get("redefine_us")?))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (config, points)
        })
        .collect();
    Ok((
        "Redefinition under deep recursion: the redefining store's pause by depth".into(),
        Chart::Lines(Lines {
            x_label: "frames of specialised code live (depth)".into(),
            y_label: "pause (µs)".into(),
            log_x: true,
            log_y: true,
            series,
            markers: Vec::new(),
            points_only: false,
        }),
    ))
}

// ---- side by side with published numbers -----------------------------------------------------

fn published(r: &Results) -> Result<Table> {
    let mut t = Table::new([
        "measure",
        "OSRKit (CGO 2016, as published)",
        "Uppercut (this run)",
        "comparable?",
    ]);
    t.row([
        "never-firing OSR points, most kernels".to_owned(),
        "< 1%".to_owned(),
        format!(
            "median {} (statepoints, call + loop sites, O2)",
            value("overhead.O2.statepoint.median", r)?
        ),
        "yes: same kind of kernels, same measure".to_owned(),
    ]);
    t.row([
        "never-firing OSR points, worst kernel".to_owned(),
        "< 2%".to_owned(),
        format!(
            "{} (statepoints, call + loop sites, O2)",
            value("overhead.O2.statepoint.worst", r)?
        ),
        "yes".to_owned(),
    ]);
    t.row([
        "one transition".to_owned(),
        "1–8 ns".to_owned(),
        format!(
            "{} ns/frame lazy, {} ns/frame eager, over a call + return of {} ns (1,000 frames, 4 live values)",
            value("transfer.lazy.ns.1000", r)?,
            value("transfer.eager.ns.1000", r)?,
            value("transfer.call.ns.1000", r)?
        ),
        "partly: OSRKit's transition is a call into the continuation; Uppercut's also rewrites a live frame".to_owned(),
    ]);
    t.row([
        "building a continuation (IR only)".to_owned(),
        "76–811 µs".to_owned(),
        format!(
            "{} µs at O0, {} µs at O2 (one per-site continuation, IR work)",
            value("compile.continuation.ir.O0", r)?,
            value("compile.continuation.ir.O2", r)?
        ),
        "yes: IR work only, codegen excluded in both".to_owned(),
    ]);
    t.row([
        "share of the hand-specialised (or O2) speed-up kept".to_owned(),
        "94.1% (worst case, its case study)".to_owned(),
        format!(
            "tier-up keeps {} of the O2 speed-up (worst kernel {}); the specialised server keeps {} of the hand-specialised one",
            value("tierup.kept.median", r)?,
            value("tierup.kept.min", r)?,
            value("httpd.kept", r)?
        ),
        "in spirit: different programs and transformations".to_owned(),
    ]);
    Ok(t)
}

/// The deepest stack of the transfer experiment's depth sweep.
fn deepest_transfer(r: &Results, item: &str) -> Result<f64> {
    transfer_points(r, "depth", "call")?
        .last()
        .map(|p| p.0)
        .ok_or_else(|| Error::missing(item, "transfer depth points"))
}

/// Values of the experiments' results: `overhead.O2.statepoint.median`, `transfer.lazy.ns`, ...
fn experiment_value(name: &str, r: &Results) -> Result<String> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["overhead", opt, metadata, stat] => {
            let values: Vec<f64> = rows(
                r,
                "overhead",
                &[("opt", opt), ("metadata", metadata), ("sites", "call+loop")],
                name,
            )?
            .iter()
            .filter(|row| row.key_of("kernel").is_some_and(in_suite))
            .filter_map(|row| row.get("overhead_pct"))
            .collect();
            let v = match *stat {
                "median" => median(&values),
                "worst" => worst(&values),
                _ => return Err(unknown("value", name)),
            };
            Ok(pct(v))
        }
        ["transfer", "deepest"] => Ok(count(deepest_transfer(r, name)?)),
        ["transfer", mode, "ns", "deepest"] => {
            let depth = deepest_transfer(r, name)?;
            let points = transfer_points(r, "depth", mode)?;
            let at = points
                .iter()
                .find(|p| p.0 == depth)
                .ok_or_else(|| Error::missing(name, format!("depth {depth}")))?;
            Ok(num(at.1))
        }
        ["transfer", mode, "ns", depth] => {
            let depth: f64 = depth.parse().map_err(|_| unknown("value", name))?;
            let points = transfer_points(r, "depth", mode)?;
            let at = points
                .iter()
                .find(|p| p.0 == depth)
                .ok_or_else(|| Error::missing(name, format!("depth {depth}")))?;
            Ok(num(at.1))
        }
        ["compile", "continuation", "ir", opt] => {
            let values: Vec<f64> = rows(
                r,
                "compile",
                &[("what", "continuation-per-site"), ("opt", opt)],
                name,
            )?
            .iter()
            .filter(|row| row.key_of("compile").is_none())
            .filter_map(|row| row.get("ir_us"))
            .collect();
            let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Ok(format!("{}–{}", num(lo), num(hi)))
        }
        ["tierup", "vs_best" | "stall", stat] => {
            let kernels = tierup_kernels(r)?;
            let column = if parts[1] == "stall" {
                "max_stall_ms"
            } else {
                "vs_best"
            };
            let values: Vec<f64> = rows(r, "tierup", &[("config", "tier")], name)?
                .iter()
                .filter(|row| {
                    row.key_of("kernel")
                        .is_some_and(|k| kernels.iter().any(|x| x == k))
                })
                .filter_map(|row| row.get(column))
                .collect();
            let v = match *stat {
                "median" => median(&values),
                "max" => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                _ => return Err(unknown("value", name)),
            };
            Ok(format!("{v:.2}"))
        }
        ["tierup", "kept", stat] => {
            let values: Vec<f64> = rows(r, "tierup", &[("config", "tier")], name)?
                .iter()
                .filter(|row| row.key_of("kernel") != Some("all"))
                .filter_map(|row| row.get("kept_pct"))
                .collect();
            if values.is_empty() {
                // Every kernel's kept share was left out (see the template's note on it).
                return Ok("n/a".into());
            }
            let v = match *stat {
                "median" => median(&values),
                "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
                _ => return Err(unknown("value", name)),
            };
            Ok(format!("{v:.0}%"))
        }
        ["httpd", "kept"] => {
            let kept: Vec<f64> = rows(r, "httpd", &[("series", "fraction-kept")], name)?
                .iter()
                .filter_map(|row| row.get("kept_ratio"))
                .collect();
            let worst = kept.iter().copied().fold(f64::INFINITY, f64::min);
            if !worst.is_finite() {
                return Err(Error::missing(name, "`kept_ratio` in `httpd`"));
            }
            Ok(format!("{:.1}%", worst * 100.0))
        }
        ["startup", "first", runner] => {
            let row = startup_row(r, "O0.bc", runner, name)?;
            Ok(row.get("first_line_ms").map_or("–".into(), num))
        }
        ["startup", "whole", runner] => {
            let row = startup_row(r, "O0.bc", runner, name)?;
            Ok(row.get("whole_ms").map_or("–".into(), num))
        }
        ["startup", "lli", runner] => {
            let row = startup_row(r, "O0.bc", runner, name)?;
            Ok(row
                .get("lli_ratio")
                .map_or("–".into(), |v| format!("{v:.2}×")))
        }
        ["startup", "flip", cache] => {
            let row = rows(r, "startup", &[("what", "flip"), ("cache", cache)], name)?;
            Ok(row
                .first()
                .and_then(|row| row.get("flip_us"))
                .map_or("–".into(), num))
        }
        ["startup", "tier", opt, "llvm"] => {
            let row = rows(r, "startup", &[("what", "tier"), ("opt", opt)], name)?;
            Ok(row
                .first()
                .and_then(|row| row.get("llvm_ratio"))
                .map_or("–".into(), |v| format!("{v:.2}×")))
        }
        ["startup", "steady", "worst"] => {
            let ratios: Vec<f64> = rows(r, "startup", &[], name)?
                .iter()
                .filter(|row| row.key_of("kernel").is_some())
                .filter_map(|row| row.get("ratio"))
                .collect();
            let worst = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !worst.is_finite() {
                return Err(Error::missing(name, "kernel rows in `startup`"));
            }
            Ok(format!("{worst:.2}"))
        }
        ["httpd", "failed"] => {
            let total: f64 = r
                .report("httpd", name)?
                .rows
                .iter()
                .filter_map(|row| row.get("failed"))
                .sum();
            Ok(format!("{total:.0}"))
        }
        _ => Err(unknown("value", name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_format_with_about_three_digits() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(num(f64::NAN), "–");
        assert_eq!(pct(1.234), "+1.2%");
        assert_eq!(pct(-0.01), "0.0%");
        assert!((geomean(&[1.0, 4.0]) - 2.0).abs() < 1e-12);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_269_484), "2026-11-21");
    }

    fn overhead_row(kernel: &str, sites: &str, metadata: &str, ms: f64, first: f64) -> Row {
        Row::new()
            .key("kernel", kernel)
            .key("opt", "O2")
            .key("sites", sites)
            .key("metadata", metadata)
            .value("median_ms", ms)
            .value("overhead_pct", (ms / 100.0 - 1.0) * 100.0)
            .value("first_run_ms", first)
            .value("first_run_ratio", first / 1000.0)
            .value("call_sites_count", 1200.0)
            .value("loop_sites_count", 340.0)
    }

    #[test]
    fn programs_table_shows_the_programs_or_says_they_are_absent() {
        let mut report = Report::new("overhead", "Overhead", false);
        report.push(overhead_row("nbody", "none", "none", 100.0, 1000.0));
        let r = Results::from_reports([report.clone()]);
        let t = overhead_programs_table(&r).unwrap();
        assert!(t.rows.is_empty());
        assert!(
            t.markdown()
                .starts_with("*The real programs were not measured")
        );
        report.push(overhead_row("zstd", "none", "none", 100.0, 1000.0));
        report.push(overhead_row(
            "zstd",
            "call+loop",
            "statepoint",
            112.0,
            1500.0,
        ));
        let r = Results::from_reports([report]);
        let t = overhead_programs_table(&r).unwrap();
        assert_eq!(
            t.rows,
            [[
                "zstd",
                "O2",
                "100",
                "+12.0%",
                "–",
                "1,000",
                "1.50×",
                "–",
                "1,200 / 340"
            ]]
        );
        // Programs are not kernels: the kernel tables leave them out.
        let kernels = overhead_table(&r, "O2").unwrap();
        assert!(
            kernels.rows.iter().all(|row| row[0] != "zstd"),
            "{kernels:?}"
        );
    }
}
