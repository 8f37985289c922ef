//! `split-text`: splits a text into at most `parts` parts of whole lines,
//! as even as the lines allow: the first step of the README's flow.
//!
//! Input `{"text": "...", "parts": 4}` (parts 1-100, default 4); output
//! `parts` (an array of strings, none empty) and `count`; counter `parts`.

use serde::{Deserialize, Serialize};
use ward_sdk::{Context, Error};

/// The largest text accepted.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
pub struct Input {
    pub text: String,
    #[serde(default = "four")]
    pub parts: usize,
}

fn four() -> usize {
    4
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Split {
    pub parts: Vec<String>,
}

/// `text` in at most `n` parts of whole lines, blank lines dropped.
pub fn split(text: &str, n: usize) -> Result<Vec<String>, Error> {
    if !(1..=100).contains(&n) {
        return Err(Error::invalid_input("parts must be 1-100"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid_input("text is over 1 MiB"));
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let size = lines.len().div_ceil(n).max(1);
    Ok(lines.chunks(size).map(|c| c.join("\n")).collect())
}

fn split_text(ctx: &Context, input: Input) -> Result<Split, Error> {
    let parts = split(&input.text, input.parts)?;
    ctx.info(format!("split into {} parts", parts.len()));
    ctx.counter("parts", parts.len() as i64);
    ctx.output("parts", &parts)?;
    ctx.output("count", &parts.len())?;
    Ok(Split { parts })
}

ward_sdk::action!(split_text);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_shared_out_evenly() {
        let text = "a\nb\n\nc\nd\ne\n";
        assert_eq!(split(text, 2).unwrap(), ["a\nb\nc", "d\ne"]);
        assert_eq!(split(text, 10).unwrap().len(), 5);
        assert_eq!(split(text, 1).unwrap(), ["a\nb\nc\nd\ne"]);
        assert!(split("", 3).unwrap().is_empty());
        assert!(split(text, 0).is_err());
    }
}
