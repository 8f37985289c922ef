//! `ward worker list`: the workers a Ward server knows, with their load.

use clap::{Args, Subcommand};

use super::client::{Client, Worker};
use super::exit;
use super::output::{out, print_json, table};
use super::time::short_time;

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
                print_json(&list.json);
            } else {
                out!("{}", worker_table(&list.value.workers));
            }
        }
    }
    Ok(exit::OK)
}

/// `{"default": 2, "gpu": 0}` as `default=2,gpu=0`.
fn queues(worker: &Worker) -> String {
    if worker.queues.is_empty() {
        return "-".into();
    }
    worker
        .queues
        .iter()
        .map(|(name, n)| format!("{name}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn worker_table(workers: &[Worker]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.id.clone(),
                w.host.clone(),
                w.slots.to_string(),
                w.busy.to_string(),
                queues(w),
                short_time(&w.heartbeat),
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
        let w: Worker = serde_json::from_value(json!({"id": "w1", "host": "box", "slots": 4,
            "busy": 1, "queues": {"default": 3, "gpu": 1}, "heartbeat": "2026-03-01T12:00:03.1Z"}))
        .unwrap();
        assert_eq!(
            worker_table(std::slice::from_ref(&w)),
            "ID  HOST  SLOTS  BUSY  QUEUES           HEARTBEAT\n\
             w1  box   4      1     default=3,gpu=1  2026-03-01 12:00:03\n"
        );
        let idle = Worker {
            queues: Default::default(),
            ..w
        };
        assert_eq!(queues(&idle), "-");
    }
}
