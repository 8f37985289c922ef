//! `ward serve`: the service on the embedded default (SQLite and a media
//! folder in a data dir), with the example plugins registered and an
//! example task ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::serve::ListenerExt;
use clap::Args;

use super::exit;
use crate::runtime::service::{Service, ServiceConfig};
use crate::sandbox::{EngineConfig, MediaStore, MediaUrls, Sandbox};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WARD_LISTEN", default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// Where the database, media, components and compiled artifacts live
    /// (default: $XDG_DATA_HOME/ward or ~/.local/share/ward).
    #[arg(long, env = "WARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A settings file (JSON or YAML): slots, queue_limits, shutdown_grace, plugins.
    #[arg(long, env = "WARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Attempts run at once on this host.
    #[arg(long, env = "WARD_SLOTS")]
    pub slots: Option<usize>,
    /// A folder of example components (*.wasm) to register at start
    /// (default: plugins/target/wasm32-wasip2/release when it exists).
    #[arg(long, env = "WARD_PLUGINS")]
    pub plugins: Option<PathBuf>,
}

/// Settings read from `--config`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    slots: Option<usize>,
    queue_limits: std::collections::HashMap<String, usize>,
    shutdown_grace: Option<String>,
    plugins: Option<PathBuf>,
}

fn default_data_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_DATA_HOME")
        .map(|p| p.join("ward"))
        .or_else(|| var("HOME").map(|p| p.join(".local/share/ward")))
        .unwrap_or_else(|| PathBuf::from(".ward"))
}

fn read_config(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .or_else(|_| serde_yaml::from_str(&text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn main(args: ServeArgs) -> u8 {
    let file = match args.config.as_deref().map(read_config).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::USAGE;
        }
    };
    match runtime.block_on(serve(args, file)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

async fn serve(args: ServeArgs, file: FileConfig) -> Result<(), String> {
    let data = args.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&data.join("ward.db"))
            .await
            .map_err(|e| e.to_string())?,
    );
    let media = Arc::new(
        MediaStore::open(
            &data.join("media"),
            MediaUrls::Prefix(format!("http://{addr}/api/v1/media/")),
        )
        .map_err(|e| format!("media folder: {e}"))?,
    );
    let sandbox = Arc::new(
        Sandbox::new(EngineConfig {
            cache_dir: Some(data.join("artifacts")),
            ..EngineConfig::default()
        })
        .map_err(|e| format!("sandbox: {e:#}"))?,
    );
    let mut config = ServiceConfig::new(data.join("components"));
    if let Some(s) = args.slots.or(file.slots) {
        config.slots = s.max(1);
    }
    config.queue_limits = file.queue_limits;
    if let Some(g) = &file.shutdown_grace {
        config.shutdown_grace =
            humantime::parse_duration(g).map_err(|e| format!("shutdown_grace: {e}"))?;
    }
    let svc = Service::start(store, sandbox, media, config)
        .await
        .map_err(|e| e.to_string())?;

    let examples = args.plugins.or(file.plugins).or_else(|| {
        Some(PathBuf::from("plugins/target/wasm32-wasip2/release")).filter(|p| p.is_dir())
    });
    if let Some(dir) = examples {
        register_examples(&svc, &dir).await;
    }

    let app = crate::api::app(svc.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    println!(
        "Ward is serving on http://{addr} (data in {})",
        data.display()
    );
    println!(
        "  try: curl -s -XPOST http://{addr}/api/v1/tasks/hello/executions -d '{{\"input\":{{\"name\":\"Ada\"}}}}'"
    );
    let shutdown = {
        let svc = svc.clone();
        async move {
            shutdown_signal().await;
            eprintln!("shutting down: no new attempts; waiting for running ones");
            svc.shutdown().await;
        }
    };
    serve_http(listener, app, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// Serves with TCP_NODELAY on every connection: a response written in two
/// parts would otherwise meet the client's delayed ACK (40 ms).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Registers every component in `dir` as a plugin named after its file, and
/// an example task `hello` when the hello plugin is there.
async fn register_examples(svc: &Arc<Service>, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .replace('_', "-");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match svc
            .add_plugin(&name, Some(env!("CARGO_PKG_VERSION").into()), bytes)
            .await
        {
            Ok(_) => names.push(name),
            Err(e) => {
                tracing::warn!(plugin = %path.display(), error = %e, "example plugin not registered")
            }
        }
    }
    let hello = crate::model::task::TaskRef::name("default", "hello");
    if names.iter().any(|n| n == "hello") && matches!(svc.store().task(&hello).await, Ok(None)) {
        let spec = serde_json::from_value(serde_json::json!({
            "name": "hello", "action": "hello", "input": {"name": "world"},
            "retry": {"max_attempts": 3, "initial_backoff": "200ms"}
        }))
        .expect("the example task is valid");
        if let Err(e) = svc.create_task(spec).await {
            tracing::warn!(error = %e, "example task not created");
        }
    }
    names.sort();
    println!("  example plugins: {}", names.join(", "));
}
