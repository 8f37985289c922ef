//! JSON Schemas on a task's input (`input_schema`) and on what a step's
//! attempt produces (`outputs_schema`), checked by the `jsonschema` crate.
//!
//! A schema is compiled when its task is created or updated (a bad one is
//! a problem listed in the 422), and each check lists every violation with
//! the JSON pointer of the value at fault. Schemas cannot fetch anything:
//! the crate is built without remote or file resolution, so a `$ref`
//! outside the schema is refused at create time.

use serde_json::Value;

/// Most violations listed for one value: enough to fix it, bounded.
const MAX_VIOLATIONS: usize = 20;

/// Why `schema` is not a usable JSON Schema, if it is not.
pub fn problem(place: &str, schema: &Value) -> Option<String> {
    jsonschema::validator_for(schema)
        .err()
        .map(|e| format!("{place} is not a valid JSON Schema: {e}"))
}

/// Every way `value` fails `schema`, as `"<pointer>: <reason>"` (the
/// pointer is empty for the value itself). Empty when it passes.
pub fn violations(schema: &Value, value: &Value) -> Vec<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        // Checked at create time; a stored schema that no longer compiles
        // (an older build accepted it) fails closed.
        Err(e) => return vec![format!("the schema cannot be used: {e}")],
    };
    let mut out: Vec<String> = validator
        .iter_errors(value)
        .take(MAX_VIOLATIONS)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() { "/".into() } else { path };
            format!("{path}: {}", e.masked())
        })
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://"},
                "pages": {"type": "integer", "minimum": 1}
            },
            "additionalProperties": false
        })
    }

    #[test]
    fn a_valid_value_has_no_violations() {
        assert!(violations(&schema(), &json!({"url": "https://x.test", "pages": 2})).is_empty());
    }

    #[test]
    fn every_violation_is_listed_with_its_path() {
        let v = violations(
            &schema(),
            &json!({"url": "ftp://x", "pages": 0, "extra": true}),
        );
        let all = v.join("\n");
        assert!(all.contains("/url:"), "{all}");
        assert!(all.contains("/pages:"), "{all}");
        assert!(all.contains("extra"), "{all}");
        let missing = violations(&schema(), &json!({}));
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].starts_with("/: "), "{missing:?}");
        assert!(missing[0].contains("url"), "{missing:?}");
    }

    #[test]
    fn a_bad_schema_is_a_problem_and_remote_references_are_refused() {
        assert!(problem("input_schema", &schema()).is_none());
        assert!(problem("input_schema", &json!({"type": "nonsense"})).is_some());
        let remote = json!({"$ref": "http://127.0.0.1:9/schema.json"});
        assert!(problem("input_schema", &remote).is_some());
    }
}
