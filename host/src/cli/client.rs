//! The client side of Ward's HTTP API (`docs/api.md`) that the `plugin`,
//! `task`, `execution` and `worker` commands share: a small `reqwest`
//! client with one method per endpoint they use, a server-sent-events
//! reader, and the output helpers they print with (tables, JSON, times).
//!
//! Responses stay `serde_json::Value`: `--json` prints them as the server
//! sent them, and the tables read the few fields they show leniently.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

use super::exit;

/// Where the client commands look for a server unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8480";

/// Ceiling for one ordinary request; streams (`--follow`) have none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the client and a tokio runtime, runs one command on it and turns
/// its outcome into an exit code: errors go to stderr as `error: …`, exit 2.
pub fn run<F, Fut>(server: &str, command: F) -> u8
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<u8>>,
{
    let client = match Client::new(server) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(command(client)) {
        Ok(code) => code,
        Err(e) => fail(format!("{e:#}")),
    }
}

fn fail(message: impl fmt::Display) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

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
            .filter(Value::is_object);
        let (title, detail, problems) = match doc {
            Some(doc) => {
                let text = |k: &str| {
                    doc.get(k)
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                };
                let problems = doc
                    .get("problems")
                    .and_then(Value::as_array)
                    .map(|ps| {
                        ps.iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                (text("title"), text("detail"), problems)
            }
            None => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                let detail =
                    (!text.is_empty()).then(|| crate::sandbox::limits::shorten(&text, 500));
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

/// The operator controls on an execution: `POST /executions/{id}/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Cancel,
    Pause,
    Resume,
    Restart,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Cancel => "cancel",
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Restart => "restart",
        }
    }
}

/// Filters of `GET /executions`.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    /// A state name or alias, or several comma-separated.
    pub status: Option<String>,
    pub task_id: Option<String>,
    pub limit: Option<u32>,
}

/// A client of one Ward server's `/api/v1`.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The server as given, for messages.
    server: String,
}

impl Client {
    /// A client of the server at `server` (`http://HOST:PORT`, maybe with a
    /// path prefix). Only `http` is supported: this build has no TLS.
    pub fn new(server: &str) -> Result<Client, String> {
        let base =
            Url::parse(server).map_err(|e| format!("--server {server:?} is not a URL: {e}"))?;
        if base.scheme() != "http" {
            return Err(format!(
                "--server {server:?}: only http:// URLs are supported"
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Client {
            http,
            base,
            server: server.trim_end_matches('/').to_string(),
        })
    }

    /// `<base>/api/v1/<segments…>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("http URLs have a path")
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        url
    }

    fn with_query(mut url: Url, pairs: &[(&str, Option<String>)]) -> Url {
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                if let Some(v) = v {
                    q.append_pair(k, v);
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Sends the request; a 4xx/5xx answer becomes `ClientError::Api`.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(ClientError::from_problem(status.as_u16(), &body));
        }
        Ok(response)
    }

    /// Sends the request and reads its JSON answer (`null` for no body).
    async fn json(&self, request: RequestBuilder) -> Result<(StatusCode, Value), ClientError> {
        let response = self.send(request.timeout(REQUEST_TIMEOUT)).await?;
        let status = response.status();
        let url = response.url().to_string();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        if body.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected {
            url,
            reason: format!("not JSON: {e}"),
        })?;
        Ok((status, value))
    }

    async fn get(&self, url: Url) -> Result<Value, ClientError> {
        Ok(self.json(self.http.get(url)).await?.1)
    }

    fn transport(&self, e: reqwest::Error) -> ClientError {
        let reason = root_cause(&e);
        if e.is_connect() {
            ClientError::Unreachable {
                server: self.server.clone(),
                reason,
            }
        } else {
            let url = e.url().map_or_else(|| self.server.clone(), Url::to_string);
            let reason = if e.is_timeout() {
                "timed out".to_string()
            } else {
                reason
            };
            ClientError::Transport { url, reason }
        }
    }

    /// `POST /plugins?name=&version=`: the plugin, and whether it is new
    /// (201) rather than the same bytes pushed before (200).
    pub async fn push_plugin(
        &self,
        component: Vec<u8>,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Value, bool), ClientError> {
        let url = Self::with_query(
            self.url(&["plugins"]),
            &[
                ("name", Some(name.to_string())),
                ("version", version.map(String::from)),
            ],
        );
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/wasm")
            .body(component);
        let (status, plugin) = self.json(request).await?;
        Ok((plugin, status == StatusCode::CREATED))
    }

    /// `GET /plugins` → `{"plugins": […]}`.
    pub async fn plugins(&self) -> Result<Value, ClientError> {
        self.get(self.url(&["plugins"])).await
    }

    /// `POST /tasks` with a TaskSpec → the Task.
    pub async fn create_task(&self, spec: &Value) -> Result<Value, ClientError> {
        let request = self.http.post(self.url(&["tasks"])).json(spec);
        Ok(self.json(request).await?.1)
    }

    /// `GET /tasks` → `{"tasks": […]}`.
    pub async fn tasks(&self) -> Result<Value, ClientError> {
        self.get(self.url(&["tasks"])).await
    }

