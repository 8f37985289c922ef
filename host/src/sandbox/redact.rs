//! Keeps secret values out of what an attempt reports: each occurrence in a
//! log line, an output, the result, the error or a warning becomes
//! `[secret]`.
//!
//! Owns the replacement only; which values are secret is the caller's
//! (`AttemptSpec::secrets`).

use std::sync::Arc;

use serde_json::Value;

/// What a secret value reads as once redacted.
pub const REDACTED: &str = "[secret]";

/// The secret values to replace; empty values are ignored.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<[String]>,
}

impl Redactor {
    pub fn new(secrets: &[String]) -> Redactor {
        let mut secrets: Vec<String> = secrets.iter().filter(|s| !s.is_empty()).cloned().collect();
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: secrets.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn text(&self, mut text: String) -> String {
        for s in self.secrets.iter() {
            if text.contains(s.as_str()) {
                text = text.replace(s.as_str(), REDACTED);
            }
        }
        text
    }

    /// Every string in `value`, object keys included.
    pub fn json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.text(std::mem::take(s)),
            Value::Array(items) => items.iter_mut().for_each(|v| self.json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.json(&mut v);
                    map.insert(self.text(k), v);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_occurrence_is_replaced_in_text_and_json() {
        let r = Redactor::new(&["hunter2".into(), "hunter22".into(), String::new()]);
        assert_eq!(
            r.text("pw=hunter22, again hunter2".into()),
            "pw=[secret], again [secret]"
        );
        let mut v = json!({"hunter2": ["x hunter2 y", 7, {"k": "hunter2"}], "fine": "ok"});
        r.json(&mut v);
        assert_eq!(
            v,
            json!({"[secret]": ["x [secret] y", 7, {"k": "[secret]"}], "fine": "ok"})
        );
        assert_eq!(Redactor::new(&[]).text("hunter2".into()), "hunter2");
    }
}
