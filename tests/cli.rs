//! End-to-end tests of `ward run`: the real binary, its JSON report, its
//! readable summary and its exit codes (0 success/warning, 1 failed/killed,
//! 2 usage or load errors); and of how `ward serve` merges its
//! configuration (`--check-config`, which starts nothing).

mod common;

use std::process::{Command, Output};

use common::plugin;
use serde_json::Value;

fn ward(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join("ward-cli-test-cache");
    Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .env("WARD_CACHE_DIR", cache)
        .output()
        .expect("ward runs")
}

fn json_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn path(name: &str) -> String {
    plugin(name).display().to_string()
}

#[test]
fn run_json_prints_the_report_and_exits_zero() {
    let out = ward(&[
        "run",
        &path("hello"),
        "--input",
        r#"{"name":"CLI"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let r = json_report(&out);
    assert_eq!(r["status"], "success");
    assert_eq!(r["result"]["message"], "Hello, CLI!");
    assert_eq!(r["outputs"]["message"], "Hello, CLI!");
    assert_eq!(r["metrics"][0]["kind"], "counter");
    assert_eq!(r["metrics"][1]["kind"], "duration");
    assert_eq!(r["logs"][0]["source"], "host");
    assert!(r["usage"]["fuel_consumed"].as_u64().unwrap() > 0);
}

#[test]
fn run_prints_a_readable_summary() {
    let out = ward(&["run", &path("hello")]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("status:   success"), "{text}");
    assert!(text.contains("Hello, world!"), "{text}");
    assert!(text.contains("greetings (counter) = 1"), "{text}");
    assert!(text.contains("usage:"), "{text}");
}

#[test]
fn failed_attempts_exit_one_with_the_error_kind() {
    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"loop"}"#,
        "--fuel",
        "1000000",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_report(&out)["error"]["kind"], "fuel_exhausted");

    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"sleep"}"#,
        "--timeout",
        "200ms",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_report(&out)["error"]["kind"], "timeout");

    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"memory_bomb"}"#,
        "--memory",
        "16MiB",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_report(&out)["error"]["kind"], "memory_limit");
}

#[test]
fn warnings_exit_zero() {
    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"warn"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_report(&out)["status"], "warning");
}

#[test]
fn attempts_retry_and_carry_the_checkpoint() {
    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"flaky"}"#,
        "--attempts",
        "3",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json_report(&out);
    assert_eq!(r["attempt"], 2);
    assert_eq!(r["result"]["resumed_from"]["step"], 1);

    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"flaky"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "one attempt only by default");
}

#[test]
fn variables_scratch_and_input_files_are_granted() {
    let out = ward(&[
        "run",
        &path("chaos"),
        "--input",
        r#"{"mode":"variable","name":"GREETING"}"#,
        "--var",
        "GREETING=hi=there",
        "--json",
    ]);
    assert_eq!(json_report(&out)["result"]["value"], "hi=there");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, r#"{"mode":"fs_escape"}"#).unwrap();
    let out = ward(&[
        "run",
        &path("chaos"),
        "--input-file",
        input.to_str().unwrap(),
        "--scratch",
        "--json",
    ]);
    assert_eq!(json_report(&out)["result"]["scratch_ok"], true);
}

#[test]
fn media_go_under_the_media_dir_and_their_url_is_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = ward(&[
        "run",
        &path("word_count"),
        "--input",
        r#"{"text":"a b a"}"#,
        "--media-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let r = json_report(&out);
    let url = r["media"][0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(dir.path().canonicalize().unwrap().to_str().unwrap()),
        "{url}"
    );
    assert!(std::path::Path::new(url).exists());
}

#[test]
fn a_run_keeps_its_own_media_dir_only_when_it_stored_media() {
    let tmp = tempfile::tempdir().unwrap();
    let run_in_tmp = |plugin: &str, input: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["run", &path(plugin), "--input", input, "--json"])
            .env(
                "WARD_CACHE_DIR",
                std::env::temp_dir().join("ward-cli-test-cache"),
            )
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        (json_report(&out), left)
    };
    let (_, left) = run_in_tmp("hello", "{}");
    assert!(left.is_empty(), "a run without media left {left:?}");
    let (r, left) = run_in_tmp("word_count", r#"{"text":"a b a"}"#);
    assert_eq!(left.len(), 1, "{left:?}");
    let url = r["media"][0]["url"].as_str().unwrap();
    assert!(std::path::Path::new(url).exists(), "{url}");
}