    /// `GET /tasks/{id}` (an id or a name) → the Task.
    pub async fn task(&self, id: &str) -> Result<Value, ClientError> {
        self.get(self.url(&["tasks", id])).await
    }

    /// `POST /tasks/{id}/executions` with trigger `cli`; without an input
    /// the task's own applies.
    pub async fn start_execution(
        &self,
        task: &str,
        input: Option<Value>,
    ) -> Result<Value, ClientError> {
        let mut body = serde_json::json!({ "trigger": "cli" });
        if let Some(input) = input {
            body["input"] = input;
        }
        let request = self
            .http
            .post(self.url(&["tasks", task, "executions"]))
            .json(&body);
        Ok(self.json(request).await?.1)
    }

    /// `GET /executions?…` → `{"executions": […], "next_cursor": …}`.
    pub async fn executions(&self, filter: &ExecutionFilter) -> Result<Value, ClientError> {
        let url = Self::with_query(
            self.url(&["executions"]),
            &[
                ("status", filter.status.clone()),
                ("task_id", filter.task_id.clone()),
                ("limit", filter.limit.map(|l| l.to_string())),
            ],
        );
        self.get(url).await
    }

    /// `GET /executions/{id}` → the Execution with its task runs.
    pub async fn execution(&self, id: &str) -> Result<Value, ClientError> {
        self.get(self.url(&["executions", id])).await
    }

    /// `GET /executions/{id}/logs?after=` → `{"logs": […]}`.
    pub async fn logs(&self, id: &str, after: Option<i64>) -> Result<Value, ClientError> {
        let url = Self::with_query(
            self.url(&["executions", id, "logs"]),
            &[("after", after.map(|a| a.to_string()))],
        );
        self.get(url).await
    }

    /// `GET /executions/{id}/logs?follow=true`: the server-sent events.
    pub async fn follow_logs(&self, id: &str) -> Result<EventStream, ClientError> {
        let url = Self::with_query(
            self.url(&["executions", id, "logs"]),
            &[("follow", Some("true".into()))],
        );
        let request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.send(request).await?;
        Ok(EventStream {
            response,
            server: self.server.clone(),
            buffer: Vec::new(),
            parser: SseParser::default(),
            done: false,
        })
    }

    /// `POST /executions/{id}/cancel|pause|resume|restart` → the Execution.
    pub async fn control(&self, id: &str, action: Control) -> Result<Value, ClientError> {
        let request = self
            .http
            .post(self.url(&["executions", id, action.as_str()]));
        Ok(self.json(request).await?.1)
    }

    /// `GET /workers` → `{"workers": […]}`.
    pub async fn workers(&self) -> Result<Value, ClientError> {
        self.get(self.url(&["workers"])).await
    }
}

/// The innermost cause's text ("Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when there is none.
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Turns the lines of a `text/event-stream` into events: `event:` and
/// `data:` fields accumulate until a blank line; `:` lines are comments
/// (keep-alives); other fields (`id:`, `retry:`) are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds one line (without its `\n`); returns the event a blank line ends.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.finish();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => self.data.push(value.to_string()),
            _ => {}
        }
        None
    }

    /// The event pending at the end of the stream, if any.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.event.is_empty() && self.data.is_empty() {
            return None;
        }
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data).join("\n");
        Some(SseEvent {
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data,
        })
    }
}

/// A server-sent-event stream being read.
#[derive(Debug)]
pub struct EventStream {
    response: Response,
    server: String,
    /// Bytes of the line not yet ended.
    buffer: Vec<u8>,
    parser: SseParser,
    done: bool,
}

impl EventStream {
    /// The next event; `None` once the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                if let Some(event) = self.parser.line(&line) {
                    return Ok(Some(event));
                }
            }
            if self.done {
                let rest = std::mem::take(&mut self.buffer);
                if !rest.is_empty()
                    && let Some(event) = self.parser.line(&String::from_utf8_lossy(&rest))
                {
                    return Ok(Some(event));
                }
                return Ok(self.parser.finish());
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => self.done = true,
                Err(e) => {
                    return Err(ClientError::Transport {
                        url: self.response.url().to_string(),
                        reason: format!("{} ({})", root_cause(&e), self.server),
                    });
                }
            }
        }
    }
}

// ---- output helpers ----

/// Writes to stdout now. When the reader has gone (`ward … | head`), the
/// process ends quietly with exit 0 rather than panicking.
pub fn emit(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(exit::OK.into());
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::client::emit(&format!($($arg)*))
    };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::client::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Prints a value as pretty JSON.
pub fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// Aligned columns separated by two spaces, a header line first; the last
/// column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    render_row(&mut out, &widths, headers);
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        render_row(&mut out, &widths, &cells);
    }
    out
}

fn render_row(out: &mut String, widths: &[usize], cells: &[&str]) {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(cell);
        if i + 1 < widths.len() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// A string field, or `-`.
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The elements of an array field (e.g. `executions`), or none.
pub fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Any field as short text: strings bare, `null`/absent as `-`, others as JSON.
pub fn field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC as sent).
pub fn short_time(ts: &str) -> String {
    match (ts.get(..10), ts.get(10..11), ts.get(11..19)) {
        (Some(date), Some("T"), Some(time)) => format!("{date} {time}"),
        _ => ts.to_string(),
    }
}

