//! `word-count`: counts the words, lines and characters of a text and stores
//! a report of its most frequent words.
//!
//! Input `{"text": "...", "format": "json" | "csv", "top": 10}`: `text` is
//! required (at most 8 MiB of UTF-8); `format` (default `"json"`) chooses the
//! report; `top` (default 10, 1–1000) how many of the most frequent words to
//! keep.
//!
//! Words are maximal runs of alphanumeric characters (Unicode), lowercased;
//! an apostrophe (`'` or `’`, kept as `'`) between two such characters stays
//! inside the word (`don't`, `rock'n'roll`), any other character separates
//! words. Combining diacritical marks following a word character also stay
//! inside the word, so decomposed text (`cafe\u{301}`) counts as one word.
//! Lines are counted like [`str::lines`] (a last line without a newline
//! counts; `\r\n` is one line break), characters are Unicode scalar values,
//! not bytes. The top words are ordered by count, most frequent first, ties
//! alphabetically (by code point).
//!
//! - Result: the stats `{"words", "lines", "chars", "unique_words", "top":
//!   [{"word", "count"}, …]}` plus `"report": {"id", "url"}`.
//! - Outputs: `words`, `lines`, `chars`, `unique_words`, `top`.
//! - Metrics: counters `words` and `lines` (the counts), counter `reports`
//!   tagged `format`; duration `count` (the counting itself).
//! - Media: `report.json` (`application/json`, the stats object) or
//!   `report.csv` (`text/csv`, RFC 4180: header `word,count`, then the top
//!   rows, CRLF line breaks).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use ward_sdk::{Context, Error, ResultExt};

/// The largest text accepted, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;
/// How many top words are kept when the input does not say.
pub const DEFAULT_TOP: usize = 10;
/// The most top words the input may ask for.
pub const MAX_TOP: usize = 1000;

/// The action's input. Fields are optional here so that a missing or
/// mistyped one gets a message of ours rather than serde's.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Input {
    pub text: Option<String>,
    pub format: Option<String>,
    pub top: Option<serde_json::Value>,
}

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// The name used in the input and in the `reports` counter's tag.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
        }
    }
}

/// The input, checked.
#[derive(Debug, PartialEq)]
pub struct Request<'a> {
    pub text: &'a str,
    pub format: Format,
    pub top: usize,
}

/// One of the most frequent words.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct WordCount {
    pub word: String,
    pub count: u64,
}

/// What the action counts.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub words: u64,
    pub lines: u64,
    pub chars: u64,
    pub unique_words: u64,
    pub top: Vec<WordCount>,
}

/// A stored report, as it appears in the result.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: String,
    pub url: String,
}

/// The action's result: the stats and where the report is stored.
#[derive(Serialize, Debug)]
pub struct Output {
    #[serde(flatten)]
    pub stats: Stats,
    pub report: Report,
}

/// Checks the input: `text` present and at most [`MAX_TEXT_BYTES`], a known
/// `format`, `top` an integer in `1..=MAX_TOP`.
pub fn validate(input: &Input) -> Result<Request<'_>, Error> {
    let text = input
        .text
        .as_deref()
        .ok_or_else(|| Error::invalid_input("`text` is required: the text to count"))?;
    if text.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid_input(format!(
            "`text` is {} bytes, over the limit of {MAX_TEXT_BYTES} bytes (8 MiB)",
            text.len()
        )));
    }
    let format = match input.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(Error::invalid_input(format!(
                "unknown `format` {other:?}: use \"json\" or \"csv\""
            )));
        }
    };
    let top = match &input.top {
        None => DEFAULT_TOP,
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_TOP).contains(n))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "`top` must be an integer from 1 to {MAX_TOP}, not {value}"
                ))
            })?,
    };
    Ok(Request { text, format, top })
}

fn is_apostrophe(c: char) -> bool {
    c == '\'' || c == '\u{2019}'
}

