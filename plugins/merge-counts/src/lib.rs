//! `merge-counts`: merges the `top` word counts of several `word-count`
//! runs into one table, most frequent first: the last step of the README's
//! flow.
//!
//! Input `{"counts": [{"top": [{"word": "a", "count": 2}, …]}, …]}` (the
//! outputs of a `for_each` of `word-count`); outputs `rows` (an array of
//! `{"word", "count"}`, for a dataset) and `words` (their sum); a CSV media
//! `counts.csv`; counter `words`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ward_sdk::{Context, Error};

#[derive(Deserialize)]
pub struct Input {
    pub counts: Vec<Option<Part>>,
}

/// One part's counts; a part that failed (allowed) is `null`.
#[derive(Deserialize)]
pub struct Part {
    #[serde(default)]
    pub top: Vec<Row>,
}

#[derive(Deserialize, Serialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub word: String,
    pub count: u64,
}

#[derive(Serialize)]
pub struct Merged {
    pub rows: Vec<Row>,
    pub report: String,
}

/// Every word's total, most frequent first, then alphabetically.
pub fn merge(parts: &[Option<Part>]) -> Vec<Row> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for row in parts.iter().flatten().flat_map(|p| &p.top) {
        *totals.entry(row.word.as_str()).or_default() += row.count;
    }
    let mut rows: Vec<Row> = totals
        .into_iter()
        .map(|(word, count)| Row {
            word: word.to_string(),
            count,
        })
        .collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)));
    rows
}

/// The rows as CSV (`word,count`, a word with a comma or quote quoted).
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("word,count\n");
    for r in rows {
        if r.word.contains([',', '"', '\n']) {
            out.push_str(&format!(
                "\"{}\",{}\n",
                r.word.replace('"', "\"\""),
                r.count
            ));
        } else {
            out.push_str(&format!("{},{}\n", r.word, r.count));
        }
    }
    out
}

fn merge_counts(ctx: &Context, input: Input) -> Result<Merged, Error> {
    let rows = merge(&input.counts);
    let total: u64 = rows.iter().map(|r| r.count).sum();
    ctx.info(format!("{} words, {} distinct", total, rows.len()));
    ctx.counter("words", i64::try_from(total).unwrap_or(i64::MAX));
    let media = ctx.media("counts.csv", "text/csv", csv(&rows).as_bytes())?;
    ctx.output("rows", &rows)?;
    ctx.output("words", &total)?;
    Ok(Merged {
        rows,
        report: media.url,
    })
}

ward_sdk::action!(merge_counts);

#[cfg(test)]
mod tests {
    use super::*;

    fn part(rows: &[(&str, u64)]) -> Option<Part> {
        Some(Part {
            top: rows
                .iter()
                .map(|(w, c)| Row {
                    word: w.to_string(),
                    count: *c,
                })
                .collect(),
        })
    }

    #[test]
    fn counts_add_up_across_parts() {
        let rows = merge(&[
            part(&[("a", 2), ("b", 1)]),
            None,
            part(&[("b", 3), ("c", 1)]),
        ]);
        let got: Vec<(&str, u64)> = rows.iter().map(|r| (r.word.as_str(), r.count)).collect();
        assert_eq!(got, [("b", 4), ("a", 2), ("c", 1)]);
        assert_eq!(csv(&rows[..1]), "word,count\nb,4\n");
        let odd = [Row {
            word: "x,\"y".into(),
            count: 1,
        }];
        assert_eq!(csv(&odd), "word,count\n\"x,\"\"y\",1\n");
    }
}
