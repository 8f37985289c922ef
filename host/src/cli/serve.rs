//! `ward serve`: the service on the embedded default (SQLite and a media
//! folder in a data dir), with the example plugins registered and an
//! example task ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use clap::Args;

use super::exit;
use crate::runtime::config::{ServeConfig, Settings};
use crate::runtime::service::Service;
use crate::sandbox::{EngineConfig, MediaStore, MediaUrls, Sandbox};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// `ward serve`'s flags. Each setting is also read from its `WARD_*`
/// variable and from `--config`; a flag wins over its variable, both win
/// over the file, and the file over the defaults (`runtime::config`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, `IP:PORT` or `HOST:PORT` (e.g. localhost:8480)
    /// [default: 127.0.0.1:8480].
    #[arg(long, env = "WARD_LISTEN", value_name = "ADDR", value_parser = listen_address)]
    pub listen: Option<SocketAddr>,
    /// Where the database, media, components and compiled artifacts live
    /// [default: $XDG_DATA_HOME/ward or ~/.local/share/ward].
    #[arg(long, env = "WARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A config file: TOML (`.toml`), YAML or JSON, with the settings below
    /// by their snake_case names, and `queue_limits`.
    #[arg(long, env = "WARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Attempts run at once on this host [default: 512].
    #[arg(long, env = "WARD_SLOTS", value_name = "N")]
    pub slots: Option<usize>,
    /// A folder of example components (*.wasm) to register at start
    /// [default: plugins/target/wasm32-wasip2/release when it exists].
    #[arg(long, env = "WARD_PLUGINS", value_name = "DIR")]
    pub plugins: Option<PathBuf>,
    /// How long shutdown waits for running attempts [default: 30s].
    #[arg(long, env = "WARD_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// How long a running task run's lease lasts without renewal [default: 30s].
    #[arg(long, env = "WARD_LEASE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lease: Option<Duration>,
    /// Largest component `POST /plugins` accepts [default: 64MiB].
    #[arg(long, env = "WARD_MAX_PLUGIN_SIZE", value_name = "SIZE")]
    pub max_plugin_size: Option<ByteSize>,
    /// Largest `limits.memory` a task may ask for [default: 4GiB].
    #[arg(long, env = "WARD_MAX_TASK_MEMORY", value_name = "SIZE")]
    pub max_task_memory: Option<ByteSize>,
    /// Longest `limits.timeout` a task may ask for [default: 1day].
    #[arg(long, env = "WARD_MAX_TASK_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_task_timeout: Option<Duration>,
    /// Longest a request may wait for an execution's end with `?wait=`
    /// [default: 60s].
    #[arg(long, env = "WARD_MAX_WAIT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_wait: Option<Duration>,
    /// HTTP connections open at once; at the cap the longest idle one is
    /// closed for a new one [default: 1024, or 3/4 of the open-files limit].
    #[arg(long, env = "WARD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Linear memory all attempts may hold at once: each reserves its
    /// memory limit before it starts, and waits while the budget is spent
    /// [default: 3/4 of the machine's memory].
    #[arg(long, env = "WARD_MEMORY_BUDGET", value_name = "SIZE")]
    pub memory_budget: Option<ByteSize>,
    /// Disk all attempts' scratch dirs may hold at once: each reserves its
    /// quota (256 MiB) before it starts [default: half the free space of
    /// the temporary directory].
    #[arg(long, env = "WARD_SCRATCH_BUDGET", value_name = "SIZE")]
    pub scratch_budget: Option<ByteSize>,
    /// How long a client may take to send a request's headers, or each part
    /// of its body [default: 10s].
    #[arg(long, env = "WARD_READ_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub read_timeout: Option<Duration>,
    /// Serve without tokens, every caller admin: only on a loopback
    /// address, for a machine of one's own [default: off].
    #[arg(long, env = "WARD_NO_AUTH")]
    pub no_auth: bool,
    /// The server's own log lines on stderr: `text`, or `json` (one object
    /// per line: timestamp, level, target, message and fields).
    #[arg(long, env = "WARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export OpenTelemetry traces to this OTLP/HTTP collector (protobuf),
    /// e.g. `http://127.0.0.1:4318` (`/v1/traces` is added to a URL without
    /// a path): a trace per execution, whose id is the execution's id, with
    /// spans for its task runs, attempts and host calls [default: off].
    #[arg(long, env = "WARD_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Check the configuration, print it as TOML and exit (0 if valid).
    #[arg(long)]
    pub check_config: bool,
}

/// How `ward serve` writes its own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    /// The command line's layer: flags, and variables where no flag is given.
    fn settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            plugins: self.plugins.clone(),
            slots: self.slots,
            queue_limits: None,
            shutdown_grace: self.shutdown_grace,
            lease: self.lease,
            max_plugin_size: self.max_plugin_size,
            max_task_memory: self.max_task_memory,
            max_task_timeout: self.max_task_timeout,
            max_wait: self.max_wait,
            max_connections: self.max_connections,
            read_timeout: self.read_timeout,
            memory_budget: self.memory_budget,
            scratch_budget: self.scratch_budget,
            no_auth: self.no_auth.then_some(true),
        }
    }

    /// The merged, validated config.
    fn resolve(&self) -> Result<ServeConfig, crate::runtime::config::ConfigError> {
        let file = match &self.config {
            Some(path) => Settings::read(path)?,
            None => Settings::default(),
        };
        ServeConfig::resolve([self.settings(), file])
    }
}

