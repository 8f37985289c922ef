//! `ward stats`: the server's execution analytics as a table — how much
//! ran, how it ended, how long it took and waited — per time bucket, with
//! totals and the busiest and most failing tasks.

use std::time::{Duration, SystemTime};

use clap::Args;

use super::client::Client;
use super::exit;
use super::output::{out, print_json, table};
use crate::model::analytics::{Analytics, Figures, Spread};

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How far back to look (`1h`, `30m`, `7d`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Only this task (id or name).
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A bucket width giving at most a few dozen rows for `span`.
fn bucket_for(span: Duration) -> &'static str {
    match span.as_secs() {
        0..=7_200 => "1m",
        7_201..=259_200 => "1h",
        _ => "1d",
    }
}

pub async fn main(client: Client, args: StatsArgs) -> anyhow::Result<u8> {
    let since = SystemTime::now()
        .checked_sub(args.since)
        .filter(|t| *t >= std::time::UNIX_EPOCH)
        .unwrap_or(std::time::UNIX_EPOCH);
    let since = humantime::format_rfc3339_micros(since).to_string();
    let bucket = bucket_for(args.since);
    let a = client
        .analytics(&since, bucket, args.task.as_deref())
        .await?;
    if args.json {
        print_json(&a.json);
    } else {
        out!("{}", render(&a.value));
    }
    Ok(exit::OK)
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 1000.0 => format!("{:.2}s", v / 1000.0),
        Some(v) => format!("{v:.1}ms"),
        None => "-".into(),
    }
}

fn rate(v: Option<f64>) -> String {
    v.map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
}

fn count(f: &Figures, state: &str) -> String {
    f.finished.get(state).copied().unwrap_or(0).to_string()
}

fn row(label: String, f: &Figures) -> Vec<String> {
    let d = f.duration_ms.as_ref();
    vec![
        label,
        f.started.to_string(),
        count(f, "SUCCESS"),
        count(f, "WARNING"),
        count(f, "FAILED"),
        count(f, "KILLED"),
        rate(f.success_rate),
        ms(d.map(|d| d.p50)),
        ms(d.map(|d| d.p95)),
        ms(f.queue_wait_ms.as_ref().map(|w: &Spread| w.p95)),
    ]
}

/// The analytics as text: buckets with executions, totals, top tasks.
fn render(a: &Analytics) -> String {
    let mut rows: Vec<Vec<String>> = a
        .buckets
        .iter()
        .filter(|b| b.figures.started > 0)
        .map(|b| {
            row(
                b.start.get(..16).unwrap_or(&b.start).replace('T', " "),
                &b.figures,
            )
        })
        .collect();
    rows.push(row("total".into(), &a.totals));
    let since = a.since.get(..19).unwrap_or(&a.since).replace('T', " ");
    let mut s = format!("executions created since {since} (UTC):\n");
    s.push_str(&table(
        &[
            "BUCKET", "STARTED", "SUCCESS", "WARNING", "FAILED", "KILLED", "SUCCESS%", "P50",
            "P95", "WAIT P95",
        ],
        &rows,
    ));
    if !a.totals.failures.is_empty() {
        let kinds: Vec<String> = a
            .totals
            .failures
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        s.push_str(&format!("failures by kind: {}\n", kinds.join(", ")));
    }
    let top = |label: &str, tasks: &[crate::model::analytics::TopTask], failures: bool| {
        let list: Vec<String> = tasks
            .iter()
            .take(5)
            .map(|t| {
                let name = t.name.clone().unwrap_or_else(|| t.task_id.clone());
                let n = if failures { t.failures } else { t.executions };
                format!("{name} ({n})")
            })
            .collect();
        if list.is_empty() {
            String::new()
        } else {
            format!("{label}: {}\n", list.join(", "))
        }
    };
    s.push_str(&top("busiest tasks", &a.top_by_volume, false));
    s.push_str(&top("most failing", &a.top_by_failures, true));
    s
}
