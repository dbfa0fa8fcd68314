//! Terminal output: aligned tables, and a progress line on stderr that shows only when
//! stderr is a terminal, so scripts and tests read clean output.

use std::{
    io::{IsTerminal, Write},
    sync::Mutex,
};

/// A table of text cells, printed with aligned columns.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines; the last column is not padded.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 < row.len() {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                } else {
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// "1 record", "3 records".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Cuts `s` to one line of at most `max` characters.
pub fn clip(s: &str, max: usize) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` with every line after its first indented by `indent` spaces: a partner's words that
/// span lines stay under their label instead of posing as a label or a table of their own.
pub fn hang(s: &str, indent: usize) -> String {
    s.replace('\r', "")
        .replace('\n', &format!("\n{:indent$}", ""))
}

/// One line on stderr that rewrites itself, for long operations.
#[derive(Debug)]
pub struct ProgressLine {
    live: bool,
    shown: Mutex<bool>,
}

impl ProgressLine {
    /// A progress line, silent unless stderr is a terminal.
    pub fn new() -> Self {
        Self {
            live: std::io::stderr().is_terminal(),
            shown: Mutex::new(false),
        }
    }

    /// Shows `message` in place of the previous one.
    pub fn show(&self, message: &str) {
        if !self.live {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{message}");
        let _ = err.flush();
        if let Ok(mut shown) = self.shown.lock() {
            *shown = true;
        }
    }

    /// Clears the line.
    pub fn clear(&self) {
        let Ok(mut shown) = self.shown.lock() else {
            return;
        };
        if *shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            *shown = false;
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Writes one line to stdout. A closed pipe (`mend list | head`) ends mend quietly instead of
/// panicking as `println!` would.
///
/// Everything printed goes through [`terminal_safe`](mend_core::words::terminal_safe): partner
/// text can hold escape sequences, and they must show as text, never act on this terminal.
pub fn say(args: std::fmt::Arguments<'_>) {
    let line = mend_core::words::terminal_safe(&args.to_string());
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// Writes `value` as pretty JSON on stdout: as inert as [`say`], and still JSON.
pub fn say_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = mend_core::words::json_safe(&serde_json::to_string_pretty(value)?);
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{json}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
    Ok(())
}

/// `println!` through [`say`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::term::say(format_args!($($arg)*)) };
}

/// Writes one line to stderr, made as inert as [`say`] makes stdout: an error or a warning can
/// quote a partner's name.
pub fn tell(args: std::fmt::Arguments<'_>) {
    let line = mend_core::words::terminal_safe(&args.to_string());
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `eprintln!` through [`tell`].
#[macro_export]
macro_rules! tell {
    ($($arg:tt)*) => { $crate::term::tell(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_long_text_is_clipped() {
        let mut t = Table::new(&["ID", "WHAT"]);
        t.row(vec!["a".into(), "first".into()]);
        t.row(vec!["bcd".into(), clip("a long\nline of words", 8)]);
        assert_eq!(t.render(), "ID   WHAT\na    first\nbcd  a long …\n");
        assert_eq!(plural(1, "record"), "1 record");
        assert_eq!(plural(0, "change"), "0 changes");
    }
}
