//! Logs: `host.log` plus the guest's stdout and stderr, one quota for all.
//!
//! Owns the attempt's log lines, the capture streams handed to WASI as
//! stdout/stderr, and the log quota. Past the quota, lines are dropped and
//! counted and one truncation marker is kept; writing never fails or traps
//! (a full `MemoryOutputPipe` reports "closed" and a Rust guest's `println!`
//! then panics, so the capture stream always accepts what it is given).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::model::report::{LogLevel, LogLine, LogSource};
use crate::sandbox::limits::bytes_display;

/// Receives each log line as it is written, for live following.
pub trait LogObserver: Send + Sync {
    fn line(&self, line: &LogLine);
}

/// A partial stdout/stderr line longer than this is cut into a line of its own.
const MAX_PARTIAL_LINE: usize = 64 * 1024;
/// How much of stderr is kept for a trap's message, whatever the quota.
const STDERR_TAIL_BYTES: usize = 4 * 1024;

/// The attempt's logs; cheap to clone, shared by the host calls and the
/// stdout/stderr streams.
#[derive(Clone)]
pub struct Logs {
    inner: Arc<Mutex<LogState>>,
}

struct LogState {
    lines: Vec<LogLine>,
    used: u64,
    quota: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
    marker: Option<usize>,
    partial: [Vec<u8>; 2],
    stderr_tail: VecDeque<u8>,
    observer: Option<Arc<dyn LogObserver>>,
    redact: super::super::redact::Redactor,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

impl Logs {
    pub fn new(quota_bytes: u64, observer: Option<Arc<dyn LogObserver>>) -> Self {
        Logs {
            inner: Arc::new(Mutex::new(LogState {
                lines: Vec::new(),
                used: 0,
                quota: quota_bytes,
                dropped_lines: 0,
                dropped_bytes: 0,
                marker: None,
                partial: [Vec::new(), Vec::new()],
                stderr_tail: VecDeque::new(),
                observer,
                redact: Default::default(),
            })),
        }
    }

    /// Lines are written with these values replaced (see `sandbox::redact`).
    pub fn redacting(self, redact: super::super::redact::Redactor) -> Self {
        self.lock().redact = redact;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        // A poisoned lock only means another thread panicked mid-push; the
        // lines are still consistent enough to report.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a line from `host.log` or from the host itself.
    pub fn push(&self, level: LogLevel, source: LogSource, message: String) {
        self.lock().push(level, source, message);
    }

    /// A stream for WASI stdout or stderr.
    pub fn stream(&self, source: LogSource) -> CaptureStream {
        CaptureStream {
            logs: self.clone(),
            source,
        }
    }

    fn write_stdio(&self, source: LogSource, bytes: &[u8]) {
        let mut st = self.lock();
        let idx = usize::from(source == LogSource::Stderr);
        if source == LogSource::Stderr {
            st.stderr_tail.extend(bytes.iter().copied());
            let excess = st.stderr_tail.len().saturating_sub(STDERR_TAIL_BYTES);
            st.stderr_tail.drain(..excess);
        }
        let level = if source == LogSource::Stderr {
            LogLevel::Warn
        } else {
            LogLevel::Info
        };
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut st.partial[idx]);
            line.extend_from_slice(&rest[..pos]);
            rest = &rest[pos + 1..];
            st.push_bytes(level, source, &line);
        }
        st.partial[idx].extend_from_slice(rest);
        if st.partial[idx].len() >= MAX_PARTIAL_LINE {
            let line = std::mem::take(&mut st.partial[idx]);
            st.push_bytes(level, source, &line);
        }
    }

