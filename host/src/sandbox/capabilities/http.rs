//! Outbound HTTP through `wasi:http`, only as the task grants it
//! (`grants.http`, [`HttpGrant`]): a request names a host of `allow`, the
//! name is resolved here, every address is checked against the non-public
//! ranges (`model::net::non_public`) unless the host is in `allow_private`,
//! and the connection goes to a checked address — then that connected
//! address is checked again — so that neither DNS rebinding, a literal, a
//! redirect (the guest follows it: a new request, checked again) nor a Host
//! header decides where a request goes. Requests, bytes and time are
//! bounded per attempt; each request is a log line (source `http`: method,
//! host, status, bytes, ms) and counted in the attempt's metrics.
//!
//! State: [`Http`], one per attempt; the hooks wasmtime-wasi-http calls are
//! [`HttpHooks`]. Nothing here is shared between attempts.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

use super::logs::Logs;
use super::metrics::Metrics;
use crate::model::net::{HttpGrant, non_public};
use crate::model::report::{HttpCall, LogLevel, LogSource};

/// One attempt's outbound HTTP.
pub struct Http {
    pub ctx: WasiHttpCtx,
    pub hooks: HttpHooks,
}

impl Http {
    pub fn new(grant: Option<HttpGrant>, logs: Logs) -> Http {
        Http {
            ctx: WasiHttpCtx::new(),
            hooks: HttpHooks {
                grant: grant.map(Arc::new),
                usage: Arc::new(Mutex::new(Usage::default())),
                logs,
            },
        }
    }

    /// Counts each request in `metrics` (`http.requests` by host and status
    /// — `denied`, `failed` or the code —, `http.bytes` and `http.request`,
    /// its time, by host) and lists them for the report.
    pub fn report(&self, metrics: &mut Metrics) -> Vec<HttpCall> {
        let usage = lock(&self.hooks.usage);
        let mut calls = Vec::with_capacity(usage.records.len());
        for r in &usage.records {
            let host = vec![("host".to_string(), r.host.clone())];
            let mut tags = host.clone();
            tags.push(("status".into(), r.status.clone()));
            let _ = metrics.counter("http.requests", 1, tags);
            let _ = metrics.counter("http.bytes", r.bytes as i64, host.clone());
            let _ = metrics.duration("http.request", r.nanos, host);
            calls.push(HttpCall {
                method: r.method.clone(),
                host: r.host.clone(),
                status: r.status.clone(),
                bytes: r.bytes,
                ms: r.nanos as f64 / 1e6,
            });
        }
        calls
    }
}

/// The hooks wasmtime-wasi-http calls; cheap to clone into each request.
pub struct HttpHooks {
    grant: Option<Arc<HttpGrant>>,
    usage: Arc<Mutex<Usage>>,
    logs: Logs,
}

#[derive(Default)]
struct Usage {
    requests: u32,
    /// Body bytes sent and received, all requests together.
    bytes: u64,
    records: Vec<Record>,
}

struct Record {
    method: String,
    host: String,
    status: String,
    bytes: u64,
    nanos: u64,
}

fn lock(m: &Mutex<Usage>) -> std::sync::MutexGuard<'_, Usage> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Sent = Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
)>;

type Result<T, E = Error> = std::result::Result<T, E>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let call = Call {
            grant: self.grant.clone(),
            usage: self.usage.clone(),
            logs: self.logs.clone(),
            began: Instant::now(),
            method: request.method().to_string(),
            host: request
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        };
        Box::new(async move { call.send(request, options).await })
    }
}

/// One request on its way.
#[derive(Clone)]
struct Call {
    grant: Option<Arc<HttpGrant>>,
    usage: Arc<Mutex<Usage>>,
    logs: Logs,
    began: Instant,
    method: String,
    /// `host:port` as the guest wrote it.
    host: String,
}

