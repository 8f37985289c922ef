//! The HTTP server loop: accepts connections and serves the router on each,
//! with the limits that keep slow or idle clients from holding the server.
//!
//! Owns connections only (accepting, the cap, idle eviction, read timeouts,
//! graceful shutdown); what a request means is the router's. A client that
//! sends its headers slowly is closed after `read_timeout`; a request body
//! that stops arriving fails after the same time; when `max_connections`
//! are open, the connection idle the longest is closed to make room, and a
//! new one is refused only when none is idle. `accept` failing (out of file
//! descriptors) never spins the loop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The limits of the server loop.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and to send
    /// each part of its body.
    pub read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// open connections to finish what they are doing.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Mutex::new(Table::default()));
    let stopping = CancellationToken::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout);
    builder.http2().timer(TokioTimer::new());
    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.read_timeout,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors, or the peer gave up: wait a little
                    // rather than spin; closing idle connections frees some.
                    tracing::warn!(error = %e, "accept failed");
                    evict_idle(&table);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let Some((id, close)) = admit(&table, limits.max_connections, &stopping) else {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection refused: every open connection is busy"
            );
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let service = {
            let (app, table) = (app.clone(), table.clone());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let busy = Busy::new(&table, id);
                let app = app.clone();
                async move {
                    let response = app
                        .oneshot(request.map(Body::new))
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    // Busy until the body has been written (a follower's
                    // stream may last long after its headers).
                    Ok::<_, Infallible>(
                        response.map(|body| Body::new(Guarded { body, _busy: busy })),
                    )
                }
            })
        };
        let builder = builder.clone();
        let table = table.clone();
        let read_timeout = limits.read_timeout;
        tasks.spawn(async move {
            // A connection that sends nothing: hyper's header timeout only
            // starts once it has told HTTP/1 from HTTP/2 by the first bytes.
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                r = tokio::time::timeout(read_timeout, tcp.peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
                _ = close.cancelled() => false,
            };
            if !spoke {
                lock(&table).open.remove(&id);
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = close.cancelled(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
            lock(&table).open.remove(&id);
        });
    }
    drop(listener);
    stopping.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The open connections: how many requests each has in flight, and since
/// when it has been idle.
#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Connection>,
}

struct Connection {
    in_flight: usize,
    idle_since: Instant,
    close: CancellationToken,
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes room for one more connection: at the cap, the one idle the longest
/// is told to close. `None` when every open connection is busy. A
/// connection's token is a child of `stopping`: shutdown closes them all.
fn admit(
    table: &Mutex<Table>,
    max: usize,
    stopping: &CancellationToken,
) -> Option<(u64, CancellationToken)> {
    let mut t = lock(table);
    let live = t.open.values().filter(|c| !c.close.is_cancelled()).count();
    if live >= max {
        let oldest = t
            .open
            .values()
            .filter(|c| c.in_flight == 0 && !c.close.is_cancelled())
            .min_by_key(|c| c.idle_since)?;
        oldest.close.cancel();
    }
    t.next_id += 1;
    let id = t.next_id;
    let close = stopping.child_token();
    t.open.insert(
        id,
        Connection {
            in_flight: 0,
            idle_since: Instant::now(),
            close: close.clone(),
        },
    );
    Some((id, close))
}

/// Closes every idle connection (when `accept` runs out of descriptors).
fn evict_idle(table: &Mutex<Table>) {
    for c in lock(table).open.values().filter(|c| c.in_flight == 0) {
        c.close.cancel();
    }
}

/// One request in flight on a connection, until dropped.
struct Busy {
    table: Arc<Mutex<Table>>,
    id: u64,
}

impl Busy {
    fn new(table: &Arc<Mutex<Table>>, id: u64) -> Busy {
        if let Some(c) = lock(table).open.get_mut(&id) {
            c.in_flight += 1;
        }
        Busy {
            table: table.clone(),
            id,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.table).open.get_mut(&self.id) {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.idle_since = Instant::now();
        }
    }
}

/// A response body that keeps its connection marked busy while it is sent.
struct Guarded {
    body: Body,
    _busy: Busy,
}

impl axum::body::HttpBody for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let table = Mutex::new(Table::default());
        let stopping = CancellationToken::new();
        let admit = |table: &Mutex<Table>, max| super::admit(table, max, &stopping);
        let (a, close_a) = admit(&table, 2).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let (b, close_b) = admit(&table, 2).unwrap();
        // `a` idle the longest: closed for the third.
        let (_c, _) = admit(&table, 2).unwrap();
        assert!(close_a.is_cancelled() && !close_b.is_cancelled());
        lock(&table).open.remove(&a);
        // With every connection busy, a new one is refused.
        for id in [b, _c] {
            lock(&table).open.get_mut(&id).unwrap().in_flight = 1;
        }
        assert!(admit(&table, 2).is_none());
        // Shutdown closes every connection.
        stopping.cancel();
        assert!(close_b.is_cancelled());
    }
}
