//! Webhooks: a task's `webhook: {secret}` and the check of a signed
//! request to `POST /webhooks/{task}`.
//!
//! A request carries `X-Ward-Timestamp` (Unix seconds) and
//! `X-Ward-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`.
//! It is accepted when the timestamp is within [`TOLERANCE_SECS`] of now
//! and the signature matches (compared in constant time). The store then
//! refuses a signature seen before, so a captured request cannot be
//! played again while its timestamp is still fresh. Pure: the time comes in.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How far a request's timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;
/// The shortest and longest secret a task may set.
pub const SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

pub const TIMESTAMP_HEADER: &str = "x-ward-timestamp";
pub const SIGNATURE_HEADER: &str = "x-ward-signature";

/// A task's webhook. The secret is write-only: the API never returns it,
/// and a replacement of the task that leaves it out keeps the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// 16–256 characters, shared with the sender; never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(write_only)]
    pub secret: Option<String>,
}

/// Why a webhook request is refused (each a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the X-Ward-Timestamp and X-Ward-Signature headers are required")]
    Missing,
    #[error("X-Ward-Timestamp must be Unix seconds")]
    BadTimestamp,
    #[error("the request's timestamp is more than 5 minutes from now")]
    Stale,
    #[error("X-Ward-Signature must be sha256=<64 hex digits>")]
    BadSignatureFormat,
    #[error("the signature does not match")]
    Mismatch,
}

/// The signature of `body` sent at `timestamp` (what a sender computes),
/// as the header's value.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex::encode(digest))
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks a request's headers against the task's secret at `now_secs`;
/// returns the signature's hex digest (to refuse it if seen again).
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<String, Refusal> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(Refusal::Missing);
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refusal::BadTimestamp)?;
    if (now_secs - ts).abs() > TOLERANCE_SECS {
        return Err(Refusal::Stale);
    }
    let digest = signature
        .trim()
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Refusal::BadSignatureFormat)?;
    mac(secret, timestamp.trim(), body)
        .verify_slice(&digest)
        .map_err(|_| Refusal::Mismatch)?;
    Ok(hex::encode(digest))
}

/// Why `spec` is not a usable webhook for a new task (`keeps`: a secret is
/// already stored, so one may be left out).
pub fn problems(spec: &WebhookSpec, keeps: bool) -> Vec<String> {
    match &spec.secret {
        None if keeps => Vec::new(),
        None => vec!["webhook.secret is required (16-256 characters)".into()],
        Some(s) if !SECRET_CHARS.contains(&s.chars().count()) => {
            vec!["webhook.secret must be 16-256 characters".into()]
        }
        Some(s) if s.chars().any(char::is_control) => {
            vec!["webhook.secret must not contain control characters".into()]
        }
        Some(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-long-enough-secret";

    #[test]
    fn a_signed_request_is_accepted_and_gives_its_digest() {
        let body = br#"{"name":"Ada"}"#;
        let sig = sign(SECRET, "1700000000", body);
        let digest = verify(SECRET, Some("1700000000"), Some(&sig), body, 1_700_000_100).unwrap();
        assert_eq!(format!("sha256={digest}"), sig);
    }

    #[test]
    fn a_known_vector_matches() {
        // Python: hmac.new(b"0123456789abcdef", b"1.{}", hashlib.sha256).hexdigest()
        let sig = sign("0123456789abcdef", "1", b"{}");
        assert_eq!(
            sig,
            "sha256=2af693cb56b22c16912222aeefdc75a01de562bf70ee2015f41ecea48382997f"
        );
        assert!(verify("0123456789abcdef", Some("1"), Some(&sig), b"{}", 1).is_ok());
    }

    #[test]
    fn wrong_missing_stale_and_malformed_requests_are_refused() {
        let body = b"{}";
        let now = 1_700_000_000;
        let ts = now.to_string();
        let good = sign(SECRET, &ts, body);
        let r = |t: Option<&str>, s: Option<&str>, b: &[u8]| verify(SECRET, t, s, b, now);
        assert_eq!(r(None, Some(&good), body), Err(Refusal::Missing));
        assert_eq!(r(Some(&ts), None, body), Err(Refusal::Missing));
        assert_eq!(
            r(Some("soon"), Some(&good), body),
            Err(Refusal::BadTimestamp)
        );
        let old = (now - TOLERANCE_SECS - 1).to_string();
        let old_sig = sign(SECRET, &old, body);
        assert_eq!(r(Some(&old), Some(&old_sig), body), Err(Refusal::Stale));
        let future = (now + TOLERANCE_SECS + 1).to_string();
        assert_eq!(
            r(Some(&future), Some(&sign(SECRET, &future, body)), body),
            Err(Refusal::Stale)
        );
        assert_eq!(
            r(Some(&ts), Some("md5=abc"), body),
            Err(Refusal::BadSignatureFormat)
        );
        assert_eq!(r(Some(&ts), Some(&good), b"{ }"), Err(Refusal::Mismatch));
        let other = sign("another-secret-here", &ts, body);
        assert_eq!(r(Some(&ts), Some(&other), body), Err(Refusal::Mismatch));
        // The timestamp is part of what is signed.
        let shifted = (now + 1).to_string();
        assert_eq!(r(Some(&shifted), Some(&good), body), Err(Refusal::Mismatch));
    }

    #[test]
    fn secrets_are_checked() {
        let spec = |s: Option<&str>| WebhookSpec {
            secret: s.map(str::to_string),
        };
        assert!(problems(&spec(Some(SECRET)), false).is_empty());
        assert!(!problems(&spec(Some("short")), false).is_empty());
        assert!(!problems(&spec(None), false).is_empty());
        assert!(problems(&spec(None), true).is_empty());
    }
}