impl Call {
    /// Logs and counts a request that ended (or was refused) with `status`.
    fn record(&self, status: &str, bytes: u64, note: Option<&str>) {
        let elapsed = self.began.elapsed();
        let ms = elapsed.as_secs_f64() * 1000.0;
        let mut line = format!(
            "{} {} → {status}, {bytes} bytes, {ms:.0} ms",
            self.method, self.host
        );
        if let Some(note) = note {
            line.push_str(": ");
            line.push_str(note);
        }
        let level = match status.parse::<u16>() {
            Ok(code) if code < 400 => LogLevel::Info,
            _ => LogLevel::Warn,
        };
        self.logs.push(level, LogSource::Http, line);
        lock(&self.usage).records.push(Record {
            method: self.method.clone(),
            host: self.host.clone(),
            status: status.to_string(),
            bytes,
            nanos: elapsed.as_nanos().min(u64::MAX as u128) as u64,
        });
    }

    fn refuse(&self, why: &str, error: Error) -> Error {
        self.record("denied", 0, Some(why));
        error
    }

    async fn send(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Sent {
        let Some(grant) = self.grant.clone() else {
            return Err(self.refuse(
                "this task grants no outbound HTTP (grants.http)",
                Error::HttpRequestDenied,
            ));
        };
        let uri = request.uri().clone();
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let Some(host) = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        else {
            return Err(self.refuse("the request names no host", Error::HttpRequestUriInvalid));
        };
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if !grant.allows(&host, port) {
            return Err(self.refuse(
                &format!("{host}:{port} is not in grants.http.allow"),
                Error::HttpRequestDenied,
            ));
        }
        {
            let mut usage = lock(&self.usage);
            if usage.requests >= grant.max_requests {
                drop(usage);
                return Err(self.refuse(
                    &format!("grants.http.max_requests ({}) reached", grant.max_requests),
                    Error::ConnectionLimitReached,
                ));
            }
            usage.requests += 1;
        }
        let deadline = tokio::time::Instant::from_std(self.began + grant.timeout);
        let private_ok = grant.allows_private(&host, port);

        let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::time::timeout_at(
                deadline,
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            {
                Err(_) => return Err(self.failed("DNS lookup timed out", Error::DnsTimeout)),
                Ok(Err(e)) => {
                    return Err(self.failed(
                        &format!("cannot resolve {host}: {e}"),
                        Error::DnsError {
                            rcode: Some(e.to_string()),
                            info_code: None,
                        },
                    ));
                }
                Ok(Ok(found)) => found.collect(),
            },
        };
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addresses
            .iter()
            .copied()
            .filter(|a| match non_public(a.ip()) {
                Some(why) if !private_ok => {
                    refused.get_or_insert((a.ip(), why));
                    false
                }
                _ => true,
            })
            .collect();
        if allowed.is_empty() {
            let note = match refused {
                Some((ip, why)) => format!(
                    "{host} is {ip}, {why}: not reachable unless grants.http.allow_private lists {host}"
                ),
                None => format!("{host} resolves to no address"),
            };
            return Err(self.refuse(&note, Error::DestinationIpProhibited));
        }

        let mut stream = None;
        let mut last_error = None;
        for address in &allowed {
            match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => return Err(self.failed("connecting timed out", Error::ConnectionTimeout)),
            }
        }
        let Some(stream) = stream else {
            let e = last_error.expect("an address was tried");
            let error = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                Error::ConnectionRefused
            } else {
                Error::Connect(e)
            };
            return Err(self.failed("cannot connect", error));
        };
        // The address actually connected to, whatever led there.
        let peer = stream
            .peer_addr()
            .map_err(|e| self.failed("the connection has no peer", Error::Connect(e)))?;
        if !private_ok && let Some(why) = non_public(peer.ip()) {
            return Err(self.refuse(
                &format!("connected to {peer}, {why}"),
                Error::DestinationIpProhibited,
            ));
        }
        let _ = stream.set_nodelay(true);

