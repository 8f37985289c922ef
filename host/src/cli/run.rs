//! `ward run`: one task run of a component on this machine, with retries,
//! printing the last attempt's report (JSON or a readable summary).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::exit;
use crate::model::limits::bytes_display;
use crate::model::report::{AttemptReport, LogLine, Metric};
use crate::runtime::local::run_task_run;
use crate::sandbox::{
    AttemptSpec, EngineConfig, ErrorKind, Invocation, Limits, MediaStore, MediaUrls, Sandbox,
};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (.wasm) to run.
    pub component: PathBuf,
    /// The input, as JSON text (default `{}`).
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input JSON from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub input_file: Option<PathBuf>,
    /// Fuel limit per attempt.
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub fuel: u64,
    /// Wall-clock timeout per attempt, e.g. 30s, 500ms, 2m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Memory limit per attempt, e.g. 128MiB (KiB, MiB, GiB: powers of
    /// 1024; kB, MB, GB: of 1000), or bytes.
    #[arg(long, default_value = "128MiB")]
    pub memory: bytesize::ByteSize,
    /// Grant a variable (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Give each attempt a fresh scratch dir at /scratch.
    #[arg(long)]
    pub scratch: bool,
    /// Let the guest call this host through wasi:http (`api.example.com`,
    /// `*.example.org:443`; repeatable). Without it every request is denied.
    #[arg(long = "allow-http", value_name = "HOST")]
    pub allow_http: Vec<String>,
    /// Let the guest call this host even where it resolves to loopback or
    /// private addresses (repeatable).
    #[arg(long = "allow-private", value_name = "HOST")]
    pub allow_private: Vec<String>,
    /// Where media are stored (default: a new temp dir, printed).
    #[arg(long, value_name = "DIR")]
    pub media_dir: Option<PathBuf>,
    /// Attempts in all: retries action_retryable, trap and timeout failures,
    /// handing the last checkpoint to the next attempt.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Print the last attempt's report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("variable name is empty in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

fn usage_error(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    exit::USAGE
}

pub fn main(args: RunArgs) -> u8 {
    let input = match read_input(&args) {
        Ok(i) => i,
        Err(e) => return usage_error(e),
    };
    // A media dir of our own outlives the run, since the report names files
    // in it; one left empty is removed so that runs leave no litter.
    let (media_dir, own_media_dir) = match &args.media_dir {
        Some(d) => (d.clone(), false),
        None => match tempfile::Builder::new().prefix("ward-media-").tempdir() {
            Ok(d) => (d.keep(), true),
            Err(e) => return usage_error(format!("cannot create a media dir: {e}")),
        },
    };
    let media = match MediaStore::open(&media_dir, MediaUrls::FilePath) {
        Ok(m) => Arc::new(m),
        Err(e) => return usage_error(format!("cannot use media dir {}: {e}", media_dir.display())),
    };
    eprintln!("media: {}", media.root().display());

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return usage_error(format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(run(args, input, media));
    if own_media_dir {
        // Fails, as it should, when the run stored anything.
        let _ = std::fs::remove_dir(&media_dir);
    }
    code
}

fn read_input(args: &RunArgs) -> Result<String, String> {
    let text = match (&args.input, &args.input_file) {
        (Some(t), _) => t.clone(),
        (None, Some(p)) if p.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read input from stdin: {e}"))?,
        (None, Some(p)) => std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read input file {}: {e}", p.display()))?,
        (None, None) => "{}".to_string(),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("input is not valid JSON: {e}"))?;
    Ok(text)
}

/// The grant `--allow-http` and `--allow-private` make, checked.
fn http_grant(args: &RunArgs) -> Result<Option<crate::model::net::HttpGrant>, String> {
    if args.allow_http.is_empty() && args.allow_private.is_empty() {
        return Ok(None);
    }
    let grant: crate::model::net::HttpGrant = serde_json::from_value(serde_json::json!({
        "allow": args.allow_http, "allow_private": args.allow_private,
    }))
    .map_err(|e| format!("--allow-http: {e}"))?;
    let problems = grant.problems();
    if problems.is_empty() {
        Ok(Some(grant))
    } else {
        Err(problems.join("; "))
    }
}

async fn run(args: RunArgs, input: String, media: Arc<MediaStore>) -> u8 {
    let config = EngineConfig {
        cache_dir: super::default_cache_dir(),
        max_memory_bytes: args
            .memory
            .as_u64()
            .max(EngineConfig::default().max_memory_bytes),
        ..EngineConfig::small()
    };
    let sandbox = match Sandbox::new(config) {
        Ok(s) => s,
        Err(e) => return usage_error(format!("cannot start the sandbox: {e:#}")),
    };
    let action = match sandbox.load_file(&args.component) {
        Ok(a) => a,
        Err(e) => {
            if args.json {
                let report =
                    AttemptReport::failed_before_start(1, ErrorKind::LoadFailed, e.0.clone());
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("reports serialize")
                );
            }
            eprintln!("error: load_failed: {e}");
            return exit::USAGE;
        }
    };

    let execution_id = uuid::Uuid::now_v7().to_string();
    let mut spec = AttemptSpec::new(
        Invocation {
            input,
            execution_id,
            task_id: "local".into(),
            step: "main".into(),
            attempt: 1,
        },
        media,
    );
    spec.limits = Limits {
        fuel: args.fuel,
        timeout: args.timeout,
        memory_bytes: args.memory.as_u64(),
    };
    spec.variables = args.vars.iter().cloned().collect::<BTreeMap<_, _>>();
    spec.scratch = args.scratch;
    match http_grant(&args) {
        Ok(grant) => spec.http = grant,
        Err(e) => return usage_error(e),
    }

    // Ctrl-C cancels the running attempt; it ends `killed`.
    let cancel = spec.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });

    let reports = run_task_run(&sandbox, &action, spec, args.attempts).await;
    let last = reports.last().expect("at least one attempt runs");
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(last).expect("reports serialize")
        );
    } else {
        print!("{}", summary(&reports, args.attempts));
    }
    if last.status.is_ok() {
        exit::OK
    } else {
        exit::FAILED
    }
}

