//! Datasets: a flow's `dataset: {from: "steps.NAME.outputs.ITEMS", schema}`.
//! When an execution of the task succeeds, the array of objects that
//! `from` names becomes rows of the task's dataset, each tagged with the
//! execution; a scheduled task thus builds a history of rows.
//!
//! The planner takes the rows when it ends the flow (so an array that is
//! not one, or rows that fail the schema, fail the execution with
//! `invalid_result` before anything is stored); the store appends them in
//! the same transaction.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most rows one execution may add.
pub const MAX_ROWS: usize = 100_000;

/// A task's dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// `steps.NAME.outputs.OUTPUT`: an output holding an array of objects.
    #[schema(example = "steps.count.outputs.top")]
    pub from: String,
    /// A JSON Schema each row must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
}

impl DatasetSpec {
    /// The step and output `from` names.
    pub fn source(&self) -> Option<(&str, &str)> {
        let rest = self.from.trim().strip_prefix("steps.")?;
        let (step, output) = rest.split_once(".outputs.")?;
        (!step.is_empty() && !output.is_empty() && !output.contains('.')).then_some((step, output))
    }

    /// Every problem with the dataset of a flow whose steps are `steps`.
    pub fn problems(&self, steps: &[&str]) -> Vec<String> {
        let mut p = Vec::new();
        match self.source() {
            None => p.push(format!(
                "dataset.from {:?} must be steps.NAME.outputs.OUTPUT",
                self.from
            )),
            Some((step, _)) if !steps.contains(&step) => {
                p.push(format!("dataset.from names no step {step:?}"))
            }
            Some(_) => {}
        }
        if let Some(schema) = &self.schema {
            p.extend(super::schema::problem("dataset.schema", schema));
        }
        p
    }

    /// The row fields the schema declares (its `properties`, in order).
    pub fn columns(&self) -> Option<Vec<String>> {
        let properties = self.schema.as_ref()?.get("properties")?.as_object()?;
        Some(properties.keys().cloned().collect())
    }

    /// The rows of `value` (what `from` named), or why it cannot be
    /// ingested.
    pub fn rows(&self, value: Option<&Value>) -> Result<Vec<Map<String, Value>>, String> {
        let Some(value) = value else {
            return Err(format!("dataset: {} is not there", self.from));
        };
        let Value::Array(items) = value else {
            return Err(format!("dataset: {} is not an array", self.from));
        };
        if items.len() > MAX_ROWS {
            return Err(format!(
                "dataset: {} has {} rows, over {MAX_ROWS}",
                self.from,
                items.len()
            ));
        }
        let mut rows = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(row) = item else {
                return Err(format!(
                    "dataset: row {i} of {} is not an object",
                    self.from
                ));
            };
            if let Some(schema) = &self.schema {
                let problems = super::schema::violations(schema, item);
                if !problems.is_empty() {
                    return Err(format!(
                        "dataset: row {i} does not match dataset.schema: {}",
                        problems.join("; ")
                    ));
                }
            }
            rows.push(row.clone());
        }
        Ok(rows)
    }
}

/// One stored row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DatasetRow {
    /// Its place in the task's dataset (increasing).
    pub id: i64,
    pub execution_id: String,
    /// Its index in the execution's array.
    pub index: u32,
    pub created_at: String,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(from: &str, schema: Option<Value>) -> DatasetSpec {
        DatasetSpec {
            from: from.into(),
            schema,
        }
    }

    #[test]
    fn from_names_a_step_output() {
        assert_eq!(
            spec("steps.count.outputs.top", None).source(),
            Some(("count", "top"))
        );
        for bad in [
            "count.top",
            "steps.count.top",
            "steps..outputs.x",
            "steps.a.outputs.x.y",
        ] {
            assert!(spec(bad, None).source().is_none(), "{bad}");
        }
        assert!(spec("steps.nope.outputs.x", None).problems(&["a"])[0].contains("no step"));
        assert!(spec("steps.a.outputs.x", None).problems(&["a"]).is_empty());
    }

    #[test]
    fn rows_are_objects_that_match_the_schema() {
        let s = spec(
            "steps.a.outputs.x",
            Some(json!({"type": "object", "required": ["word"]})),
        );
        let rows = s
            .rows(Some(&json!([{"word": "a"}, {"word": "b", "n": 1}])))
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert!(s.rows(None).unwrap_err().contains("not there"));
        assert!(
            s.rows(Some(&json!({"word": "a"})))
                .unwrap_err()
                .contains("not an array")
        );
        assert!(s.rows(Some(&json!([1]))).unwrap_err().contains("row 0"));
        let e = s.rows(Some(&json!([{"word": "a"}, {"n": 2}]))).unwrap_err();
        assert!(e.contains("row 1"), "{e}");
    }
}
