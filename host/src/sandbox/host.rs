//! `ward:action/host`: the generated `Host` trait, implemented once over the
//! capabilities in `sandbox::capabilities`.
//!
//! Every refusal is returned to the guest as `Err(reason)`, written to the
//! attempt's log as a host warning, and traced; nothing here traps.
//!
//! Each call is a debug span on the target `ward::span::host`: a child of
//! the attempt's span in the execution's trace when traces are exported
//! (`crate::traces`), disabled and free otherwise. Spans record sizes, never
//! the guest's strings.

use super::bindings::{Host, Level, MediaRef, ward::action::types};
use super::capabilities::logs::Logs;
use super::report::{LogLevel, LogSource};
use super::state::AttemptState;

impl From<Level> for LogLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// Logs a refused host call for the attempt's reader and for the operator.
fn refused(logs: &Logs, call: &str, reason: &str) {
    tracing::warn!(call, reason, "host call refused");
    logs.push(
        LogLevel::Warn,
        LogSource::Host,
        format!("{call} refused: {reason}"),
    );
}

impl types::Host for AttemptState {}

impl Host for AttemptState {
    #[tracing::instrument(target = "ward::span::host", level = "debug", name = "host.log", skip_all, fields(bytes = message.len()))]
    fn log(&mut self, level: Level, message: String) {
        self.logs.push(level.into(), LogSource::Host, message);
    }

    #[tracing::instrument(target = "ward::span::host", level = "debug", name = "host.set-output", skip_all, fields(bytes = value.len()))]
    fn set_output(&mut self, name: String, value: String) -> Result<(), String> {
        self.outputs
            .set(&name, &value)
            .inspect_err(|e| refused(&self.logs, "set-output", e))
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.counter",
        skip_all
    )]
    fn counter(&mut self, name: String, delta: i64, tags: Vec<(String, String)>) {
        // Once per attempt is enough: a loop over a bad series would
        // otherwise fill the log.
        if let Err(e) = self.metrics.counter(&name, delta, tags)
            && self.metrics.dropped() == 1
        {
            refused(&self.logs, "counter", &e);
        }
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.duration",
        skip_all
    )]
    fn duration(&mut self, name: String, nanos: u64, tags: Vec<(String, String)>) {
        // Once per attempt is enough: a loop over a bad series would
        // otherwise fill the log.
        if let Err(e) = self.metrics.duration(&name, nanos, tags)
            && self.metrics.dropped() == 1
        {
            refused(&self.logs, "duration", &e);
        }
    }

    #[tracing::instrument(target = "ward::span::host", level = "debug", name = "host.put-media", skip_all, fields(bytes = data.len()))]
    fn put_media(
        &mut self,
        name: String,
        content_type: String,
        data: Vec<u8>,
    ) -> Result<MediaRef, String> {
        self.media
            .put(&name, &content_type, &data)
            .map(|info| MediaRef {
                id: info.id,
                url: info.url,
            })
            .inspect_err(|e| refused(&self.logs, "put-media", e))
    }

    #[tracing::instrument(target = "ward::span::host", level = "debug", name = "host.checkpoint", skip_all, fields(bytes = state.len()))]
    async fn checkpoint(&mut self, state: String) -> Result<(), String> {
        let (value, sink) = self
            .checkpoints
            .prepare(&state)
            .inspect_err(|e| refused(&self.logs, "checkpoint", e))?;
        if let Some(sink) = sink {
            sink.save(state.clone())
                .await
                .inspect_err(|e| refused(&self.logs, "checkpoint", e))?;
        }
        self.checkpoints.commit(state, value);
        Ok(())
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.last-checkpoint",
        skip_all
    )]
    fn last_checkpoint(&mut self) -> Option<String> {
        self.checkpoints.last()
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.get-variable",
        skip_all
    )]
    fn get_variable(&mut self, name: String) -> Option<String> {
        self.variables.get(&name).cloned()
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.warn",
        skip_all
    )]
    fn warn(&mut self, message: String) {
        self.warnings.push(&message);
    }
}