/// Combining marks that continue a word: the combining diacritical blocks.
fn is_combining_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE20}'..='\u{FE2F}')
}

/// Calls `f` with `word` lowercased. The whole word at once, so that a
/// final capital sigma becomes `ς`.
fn emit(word: &str, f: &mut impl FnMut(&str)) {
    if word
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        f(&word.to_lowercase());
    } else {
        f(word);
    }
}

/// Calls `f` with each word of `text`, lowercased (see the crate docs for
/// what a word is).
pub fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    // An apostrophe seen after a word character, not yet known to be inside
    // the word.
    let mut pending_apostrophe = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if pending_apostrophe {
                word.push('\'');
                pending_apostrophe = false;
            }
            word.push(c);
        } else if !word.is_empty() && !pending_apostrophe && is_apostrophe(c) {
            pending_apostrophe = true;
        } else if !word.is_empty() && !pending_apostrophe && is_combining_mark(c) {
            word.push(c);
        } else {
            if !word.is_empty() {
                emit(&word, &mut f);
                word.clear();
            }
            pending_apostrophe = false;
        }
    }
    if !word.is_empty() {
        emit(&word, &mut f);
    }
}

/// The words of `text`, lowercased, in order.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_word(text, |w| out.push(w.to_string()));
    out
}

/// The `n` most frequent words: by count, most frequent first; ties in
/// code-point order of the word.
pub fn top_words(counts: &HashMap<String, u64>, n: usize) -> Vec<WordCount> {
    let mut all: Vec<(&String, u64)> = counts.iter().map(|(w, &c)| (w, c)).collect();
    let order = |a: &(&String, u64), b: &(&String, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0));
    if all.len() > n && n > 0 {
        all.select_nth_unstable_by(n - 1, order);
    }
    all.truncate(n);
    all.sort_unstable_by(order);
    all.into_iter()
        .map(|(w, c)| WordCount {
            word: w.clone(),
            count: c,
        })
        .collect()
}

/// Counts `text`, keeping the `top` most frequent words.
pub fn count(text: &str, top: usize) -> Stats {
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut words = 0u64;
    for_each_word(text, |w| {
        words += 1;
        match counts.get_mut(w) {
            Some(n) => *n += 1,
            None => {
                counts.insert(w.to_string(), 1);
            }
        }
    });
    Stats {
        words,
        lines: text.lines().count() as u64,
        chars: text.chars().count() as u64,
        unique_words: counts.len() as u64,
        top: top_words(&counts, top),
    }
}

/// A CSV field per RFC 4180: quoted (with `"` doubled) when it holds a
/// comma, a double quote, a CR or a LF; as is otherwise.
pub fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The CSV report: header `word,count`, then one row per top word, each
/// line ended by CRLF.
pub fn csv_report(top: &[WordCount]) -> String {
    let mut out = String::from("word,count\r\n");
    for row in top {
        out.push_str(&csv_field(&row.word));
        out.push(',');
        out.push_str(&row.count.to_string());
        out.push_str("\r\n");
    }
    out
}

/// The report's file name, content type and bytes.
pub fn report(
    stats: &Stats,
    format: Format,
) -> Result<(&'static str, &'static str, Vec<u8>), Error> {
    Ok(match format {
        Format::Json => (
            "report.json",
            "application/json",
            serde_json::to_vec_pretty(stats).fatal()?,
        ),
        Format::Csv => (
            "report.csv",
            "text/csv",
            csv_report(&stats.top).into_bytes(),
        ),
    })
}

