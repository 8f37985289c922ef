//! Per-attempt resource limits (fuel, wall time, memory) and host-call
//! quotas with their defaults, and the name and size rules every layer
//! shares: the numbers and the rules, no enforcement.
//!
//! Resource limits end the attempt with a trap; quotas make a host call
//! return `Err` to the guest (or drop the excess, for logs and metrics) and
//! never trap. The sandbox enforces both (`sandbox::limits`,
//! `sandbox::capabilities`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) const KIB: u64 = 1024;
pub(crate) const MIB: u64 = 1024 * KIB;

/// Resource limits for one attempt. Going over any of them ends the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Wasm fuel (roughly, instructions) the attempt may consume.
    pub fuel: u64,
    /// Wall-clock time from instantiation to the end of `run`, including
    /// time blocked in host or WASI calls.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Bytes of linear memory the attempt may hold (all memories together).
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 10_000_000_000,
            timeout: Duration::from_secs(30),
            memory_bytes: 128 * MIB,
        }
    }
}

/// Quotas on what an attempt may hand the host. Over a quota, the host call
/// returns `Err` to the guest (or, for logs and metrics, drops the excess and
/// counts it), and the host logs a warning; the attempt goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quotas {
    /// Largest result `run` may return (JSON text).
    pub result_bytes: u64,
    /// Largest single output value.
    pub output_bytes: u64,
    /// All outputs of an attempt together.
    pub outputs_total_bytes: u64,
    /// Largest single media object.
    pub media_object_bytes: u64,
    /// All media of an attempt together.
    pub media_total_bytes: u64,
    /// Host log, stdout and stderr of an attempt together.
    pub log_bytes: u64,
    /// Distinct metric series (name + tags) per attempt.
    pub metric_series: u32,
    /// Largest checkpoint state (JSON text).
    pub checkpoint_bytes: u64,
    /// Warnings kept per attempt; more are counted, not kept.
    pub warnings: u32,
    /// What a granted scratch dir may hold on disk.
    pub scratch_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            result_bytes: MIB,
            output_bytes: MIB,
            outputs_total_bytes: 4 * MIB,
            media_object_bytes: 16 * MIB,
            media_total_bytes: 64 * MIB,
            log_bytes: MIB,
            metric_series: 1_000,
            checkpoint_bytes: MIB,
            warnings: 100,
            scratch_bytes: 256 * MIB,
        }
    }
}

/// Names of outputs, metrics and tag keys: 1–128 chars of `[A-Za-z0-9_.:-]`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    const MAX: usize = 128;
    if name.is_empty() || name.len() > MAX {
        return Err(format!(
            "{what} name must be 1-{MAX} characters, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!(
            "{what} name {:?} has {bad:?}; allowed are A-Z a-z 0-9 _ . : -",
            shorten(name, 64)
        ));
    }
    Ok(())
}

/// A plugin's name: a name as [`check_name`] has it, and never one that
/// could be read as a digest (`sha256:…`, 64 hex digits) or an id (a UUID),
/// since a lookup by digest must only ever find the content with that hash.
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    check_name("plugin", name)?;
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("sha256:") || looks_like_digest(name) {
        return Err(format!(
            "plugin name {:?} looks like a digest: a digest names only the content with that hash",
            shorten(name, 80)
        ));
    }
    if uuid::Uuid::try_parse(name).is_ok() {
        return Err(format!(
            "plugin name {name:?} looks like an id; choose a name that says what the plugin does"
        ));
    }
    Ok(())
}

/// A plugin version: 1-64 printable characters without spaces, slashes or
/// `?#&` (it appears in URLs and in `name@version` references), e.g.
/// `1.2.0` or `0.1.0+3f2a9c`.
pub fn check_plugin_version(version: &str) -> Result<(), String> {
    const MAX: usize = 64;
    if version.is_empty() || version.len() > MAX {
        return Err(format!(
            "plugin version must be 1-{MAX} bytes, got {}",
            version.len()
        ));
    }
    if let Some(c) = version.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '?' | '#' | '&' | '@')
    }) {
        return Err(format!(
            "plugin version {:?} has {c:?}; use a version like 1.2.0 (a `+` in a query string is sent as %2B)",
            shorten(version, 80)
        ));
    }
    Ok(())
}

