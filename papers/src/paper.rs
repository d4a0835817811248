//! The paper's template and its rendering.
//!
//! The paper is `papers/paper.md.in`: Markdown prose with placeholders that the results fill
//! in, so that no number of the paper is typed by hand:
//!
//! - `{{table NAME}}`: a Markdown table ([`crate::content::table`]);
//! - `{{figure NAME}}`: an SVG figure, drawn into `figures/NAME.svg` beside the paper and linked
//!   as an image ([`crate::content::figure`]);
//! - `{{value NAME}}`: one number or phrase in running text ([`crate::content::value`]).
//!
//! A placeholder that is malformed or names nothing is an error with its line number.

use std::fmt::Write as _;
use std::path::Path;

use crate::content;
use crate::error::{Error, Result};
use crate::figure;
use crate::results::Results;

/// The template, as committed.
pub const TEMPLATE: &str = include_str!("../paper.md.in");

/// Reads a template from `path`.
pub fn read_template(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// A Markdown table, or a line saying why there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// The column headings.
    pub header: Vec<String>,
    /// The cells, row by row (each as long as `header`).
    pub rows: Vec<Vec<String>>,
    /// Why the results hold nothing for this table ([`Table::absent`]): rendered in italics in
    /// its place.
    pub absent: Option<String>,
}

impl Table {
    /// A table with these column headings.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            absent: None,
        }
    }

    /// No table: the results do not have its rows (an older run), for the reason given.
    pub fn absent(reason: impl Into<String>) -> Table {
        Table {
            absent: Some(reason.into()),
            ..Table::default()
        }
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as Markdown (numbers right-aligned: every column but the first), or the
    /// reason it is absent, in italics.
    pub fn markdown(&self) -> String {
        if let Some(reason) = &self.absent {
            return format!("*{reason}*\n");
        }
        let mut out = String::new();
        let escape = |s: &str| s.replace('|', "\\|");
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| escape(c)).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        out.push_str(&line(&self.header));
        // A column is right-aligned when every cell of it is a number (or empty).
        let numeric = |i: usize| {
            self.rows.iter().all(|row| {
                let c = row[i].trim_matches('*');
                c.is_empty() || c.starts_with(|ch: char| ch.is_ascii_digit() || "+-–".contains(ch))
            })
        };
        let rule: Vec<&str> = (0..self.header.len())
            .map(|i| if i > 0 && numeric(i) { "---:" } else { "---" })
            .collect();
        let _ = writeln!(out, "|{}|", rule.join("|"));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Renders `template` with `results` into `out_dir/paper.md`, drawing every figure it names into
/// `out_dir/figures/`. Returns the names of the figures drawn.
pub fn render(template: &str, results: &Results, out_dir: &Path) -> Result<Vec<String>> {
    let figures_dir = out_dir.join("figures");
    std::fs::create_dir_all(&figures_dir)
        .map_err(|e| Error::io(format!("creating {}", figures_dir.display()), e))?;
    let mut drawn = Vec::new();
    let text = expand(template, |line, kind, name| match kind {
        "table" => Ok(content::table(name, results)?
            .markdown()
            .trim_end()
            .to_owned()),
        "value" => content::value(name, results),
        "figure" => {
            let (title, chart) = content::figure(name, results)?;
            figure::draw(&chart, &title, &figures_dir.join(format!("{name}.svg")))?;
            drawn.push(name.to_owned());
            Ok(format!("![{title}](figures/{name}.svg)"))
        }
        other => Err(Error::Template {
            line,
            reason: format!("unknown placeholder kind `{other}` (table, figure or value)"),
        }),
    })?;
    let path = out_dir.join("paper.md");
    std::fs::write(&path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(drawn)
}

/// Replaces every `{{kind name}}` of `template` with `fill(line, kind, name)`.
pub fn expand<F>(template: &str, mut fill: F) -> Result<String>
where
    F: FnMut(usize, &str, &str) -> Result<String>,
{
    let mut out = String::with_capacity(template.len() * 2);
    for (i, line) in template.split_inclusive('\n').enumerate() {
        let number = i + 1;
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| Error::Template {
                line: number,
                reason: "`{{` without `}}`".into(),
            })?;
            let inner = after[..end].trim();
            let (kind, name) = inner.split_once(' ').ok_or_else(|| Error::Template {
                line: number,
                reason: format!("`{{{{{inner}}}}}` is not `{{{{kind name}}}}`"),
            })?;
            let filled = fill(number, kind, name.trim()).map_err(|e| match e {
                Error::Template { line: 0, reason } => Error::Template {
                    line: number,
                    reason,
                },
                e @ Error::Template { .. } => e,
                other => Error::Template {
                    line: number,
                    reason: other.to_string(),
                },
            })?;
            out.push_str(&filled);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new(["kernel", "ratio"]);
        t.row(["nbody", "1.02"]);
        t.row(["a|b"]);
        assert_eq!(
            t.markdown(),
            "| kernel | ratio |\n|---|---:|\n| nbody | 1.02 |\n| a\\|b |  |\n"
        );
        assert_eq!(
            Table::absent("Not measured in this run.").markdown(),
            "*Not measured in this run.*\n"
        );
    }

    #[test]
    fn placeholders_expand_with_line_numbers_in_errors() {
        let text = expand("a {{value x}} b {{table t}}\nc\n", |_, kind, name| {
            Ok(format!("<{kind}:{name}>"))
        })
        .unwrap();
        assert_eq!(text, "a <value:x> b <table:t>\nc\n");
        let err = expand("ok\n{{value x\n", |_, _, _| Ok(String::new())).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = expand("{{nonsense}}\n", |_, _, _| Ok(String::new())).unwrap_err();
        assert!(err.to_string().contains("kind name"), "{err}");
        let err = expand("\n\n{{value y}}", |_, _, name| {
            Err(Error::missing(name, "rows"))
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("paper template, line 3: `y`"),
            "{err}"
        );
    }
}