#[test]
fn usage_and_load_errors_exit_two() {
    let out = ward(&["run", &path("hello"), "--input", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));

    let out = ward(&["run", &path("hello"), "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let out = ward(&["run", junk.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(json_report(&out)["error"]["kind"], "load_failed");

    let out = ward(&["run", "/nonexistent/x.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("load_failed"));
}

/// `ward serve --check-config` with `flags`, `env` and a config file.
fn serve_config(flags: &[&str], env: &[(&str, &str)], file: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ward.toml");
    std::fs::write(&config, file).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
    cmd.args([
        "serve",
        "--check-config",
        "--config",
        config.to_str().unwrap(),
    ])
    .args(flags);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WARD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).output().expect("ward runs")
}

#[test]
fn serve_settings_come_from_flags_then_variables_then_the_file_then_defaults() {
    let out = serve_config(
        &["--shutdown-grace", "1s"],
        &[("WARD_SHUTDOWN_GRACE", "9s"), ("WARD_SLOTS", "3")],
        "slots = 8\nlease = \"45s\"\nshutdown_grace = \"5s\"\n[queue_limits]\ngpu = 2\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = stdout.parse().unwrap();
    assert_eq!(config["shutdown_grace"].as_str(), Some("1s"), "flag > env");
    assert_eq!(config["slots"].as_integer(), Some(3), "env > file");
    assert_eq!(config["lease"].as_str(), Some("45s"), "file > default");
    assert_eq!(config["queue_limits"]["gpu"].as_integer(), Some(2));
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:8480"), "default");
    assert_eq!(config["max_plugin_size"].as_str(), Some("64MiB"));
}

#[test]
fn a_bad_serve_configuration_names_every_problem_and_exits_two() {
    let out = serve_config(
        &["--slots", "0"],
        &[("WARD_LEASE", "10ms")],
        "max_task_memory = \"1KiB\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: invalid configuration\n"), "{err}");
    for key in ["slots", "lease", "max_task_memory"] {
        assert!(err.contains(&format!("\n  - {key} ")), "{key}: {err}");
    }

    let out = serve_config(&[], &[], "slot = 2\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `slot`"));
}

/// `ward new NAME --lang …` in an empty directory anywhere: its
/// `./build.sh` installs what is missing and writes `dist/NAME.wasm`, which
/// `ward run` runs as the hello example (result, log line, counter).
#[test]
fn ward_new_scaffolds_a_plugin_that_builds_and_runs_in_each_language() {
    let tmp = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let name = format!("hi-{lang}");
        let out = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["new", &name, "--lang", lang])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{lang}: {out:?}");
        let dir = tmp.path().join(&name);
        let build = Command::new("./build.sh")
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            build.status.success(),
            "{lang}: {}\n{}",
            String::from_utf8_lossy(&build.stdout),
            String::from_utf8_lossy(&build.stderr)
        );
        let wasm = dir.join("dist").join(format!("{name}.wasm"));
        let out = ward(&[
            "run",
            wasm.to_str().unwrap(),
            "--input",
            r#"{"name":"Ada"}"#,
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{lang}: {out:?}");
        let r = json_report(&out);
        assert_eq!(
            r["result"],
            serde_json::json!({"message": "Hello, Ada!"}),
            "{lang}"
        );
        assert_eq!(r["logs"][0]["message"], "greeting Ada", "{lang}");
        assert_eq!(r["metrics"][0]["name"], "greetings", "{lang}");
        // The same name again is refused, and nothing is overwritten.
        let again = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["new", &name, "--lang", lang])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(2), "{lang}");
        assert!(wasm.exists());

        // A syntax error stops the build with the language's own message,
        // naming the line; the runtime is never left to trap on it.
        let (source, broken, expected) = match lang {
            "rust" => continue,
            "python" => ("app.py", "def broken(:\n", "SyntaxError"),
            _ => ("app.js", "let = ;\n", "SyntaxError"),
        };
        let path = dir.join(source);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines = text.lines().count() + 1;
        std::fs::write(&path, text + broken).unwrap();
        let build = Command::new("./build.sh")
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&build.stderr);
        assert!(!build.status.success(), "{lang}: {stderr}");
        assert!(stderr.contains(expected), "{lang}: {stderr}");
        assert!(
            stderr.contains(&format!("{source}, line {lines}"))
                || stderr.contains(&format!("{source}:{lines}")),
            "{lang}: the line is named: {stderr}"
        );
        assert!(!stderr.contains("Stack backtrace"), "{lang}: {stderr}");
    }
}
