//! Every table, figure and value of the paper, by name, computed from the results.
//!
//! This is the one place that knows the shape of each experiment's rows (see the doc comment
//! at the top of each `experiments/src/bin/exp-*.rs`). A name that is not here is a template
//! error; rows that are not in the results are a [`Error::MissingData`] naming what is missing.

use uppercut_experiments::report::{Environment, Report, Row};

use crate::error::{Error, Result};
use crate::figure::{Bars, Chart};
use crate::paper::Table;
use crate::results::{EXPERIMENTS, Results};

/// The table `name`.
pub fn table(name: &str, r: &Results) -> Result<Table> {
    match name {
        "environment" => environment(r),
        "settings" => settings(r),
        "kernels" => kernels_table(r),
        _ => Err(unknown("table", name)),
    }
}

/// The figure `name`: its title and chart.
pub fn figure(name: &str, r: &Results) -> Result<(String, Chart)> {
    match name {
        "kernels" => kernels_figure(r),
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
        "total-minutes" => Ok(format!("{:.0}", r.reports().map(|x| x.seconds).sum::<f64>() / 60.0)),
        "kernels.geomean" => {
            let ratios = rows(r, "kernels", &[("config", "uppercut")], "kernels.geomean")?
                .iter()
                .filter_map(|row| row.get("ratio"))
                .collect::<Vec<_>>();
            Ok(format!("{:.2}×", geomean(&ratios)))
        }
        _ => Err(unknown("value", name)),
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
    if e.dirty { format!("{c} (with uncommitted changes)") } else { c }
}

/// The rows of `experiment` matching `key`, at least one.
fn rows<'a>(r: &'a Results, experiment: &str, key: &[(&str, &str)], item: &str) -> Result<Vec<&'a Row>> {
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

/// A signed percentage with one decimal.
pub fn pct(x: f64) -> String {
    if x.is_finite() { format!("{x:+.1}%") } else { "–".into() }
}

/// The geometric mean of positive values (NaN if none).
pub fn geomean(values: &[f64]) -> f64 {
    let v: Vec<f64> = values.iter().copied().filter(|x| *x > 0.0 && x.is_finite()).collect();
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
    t.row(["CPU".to_owned(), format!("{} ({} logical CPUs)", e.cpu, e.cores)]);
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
            r.value("kernels", &[("kernel", &k), ("config", config)], v, "kernels")
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
                .map(|k| r.value("kernels", &[("kernel", k), ("config", config)], "ratio", "kernels").ok())
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
        assert!((geomean(&[1.0, 4.0]) - 2.0).abs() < 1e-12);
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_269_484), "2026-11-21");
    }
}
