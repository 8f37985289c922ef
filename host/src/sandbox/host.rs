//! `ward:action/host`: the generated `Host` trait, implemented once over the
//! capabilities in `sandbox::capabilities`.
//!
//! Every refusal is returned to the guest as `Err(reason)`, written to the
//! attempt's log as a host warning, and traced; nothing here traps.
//!
//! Each call is a debug span on the target `ward::span::host`: a child of
//! the attempt's span in the execution's trace when traces are exported
//! (`crate::traces`), disabled and free otherwise; the first
//! `MAX_HOST_SPANS` calls of an attempt only. Spans record sizes, never the
//! guest's strings.

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

/// The span of one host call, while the attempt's budget lasts.
macro_rules! host_span {
    ($state:expr, $name:literal $(, $field:ident = $value:expr)*) => {
        if $state.host_spans > 0 {
            $state.host_spans -= 1;
            tracing::debug_span!(target: "ward::span::host", $name $(, $field = $value)*)
        } else {
            tracing::Span::none()
        }
    };
}

impl types::Host for AttemptState {}

impl Host for AttemptState {
    fn log(&mut self, level: Level, message: String) {
        let _span = host_span!(self, "host.log", bytes = message.len()).entered();
        self.logs.push(level.into(), LogSource::Host, message);
    }

    fn set_output(&mut self, name: String, value: String) -> Result<(), String> {
        let _span = host_span!(self, "host.set-output", bytes = value.len()).entered();
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
        let _span = host_span!(self, "host.counter").entered();
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
        let _span = host_span!(self, "host.duration").entered();
        // Once per attempt is enough: a loop over a bad series would
        // otherwise fill the log.
        if let Err(e) = self.metrics.duration(&name, nanos, tags)
            && self.metrics.dropped() == 1
        {
            refused(&self.logs, "duration", &e);
        }
    }

    fn put_media(
        &mut self,
        name: String,
        content_type: String,
        data: Vec<u8>,
    ) -> Result<MediaRef, String> {
        let _span = host_span!(self, "host.put-media", bytes = data.len()).entered();
        self.media
            .put(&name, &content_type, &data)
            .map(|info| MediaRef {
                id: info.id,
                url: info.url,
            })
            .inspect_err(|e| refused(&self.logs, "put-media", e))
    }

    async fn checkpoint(&mut self, state: String) -> Result<(), String> {
        use tracing::Instrument;
        let span = host_span!(self, "host.checkpoint", bytes = state.len());
        async move {
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
        .instrument(span)
        .await
    }

    fn last_checkpoint(&mut self) -> Option<String> {
        let _span = host_span!(self, "host.last-checkpoint").entered();
        self.checkpoints.last()
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.get-variable",
        skip_all
    )]
    fn get_variable(&mut self, name: String) -> Option<String> {
        let _span = host_span!(self, "host.get-variable").entered();
        self.variables.get(&name).cloned()
    }

    #[tracing::instrument(
        target = "ward::span::host",
        level = "debug",
        name = "host.warn",
        skip_all
    )]
    fn warn(&mut self, message: String) {
        let _span = host_span!(self, "host.warn").entered();
        self.warnings.push(&message);
    }
}
