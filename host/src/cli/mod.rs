//! The `ward` command line: clap structs, parsed in two steps (flags, then
//! validated settings), one file per subcommand.
//!
//! Calls `runtime` and `sandbox`; never the other way around. The client
//! commands (`plugin`, `task`, `execution`, `worker`) talk to a Ward server
//! over its HTTP API through `client` (with `error` and `sse`), and print
//! through `output` and `time`.

mod client;
mod error;
mod execution;
mod new;
mod output;
mod plugin;
mod run;
mod serve;
mod sse;
mod stats;
mod task;
mod time;
mod token;
mod top;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes: 0 success or warning, 1 failed or killed, 2 usage or load
/// errors, API errors (4xx/5xx) and an unreachable server.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
}

#[derive(Debug, Parser)]
#[command(
    name = "ward",
    version,
    about = "Runs WebAssembly task actions as sandboxed, durable executions"
)]
pub struct Cli {
    /// The Ward server the client commands talk to [default: `server` in
    /// ~/.config/ward/config.toml, else http://127.0.0.1:8480].
    #[arg(long, global = true, env = "WARD_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The API token the client commands send [default: `token` in
    /// ~/.config/ward/config.toml, else a local server's admin token].
    #[arg(
        long,
        global = true,
        env = "WARD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one task run of a component locally and print its report.
    Run(run::RunArgs),
    /// Create a plugin project (Rust, Python or JavaScript) in a new directory.
    New(new::NewArgs),
    /// Serve the HTTP API and run executions (SQLite in a data dir).
    Serve(serve::ServeArgs),
    /// Upload and list plugins.
    Plugin(plugin::PluginArgs),
    /// Create and list tasks.
    Task(task::TaskArgs),
    /// Start, list, inspect and control executions.
    Execution(execution::ExecutionArgs),
    /// List the hosts running attempts.
    Worker(worker::WorkerArgs),
    /// Execution analytics: what ran, how it ended, how long it took.
    Stats(stats::StatsArgs),
    /// A live view of the server: rates, running, success, busiest tasks.
    Top(top::TopArgs),
    /// Make, list and revoke API tokens (admin).
    Token(token::TokenArgs),
}

/// Parses the command line and runs the command; returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (json_logs, otlp) = match &cli.command {
        Command::Serve(a) => (
            a.log_format == serve::LogFormat::Json,
            a.otlp_endpoint.clone(),
        ),
        _ => (false, None),
    };
    // Dropped when the command is done: flushes the traces still buffered.
    let _traces = match init_tracing(json_logs, otlp.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let code = match cli.command {
        Command::Run(args) => run::main(args),
        Command::New(args) => new::main(args),
        Command::Plugin(args) => client::run(cli.server, cli.token, |c| plugin::main(c, args)),
        Command::Task(args) => client::run(cli.server, cli.token, |c| task::main(c, args)),
        Command::Execution(args) => {
            client::run(cli.server, cli.token, |c| execution::main(c, args))
        }
        Command::Worker(args) => client::run(cli.server, cli.token, |c| worker::main(c, args)),
        Command::Stats(args) => client::run(cli.server, cli.token, |c| stats::main(c, args)),
        Command::Top(args) => client::run(cli.server, cli.token, |c| top::main(c, args)),
        Command::Token(args) => client::run(cli.server, cli.token, |c| token::main(c, args)),
        Command::Serve(args) => serve::main(args),
    };
    ExitCode::from(code)
}

/// Host diagnostics go to stderr, as text or one JSON object per line; the
/// level comes from `RUST_LOG` (default warn). Lines written during an
/// attempt carry its `trace_id` (the attempt span's field). With an OTLP
/// endpoint, attempt and host-call spans are exported as well.
fn init_tracing(json: bool, otlp: Option<&str>) -> Result<Option<crate::traces::Exporter>, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let asked = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // The attempt span itself is never printed; it is enabled so that its
    // field (the trace id) shows on the lines written inside it. Host-call
    // spans are for traces only. Unless RUST_LOG says otherwise.
    if !asked.contains("ward::span") {
        for directive in [
            format!("{}=info", crate::traces::ATTEMPT_TARGET),
            format!("{}=off", crate::traces::HOST_CALL_TARGET),
        ] {
            if let Ok(d) = directive.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    // Colours only for a person at a terminal, not in a file or a pipe,
    // and never under NO_COLOR.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // The log layer, typed for the subscriber it is added to.
    macro_rules! logs {
        () => {{
            let logs = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(colour);
            if json {
                logs.json().flatten_event(true).boxed()
            } else {
                logs.boxed()
            }
        }};
    }
    match otlp {
        // One global filter, as cheap as filtering gets: a callsite it
        // disables costs nothing after its first call.
        None => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(logs!())
                .try_init();
            Ok(None)
        }
        // The exported spans have a filter of their own (`traces::start`).
        Some(endpoint) => {
            let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
            let (layer, exporter) = crate::traces::start(endpoint, &instance)?;
            let _ = tracing_subscriber::registry()
                .with(logs!().with_filter(filter))
                .with(layer)
                .try_init();
            Ok(Some(exporter))
        }
    }
}

/// Where compiled components are cached between processes:
/// `$WARD_CACHE_DIR`, else `$XDG_CACHE_HOME/ward`, else `~/.cache/ward`.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("WARD_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("ward")))
        .or_else(|| var("HOME").map(|p| p.join(".cache").join("ward")))
        .map(|p| p.join("artifacts"))
}
