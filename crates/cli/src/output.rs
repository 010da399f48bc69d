//! Output: aligned tables for people, `-o json` / `-o yaml` for programs.

use serde_json::Value;

use crate::CliError;

/// Write to stdout. A closed pipe ends the command quietly
/// ([`CliError::ClosedPipe`]); Rust's `print!` would panic.
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::ClosedPipe,
            _ => CliError::Config(format!("cannot write the output: {e}")),
        })
}

/// How to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The `-o` flag every command takes.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Output {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Print a document as JSON or YAML; `false` when the format is a table.
pub fn document(out: Output, v: &Value) -> Result<bool, CliError> {
    match out.format {
        Format::Json => {
            crate::outln!("{}", serde_json::to_string_pretty(v).expect("JSON"));
            Ok(true)
        }
        Format::Yaml => {
            crate::out!("{}", yaml_serde::to_string(v).expect("YAML"));
            Ok(true)
        }
        Format::Table => Ok(false),
    }
}

/// Aligned columns, header first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) if s.is_empty() => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Print a server-side Table (`as=Table`) as aligned columns.
pub fn server_table(t: &Value) -> String {
    let headers: Vec<String> = t["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_uppercase())
        .collect();
    let rows: Vec<Vec<String>> = t["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["cells"]
                .as_array()
                .into_iter()
                .flatten()
                .map(cell_text)
                .collect()
        })
        .collect();
    if rows.is_empty() {
        return "No resources found.\n".into();
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "Active".into()],
                vec!["longer".into(), "Pending".into()],
            ],
        );
        assert_eq!(t, "NAME     STATE\na        Active\nlonger   Pending\n");
    }
}
