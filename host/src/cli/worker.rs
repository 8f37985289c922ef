//! `ward worker list`: the workers a Ward server knows, with their load.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, field, items, out, print_json, short_time, table, text};
use super::exit;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: WorkerCommand,
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// List the workers, their slots and queues.
    List,
}

pub async fn main(client: Client, args: WorkerArgs) -> anyhow::Result<u8> {
    match args.command {
        WorkerCommand::List => {
            let list = client.workers().await?;
            if args.json {
                print_json(&list);
            } else {
                out!("{}", worker_table(items(&list, "workers")));
            }
        }
    }
    Ok(exit::OK)
}

/// `{"default": 2, "gpu": 0}` as `default=2,gpu=0`.
fn queues(worker: &Value) -> String {
    match worker.get("queues") {
        Some(Value::Object(q)) if !q.is_empty() => q
            .iter()
            .map(|(name, n)| match n {
                Value::Null => name.clone(),
                other => format!("{name}={other}"),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Array(q)) if !q.is_empty() => q
            .iter()
            .map(|n| n.as_str().map_or_else(|| n.to_string(), String::from))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

fn worker_table(workers: &[Value]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                text(w, "id").to_string(),
                text(w, "host").to_string(),
                field(w, "slots"),
                field(w, "busy"),
                queues(w),
                short_time(text(w, "heartbeat")),
            ]
        })
        .collect();
    table(
        &["ID", "HOST", "SLOTS", "BUSY", "QUEUES", "HEARTBEAT"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workers_print_as_a_table() {
        let w = json!({"id": "w1", "host": "box", "slots": 4, "busy": 1,
                       "queues": {"default": 3, "gpu": 1}, "heartbeat": "2026-03-01T12:00:03.1Z"});
        assert_eq!(
            worker_table(&[w]),
            "ID  HOST  SLOTS  BUSY  QUEUES           HEARTBEAT\n\
             w1  box   4      1     default=3,gpu=1  2026-03-01 12:00:03\n"
        );
        assert_eq!(queues(&json!({"queues": {}})), "-");
        assert_eq!(queues(&json!({"queues": ["a", "b"]})), "a,b");
    }
}
