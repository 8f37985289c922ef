//! Helpers shared by the end-to-end tests: where the plugins are, one
//! sandbox per test binary, and attempt specs.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ward::sandbox::{
    AttemptSpec, EngineConfig, Invocation, LoadedAction, MediaStore, MediaUrls, Sandbox,
};

/// An RFC 3339 time from the API, as Unix milliseconds.
pub fn millis(ts: &serde_json::Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts.as_str().expect("a time"))
        .expect("an RFC 3339 time")
        .timestamp_millis()
}

/// Now, as Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A plugin built by `plugins/` (the test command builds them first).
pub fn plugin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (`cd plugins && cargo build --release`, or run `.ci/run`)",
        path.display()
    );
    path
}

/// One sandbox for the whole test binary: it owns a large instance pool.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(EngineConfig::small()).expect("sandbox starts"))
}

pub fn load(name: &str) -> Arc<LoadedAction> {
    sandbox().load_file(&plugin(name)).expect("plugin loads")
}

pub fn media_store() -> Arc<MediaStore> {
    static MEDIA: OnceLock<(tempfile::TempDir, Arc<MediaStore>)> = OnceLock::new();
    MEDIA
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(MediaStore::open(dir.path(), MediaUrls::FilePath).unwrap());
            (dir, store)
        })
        .1
        .clone()
}

pub fn spec(input: serde_json::Value) -> AttemptSpec {
    AttemptSpec::new(
        Invocation {
            input: input.to_string(),
            execution_id: uuid::Uuid::now_v7().to_string(),
            task_id: "test-task".into(),
            step: "main".into(),
            attempt: 1,
        },
        media_store(),
    )
}

/// A server on loopback: `/hello`, `/huge` (50 MiB), `/stall` (never
/// answers), `/loop` (redirects to itself), `/to/{target}` (redirects to
/// `http://{target}/hello`).
pub async fn local_server() -> std::net::SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/hello",
            get(|| async { ([("content-type", "text/plain")], "hello, world\n") }),
        )
        .route("/huge", get(|| async { vec![b'x'; 50 << 20] }))
        .route(
            "/stall",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                "late"
            }),
        )
        .route(
            "/loop",
            get(|| async { (axum::http::StatusCode::FOUND, [("location", "/loop")]) }),
        )
        .route(
            "/to/{target}",
            get(
                |axum::extract::Path(target): axum::extract::Path<String>| async move {
                    (
                        axum::http::StatusCode::FOUND,
                        [("location", format!("http://{target}/hello"))],
                    )
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub mod server;
