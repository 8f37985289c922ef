//! `ward task create|list|dataset`: define tasks on a Ward server from
//! JSON or YAML files, list them, and export a task's dataset.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::Client;
use super::exit;
use super::output::{out, outln, print_json, table};
use super::time::short_time;
use crate::model::task::Task;

#[derive(Debug, Args)]
pub struct TaskArgs {
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task from a TaskSpec file (JSON or YAML).
    Create(CreateArgs),
    /// List the tasks on the server (with each schedule's next run).
    List,
    /// Export a task's dataset: every row, oldest first.
    Dataset(DatasetArgs),
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// The task's id or name.
    pub task: String,
    /// `csv`, `jsonl` (one row per line) or `json` (the first page).
    #[arg(long, default_value = "csv", value_parser = ["csv", "jsonl", "json"])]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The TaskSpec: `.yaml`/`.yml` is read as YAML, `.json` as JSON,
    /// anything else (or `-` for stdin) as JSON, else YAML.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

pub async fn main(client: Client, args: TaskArgs) -> anyhow::Result<u8> {
    match args.command {
        TaskCommand::Create(create) => {
            let spec = read_task_file(&create.file)?;
            let task = client.create_task(&spec).await?;
            if args.json {
                print_json(&task.json);
            } else {
                let t = &task.value;
                outln!(
                    "created task {} (id {}, version {})",
                    t.spec.name,
                    t.id,
                    t.version
                );
            }
        }
        TaskCommand::Dataset(d) => {
            let mut stdout = std::io::stdout();
            client
                .export_dataset(&d.task, &d.format, &mut stdout)
                .await?;
            use std::io::Write as _;
            let _ = stdout.flush();
        }
        TaskCommand::List => {
            let list = client.tasks().await?;
            if args.json {
                print_json(&list.json);
            } else {
                out!("{}", task_table(&list.value.tasks));
            }
        }
    }
    Ok(exit::OK)
}

fn read_task_file(path: &Path) -> anyhow::Result<Value> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the task from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    parse_task(path, &text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The TaskSpec in `text`, parsed by `path`'s extension; it must be a
/// mapping (the server checks the rest and names every problem).
fn parse_task(path: &Path, text: &str) -> Result<Value, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let value: Value = match ext.as_deref() {
        Some("yaml" | "yml") => {
            yaml_serde::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?
        }
        Some("json") => serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?,
        _ => match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json) => yaml_serde::from_str(text)
                .map_err(|yaml| format!("neither valid JSON ({json}) nor valid YAML ({yaml})"))?,
        },
    };
    if !value.is_object() {
        return Err(
            "a task must be a mapping with at least `name` and `action`, e.g. {\"name\": \"greet\", \"action\": \"hello\"}"
                .into(),
        );
    }
    Ok(value)
}

fn task_table(tasks: &[Task]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.spec.name.clone(),
                t.version.to_string(),
                if t.spec.is_flow() {
                    let names: Vec<&str> = t.spec.steps.iter().map(|s| s.name.as_str()).collect();
                    format!("flow: {}", names.join(" → "))
                } else {
                    t.spec.action.clone()
                },
                short_time(&t.updated_at),
                match &t.schedule_state {
                    None => "-".into(),
                    Some(s) if s.paused => "paused".into(),
                    Some(s) => s.next_fire_at.as_deref().map_or("-".into(), short_time),
                },
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "VERSION", "ACTION", "UPDATED", "NEXT RUN"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const YAML: &str = "name: greet\naction: hello\ninput:\n  name: YAML\nlimits:\n  fuel: 10000000000\n  timeout: 30s\nretry:\n  max_attempts: 3\n";

    #[test]
    fn task_files_parse_by_extension() {
        let expected = json!({"name": "greet", "action": "hello", "input": {"name": "YAML"},
            "limits": {"fuel": 10_000_000_000u64, "timeout": "30s"}, "retry": {"max_attempts": 3}});
        assert_eq!(parse_task(Path::new("t.yaml"), YAML).unwrap(), expected);
        assert_eq!(parse_task(Path::new("t.YML"), YAML).unwrap(), expected);
        let json_text = expected.to_string();
        assert_eq!(
            parse_task(Path::new("t.json"), &json_text).unwrap(),
            expected
        );
        // Unknown extensions and stdin: JSON first, then YAML.
        assert_eq!(parse_task(Path::new("task"), &json_text).unwrap(), expected);
        assert_eq!(parse_task(Path::new("-"), YAML).unwrap(), expected);
    }

    #[test]
    fn bad_task_files_say_why() {
        let e = parse_task(Path::new("t.json"), "name: greet").unwrap_err();
        assert!(e.starts_with("not valid JSON"), "{e}");
        let e = parse_task(Path::new("t.yaml"), "name: [unclosed").unwrap_err();
        assert!(e.starts_with("not valid YAML"), "{e}");
        let e = parse_task(Path::new("t.txt"), "{\"name\": ").unwrap_err();
        assert!(e.contains("neither valid JSON"), "{e}");
        let e = parse_task(Path::new("t.yaml"), "- a\n- b\n").unwrap_err();
        assert!(e.contains("must be a mapping"), "{e}");
    }

    #[test]
    fn tasks_print_as_a_table() {
        let t: Task = serde_json::from_value(json!({"id": "t1", "name": "greet", "version": 2,
            "action": "hello", "created_at": "2026-03-01T12:00:00Z",
            "updated_at": "2026-03-01T12:00:03Z"}))
        .unwrap();
        let mut scheduled: Task = serde_json::from_value(json!({"id": "t2", "name": "nightly",
            "version": 1, "steps": [{"name": "a", "action": "noop"}, {"name": "b", "action": "noop"}],
            "schedule": {"cron": "0 2 * * *"}, "created_at": "2026-03-01T12:00:00Z",
            "updated_at": "2026-03-01T12:00:03Z",
            "schedule_state": {"paused": false, "next_fire_at": "2026-03-02T02:00:00Z", "last_tick_at": null}}))
        .unwrap();
        assert_eq!(
            task_table(&[t.clone(), scheduled.clone()]),
            "ID  NAME     VERSION  ACTION       UPDATED              NEXT RUN\n\
             t1  greet    2        hello        2026-03-01 12:00:03  -\n\
             t2  nightly  1        flow: a → b  2026-03-01 12:00:03  2026-03-02 02:00:00\n"
        );
        scheduled.schedule_state.as_mut().unwrap().paused = true;
        assert!(task_table(&[scheduled]).contains("paused"));
    }
}