/// At most this many bytes of JSON in an execution's input (and a task's
/// default one): an input is stored with its execution and listed with it,
/// so a page of 1,000 executions stays bounded. Data bigger than this
/// belongs in media or a dataset the guest reads.
pub const MAX_INPUT_BYTES: usize = 256 << 10;

/// The problem with an input over [`MAX_INPUT_BYTES`], if it is.
pub fn input_problem(what: &str, input: &serde_json::Value) -> Option<String> {
    let len = serde_json::to_vec(input).map_or(usize::MAX, |b| b.len());
    (len > MAX_INPUT_BYTES).then(|| {
        format!(
            "{what} is {len} bytes of JSON, over the {} KiB an input may be",
            MAX_INPUT_BYTES >> 10
        )
    })
}

/// At most this many labels on an execution.
pub const MAX_LABELS: usize = 64;
/// At most this many bytes in a label's value.
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;

/// Every problem with an execution's labels: at most [`MAX_LABELS`], names as
/// [`check_name`] has them, values of at most [`MAX_LABEL_VALUE_BYTES`].
pub fn label_problems(labels: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    if labels.len() > MAX_LABELS {
        problems.push(format!("at most {MAX_LABELS} labels, got {}", labels.len()));
    }
    for (name, value) in labels.iter().take(MAX_LABELS + 1) {
        if let Err(e) = check_name("label", name) {
            problems.push(e);
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            problems.push(format!(
                "label {:?}: a value is at most {MAX_LABEL_VALUE_BYTES} bytes, got {}",
                shorten(name, 64),
                value.len()
            ));
        }
    }
    problems
}

