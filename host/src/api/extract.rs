//! `Path` and `Query` extractors whose every rejection is an [`ApiError`],
//! so that a malformed URL is answered in problem+json like any other
//! error, and the parsers of single query values with messages that say
//! what was wrong. Handlers use these, never axum's own `Path`/`Query`.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::problem::ApiError;

/// axum's `Path`, rejecting with an [`ApiError`] (e.g. `%FF` in a segment).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// axum's `Query`, rejecting with an [`ApiError`]. It also refuses a query
/// string that does not percent-decode to UTF-8, which axum's would turn
/// into U+FFFD and carry on with.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if !decodes_to_utf8(parts.uri.query().unwrap_or_default()) {
            return Err(ApiError::BadRequest(
                "the query string is not valid UTF-8 once percent-decoded".into(),
            ));
        }
        let axum::extract::Query(value) = axum::extract::Query::try_from_uri(&parts.uri)?;
        Ok(Query(value))
    }
}

/// Whether `raw` percent-decodes to UTF-8 (`+` and the separators are
/// ASCII, so the whole string decodes to UTF-8 exactly when every key and
/// value does).
fn decodes_to_utf8(raw: &str) -> bool {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut bytes = Vec::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match (b, hex(tail.first()), hex(tail.get(1))) {
            (b'%', Some(high), Some(low)) => {
                bytes.push((high * 16 + low) as u8);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).is_ok()
}

/// A whole number query value within `range`, or `default` when absent.
pub fn int_param<T>(
    name: &str,
    value: Option<&str>,
    range: RangeInclusive<T>,
    default: T,
) -> Result<T, ApiError>
where
    T: FromStr + PartialOrd + Display,
{
    let Some(text) = value else {
        return Ok(default);
    };
    text.parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must be an integer {}-{}, got {text:?}",
                range.start(),
                range.end()
            ))
        })
}

/// `true` or `false`, or `false` when absent.
pub fn bool_param(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name} must be true or false, got {other:?}"
        ))),
    }
}

/// The `Last-Event-ID` header (sent by a reconnecting event source), if any.
pub fn last_event_id(headers: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => Ok(Some(int_param(
            "Last-Event-ID",
            Some(v.to_str().unwrap_or("(not text)")),
            0..=i64::MAX,
            0,
        )?)),
    }
}

/// A wait (`30s`, `1m30s`, `500ms`, or whole seconds), or none when absent.
pub fn wait_param(value: Option<&str>) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(text),
    };
    parsed.map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "wait must be a duration such as 30s, 500ms or 2m, got {text:?}"
        ))
    })
}

/// The words of a comma-separated query value (trimmed, empty ones
/// skipped); none when absent.
pub fn comma_words(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|w| !w.is_empty())
}

/// One of `allowed`, or the first of them when absent.
pub fn choice_param<'a>(
    name: &str,
    value: Option<&'a str>,
    allowed: &[&'a str],
) -> Result<&'a str, ApiError> {
    match value {
        None => Ok(allowed[0]),
        Some(v) if allowed.contains(&v) => Ok(v),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name} must be {}, got {other:?}",
            allowed.join(" or ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_lists_skip_blanks() {
        let words: Vec<&str> = comma_words(Some(" failed,,Killed , ")).collect();
        assert_eq!(words, ["failed", "Killed"]);
        assert_eq!(comma_words(None).count(), 0);
    }

    #[test]
    fn a_wait_is_a_duration_or_whole_seconds() {
        use std::time::Duration;
        assert_eq!(wait_param(None).unwrap(), None);
        assert_eq!(
            wait_param(Some("30s")).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait_param(Some("15")).unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            wait_param(Some("1m500ms")).unwrap(),
            Some(Duration::from_millis(60_500))
        );
        for bad in ["", "-1s", "soon", "1.5"] {
            match wait_param(Some(bad)) {
                Err(ApiError::BadRequest(m)) => assert!(m.starts_with("wait must be"), "{m}"),
                other => panic!("{bad:?}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn a_query_string_must_percent_decode_to_utf8() {
        assert!(decodes_to_utf8(""));
        assert!(decodes_to_utf8("name=caf%C3%A9&x=%2"));
        assert!(decodes_to_utf8("a=100%25+sure"));
        assert!(!decodes_to_utf8("name=%FF"));
        assert!(!decodes_to_utf8("name=%C3"));
    }

    #[test]
    fn query_values_are_checked_with_messages_naming_the_value() {
        let err = |r: Result<_, ApiError>| match r {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{:?}", other.map(|_: u32| ())),
        };
        assert_eq!(int_param("limit", None, 1..=1000u32, 50).unwrap(), 50);
        assert_eq!(int_param("limit", Some("7"), 1..=1000u32, 50).unwrap(), 7);
        assert_eq!(
            err(int_param("limit", Some("-1"), 1..=1000u32, 50)),
            "limit must be an integer 1-1000, got \"-1\""
        );
        assert!(int_param("limit", Some("1001"), 1..=1000u32, 50).is_err());
        assert!(int_param("limit", Some(""), 1..=1000u32, 50).is_err());
        assert!(bool_param("follow", Some("true")).unwrap());
        assert_eq!(
            bool_param("follow", Some("maybe")).unwrap_err().to_string(),
            "follow must be true or false, got \"maybe\""
        );
        assert_eq!(
            choice_param("format", Some("xml"), &["json", "csv"])
                .unwrap_err()
                .to_string(),
            "format must be json or csv, got \"xml\""
        );
    }
}
