//! Load generator for `ward serve` (run with `cargo bench -p ward --bench load`).
//!
//! Starts a real server (release build, durable: WAL + synchronous=FULL,
//! every trigger acknowledged after its commit) on a temporary data dir and
//! triggers no-op executions over HTTP with keep-alive at concurrency C:
//! 1. throughput to SUCCESS, and trigger→start / trigger→end percentiles;
//! 2. the same at about half that load, rate-limited;
//! 3. per-request latency seen by ordinary clients (curl, Python `requests`);
//! 4. again with 1,000,000 finished executions already stored, and the
//!    query plans of the hot queries.
//!
//! Times on the server side come from the execution's `started_at` and
//! `ended_at`; the client records when it sent each trigger (same machine,
//! same clock).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::{Connection, Row};

const CONCURRENCY: usize = 64;

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let plugins = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/target/wasm32-wasip2/release");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--plugins")
            .arg(plugins)
            .stdout(Stdio::piped())
            .spawn()
            .expect("ward serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("server output").unwrap();
            if let Some(rest) = line.strip_prefix("Ward is serving on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

fn rfc_ms(v: &Value) -> Option<f64> {
    humantime::parse_rfc3339_weak(v.as_str()?).ok().map(unix_ms)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Run {
    n: usize,
    wall: Duration,
    start_lat: Vec<f64>,
    end_lat: Vec<f64>,
    ack_lat: Vec<f64>,
}

impl Run {
    fn print(&self, label: &str) {
        let s = |v: &[f64]| {
            format!(
                "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
                pct(v, 0.5),
                pct(v, 0.9),
                pct(v, 0.99)
            )
        };
        println!(
            "{label}: {} executions in {:.2} s = {:.0}/s to SUCCESS\n  trigger→201 {}\n  trigger→start {}\n  trigger→SUCCESS {}",
            self.n,
            self.wall.as_secs_f64(),
            self.throughput(),
            s(&self.ack_lat),
            s(&self.start_lat),
            s(&self.end_lat)
        );
    }

    fn throughput(&self) -> f64 {
        self.n as f64 / self.wall.as_secs_f64()
    }
}

/// Triggers `n` executions (at most `rate` per second if given), waits for
/// all to end, and measures.
async fn load(base: &str, n: usize, rate: Option<f64>) -> Run {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let url = format!("{base}/api/v1/tasks/noop/executions");
    let sent: Arc<std::sync::Mutex<HashMap<String, (f64, f64)>>> = Default::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, sent, next) = (client.clone(), url.clone(), sent.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                if let Some(rate) = rate {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let at = SystemTime::now();
                let r = client.post(&url).body("").send().await.unwrap();
                assert_eq!(r.status(), 201);
                let acked = SystemTime::now();
                let e: Value = r.json().await.unwrap();
                let id = e["id"].as_str().unwrap().to_string();
                sent.lock()
                    .unwrap()
                    .insert(id, (unix_ms(at), unix_ms(acked) - unix_ms(at)));
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    // Wait until nothing is queued or running.
    loop {
        let v: Value = client
            .get(format!(
                "{base}/api/v1/executions?status=pending,running&limit=1"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["executions"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = t0.elapsed();
    let sent = sent.lock().unwrap().clone();
    let (mut start_lat, mut end_lat, mut ack_lat) = (Vec::new(), Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    while seen < n {
        let q = match &cursor {
            Some(c) => format!("{base}/api/v1/executions?task_id=noop&limit=1000&cursor={c}"),
            None => format!("{base}/api/v1/executions?task_id=noop&limit=1000"),
        };
        let v: Value = client.get(q).send().await.unwrap().json().await.unwrap();
        let list = v["executions"].as_array().unwrap();
        for e in list {
            seen += 1;
            assert_eq!(e["state"], "SUCCESS", "{e}");
            if let Some((at, ack)) = sent.get(e["id"].as_str().unwrap()) {
                start_lat.push(rfc_ms(&e["started_at"]).unwrap() - at);
                end_lat.push(rfc_ms(&e["ended_at"]).unwrap() - at);
                ack_lat.push(*ack);
            }
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    for v in [&mut start_lat, &mut end_lat, &mut ack_lat] {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    Run {
        n: sent.len(),
        wall,
        start_lat,
        end_lat,
        ack_lat,
    }
}

/// Sequential triggers from ordinary clients: curl (a process each) and
/// Python `requests` with a session (keep-alive).
fn ordinary_clients(base: &str) {
    let url = format!("{base}/api/v1/tasks/noop/executions");
    let mut times = Vec::new();
    for _ in 0..100 {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{time_total}",
                "-XPOST",
                &url,
            ])
            .output()
            .expect("curl runs");
        times.push(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .unwrap()
                * 1000.0,
        );
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "curl, 100 sequential triggers: p50 {:.2} ms, p90 {:.2} ms (whole request, new connection each)",
        pct(&times, 0.5),
        pct(&times, 0.9)
    );
    let script = format!(
        "import requests, time, statistics\ns = requests.Session()\nts = []\nfor _ in range(300):\n    t = time.perf_counter()\n    r = s.post('{url}')\n    assert r.status_code == 201\n    ts.append((time.perf_counter() - t) * 1000)\nts.sort()\nprint('python requests, 300 sequential triggers on one session: p50 %.2f ms, p90 %.2f ms' % (ts[150], ts[270]))\n"
    );
    match Command::new("python3").arg("-c").arg(script).output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => println!(
            "python requests: skipped ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("python requests: skipped ({e})"),
    }
}

/// Adds `count` finished executions (with task runs and attempts) straight
/// into the database, as a year of history would.
async fn preload(db: &Path, task_id: &str, count: u64) {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut c)
        .await
        .unwrap();
    let t = Instant::now();
    let rows = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})",
        count - 1
    );
    for sql in [
        format!(
            "{rows} INSERT INTO executions (id, task_id, task_version, namespace, trigger, input, state, created_at, started_at, ended_at, duration_ms, outputs, result) \
             SELECT printf('00000000-0000-7000-8000-%012d', i), '{task_id}', 1, 'default', 'http', '{{}}', 'SUCCESS', \
             '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', 1.0, '{{}}', 'null' FROM n"
        ),
        format!(
            "{rows} INSERT INTO task_runs (id, execution_id, task_id, step, state, attempts, max_attempts, queue, priority, fence) \
             SELECT printf('00000000-0000-7000-9000-%012d', i), printf('00000000-0000-7000-8000-%012d', i), '{task_id}', 'main', 'SUCCESS', 1, 1, 'default', 0, 1 FROM n"
        ),
        format!(
            "{rows} INSERT INTO attempts (id, task_run_id, execution_id, number, status, worker_id, fence, started_at, ended_at, usage, report) \
             SELECT printf('00000000-0000-7000-a000-%012d', i), printf('00000000-0000-7000-9000-%012d', i), printf('00000000-0000-7000-8000-%012d', i), \
             1, 'success', 'old', 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z', '{{}}', '{{}}' FROM n"
        ),
    ] {
        sqlx::query(&sql).execute(&mut c).await.unwrap();
    }
    println!(
        "preloaded {count} finished executions in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("query plans of the hot queries:");
    for (what, sql) in [
        (
            "claim runnable",
            "SELECT id FROM task_runs WHERE state IN ('CREATED', 'RETRYING') ORDER BY priority DESC, id LIMIT 100",
        ),
        ("execution by id", "SELECT * FROM executions WHERE id = 'x'"),
        (
            "task run + execution",
            "SELECT * FROM task_runs tr JOIN executions e ON e.id = tr.execution_id WHERE tr.id = 'x'",
        ),
        (
            "idempotency key",
            "SELECT id FROM executions WHERE task_id = 'x' AND idempotency_key = 'k'",
        ),
        (
            "list by state",
            "SELECT * FROM executions WHERE state IN ('CREATED', 'RUNNING') ORDER BY id DESC LIMIT 1",
        ),
        (
            "list by task",
            "SELECT * FROM executions WHERE task_id = 'x' AND id < 'z' ORDER BY id DESC LIMIT 50",
        ),
        (
            "logs of execution",
            "SELECT * FROM logs WHERE execution_id = 'x' AND id > 0 ORDER BY id LIMIT 100",
        ),
        (
            "running attempts",
            "SELECT * FROM attempts WHERE status = 'running'",
        ),
    ] {
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
            .fetch_all(&mut c)
            .await
            .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>("detail")).collect();
        println!("  {what}: {}", plan.join("; "));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n: usize = std::env::var("WARD_LOAD_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);

    let server = Server::start(dir.path());
    let base = format!("http://{}", server.base.trim_start_matches("http://"));
    let task_id = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/api/v1/tasks"))
            .json(&json!({"name": "noop", "action": "noop"}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    });
    rt.block_on(load(&base, 2_000, None)); // warm up
    let empty = rt.block_on(load(&base, n, None));
    empty.print(&format!("empty store, concurrency {CONCURRENCY}"));
    let half = empty.throughput() / 2.0;
    let run = rt.block_on(load(&base, (half * 5.0) as usize, Some(half)));
    run.print(&format!("half load ({half:.0}/s offered)"));
    ordinary_clients(&base);
    server.stop();

    rt.block_on(preload(&dir.path().join("ward.db"), &task_id, 1_000_000));
    let server = Server::start(dir.path());
    let base = format!("http://{}", server.base.trim_start_matches("http://"));
    rt.block_on(load(&base, 2_000, None));
    let full = rt.block_on(load(&base, n, None));
    full.print("with 1,000,000 finished executions stored");
    println!(
        "throughput with 1M stored vs empty: {:.0}/s vs {:.0}/s = {:.1}% (target: within 10%)",
        full.throughput(),
        empty.throughput(),
        100.0 * full.throughput() / empty.throughput()
    );
    server.stop();
}