fn word_count(ctx: &Context, input: Input) -> Result<Output, Error> {
    let request = validate(&input)?;
    let format = request.format.name();

    let stats = {
        let _timer = ctx.timer("count");
        count(request.text, request.top)
    };
    ctx.info(format!(
        "counted {} words ({} unique) on {} lines",
        stats.words, stats.unique_words, stats.lines
    ));

    ctx.output("words", &stats.words)?;
    ctx.output("lines", &stats.lines)?;
    ctx.output("chars", &stats.chars)?;
    ctx.output("unique_words", &stats.unique_words)?;
    ctx.output("top", &stats.top)?;

    ctx.counter("words", i64::try_from(stats.words).unwrap_or(i64::MAX));
    ctx.counter("lines", i64::try_from(stats.lines).unwrap_or(i64::MAX));

    let (name, content_type, data) = report(&stats, request.format)?;
    let media = ctx.media(name, content_type, &data)?;
    ctx.counter_with("reports", 1, &[("format", format)]);

    Ok(Output {
        stats,
        report: Report {
            id: media.id,
            url: media.url,
        },
    })
}

ward_sdk::action!(word_count);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(value: serde_json::Value) -> Input {
        serde_json::from_value(value).unwrap()
    }

    fn invalid(value: serde_json::Value) -> String {
        match validate(&input(value)) {
            Err(Error::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let i = input(json!({"text": "a b a"}));
        let r = validate(&i).unwrap();
        assert_eq!(r.format, Format::Json);
        assert_eq!(r.top, DEFAULT_TOP);
        assert_eq!(r.text, "a b a");
    }

    #[test]
    fn bad_input_is_invalid_input_with_a_clear_message() {
        assert!(invalid(json!({})).contains("`text` is required"));
        assert!(invalid(json!({"text": "a", "format": "xml"})).contains("\"xml\""));
        for top in [json!(0), json!(1001), json!(-1), json!(2.5), json!("3")] {
            let m = invalid(json!({"text": "a", "top": top}));
            assert!(m.contains("`top` must be an integer from 1 to 1000"), "{m}");
        }
        assert_eq!(
            validate(&input(json!({"text": "a", "top": 1000, "format": "csv"})))
                .unwrap()
                .top,
            1000
        );
        // Unknown fields are refused by serde, which the SDK reports as invalid input.
        assert!(serde_json::from_value::<Input>(json!({"text": "a", "fromat": "csv"})).is_err());
    }

    #[test]
    fn text_over_8_mib_is_refused() {
        let ok = "a".repeat(MAX_TEXT_BYTES);
        assert!(validate(&input(json!({ "text": ok }))).is_ok());
        let big = "a".repeat(MAX_TEXT_BYTES + 1);
        assert!(invalid(json!({ "text": big })).contains("8 MiB"));
    }

    #[test]
    fn splits_on_non_alphanumerics_and_lowercases() {
        assert_eq!(
            words("Hello, WORLD! hello-world\tfoo_bar 42x"),
            ["hello", "world", "hello", "world", "foo", "bar", "42x"]
        );
        assert!(words("").is_empty());
        assert!(words(" ,.;-- ").is_empty());
    }

    #[test]
    fn apostrophes_only_inside_words() {
        assert_eq!(
            words("Don't 'quote' me, rock'n'roll students' it''s ' x'"),
            [
                "don't",
                "quote",
                "me",
                "rock'n'roll",
                "students",
                "it",
                "s",
                "x"
            ]
        );
        // The typographic apostrophe is the same word.
        assert_eq!(words("don\u{2019}t DON'T"), ["don't", "don't"]);
    }

    #[test]
    fn unicode_words() {
        assert_eq!(
            words("Straße ÉTÉ, naïve café; Привет мир — 日本語 ١٢٣"),
            [
                "straße",
                "été",
                "naïve",
                "café",
                "привет",
                "мир",
                "日本語",
                "١٢٣"
            ]
        );
        // Lowercased as whole words: a final sigma is `ς`.
        assert_eq!(words("ΟΔΟΣ οδος Σ"), ["οδος", "οδος", "σ"]);
        // Decomposed accents stay in the word.
        assert_eq!(words("cafe\u{301} ok"), ["cafe\u{301}", "ok"]);
    }

    #[test]
    fn counts_words_lines_chars() {
        let s = count("a b a\nÉté été\r\nc", 10);
        assert_eq!(s.words, 6);
        assert_eq!(s.lines, 3);
        assert_eq!(s.chars, 16);
        assert_eq!(s.unique_words, 4);
        assert_eq!(
            s.top,
            [
                WordCount {
                    word: "a".into(),
                    count: 2
                },
                WordCount {
                    word: "été".into(),
                    count: 2
                },
                WordCount {
                    word: "b".into(),
                    count: 1
                },
                WordCount {
                    word: "c".into(),
                    count: 1
                },
            ]
        );
        let empty = count("", 10);
        assert_eq!((empty.words, empty.lines, empty.chars), (0, 0, 0));
        assert!(empty.top.is_empty());
        assert_eq!(count("x\n", 1).lines, 1);
        assert_eq!(count("x\n\n", 1).lines, 2);
    }

    #[test]
    fn top_is_by_count_then_alphabetical_and_truncated() {
        let s = count("d c b a c b d d e e", 3);
        let got: Vec<(&str, u64)> = s.top.iter().map(|w| (w.word.as_str(), w.count)).collect();
        assert_eq!(got, [("d", 3), ("b", 2), ("c", 2)]);
        assert_eq!(s.unique_words, 5);
        // Larger than the vocabulary: everything, ordered.
        let all = count("z y y", 1000);
        let got: Vec<(&str, u64)> = all.top.iter().map(|w| (w.word.as_str(), w.count)).collect();
        assert_eq!(got, [("y", 2), ("z", 1)]);
    }

    #[test]
    fn top_selection_matches_a_full_sort() {
        let text: String = (0..500)
            .map(|i| format!("w{} ", (i * 7919) % 97 % (1 + i % 13)))
            .collect();
        let mut counts = HashMap::new();
        for_each_word(&text, |w| *counts.entry(w.to_string()).or_insert(0u64) += 1);
        let mut full: Vec<(String, u64)> = counts.iter().map(|(w, &c)| (w.clone(), c)).collect();
        full.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for n in [1, 2, 5, 12, 13, 100] {
            let got: Vec<(String, u64)> = top_words(&counts, n)
                .into_iter()
                .map(|w| (w.word, w.count))
                .collect();
            assert_eq!(got, full[..n.min(full.len())], "n = {n}");
        }
    }

    #[test]
    fn csv_quoting_follows_rfc_4180() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("it's"), "it's");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\r"), "\"cr\r\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn csv_report_has_header_and_rows() {
        let top = vec![
            WordCount {
                word: "don't".into(),
                count: 3,
            },
            WordCount {
                word: "a,b".into(),
                count: 1,
            },
        ];
        assert_eq!(csv_report(&top), "word,count\r\ndon't,3\r\n\"a,b\",1\r\n");
        assert_eq!(csv_report(&[]), "word,count\r\n");
    }

    #[test]
    fn reports_by_format() {
        let stats = count("a b a", 10);
        let (name, ctype, data) = report(&stats, Format::Json).unwrap();
        assert_eq!((name, ctype), ("report.json", "application/json"));
        let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(
            v,
            json!({"words": 3, "lines": 1, "chars": 5, "unique_words": 2,
                   "top": [{"word": "a", "count": 2}, {"word": "b", "count": 1}]})
        );
        let (name, ctype, data) = report(&stats, Format::Csv).unwrap();
        assert_eq!((name, ctype), ("report.csv", "text/csv"));
        assert_eq!(data, b"word,count\r\na,2\r\nb,1\r\n");
    }

    #[test]
    fn result_flattens_stats_and_adds_the_report() {
        let out = Output {
            stats: count("a", 10),
            report: Report {
                id: "m1".into(),
                url: "u".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&out).unwrap(),
            json!({"words": 1, "lines": 1, "chars": 1, "unique_words": 1,
                   "top": [{"word": "a", "count": 1}],
                   "report": {"id": "m1", "url": "u"}})
        );
    }
}
