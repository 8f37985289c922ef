//! Outputs: named JSON values an attempt sets with `host.set-output`.
//!
//! Owns the values and the output quotas (per value and in total). Every
//! value is parsed as JSON here, with serde_json's recursion limit guarding
//! against deeply nested input; the guest's text is never trusted.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::sandbox::limits::{Quotas, bytes_display, check_name};

pub struct Outputs {
    values: BTreeMap<String, (Value, u64)>,
    total: u64,
    max_each: u64,
    max_total: u64,
}

impl Outputs {
    pub fn new(quotas: &Quotas) -> Self {
        Outputs {
            values: BTreeMap::new(),
            total: 0,
            max_each: quotas.output_bytes,
            max_total: quotas.outputs_total_bytes,
        }
    }

    /// Sets `name` to the JSON `text`, replacing an earlier value.
    pub fn set(&mut self, name: &str, text: &str) -> Result<(), String> {
        check_name("output", name)?;
        let size = text.len() as u64;
        if size > self.max_each {
            return Err(format!(
                "output {name:?} is {}, over the {} per-output quota",
                bytes_display(size),
                bytes_display(self.max_each)
            ));
        }
        let replaced = self.values.get(name).map_or(0, |(_, s)| *s);
        let total = self.total - replaced + size;
        if total > self.max_total {
            return Err(format!(
                "output {name:?} would bring all outputs to {}, over the {} quota",
                bytes_display(total),
                bytes_display(self.max_total)
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("output {name:?} is not valid JSON: {e}"))?;
        self.values.insert(name.to_string(), (value, size));
        self.total = total;
        Ok(())
    }

    pub fn into_values(self) -> BTreeMap<String, Value> {
        self.values.into_iter().map(|(k, (v, _))| (k, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(each: u64, total: u64) -> Quotas {
        Quotas {
            output_bytes: each,
            outputs_total_bytes: total,
            ..Quotas::default()
        }
    }

    #[test]
    fn values_are_parsed_and_replaced() {
        let mut o = Outputs::new(&Quotas::default());
        o.set("rows", "3").unwrap();
        o.set("rows", r#"{"n":4}"#).unwrap();
        assert_eq!(o.into_values()["rows"]["n"], 4);
    }

    #[test]
    fn bad_names_and_non_json_are_refused() {
        let mut o = Outputs::new(&Quotas::default());
        assert!(o.set("a/b", "1").unwrap_err().contains("name"));
        assert!(o.set("x", "{nope").unwrap_err().contains("not valid JSON"));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(o.set("deep", &deep).is_err());
    }

    #[test]
    fn quotas_apply_per_value_and_in_total_counting_replacements() {
        let mut o = Outputs::new(&quotas(10, 15));
        assert!(
            o.set("big", "12345678901")
                .unwrap_err()
                .contains("per-output")
        );
        o.set("a", "1234567890").unwrap();
        assert!(o.set("b", "123456").unwrap_err().contains("all outputs"));
        o.set("a", "1").unwrap(); // replacing frees room
        o.set("b", "123456").unwrap();
    }
}
