//! Page cursors of `GET /executions`: opaque to callers, checked here.
//!
//! A cursor is base64url (no padding) of `v1:` and the last listed row's
//! sort key, its id (executions are listed newest first by id, a UUID v7).
//! The version lets the payload change without old cursors being misread;
//! anything that does not decode to a current payload is refused rather
//! than read as "from the start", which would silently repeat a page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::problem::ApiError;

const VERSION: &str = "v1:";

/// The cursor of the page after the one ending with execution `last_id`.
pub fn encode(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}{last_id}"))
}

/// The execution id a cursor from [`encode`] holds.
pub fn decode(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(VERSION).map(str::to_string))
        .filter(|id| uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == *id))
        .ok_or_else(|| {
            let shown: String = cursor.chars().take(64).collect();
            ApiError::BadRequest(format!(
                "cursor {shown:?} is not one this server issued; pass next_cursor from the \
                 previous page unchanged, or leave cursor out for the first page"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_holds_the_last_id_and_reads_back() {
        let id = uuid::Uuid::now_v7().to_string();
        let cursor = encode(&id);
        assert!(!cursor.contains(&id), "opaque: {cursor}");
        assert_eq!(decode(&cursor).unwrap(), id);
    }

    #[test]
    fn a_cursor_the_server_did_not_issue_is_refused() {
        let id = uuid::Uuid::now_v7().to_string();
        for bad in [
            String::new(),
            "garbage".into(),
            id.clone(),
            URL_SAFE_NO_PAD.encode(format!("v2:{id}")),
            URL_SAFE_NO_PAD.encode("v1:not-an-id"),
            URL_SAFE_NO_PAD.encode(format!("v1:{}", id.to_uppercase())),
            format!("{}=", encode(&id)),
        ] {
            let err = decode(&bad).unwrap_err();
            assert!(
                matches!(&err, ApiError::BadRequest(m) if m.contains("not one this server issued")),
                "{bad:?}: {err:?}"
            );
        }
    }
}
