//! The client commands' errors: what went wrong with a request to a Ward
//! server, worded for the person at the terminal (`error: …`). Owns turning
//! problem documents (`application/problem+json`) and transport failures
//! into [`ClientError`].

use std::fmt;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// Why a request did not yield what was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// No connection could be made to the server.
    Unreachable { server: String, reason: String },
    /// The server answered 4xx/5xx, usually with `application/problem+json`.
    Api {
        status: u16,
        title: String,
        detail: Option<String>,
        problems: Vec<String>,
    },
    /// The connection broke or timed out after it was made.
    Transport { url: String, reason: String },
    /// A success status with a body that is not the JSON expected.
    Unexpected { url: String, reason: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { server, reason } => write!(
                f,
                "cannot reach Ward at {server}: {reason}; start one with `ward serve`"
            ),
            ClientError::Api {
                status,
                title,
                detail,
                problems,
            } => {
                write!(f, "{status} {title}")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                for p in problems {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
            ClientError::Transport { url, reason } => {
                write!(f, "request to {url} failed: {reason}")
            }
            ClientError::Unexpected { url, reason } => {
                write!(f, "unexpected response from {url}: {reason}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The fields of a problem document the CLI shows. Lenient on purpose: an
/// error body from a proxy or an older server still yields what it can.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Problem {
    title: Option<Value>,
    detail: Option<Value>,
    problems: Option<Value>,
}

/// A string field's trimmed, non-empty text.
fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

impl ClientError {
    /// The error for a 4xx/5xx answer: the problem document's `title`,
    /// `detail` and `problems` when the body is one, else the body's text.
    pub fn from_problem(status: u16, body: &[u8]) -> ClientError {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let doc = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object)
            .and_then(|v| serde_json::from_value::<Problem>(v).ok());
        let (title, detail, problems) = match doc {
            Some(doc) => {
                let problems = match doc.problems {
                    Some(Value::Array(ps)) => ps
                        .into_iter()
                        .map(|p| match p {
                            Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                (text(doc.title), text(doc.detail), problems)
            }
            None => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                let detail = (!text.is_empty()).then(|| crate::model::limits::shorten(&text, 500));
                (None, detail, Vec::new())
            }
        };
        ClientError::Api {
            status,
            title: title.unwrap_or_else(|| reason.to_string()),
            detail,
            problems,
        }
    }
}

/// The innermost cause's text ("Connection refused (os error 111)").
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_documents_become_readable_errors() {
        let body = br#"{"type":"about:blank","title":"Not Found","status":404,"detail":"no execution 0193"}"#;
        let e = ClientError::from_problem(404, body);
        assert_eq!(e.to_string(), "404 Not Found: no execution 0193");

        let body = br#"{"title":"Unprocessable Entity","status":422,"detail":"invalid task",
            "problems":["task name must be 1-128 characters, got 0","retry.jitter must be 0-1, got 2"]}"#;
        let e = ClientError::from_problem(422, body);
        assert_eq!(
            e.to_string(),
            "422 Unprocessable Entity: invalid task\n  - task name must be 1-128 characters, got 0\n  - retry.jitter must be 0-1, got 2"
        );
    }

    #[test]
    fn other_error_bodies_fall_back_to_the_status_and_text() {
        let e = ClientError::from_problem(502, b"  upstream down\n");
        assert_eq!(e.to_string(), "502 Bad Gateway: upstream down");
        let e = ClientError::from_problem(409, b"");
        assert_eq!(e.to_string(), "409 Conflict");
        let e =
            ClientError::from_problem(409, br#"{"detail":"cannot go from SUCCESS to KILLING"}"#);
        assert_eq!(
            e.to_string(),
            "409 Conflict: cannot go from SUCCESS to KILLING"
        );
        // Odd field types are shown, not dropped with the rest.
        let e = ClientError::from_problem(400, br#"{"title":7,"detail":" x ","problems":[1]}"#);
        assert_eq!(e.to_string(), "400 Bad Request: x\n  - 1");
    }

    #[test]
    fn an_unreachable_server_says_how_to_start_one() {
        let e = ClientError::Unreachable {
            server: "http://127.0.0.1:8480".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach Ward at http://127.0.0.1:8480: Connection refused (os error 111); start one with `ward serve`"
        );
    }
}
