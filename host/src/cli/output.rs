//! What the client commands print and how: writing to stdout (quietly
//! ending on a closed pipe), `--json` output, and aligned text tables with
//! their small cell formatters.

use serde_json::Value;

use super::exit;

/// Writes to stdout now. When the reader has gone (`ward … | head`), the
/// process ends quietly with exit 0 rather than panicking.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(exit::OK.into());
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))
    };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Prints a value as pretty JSON: `--json` prints the server's answer so.
pub fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// Aligned columns separated by two spaces, a header line first; the last
/// column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    render_row(&mut out, &widths, headers);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        render_row(&mut out, &widths, &cells);
    }
    out
}

fn render_row(out: &mut String, widths: &[usize], cells: &[&str]) {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(cell);
        if i + 1 < widths.len() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// An optional value as a cell: its text, or `-`.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A plugin digest shortened for a table: `sha256:` and 12 hex digits.
pub fn short_digest(id: &str) -> String {
    match id.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.get(..12).unwrap_or(hex)),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE", "TASK"],
            &[
                vec!["a".into(), "SUCCESS".into(), "greet".into()],
                vec!["bbbb".into(), "FAILED".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    STATE    TASK\na     SUCCESS  greet\nbbbb  FAILED   x\n"
        );
        assert_eq!(table(&["ID", "NAME"], &[]), "ID  NAME\n");
        // Widths count characters, not bytes.
        let t = table(&["A", "B"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(t, "A  B\né  1\n");
    }

    #[test]
    fn cells_are_short() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("other"), "other");
        assert_eq!(or_dash(None::<u32>), "-");
        assert_eq!(or_dash(Some(2)), "2");
    }
}
