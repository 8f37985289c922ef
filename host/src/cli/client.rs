//! The HTTP client of Ward's API (`docs/api.md`) that the `plugin`,
//! `task`, `execution` and `worker` commands share: one method per endpoint
//! they use, each decoding the answer into the model's types
//! (`crate::model`) while keeping the JSON as sent, which `--json` prints.
//! Also runs one command on a runtime and turns its outcome into an exit
//! code.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ClientError, root_cause};
use super::exit;
use super::sse::EventStream;
use crate::model::execution::{Execution, Plugin, StoredLog};
use crate::model::task::Task;

/// Where the client commands look for a server unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8480";

/// Ceiling for one ordinary request; streams (`--follow`) have none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the client and a tokio runtime, runs one command on it and turns
/// its outcome into an exit code: errors go to stderr as `error: …`, exit 2.
pub fn run<F, Fut>(server: Option<String>, token: Option<String>, command: F) -> u8
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = anyhow::Result<u8>>,
{
    let settings = match super::token::ClientConfig::load() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let server = super::token::non_blank(server)
        .or_else(|| settings.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_string());
    let token = super::token::resolve(token, &settings, &server);
    let client = match Client::new(&server, token.as_deref()) {
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
    pub fn new(server: &str, token: Option<&str>) -> Result<Client, String> {
        let base =
            Url::parse(server).map_err(|e| format!("--server {server:?} is not a URL: {e}"))?;
        if base.scheme() != "http" {
            return Err(format!(
                "--server {server:?}: only http:// URLs are supported"
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token has characters a header cannot carry".to_string())?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
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

    /// Sends the request and decodes its JSON answer (`null` for no body).
    /// Requests time out after 2 minutes unless they set their own.
    async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Reply<T>), ClientError> {
        let (http, request) = request.build_split();
        let mut request = request.map_err(|e| self.transport(e))?;
        request.timeout_mut().get_or_insert(REQUEST_TIMEOUT);
        let response = self.send(RequestBuilder::from_parts(http, request)).await?;
        let status = response.status();
        let url = response.url().to_string();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        let reply =
            Reply::decode(&body).map_err(|reason| ClientError::Unexpected { url, reason })?;
        Ok((status, reply))
    }

    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<Reply<T>, ClientError> {
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
    ) -> Result<(Reply<Plugin>, bool), ClientError> {
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

    /// `GET /plugins`.
    pub async fn plugins(&self) -> Result<Reply<PluginList>, ClientError> {
        self.get(self.url(&["plugins"])).await
    }

    /// `POST /tasks` with a TaskSpec → the Task. The spec goes as read, so
    /// that the server names every problem with it.
    pub async fn create_task(&self, spec: &Value) -> Result<Reply<Task>, ClientError> {
        let request = self.http.post(self.url(&["tasks"])).json(spec);
        Ok(self.json(request).await?.1)
    }

    /// `GET /tasks`.
    pub async fn tasks(&self) -> Result<Reply<TaskList>, ClientError> {
        self.get(self.url(&["tasks"])).await
    }

    /// `GET /tasks/{id}` (an id or a name) → the Task.
    pub async fn task(&self, id: &str) -> Result<Reply<Task>, ClientError> {
        self.get(self.url(&["tasks", id])).await
    }

    /// `POST /tasks/{id}/executions` with trigger `cli`; without an input
    /// the task's own applies. With `wait`, the server answers once the
    /// execution has ended or the wait ran out (the state says which).
    pub async fn start_execution(
        &self,
        task: &str,
        input: Option<Value>,
        wait: Option<Duration>,
    ) -> Result<Reply<Execution>, ClientError> {
        let mut body = serde_json::json!({ "trigger": "cli" });
        if let Some(input) = input {
            body["input"] = input;
        }
        let url = Self::with_query(
            self.url(&["tasks", task, "executions"]),
            &[("wait", wait.map(|w| format!("{}ms", w.as_millis())))],
        );
        let request = self
            .http
            .post(url)
            .json(&body)
            .timeout(REQUEST_TIMEOUT + wait.unwrap_or_default());
        Ok(self.json(request).await?.1)
    }

    /// `GET /executions/{id}?wait=`: the execution once it has ended, or as
    /// it is when `wait` ran out.
    pub async fn wait_for_end(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<Reply<Execution>, ClientError> {
        let url = Self::with_query(
            self.url(&["executions", id]),
            &[("wait", Some(format!("{}ms", wait.as_millis())))],
        );
        let request = self.http.get(url).timeout(REQUEST_TIMEOUT + wait);
        Ok(self.json(request).await?.1)
    }

    /// `GET /executions?…`, newest first.
    pub async fn executions(
        &self,
        filter: &ExecutionFilter,
    ) -> Result<Reply<ExecutionPage>, ClientError> {
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

    /// `GET /analytics?since=&bucket=&task=`.
    pub async fn analytics(
        &self,
        since: &str,
        bucket: &str,
        task: Option<&str>,
    ) -> Result<Reply<crate::model::analytics::Analytics>, ClientError> {
        let url = Self::with_query(
            self.url(&["analytics"]),
            &[
                ("since", Some(since.to_string())),
                ("bucket", Some(bucket.to_string())),
                ("task", task.map(str::to_string)),
            ],
        );
        self.get(url).await
    }

    /// `GET /executions/{id}` → the Execution with its task runs.
    pub async fn execution(&self, id: &str) -> Result<Reply<Execution>, ClientError> {
        self.get(self.url(&["executions", id])).await
    }

    /// `GET /executions/{id}/logs?after=`.
    pub async fn logs(&self, id: &str, after: Option<i64>) -> Result<Reply<LogPage>, ClientError> {
        let url = Self::with_query(
            self.url(&["executions", id, "logs"]),
            &[("after", after.map(|a| a.to_string()))],
        );
        self.get(url).await
    }

    /// `GET /tasks/{id}/dataset?format=F`: every row, as the server streams
    /// it, written to `out` as it comes.
    pub async fn export_dataset(
        &self,
        task: &str,
        format: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<(), ClientError> {
        use futures_util::StreamExt;
        let url = Self::with_query(
            self.url(&["tasks", task, "dataset"]),
            &[("format", Some(format.to_string()))],
        );
        let response = self.send(self.http.get(url)).await?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.transport(e))?;
            out.write_all(&chunk).map_err(|e| ClientError::Transport {
                url: self.server.clone(),
                reason: format!("writing the export: {e}"),
            })?;
        }
        Ok(())
    }

    /// `GET /executions/{id}/logs?follow=true`: the server-sent events.
    pub async fn follow_logs(&self, id: &str) -> Result<EventStream, ClientError> {
        self.follow(id, "logs").await
    }

    /// `GET /executions/{id}/events?follow=true`: the server-sent events.
    pub async fn follow_events(&self, id: &str) -> Result<EventStream, ClientError> {
        self.follow(id, "events").await
    }

    /// `GET /events?follow=true&tail=N[&task=T]`: every execution's events,
    /// starting with the newest `tail` stored.
    pub async fn follow_all_events(
        &self,
        task: Option<&str>,
        tail: u32,
    ) -> Result<EventStream, ClientError> {
        let url = Self::with_query(
            self.url(&["events"]),
            &[
                ("follow", Some("true".into())),
                ("tail", Some(tail.to_string())),
                ("task", task.map(str::to_string)),
            ],
        );
        self.event_stream(url).await
    }

    async fn follow(&self, id: &str, feed: &str) -> Result<EventStream, ClientError> {
        let url = Self::with_query(
            self.url(&["executions", id, feed]),
            &[("follow", Some("true".into()))],
        );
        self.event_stream(url).await
    }

    /// `GET url` read as server-sent events.
    async fn event_stream(&self, url: Url) -> Result<EventStream, ClientError> {
        let request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        let response = self.send(request).await?;
        Ok(EventStream::new(response, self.server.clone()))
    }

    /// `POST /executions/{id}/cancel|pause|resume|restart` → the Execution.
    pub async fn control(
        &self,
        id: &str,
        action: Control,
    ) -> Result<Reply<Execution>, ClientError> {
        let request = self
            .http
            .post(self.url(&["executions", id, action.as_str()]));
        Ok(self.json(request).await?.1)
    }

    /// `GET /workers`.
    pub async fn workers(&self) -> Result<Reply<WorkerList>, ClientError> {
        self.get(self.url(&["workers"])).await
    }

    /// `POST /tokens` → the token with its `secret`.
    pub async fn create_token(
        &self,
        request: &Value,
    ) -> Result<Reply<crate::model::auth::Token>, ClientError> {
        let request = self.http.post(self.url(&["tokens"])).json(request);
        Ok(self.json(request).await?.1)
    }

    /// `GET /tokens`.
    pub async fn tokens(&self) -> Result<Reply<TokenList>, ClientError> {
        self.get(self.url(&["tokens"])).await
    }

    /// `DELETE /tokens/{id}` → the revoked token.
    pub async fn revoke_token(
        &self,
        id: &str,
    ) -> Result<Reply<crate::model::auth::Token>, ClientError> {
        let request = self.http.delete(self.url(&["tokens", id]));
        Ok(self.json(request).await?.1)
    }
}

/// `GET /tokens`.
#[derive(Debug, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<crate::model::auth::Token>,
}

/// A decoded answer and the JSON it was decoded from: the text output reads
/// `value`, `--json` prints `json`, exactly what the server sent.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub json: Value,
    pub value: T,
}

impl<T: DeserializeOwned> Reply<T> {
    /// Decodes a body (empty counts as `null`); the error says what is wrong.
    fn decode(body: &[u8]) -> Result<Reply<T>, String> {
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?
        };
        let value = T::deserialize(&json).map_err(|e| {
            format!(
                "not the {} expected: {e}",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("value")
            )
        })?;
        Ok(Reply { json, value })
    }
}

/// `GET /plugins`.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginList {
    pub plugins: Vec<Plugin>,
}

/// `GET /tasks`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<Task>,
}

/// `GET /executions`: a page, and where the next one starts if more match.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecutionPage {
    pub executions: Vec<Execution>,
    pub next_cursor: Option<String>,
}

