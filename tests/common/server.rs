//! A real `ward serve` process on an ephemeral port with a temporary data
//! dir, for end-to-end tests. Killed (SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Server {
    child: Child,
    pub base: String,
    pub data: PathBuf,
    pub http: reqwest::Client,
    /// The admin token its first start wrote (empty with `--no-auth`).
    pub token: String,
}

impl Server {
    /// Starts a server on a fresh data dir.
    pub fn launch(data: &Path) -> Server {
        Server::launch_with(data, &[])
    }

    /// Starts a server with no example plugins registered.
    pub fn launch_bare(data: &Path) -> Server {
        let empty = data.join("no-examples");
        std::fs::create_dir_all(&empty).unwrap();
        Server::launch_with(data, &["--plugins", empty.to_str().unwrap()])
    }

    /// `extra` may name `--plugins`; otherwise the built plugins are registered.
    pub fn launch_with(data: &Path, extra: &[&str]) -> Server {
        Server::launch_env(data, extra, &[], Stdio::inherit())
    }

    /// Like [`launch_with`](Self::launch_with), with variables set and the
    /// server's stderr sent to `stderr`.
    pub fn launch_env(
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        stderr: impl Into<Stdio>,
    ) -> Server {
        let plugins = super::plugin("hello").parent().unwrap().to_path_buf();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data);
        if !extra.contains(&"--plugins") {
            cmd.arg("--plugins").arg(&plugins);
        }
        cmd.args(extra).envs(env.iter().copied()).stderr(stderr);
        Server::spawn(cmd, data)
    }

    /// `ward serve` as `./start.sh` runs it: from the repository's root, on
    /// the example plugins it finds there.
    pub fn launch_from_repository(data: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        Server::spawn(cmd, data)
    }

    fn spawn(mut cmd: Command, data: &Path) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("ward serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(120);
        let base = loop {
            assert!(Instant::now() < deadline, "server did not start");
            let line = lines.next().expect("server printed its address").unwrap();
            if let Some(rest) = line.strip_prefix("Ward is serving on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        // A first start writes the admin token before it says it serves.
        let token = std::fs::read_to_string(data.join("admin.token"))
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        let mut headers = reqwest::header::HeaderMap::new();
        if !token.is_empty() {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        Server {
            child,
            base: format!("{base}/api/v1"),
            data: data.to_path_buf(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            token,
        }
    }

    /// The server's address without `/api/v1`, for the CLI's `--server`.
    pub fn root(&self) -> &str {
        self.base.trim_end_matches("/api/v1")
    }

    /// The CLI, pointed at this server with its admin token.
    pub fn ward(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ward"));
        cmd.env("WARD_SERVER", self.root())
            .env("WARD_TOKEN", &self.token);
        cmd
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL: no graceful shutdown.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to 30 s for a graceful exit (asserted).
    pub fn terminate(self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        assert!(self.wait_exit(Duration::from_secs(30)), "the server exits");
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn create_task(&self, spec: Value) -> Value {
        let (status, task) = self.post("/tasks", spec).await;
        assert_eq!(status, 201, "{task}");
        task
    }

    pub async fn start(&self, task: &str, input: Value) -> String {
        let (status, exec) = self
            .post(
                &format!("/tasks/{task}/executions"),
                json!({ "input": input }),
            )
            .await;
        assert_eq!(status, 201, "{exec}");
        exec["id"].as_str().unwrap().to_string()
    }

    pub async fn execution(&self, id: &str) -> Value {
        let (status, e) = self.get(&format!("/executions/{id}")).await;
        assert_eq!(status, 200, "{e}");
        e
    }

    /// Polls until the execution reaches `state` (or a terminal state if
    /// `state` is "terminal"); returns it.
    pub async fn wait_for(&self, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let e = self.execution(id).await;
            let s = e["state"].as_str().unwrap();
            let terminal = matches!(s, "SUCCESS" | "WARNING" | "FAILED" | "KILLED");
            if s == state || (state == "terminal" && terminal) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "execution {id} is {s}, waited for {state}: {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
