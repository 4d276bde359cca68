//! How the admin commands print: aligned tables for people, the API's JSON for scripts, bare ids
//! for pipes, `export` lines for a sandbox's environment. The default is a table (or, for
//! commands whose point is an environment, `env`) whether or not standard output is a terminal,
//! so that a script sees the same output as the person who wrote it; scripts ask for `-o json`.

use anyhow::Result;
use clap::ValueEnum;
use serde_json::Value;

use crate::client::{Failure, Kind};

/// `-o, --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns (lists) or one field a line (single objects), for people.
    Table,
    /// The API's JSON answer, pretty-printed, for scripts.
    Json,
    /// The id(s) alone, one a line, for pipes and `$(…)`.
    Id,
    /// `export NAME=value` lines of a devbox's environment (register, mint-token).
    Env,
}

/// A column: its title, and how a row's cell is made.
pub(crate) struct Col {
    pub(crate) title: &'static str,
    pub(crate) cell: fn(&Value) -> String,
    pub(crate) numeric: bool,
}

/// A column that shows one field of the row.
macro_rules! col {
    ($title:literal, $field:literal) => {
        $crate::cli::output::Col {
            title: $title,
            cell: |v| $crate::cli::output::cell(&v[$field]),
            numeric: false,
        }
    };
    ($title:literal, $field:literal, time) => {
        $crate::cli::output::Col {
            title: $title,
            cell: |v| $crate::cli::output::time_cell(&v[$field]),
            numeric: false,
        }
    };
    ($title:literal, $field:literal, number) => {
        $crate::cli::output::Col {
            title: $title,
            cell: |v| $crate::cli::output::cell(&v[$field]),
            numeric: true,
        }
    };
    ($title:literal, $cell:expr) => {
        $crate::cli::output::Col {
            title: $title,
            cell: $cell,
            numeric: false,
        }
    };
}
pub(crate) use col;

/// Prints a list answer (`{"<key>": [...], ...}`).
pub(crate) fn list(output: Output, answer: &Value, key: &str, cols: &[Col]) -> Result<()> {
    let rows = answer[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(answer)?),
        Output::Id => {
            for row in rows {
                println!("{}", cell(&row["id"]));
            }
        }
        Output::Table => {
            let header: Vec<&str> = cols.iter().map(|c| c.title).collect();
            let numeric: Vec<bool> = cols.iter().map(|c| c.numeric).collect();
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| cols.iter().map(|c| (c.cell)(r)).collect())
                .collect();
            print!("{}", table(&header, &numeric, &cells));
            if answer["has_more"] == true {
                eprintln!("(more: {} shown; use --limit)", rows.len());
            }
        }
        Output::Env => return Err(no_env()),
    }
    Ok(())
}

/// Prints one object: a table is one `field  value` line per field, in the order given.
pub(crate) fn object(output: Output, value: &Value, fields: &[Col]) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Id => println!("{}", cell(&value["id"])),
        Output::Table => {
            let rows: Vec<Vec<String>> = fields
                .iter()
                .map(|c| vec![c.title.to_owned(), (c.cell)(value)])
                .collect();
            print!("{}", table_body(&[false, false], &rows, None));
        }
        Output::Env => match value.get("environment").and_then(Value::as_object) {
            Some(env) => {
                for (k, v) in env {
                    println!("export {k}={}", shell_word(&cell(v)));
                }
            }
            None => return Err(no_env()),
        },
    }
    Ok(())
}

fn no_env() -> anyhow::Error {
    Failure::error(
        Kind::Usage,
        "-o env is for commands that answer with an environment (devbox register, devbox mint-token)",
    )
}

/// A value safe to paste after `export NAME=` (tokens and URLs need no quoting; anything else
/// is single-quoted).
fn shell_word(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+=,".contains(&b))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// A JSON value as a table cell: strings bare, numbers as written, null as `-`.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(cell).collect();
            parts.join(",")
        }
        other => other.to_string(),
    }
}

/// A `*_time_ms` value as UTC date and time (`2026-12-05 07:14:03`).
pub(crate) fn time_cell(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) => utc(ms),
        None => cell(v),
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC (Howard Hinnant's civil-from-days).
pub(crate) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Aligned columns: text left-aligned, numbers (`numeric[i]`) right-aligned.
pub(crate) fn table(header: &[&str], numeric: &[bool], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    table_body(numeric, rows, Some(&header))
}

fn table_body(numeric: &[bool], rows: &[Vec<String>], header: Option<&Vec<String>>) -> String {
    let columns = header.map_or_else(|| rows.first().map_or(0, Vec::len), Vec::len);
    let mut widths = vec![0usize; columns];
    for row in header.into_iter().chain(rows) {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = String::new();
    if let Some(h) = header {
        out.push_str(&line(h));
    }
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        for (ms, text) in [
            (0, "1970-01-01 00:00:00"),
            (951_782_400_000, "2000-02-29 00:00:00"),
            (1_796_454_843_999, "2026-12-05 07:14:03"),
            (-1000, "1969-12-31 23:59:59"),
        ] {
            assert_eq!(utc(ms), text, "{ms}");
        }
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("gws_abc-DEF"), "gws_abc-DEF");
        assert_eq!(shell_word("http://127.0.0.1:7080"), "http://127.0.0.1:7080");
        assert_eq!(shell_word("a b'c"), r"'a b'\''c'");
        assert_eq!(shell_word(""), "''");
    }
}
