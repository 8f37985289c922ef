//! Checkpoints: JSON state a task run keeps across its attempts.
//!
//! Owns the attempt's view of the task run's last checkpoint and the
//! checkpoint size quota. Durability belongs to whoever runs the attempt:
//! `host.checkpoint` returns only after the [`CheckpointSink`] has stored
//! the state (the service commits it to its store; `ward run` keeps it in
//! memory for the next local attempt).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use crate::sandbox::limits::bytes_display;

/// Stores a checkpoint durably before the guest is told it is saved.
pub trait CheckpointSink: Send + Sync {
    fn save(
        &self,
        state: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>>;
}

pub struct Checkpoints {
    last: Option<String>,
    written: Option<Value>,
    max_bytes: u64,
    sink: Option<Arc<dyn CheckpointSink>>,
}

impl Checkpoints {
    pub fn new(
        last: Option<String>,
        max_bytes: u64,
        sink: Option<Arc<dyn CheckpointSink>>,
    ) -> Self {
        Checkpoints {
            last,
            written: None,
            max_bytes,
            sink,
        }
    }

    /// Validates `state`; returns the parsed value and the sink to save it with.
    pub fn prepare(&self, state: &str) -> Result<(Value, Option<Arc<dyn CheckpointSink>>), String> {
        let size = state.len() as u64;
        if size > self.max_bytes {
            return Err(format!(
                "checkpoint is {}, over the {} quota",
                bytes_display(size),
                bytes_display(self.max_bytes)
            ));
        }
        let value = serde_json::from_str(state)
            .map_err(|e| format!("checkpoint is not valid JSON: {e}"))?;
        Ok((value, self.sink.clone()))
    }

    /// Records a checkpoint that the sink has stored.
    pub fn commit(&mut self, state: String, value: Value) {
        self.last = Some(state);
        self.written = Some(value);
    }

    /// The newest checkpoint: this attempt's, else the task run's last one.
    pub fn last(&self) -> Option<String> {
        self.last.clone()
    }

    /// What this attempt stored last, for the report.
    pub fn into_written(self) -> Option<Value> {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_validated_and_replace_the_previous_one() {
        let mut c = Checkpoints::new(Some(r#"{"step":1}"#.into()), 16, None);
        assert_eq!(c.last().as_deref(), Some(r#"{"step":1}"#));
        assert!(c.prepare("{oops").err().unwrap().contains("JSON"));
        assert!(
            c.prepare(&format!("\"{}\"", "x".repeat(20)))
                .err()
                .unwrap()
                .contains("quota")
        );
        let (v, _) = c.prepare(r#"{"step":2}"#).unwrap();
        c.commit(r#"{"step":2}"#.into(), v);
        assert_eq!(c.last().as_deref(), Some(r#"{"step":2}"#));
        assert_eq!(c.into_written().unwrap()["step"], 2);
    }
}