/// A readable summary of the last attempt, with one line per earlier one.
fn summary(reports: &[AttemptReport], max_attempts: u32) -> String {
    let mut s = String::new();
    let last = reports.last().expect("at least one attempt");
    for r in &reports[..reports.len() - 1] {
        let e = r
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.kind, first_line(&e.message)))
            .unwrap_or_default();
        let _ = writeln!(s, "attempt {}: {} {e}", r.attempt, r.status);
    }
    let _ = writeln!(
        s,
        "status:   {} (attempt {} of at most {max_attempts})",
        last.status, last.attempt
    );
    if let Some(e) = &last.error {
        let _ = writeln!(s, "error:    {}: {}", e.kind, indent(&e.message));
    }
    if let Some(r) = &last.result {
        let _ = writeln!(s, "result:   {}", compact(r));
    }
    for w in &last.warnings {
        let _ = writeln!(s, "warning:  {w}");
    }
    if !last.outputs.is_empty() {
        let _ = writeln!(s, "outputs:");
        for (k, v) in &last.outputs {
            let _ = writeln!(s, "  {k} = {}", compact(v));
        }
    }
    if !last.metrics.is_empty() {
        let _ = writeln!(s, "metrics:");
        for m in &last.metrics {
            let _ = writeln!(s, "  {}", metric_line(m));
        }
    }
    if !last.media.is_empty() {
        let _ = writeln!(s, "media:");
        for m in &last.media {
            let _ = writeln!(
                s,
                "  {} ({}, {}) {}",
                m.name,
                m.content_type,
                bytes_display(m.size),
                m.url
            );
        }
    }
    if let Some(c) = &last.checkpoint {
        let _ = writeln!(s, "checkpoint: {}", compact(c));
    }
    if !last.logs.is_empty() {
        let _ = writeln!(s, "logs:");
        for l in &last.logs {
            let _ = writeln!(s, "  {}", log_line(l));
        }
    }
    let u = &last.usage;
    let _ = writeln!(
        s,
        "usage:    fuel {}, wall {:.2} ms, memory peak {}",
        u.fuel_consumed,
        u.wall_ms,
        bytes_display(u.memory_peak_bytes)
    );
    s
}

fn compact(v: &serde_json::Value) -> String {
    let text = v.to_string();
    crate::model::limits::shorten(&text, 400)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n          ")
}

fn metric_line(m: &Metric) -> String {
    let tags = |t: &BTreeMap<String, String>| {
        if t.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = t.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{{{}}}", inner.join(","))
        }
    };
    match m {
        Metric::Counter {
            name,
            tags: t,
            value,
        } => format!("{name}{} (counter) = {value}", tags(t)),
        Metric::Duration {
            name,
            tags: t,
            count,
            sum_ns,
            min_ns,
            max_ns,
        } => format!(
            "{name}{} (duration) count={count} sum={:?} min={:?} max={:?}",
            tags(t),
            Duration::from_nanos(*sum_ns),
            Duration::from_nanos(*min_ns),
            Duration::from_nanos(*max_ns)
        ),
    }
}

fn log_line(l: &LogLine) -> String {
    // Keep the time of day only; the date is the same for a local run.
    let time =
        l.ts.split('T')
            .nth(1)
            .unwrap_or(&l.ts)
            .trim_end_matches('Z');
    format!(
        "{time} {:<5} {:<6} {}",
        l.level.as_str(),
        source(l),
        l.message
    )
}

fn source(l: &LogLine) -> &'static str {
    match l.source {
        crate::model::report::LogSource::Host => "host",
        crate::model::report::LogSource::Stdout => "stdout",
        crate::model::report::LogSource::Stderr => "stderr",
        crate::model::report::LogSource::Http => "http",
    }
}