        // The Host header is the checked authority, whatever the guest set.
        let authority = if uri.port_u16().is_some() {
            format!("{}:{port}", uri.host().unwrap_or_default())
        } else {
            uri.host().unwrap_or_default().to_string()
        };
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_str(&authority).map_err(|_| Error::HttpRequestUriInvalid)?,
        );
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;

        let budget = Budget {
            usage: self.usage.clone(),
            max: grant.max_bytes.as_u64(),
        };
        let request = request.map(|body| {
            Counted {
                inner: body,
                budget: budget.clone(),
                read: 0,
                deadline: None,
                request: true,
                done: None,
            }
            .boxed_unsync()
        });
        let between = options
            .and_then(|o| o.between_bytes_timeout)
            .unwrap_or(grant.timeout)
            .min(grant.timeout)
            .max(Duration::from_millis(1));

        let io: Box<dyn Stream> = if tls {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| self.failed("not a TLS server name", Error::HttpRequestUriInvalid))?;
            match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => return Err(self.failed(&format!("TLS: {e}"), Error::Tls(e))),
                Err(_) => return Err(self.failed("TLS timed out", Error::ConnectionTimeout)),
            }
        } else {
            Box::new(stream)
        };
        let handshake =
            hyper::client::conn::http1::Builder::new().handshake(hyper_util::rt::TokioIo::new(io));
        let (mut sender, connection) = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.failed(&e.to_string(), Error::from(e))),
            Err(_) => return Err(self.failed("timed out", Error::ConnectionTimeout)),
        };
        let connection = tokio::spawn(connection);
        let response = match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let note = e.to_string();
                let error =
                    match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<Error>()) {
                        Some(Error::HttpRequestBodySize(n)) => Error::HttpRequestBodySize(*n),
                        _ => Error::from(e),
                    };
                return Err(self.failed(&note, error));
            }
            Err(_) => {
                return Err(self.failed(
                    "no answer within grants.http.timeout",
                    Error::ConnectionReadTimeout,
                ));
            }
        };
        let status = response.status().as_u16().to_string();
        let call = self.clone();
        let response = response.map(move |incoming| {
            Counted {
                inner: incoming.map_err(Error::from),
                budget,
                read: 0,
                deadline: Some((deadline, between, Box::pin(tokio::time::sleep(between)))),
                request: false,
                done: Some((call, status)),
            }
            .boxed_unsync()
        });
        let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async move {
            match connection.await {
                Ok(Ok(())) | Err(_) => Ok(()),
                Ok(Err(e)) => Err(Error::from(e)),
            }
        });
        Ok((response, io))
    }

    fn failed(&self, why: &str, error: Error) -> Error {
        self.record("failed", 0, Some(why));
        error
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The attempt's body bytes, shared by its requests.
#[derive(Clone)]
struct Budget {
    usage: Arc<Mutex<Usage>>,
    max: u64,
}

/// A body whose bytes count against the attempt's budget; a response's
/// also against its deadline and the time between frames, and it records
/// its request when it ends (or is dropped).
struct Counted<B> {
    inner: B,
    budget: Budget,
    read: u64,
    /// The request's deadline, the most time between frames, and the timer.
    deadline: Option<(tokio::time::Instant, Duration, Pin<Box<tokio::time::Sleep>>)>,
    request: bool,
    /// The call to record when done, and its status.
    done: Option<(Call, String)>,
}

impl<B> Counted<B> {
    fn finish(&mut self, note: Option<&str>) {
        if let Some((call, status)) = self.done.take() {
            call.record(&status, self.read, note);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl<B: Body<Data = Bytes, Error = Error> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    this.read += n;
                    let total = {
                        let mut usage = lock(&this.budget.usage);
                        usage.bytes += n;
                        usage.bytes
                    };
                    if total > this.budget.max {
                        let max = this.budget.max;
                        this.finish(Some(&format!(
                            "over grants.http.max_bytes ({max} bytes for the attempt)"
                        )));
                        return Poll::Ready(Some(Err(if this.request {
                            Error::HttpRequestBodySize(Some(max))
                        } else {
                            Error::HttpResponseBodySize(Some(max))
                        })));
                    }
                }
                if let Some((_, between, timer)) = &mut this.deadline {
                    let next = tokio::time::Instant::now() + *between;
                    timer.as_mut().reset(next);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(&e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => {
                if let Some((deadline, _, timer)) = &mut this.deadline {
                    let late = tokio::time::Instant::now() >= *deadline;
                    if late || timer.as_mut().poll(cx).is_ready() {
                        this.finish(Some("the body stalled or ran past grants.http.timeout"));
                        return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
                    }
                    // Wake at the deadline too.
                    let at = (*deadline).min(timer.deadline());
                    timer.as_mut().reset(at);
                    let _ = timer.as_mut().poll(cx);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