/// 64 hex digits: a bare sha256.
pub fn looks_like_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first `max` chars of a guest-supplied string, for error messages.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Human-readable byte counts for messages ("1 MiB", "1.5 KiB", "12 B").
pub fn bytes_display(n: u64) -> String {
    let units = [("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", KIB)];
    for (unit, size) in units {
        if n >= size {
            let v = n as f64 / size as f64;
            return if n.is_multiple_of(size) {
                format!("{} {unit}", n / size)
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{n} B")
}

/// Serde support for sizes (`bytesize::ByteSize`) as text that reads back
/// as the same number of bytes: the largest of GiB, MiB, KiB that divides
/// it (`128MiB`), else bytes (`1000B`). `ByteSize`'s own text rounds to one
/// decimal, and specs and configs are stored or printed to be read again.
pub mod exact_size {
    use bytesize::ByteSize;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(size: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(size.as_u64()))
    }

    /// `n` bytes in the largest whole binary unit.
    pub fn text(n: u64) -> String {
        [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
            .into_iter()
            .find(|(_, unit)| n != 0 && n.is_multiple_of(*unit))
            .map_or_else(
                || format!("{n}B"),
                |(name, unit)| format!("{}{name}", n / unit),
            )
    }

    /// The same for an optional size.
    pub mod option {
        use bytesize::ByteSize;
        use serde::Serializer;

        pub fn serialize<S: Serializer>(size: &Option<ByteSize>, s: S) -> Result<S::Ok, S::Error> {
            match size {
                Some(size) => super::serialize(size, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Serde support for durations as human text ("30s", "1m 30s") or a number of milliseconds.
pub mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Millis(u64),
            Human(String),
        }
        match Text::deserialize(d)? {
            Text::Millis(ms) => Ok(Duration::from_millis(ms)),
            Text::Human(s) => humantime::parse_duration(&s)
                .map_err(|e| D::Error::custom(format!("invalid duration {s:?}: {e}"))),
        }
    }

    /// The same for an optional duration: absent or `null` is `None`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Compat(#[serde(with = "super")] Duration);
            Ok(Option::<Compat>::deserialize(d)?.map(|Compat(d)| d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_versions_are_short_and_safe_in_urls() {
        for ok in ["1.2.0", "0.1.0+3f2a9c", "2024-06-01", "v1", &"9".repeat(64)] {
            assert_eq!(check_plugin_version(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            &"9".repeat(65),
            "1.0.0 build",
            "1.0/2",
            "a?b",
            "a#b",
            "a&b",
            "x@1",
            "1\n",
        ] {
            assert!(check_plugin_version(bad).is_err(), "{bad:?}");
        }
        assert!(
            check_plugin_version("1.0.0 build")
                .unwrap_err()
                .contains("%2B")
        );
    }

    #[test]
    fn inputs_are_bounded_in_bytes() {
        let at = serde_json::json!("x".repeat(MAX_INPUT_BYTES - 2)); // with its quotes
        assert_eq!(input_problem("input", &at), None);
        let over = serde_json::json!("x".repeat(MAX_INPUT_BYTES - 1));
        let problem = input_problem("input", &over).unwrap();
        assert!(
            problem.starts_with(&format!("input is {} bytes", MAX_INPUT_BYTES + 1)),
            "{problem}"
        );
    }

    #[test]
    fn labels_are_bounded_in_count_name_and_size() {
        let ok: std::collections::BTreeMap<String, String> = (0..MAX_LABELS)
            .map(|i| (format!("l{i}"), "v".repeat(MAX_LABEL_VALUE_BYTES)))
            .collect();
        assert!(label_problems(&ok).is_empty());
        let mut many = ok.clone();
        many.insert("one-more".into(), "v".into());
        assert_eq!(label_problems(&many), ["at most 64 labels, got 65"]);
        let bad: std::collections::BTreeMap<String, String> = [
            ("a b".to_string(), "v".to_string()),
            ("big".to_string(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1)),
        ]
        .into();
        let p = label_problems(&bad);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[1].contains("at most 1024 bytes, got 1025"), "{p:?}");
    }

    #[test]
    fn plugin_names_never_look_like_digests_or_ids() {
        for ok in ["hello", "python-hello", "sha256", "a1b2", "v1.2:x"] {
            assert!(check_plugin_name(ok).is_ok(), "{ok}");
        }
        let zeros = "0".repeat(64);
        for bad in [
            format!("sha256:{zeros}"),
            format!("SHA256:{zeros}"),
            "sha256:hello".to_string(),
            zeros.clone(),
            "AB".repeat(32),
            "0191d6a6-1c2e-7c3a-9f1e-2b3c4d5e6f70".to_string(),
        ] {
            assert!(check_plugin_name(&bad).is_err(), "{bad}");
        }
        assert!(check_plugin_name("a b").is_err());
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name("output", "rows.total:v2-a_b").is_ok());
        assert!(check_name("output", "").is_err());
        assert!(check_name("output", &"a".repeat(129)).is_err());
        assert!(check_name("output", &"a".repeat(128)).is_ok());
        let err = check_name("metric", "a b").unwrap_err();
        assert!(err.contains("' '"), "{err}");
        assert!(check_name("metric", "ünï").is_err());
    }

    #[test]
    fn exact_sizes_read_back_as_the_same_bytes() {
        for (n, text) in [
            (128 * MIB, "128MiB"),
            (3 << 30, "3GiB"),
            (2048, "2KiB"),
            (1536, "1536B"),
            (100_000_000, "100000000B"),
            (0, "0B"),
        ] {
            assert_eq!(exact_size::text(n), text);
            assert_eq!(text.parse::<bytesize::ByteSize>().unwrap().as_u64(), n);
        }
    }

    #[test]
    fn sizes_display_in_binary_units() {
        assert_eq!(bytes_display(MIB), "1 MiB");
        assert_eq!(bytes_display(1536), "1.5 KiB");
        assert_eq!(bytes_display(12), "12 B");
    }
}
