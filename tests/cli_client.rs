//! End-to-end tests of the client commands (`ward plugin|task|execution|worker`)
//! against a real `ward serve`, exactly as a user types them.

mod common;

use std::process::{Command, Output};

use common::server::Server;
use serde_json::Value;

fn ward(server: &Server, args: &[&str]) -> Output {
    server.ward().args(args).output().expect("ward runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Asserts the command exited 0, showing its stderr when it did not.
#[track_caller]
fn succeeded(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            stdout(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[tokio::test]
async fn the_cli_drives_plugins_tasks_and_executions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch_bare(dir.path());

    // Plugins: push under a name, push again (already present), list.
    for (name, file) in [("hello", "hello"), ("chaos", "chaos")] {
        let path = common::plugin(file);
        let out = ward(
            &s,
            &[
                "plugin",
                "push",
                path.to_str().unwrap(),
                "--name",
                name,
                "--json",
            ],
        );
        succeeded(&out);
        assert!(json(&out)["id"].as_str().unwrap().starts_with("sha256:"));
    }
    let out = ward(
        &s,
        &["plugin", "push", common::plugin("hello").to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("already present"), "{}", stdout(&out));
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"nope").unwrap();
    let out = ward(&s, &["plugin", "push", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let out = ward(&s, &["plugin", "list"]);
    assert!(
        stdout(&out).contains("hello") && stdout(&out).contains("chaos"),
        "{}",
        stdout(&out)
    );

    // Tasks from YAML and JSON files.
    let yaml = dir.path().join("greet.yaml");
    std::fs::write(
        &yaml,
        "name: greet\naction: hello\ninput:\n  name: YAML\nretry:\n  max_attempts: 2\n",
    )
    .unwrap();
    let out = ward(&s, &["task", "create", "-f", yaml.to_str().unwrap()]);
    succeeded(&out);
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"name": "bad name", "action": "missing"}"#).unwrap();
    let out = ward(&s, &["task", "create", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("422"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ward(&s, &["task", "list"]);
    assert!(stdout(&out).contains("greet"));

    // Start and wait; get; logs; list with a status filter.
    let out = ward(&s, &["execution", "start", "greet", "--wait", "--json"]);
    succeeded(&out);
    let e = json(&out);
    assert_eq!(e["state"], "SUCCESS");
    assert_eq!(e["trigger"], "cli");
    assert_eq!(e["result"]["message"], "Hello, YAML!");
    let id = e["id"].as_str().unwrap().to_string();
    let out = ward(
        &s,
        &[
            "execution",
            "start",
            "greet",
            "--input",
            r#"{"name":""}"#,
            "--wait",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "invalid input fails the execution"
    );
    let out = ward(&s, &["execution", "get", &id]);
    assert!(stdout(&out).contains("SUCCESS"), "{}", stdout(&out));
    let out = ward(&s, &["execution", "logs", &id]);
    assert!(stdout(&out).contains("greeting YAML"), "{}", stdout(&out));
    let out = ward(&s, &["execution", "logs", &id, "--follow"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("greeting YAML"));
    let out = ward(
        &s,
        &[
            "execution",
            "list",
            "--status",
            "completed",
            "--task",
            "greet",
            "--json",
        ],
    );
    let list = json(&out);
    assert_eq!(list["executions"].as_array().unwrap().len(), 1);
    let out = ward(&s, &["execution", "list", "--status", "bogus"]);
    assert_eq!(out.status.code(), Some(2));

    // Control: cancel a sleeping guest; cancelling again is refused.
    let t = dir.path().join("chaos.json");
    std::fs::write(&t, r#"{"name": "chaos", "action": "chaos"}"#).unwrap();
    assert_eq!(
        ward(&s, &["task", "create", "-f", t.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = ward(
        &s,
        &[
            "execution",
            "start",
            "chaos",
            "--input",
            r#"{"mode":"sleep"}"#,
            "--json",
        ],
    );
    let sleeper = json(&out)["id"].as_str().unwrap().to_string();
    s.wait_for(&sleeper, "RUNNING", std::time::Duration::from_secs(30))
        .await;
    let out = ward(&s, &["execution", "cancel", &sleeper]);
    succeeded(&out);
    s.wait_for(&sleeper, "KILLED", std::time::Duration::from_secs(30))
        .await;
    let out = ward(&s, &["execution", "cancel", &sleeper]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    let out = ward(&s, &["execution", "restart", &sleeper, "--json"]);
    succeeded(&out);

    let out = ward(&s, &["execution", "watch", &id]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("SUCCESS"));
    let out = ward(&s, &["worker", "list", "--json"]);
    assert!(json(&out)["workers"][0]["slots"].as_u64().unwrap() > 0);
}

#[test]
fn an_unreachable_server_says_how_to_start_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["--server", "http://127.0.0.1:9", "execution", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Ward") && err.contains("ward serve"),
        "{err}"
    );
}

#[tokio::test]
async fn watch_prints_each_pushed_change_and_log_line_until_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch_bare(dir.path());
    let chaos = common::plugin("chaos");
    let out = ward(
        &s,
        &["plugin", "push", chaos.to_str().unwrap(), "--name", "chaos"],
    );
    assert_eq!(out.status.code(), Some(0));
    s.create_task(serde_json::json!({"name": "slow", "action": "chaos"}))
        .await;
    let id = s
        .start(
            "slow",
            serde_json::json!({"mode": "slow", "steps": 4, "step_ms": 100}),
        )
        .await;
    // Not a terminal: one line per change, and every log line.
    let out = ward(&s, &["execution", "watch", &id]);
    succeeded(&out);
    let text = stdout(&out);
    let steps: Vec<usize> = (0..4)
        .map(|i| {
            text.find(&format!("step {i} done"))
                .unwrap_or_else(|| panic!("step {i}: {text}"))
        })
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "in order: {text}");
    let running = text.find("RUNNING").expect(&text);
    let success = text.rfind("SUCCESS").expect(&text);
    assert!(running < success, "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("SUCCESS"),
        "ends with the final state: {text}"
    );

    // `start --wait` on the same task: the outputs once it has ended.
    let out = ward(
        &s,
        &[
            "execution",
            "start",
            "slow",
            "--input",
            r#"{"mode":"slow","steps":2,"step_ms":50}"#,
            "--wait",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let e = json(&out);
    assert_eq!(e["state"], "SUCCESS");
    assert_eq!(e["result"]["ran"], serde_json::json!([0, 1]), "{e}");

    // `stats`: the two executions, as JSON and as a table.
    let out = ward(&s, &["stats", "--since", "10m", "--task", "slow", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let a = json(&out);
    assert_eq!(a["bucket"], "1m");
    assert_eq!(a["totals"]["started"], 2);
    assert_eq!(a["totals"]["finished"]["SUCCESS"], 2);
    let out = ward(&s, &["stats"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let total = text
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(&cells[1..6], ["2", "2", "0", "0", "0"], "{text}");
    assert!(text.contains("busiest tasks: slow (2)"), "{text}");
    let out = ward(&s, &["stats", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn top_draws_live_figures_in_a_terminal_and_quits_on_q() {
    use std::io::Write as _;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    s.create_task(serde_json::json!({"name": "busy", "action": "chaos"}))
        .await;
    s.create_task(serde_json::json!({"name": "broken", "action": "chaos"}))
        .await;
    // `script` gives `ward top` a terminal (a pty) and passes our keys on.
    let command = format!(
        "{} --server {} --token {} top",
        env!("CARGO_BIN_EXE_ward"),
        s.root(),
        s.token
    );
    let mut top = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(s.start("busy", serde_json::json!({"mode": "ok"})).await);
        if i % 3 == 0 {
            ids.push(
                s.start("broken", serde_json::json!({"mode": "fatal"}))
                    .await,
            );
        }
    }
    for id in &ids {
        s.wait_for(id, "terminal", std::time::Duration::from_secs(30))
            .await;
    }
    // At least one redraw (every second) after the work, then quit.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    top.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let waited = tokio::task::spawn_blocking(move || top.wait_with_output());
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), waited)
        .await
        .expect("top quits on q")
        .unwrap()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{screen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screen.contains("\x1b[?1049h"), "the alternate screen");
    assert!(screen.contains("\x1b[?1049l"), "left on quitting");
    // The last frame drawn.
    let last = screen.rsplit("ward top — ").next().unwrap();
    for want in [
        "executions/s",
        "running        0",
        "success rate   75.0%",
        "busiest tasks  busy (6), broken (2)",
        "most failing   broken (2)",
        "slots in use   0/512",
    ] {
        assert!(last.contains(want), "{want:?} in {last}");
    }
}

/// `ward token create|list|revoke`, and which token the client commands
/// send: `WARD_TOKEN`, else a local server's admin token from the data dir.
#[tokio::test]
async fn tokens_are_made_used_and_revoked_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch(dir.path());
    let token_file = dir.path().join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the admin token is its owner's only");

    let out = ward(
        &s,
        &[
            "token",
            "create",
            "--namespace",
            "acme",
            "--scopes",
            "tasks:read",
            "--expires",
            "30d",
        ],
    );
    succeeded(&out);
    let secret = stdout(&out).trim().to_string();
    assert!(secret.starts_with("ward_"), "{secret}");
    let as_acme = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(args)
            .env("WARD_SERVER", s.root())
            .env("WARD_TOKEN", &secret)
            .output()
            .unwrap()
    };
    // Its namespace holds no tasks (the example is in default).
    let out = as_acme(&["task", "list", "--json"]);
    succeeded(&out);
    assert_eq!(json(&out)["tasks"], serde_json::json!([]));
    let out = as_acme(&["execution", "start", "hello"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("executions:trigger"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = ward(&s, &["token", "list", "--json"]);
    let tokens = json(&out)["tokens"].as_array().unwrap().clone();
    assert_eq!(tokens.len(), 2);
    assert!(!stdout(&out).contains(&secret));
    let made = tokens.iter().find(|t| t["namespace"] == "acme").unwrap();
    let out = ward(&s, &["token", "list"]);
    assert!(stdout(&out).contains("acme") && stdout(&out).contains("tasks:read"));
    let out = ward(&s, &["token", "revoke", made["id"].as_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let out = as_acme(&["task", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));

    // No WARD_TOKEN: the admin token of the local server's data dir.
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["task", "list", "--json"])
        .env("WARD_SERVER", s.root())
        .env("WARD_DATA_DIR", dir.path())
        .env_remove("WARD_TOKEN")
        .env("WARD_CLIENT_CONFIG", dir.path().join("none.toml"))
        .output()
        .unwrap();
    succeeded(&out);
    assert!(stdout(&out).contains("\"hello\""));
    // A config file's token wins over the data dir's.
    let config = dir.path().join("client.toml");
    std::fs::write(&config, format!("token = \"{secret}\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["task", "list"])
        .env("WARD_SERVER", s.root())
        .env("WARD_DATA_DIR", dir.path())
        .env_remove("WARD_TOKEN")
        .env("WARD_CLIENT_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the revoked token was sent");
    // The config file may name the server too.
    let admin = std::fs::read_to_string(&token_file).unwrap();
    std::fs::write(
        &config,
        format!("server = \"{}\"\ntoken = \"{}\"\n", s.root(), admin.trim()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["task", "list", "--json"])
        .env_remove("WARD_SERVER")
        .env_remove("WARD_TOKEN")
        .env("WARD_CLIENT_CONFIG", &config)
        .output()
        .unwrap();
    succeeded(&out);
    assert!(stdout(&out).contains("\"hello\""));

    // Scopes as several values, comma-separated, or the flag repeated.
    let out = ward(
        &s,
        &[
            "token",
            "create",
            "--namespace",
            "acme",
            "--scopes",
            "tasks:read",
            "executions:read,executions:trigger",
            "--scopes",
            "media:read",
            "--json",
        ],
    );
    succeeded(&out);
    let made = json(&out);
    assert_eq!(
        made["scopes"],
        serde_json::json!([
            "tasks:read",
            "executions:trigger",
            "executions:read",
            "media:read"
        ]),
        "{made}"
    );
    let out = ward(
        &s,
        &[
            "token",
            "create",
            "--namespace",
            "acme",
            "--scopes",
            "tasks:rd",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tasks:rd"));
}

#[tokio::test]
async fn no_auth_is_only_for_loopback() {
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args([
            "serve",
            "--no-auth",
            "--listen",
            "0.0.0.0:0",
            "--check-config",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only on a loopback address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let s = Server::launch_with(dir.path(), &["--no-auth"]);
    assert!(s.token.is_empty(), "no admin token without auth");
    assert!(!dir.path().join("admin.token").exists());
    let r = reqwest::get(s.url("/tasks")).await.unwrap();
    assert_eq!(r.status(), 200);
}