/// `GET /executions/{id}/logs`.
#[derive(Debug, Clone, Deserialize)]
pub struct LogPage {
    pub logs: Vec<StoredLog>,
}

/// `GET /workers`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerList {
    pub workers: Vec<Worker>,
}

/// One host running attempts, as `GET /workers` serves it. Mirrors
/// `runtime::service::WorkerInfo`, which only serializes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Worker {
    pub id: String,
    pub host: String,
    pub slots: u64,
    pub busy: u64,
    /// Task runs waiting, by queue.
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, u64>,
    pub heartbeat: String,
    #[serde(default)]
    pub accepting: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop a listener to find a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = format!("http://127.0.0.1:{port}");
        let client = Client::new(&server, None).unwrap();
        match client.workers().await {
            Err(ClientError::Unreachable { server: s, .. }) => assert_eq!(s, server),
            other => panic!("expected unreachable, got {other:?}"),
        }
    }

    #[test]
    fn urls_are_built_under_api_v1_with_encoded_segments() {
        let c = Client::new("http://localhost:8480/", None).unwrap();
        assert_eq!(
            c.url(&["tasks", "greet", "executions"]).as_str(),
            "http://localhost:8480/api/v1/tasks/greet/executions"
        );
        let c = Client::new("http://h:1/ward", None).unwrap();
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
        assert!(
            Client::new("https://h", None)
                .unwrap_err()
                .contains("http://")
        );
        assert!(Client::new("nope", None).is_err());
    }

    #[test]
    fn replies_keep_the_json_as_sent_beside_the_typed_value() {
        let body = br#"{"workers":[{"id":"w1","host":"box","slots":4,"busy":1,
            "queues":{"default":3},"heartbeat":"2026-03-01T12:00:03Z","accepting":true,"extra":1}]}"#;
        let r = Reply::<WorkerList>::decode(body).unwrap();
        assert_eq!(r.value.workers[0].queues["default"], 3);
        assert_eq!(r.json["workers"][0]["extra"], 1);
        let e = Reply::<WorkerList>::decode(br#"{"workers":[{"id":1}]}"#).unwrap_err();
        assert!(e.starts_with("not the WorkerList expected: "), "{e}");
        let e = Reply::<WorkerList>::decode(b"<html>").unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
    }
}