/// An RFC 3339 time's time of day to the millisecond (`HH:MM:SS.mmm`).
pub fn time_of_day(ts: &str) -> String {
    let Some(rest) = ts.get(11..) else {
        return ts.to_string();
    };
    let end = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
    let time = &rest[..end];
    match time.split_once('.') {
        Some((hms, frac)) => format!("{hms}.{}", frac.get(..3).unwrap_or(frac)),
        None => time.to_string(),
    }
}

/// Milliseconds as `850ms`, `12.3s`, `4m05s` or `2h03m`.
pub fn duration_display(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "-".into();
    }
    if ms < 1_000.0 {
        return format!("{ms:.0}ms");
    }
    if ms < 60_000.0 {
        return format!("{:.1}s", ms / 1_000.0);
    }
    let secs = (ms / 1_000.0) as u64;
    if secs < 3_600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m", secs / 3_600, secs % 3_600 / 60)
    }
}

/// A plugin digest shortened for a table: `sha256:` and 12 hex digits.
pub fn short_digest(id: &str) -> String {
    match id.strip_prefix("sha256:") {
        Some(hex) => format!("sha256:{}", hex.get(..12).unwrap_or(hex)),
        None => id.to_string(),
    }
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

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop a listener to find a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = format!("http://127.0.0.1:{port}");
        let client = Client::new(&server).unwrap();
        match client.workers().await {
            Err(ClientError::Unreachable { server: s, .. }) => assert_eq!(s, server),
            other => panic!("expected unreachable, got {other:?}"),
        }
    }

    #[test]
    fn urls_are_built_under_api_v1_with_encoded_segments() {
        let c = Client::new("http://localhost:8480/").unwrap();
        assert_eq!(
            c.url(&["tasks", "greet", "executions"]).as_str(),
            "http://localhost:8480/api/v1/tasks/greet/executions"
        );
        let c = Client::new("http://h:1/ward").unwrap();
        assert_eq!(
            c.url(&["tasks", "a b/c"]).as_str(),
            "http://h:1/ward/api/v1/tasks/a%20b%2Fc"
        );
        let url = Client::with_query(
            c.url(&["executions"]),
            &[
                ("status", Some("running".into())),
                ("task_id", None),
                ("limit", Some("5".into())),
            ],
        );
        assert_eq!(
            url.as_str(),
            "http://h:1/ward/api/v1/executions?status=running&limit=5"
        );
        let url = Client::with_query(c.url(&["executions"]), &[("after", None)]);
        assert_eq!(url.as_str(), "http://h:1/ward/api/v1/executions");
        assert!(Client::new("https://h").unwrap_err().contains("http://"));
        assert!(Client::new("nope").is_err());
    }

    #[test]
    fn sse_lines_become_events() {
        let mut p = SseParser::default();
        let mut events = Vec::new();
        let stream = ": keep-alive\n\nevent: log\ndata: {\"id\":1}\n\nevent:log\r\ndata:{\"id\":2}\r\n\r\n\
                      data: a\ndata: b\nid: 7\n\nevent: end\ndata: {\"state\":\"SUCCESS\"}\n\n";
        for line in stream.split('\n') {
            events.extend(p.line(line));
        }
        let ev = |e: &str, d: &str| SseEvent {
            event: e.into(),
            data: d.into(),
        };
        assert_eq!(
            events,
            vec![
                ev("log", r#"{"id":1}"#),
                ev("log", r#"{"id":2}"#),
                ev("message", "a\nb"),
                ev("end", r#"{"state":"SUCCESS"}"#),
            ]
        );
        assert_eq!(p.finish(), None);
        p.line("event: end");
        assert_eq!(p.finish(), Some(ev("end", "")));
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE", "TASK"],
            &[
                vec!["a".into(), "SUCCESS".into(), "greet".into()],
                vec!["bbbb".into(), "FAILED".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "ID    STATE    TASK\na     SUCCESS  greet\nbbbb  FAILED   x\n"
        );
        assert_eq!(table(&["ID", "NAME"], &[]), "ID  NAME\n");
        // Widths count characters, not bytes.
        let t = table(&["A", "B"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(t, "A  B\né  1\n");
    }

    #[test]
    fn times_and_durations_are_short() {
        assert_eq!(
            short_time("2026-03-01T12:00:03.123456Z"),
            "2026-03-01 12:00:03"
        );
        assert_eq!(short_time("soon"), "soon");
        assert_eq!(time_of_day("2026-03-01T12:00:03.123456Z"), "12:00:03.123");
        assert_eq!(time_of_day("2026-03-01T12:00:03Z"), "12:00:03");
        assert_eq!(duration_display(12.4), "12ms");
        assert_eq!(duration_display(1_234.0), "1.2s");
        assert_eq!(duration_display(245_000.0), "4m05s");
        assert_eq!(duration_display(7_380_000.0), "2h03m");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }
}