pub fn main(args: ServeArgs) -> u8 {
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if args.check_config {
        print!("{}", config.to_toml());
        return exit::OK;
    }
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
    match runtime.block_on(serve(config)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

async fn serve(config: ServeConfig) -> Result<(), String> {
    // Before anything is announced: a SIGTERM sent as soon as "serving" is
    // printed must find its handler installed (else it kills the process).
    let signals = Signals::install().map_err(|e| format!("cannot handle signals: {e}"))?;
    let data = config.data_dir.clone();
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Before anything records: metrics from the first commit on.
    crate::telemetry::install();

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
            memory_budget_bytes: config.memory_budget.as_u64(),
            scratch_budget_bytes: config.scratch_budget.as_u64(),
            ..EngineConfig::default()
        })
        .map_err(|e| format!("sandbox: {e:#}"))?,
    );
    let svc = Service::start(store, sandbox, media, config.service())
        .await
        .map_err(|e| e.to_string())?;

    let examples = config.plugins.clone().or_else(|| {
        Some(PathBuf::from("plugins/target/wasm32-wasip2/release")).filter(|p| p.is_dir())
    });
    if let Some(dir) = examples {
        register_examples(&svc, &dir, "").await;
    }
    if config.plugins.is_none() {
        // The Python and JavaScript examples (built by plugins/{python,js}/
        // build.sh) are 12-20 MB each: compiling one the first time takes
        // seconds, so they are registered after the server is up.
        let svc = svc.clone();
        tokio::spawn(async move {
            for lang in ["python", "js"] {
                let dir = PathBuf::from("plugins/target").join(lang);
                if dir.is_dir() {
                    register_examples(&svc, &dir, &format!("{lang}-")).await;
                }
            }
        });
    }

    let token_file = data.join(crate::runtime::access::ADMIN_TOKEN_FILE);
    if config.no_auth {
        tracing::warn!("auth is OFF (--no-auth): every caller on {addr} is admin");
    } else if let Some(path) = svc
        .first_admin_token(&data)
        .await
        .map_err(|e| e.to_string())?
    {
        tracing::info!(
            file = %path.display(),
            "first start: an admin token was written (0600); the CLI on this machine reads it"
        );
    }
    let app = crate::api::app(svc.clone()).layer(tower_http::trace::TraceLayer::new_for_http());
    println!(
        "Ward is serving on http://{addr} (data in {})",
        data.display()
    );
    if config.no_auth {
        println!("  WARNING: auth is off (--no-auth): anyone who reaches {addr} is admin");
        println!(
            "  try: curl -s -XPOST http://{addr}/api/v1/tasks/hello/executions -d '{{\"input\":{{\"name\":\"Ada\"}}}}'"
        );
    } else {
        println!("  admin token: {}", token_file.display());
        println!(
            "  try: curl -s -H \"Authorization: Bearer $(cat {})\" -XPOST http://{addr}/api/v1/tasks/hello/executions -d '{{\"input\":{{\"name\":\"Ada\"}}}}'",
            token_file.display()
        );
    }
    let shutdown = {
        let svc = svc.clone();
        async move {
            signals.received().await;
            tracing::warn!("shutting down: no new attempts; waiting for running ones");
            svc.shutdown().await;
        }
    };
    let limits = crate::api::listener::ConnectionLimits {
        max_connections: config.max_connections,
        read_timeout: config.read_timeout,
    };
    crate::api::listener::serve(listener, app, limits, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// SIGINT and SIGTERM, their handlers installed when this is made.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Resolves at the first of them.
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--listen`: an address, or a name resolved now (its first IPv4
/// address, else its first): `localhost:8480` is 127.0.0.1:8480.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if text
        .rsplit_once(':')
        .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!("{text:?} is not IP:PORT or HOST:PORT"));
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("cannot resolve {text:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Registers every component in `dir` as a plugin named after its file (with
/// `prefix`), and an example task `hello` when the hello plugin is there.
async fn register_examples(svc: &Arc<Service>, dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
            continue;
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let name = format!("{prefix}{}", stem.replace('_', "-"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        // A name and version always mean the same bytes: an example is
        // Ward's version, and one rebuilt since (other bytes under a taken
        // version) a new version, with its digest as semver build metadata.
        let hex = crate::sandbox::component::digest(&bytes);
        let plain = env!("CARGO_PKG_VERSION").to_string();
        let mut added = svc
            .add_plugin("default", &name, Some(plain.clone()), bytes.clone())
            .await;
        if let Err(crate::runtime::error::ServiceError::Conflict(_)) = added {
            let rebuilt = format!("{plain}+{}", &hex[..12]);
            added = svc.add_plugin("default", &name, Some(rebuilt), bytes).await;
        }
        match added {
            Ok(_) => names.push(name),
            Err(e) => {
                tracing::warn!(plugin = %path.display(), error = %e, "example plugin not registered")
            }
        }
    }
    let hello = crate::model::task::TaskRef::name("default", "hello");
    if names.iter().any(|n| n == "hello") && matches!(svc.task(&hello).await, Ok(None)) {
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
    if !names.is_empty() {
        println!("  example plugins: {}", names.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_address_or_a_name_and_port() {
        assert_eq!(
            listen_address("0.0.0.0:80").unwrap().to_string(),
            "0.0.0.0:80"
        );
        assert_eq!(listen_address("[::1]:9").unwrap().to_string(), "[::1]:9");
        let local = listen_address("localhost:8480").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8480, "{local}");
        for bad in ["localhost", "localhost:", ":80", "localhost:99999"] {
            assert!(
                listen_address(bad).unwrap_err().contains("HOST:PORT"),
                "{bad}"
            );
        }
    }
}