    /// Flushes unterminated stdout/stderr lines and returns all lines, with
    /// the truncation marker (if any) updated to say how much was dropped.
    pub fn finish(&self) -> Vec<LogLine> {
        let mut st = self.lock();
        for (idx, source, level) in [
            (0, LogSource::Stdout, LogLevel::Info),
            (1, LogSource::Stderr, LogLevel::Warn),
        ] {
            let line = std::mem::take(&mut st.partial[idx]);
            if !line.is_empty() {
                st.push_bytes(level, source, &line);
            }
        }
        if let Some(i) = st.marker {
            let msg = format!(
                "log quota of {} reached: {} more lines ({}) were dropped",
                bytes_display(st.quota),
                st.dropped_lines,
                bytes_display(st.dropped_bytes)
            );
            st.lines[i].message = msg;
        }
        std::mem::take(&mut st.lines)
    }

    /// The last few KiB of stderr, for the message of a trap (a panic
    /// message is printed there).
    pub fn stderr_tail(&self) -> String {
        let st = self.lock();
        let bytes: Vec<u8> = st.stderr_tail.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        text.trim_end().to_string()
    }

    /// Lines dropped over the quota so far.
    pub fn dropped_lines(&self) -> u64 {
        self.lock().dropped_lines
    }
}

impl LogState {
    fn push_bytes(&mut self, level: LogLevel, source: LogSource, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text).to_string();
        self.push(level, source, text);
    }

    fn push(&mut self, level: LogLevel, source: LogSource, message: String) {
        let message = self.redact.text(message);
        let size = message.len() as u64;
        if self.used.saturating_add(size) > self.quota {
            self.dropped_lines += 1;
            self.dropped_bytes += size;
            if self.marker.is_none() {
                self.marker = Some(self.lines.len());
                let marker = LogLine {
                    ts: now_rfc3339(),
                    level: LogLevel::Warn,
                    source: LogSource::Host,
                    message: format!(
                        "log quota of {} reached: further lines are dropped",
                        bytes_display(self.quota)
                    ),
                };
                if let Some(obs) = &self.observer {
                    obs.line(&marker);
                }
                self.lines.push(marker);
                tracing::warn!(quota = self.quota, "guest went over its log quota");
            }
            return;
        }
        self.used += size;
        let line = LogLine {
            ts: now_rfc3339(),
            level,
            source,
            message,
        };
        if let Some(obs) = &self.observer {
            obs.line(&line);
        }
        self.lines.push(line);
    }
}

/// WASI stdout/stderr for one attempt: splits what the guest writes into
/// log lines. Always accepts every byte, so a flood never fails the guest.
#[derive(Clone)]
pub struct CaptureStream {
    logs: Logs,
    source: LogSource,
}

/// What a guest may write in one `write` call; it is told this by
/// `check-write` and never blocks.
const WRITE_BUDGET: usize = 64 * 1024;

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.logs.write_stdio(self.source, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.logs.write_stdio(self.source, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_is_split_into_lines_and_partial_lines_flushed() {
        let logs = Logs::new(1024, None);
        logs.write_stdio(LogSource::Stdout, b"one\ntw");
        logs.write_stdio(LogSource::Stdout, b"o\nthree");
        logs.write_stdio(LogSource::Stderr, b"oops\n");
        let lines = logs.finish();
        let msgs: Vec<_> = lines
            .iter()
            .map(|l| (l.source, l.message.as_str()))
            .collect();
        assert_eq!(
            msgs,
            vec![
                (LogSource::Stdout, "one"),
                (LogSource::Stdout, "two"),
                (LogSource::Stderr, "oops"),
                (LogSource::Stdout, "three"),
            ]
        );
        assert_eq!(logs.stderr_tail(), "oops");
    }

    #[test]
    fn over_quota_lines_are_dropped_counted_and_marked_once() {
        let logs = Logs::new(10, None);
        logs.push(LogLevel::Info, LogSource::Host, "12345".into());
        logs.push(LogLevel::Info, LogSource::Host, "67890".into());
        for _ in 0..5 {
            logs.push(LogLevel::Info, LogSource::Host, "abc".into());
        }
        let lines = logs.finish();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].source, LogSource::Host);
        assert!(
            lines[2].message.contains("5 more lines"),
            "{}",
            lines[2].message
        );
    }
}
