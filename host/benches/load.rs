//! Load generator for `ward serve` (run with `cargo bench -p ward --bench load`).
//!
//! Starts a real server (release build, durable: WAL + synchronous=FULL,
//! every trigger acknowledged after its commit) on a temporary data dir and
//! triggers no-op executions over HTTP with keep-alive at concurrency C:
//! 1. throughput to SUCCESS, and trigger→start / trigger→end percentiles;
//! 2. the same at about half that load, rate-limited;
//! 3. per-request latency seen by ordinary clients (curl, Python `requests`);
//! 4. callers who wait for the result: sequential trigger → caller knows
//!    SUCCESS with `?wait` and by following the execution's events; a
//!    closed loop of 64 callers each using `?wait`; the server's CPU per
//!    execution with and without 1,000 idle followers attached;
//! 5. flows: a 5-step sequential flow of `noop` steps and a `for_each` of
//!    100 `noop` items, as flows/s and steps (task runs)/s, against the
//!    single-action executions/s of the same run;
//! 6. a task dataset of 1,000,000 rows: the first page, a page a million
//!    rows in, and a whole CSV export streamed (the server's memory before
//!    and after);
//! 7. again with 1,000,000 finished executions already stored, and the
//!    query plans of the hot queries.
//!
//! `WARD_LOAD_SECTIONS` picks sections (comma-separated: `throughput`,
//! `wait`, `follow`, `flows`, `dataset`, `stored`; default all); `WARD_BIN` runs another
//! `ward` binary as the server (to compare builds in one run).
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
        let bin = std::env::var("WARD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ward").into());
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .arg("--plugins")
            .arg(plugins)
            // The figures below were measured before tokens; a token check
            // is one cached sha256 per request.
            .arg("--no-auth")
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
    settled(&client, base, "noop").await;
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

/// Waits until none of `task`'s executions is queued or running.
async fn settled(client: &reqwest::Client, base: &str, task: &str) {
    loop {
        let v: Value = client
            .get(format!(
                "{base}/api/v1/executions?status=pending,running&task_id={task}&limit=1"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["executions"].as_array().unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Triggers `n` executions of `task` with `body` at concurrency C, waits
/// until all have ended, and returns the wall time (all must succeed).
async fn load_task(base: &str, task: &str, body: Value, n: usize) -> Duration {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let url = format!("{base}/api/v1/tasks/{task}/executions");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY.min(n) {
        let (client, url, next, body) = (client.clone(), url.clone(), next.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let r = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    settled(&client, base, task).await;
    let wall = t0.elapsed();
    let v: Value = client
        .get(format!(
            "{base}/api/v1/executions?status=failed,killed,warning&task_id={task}&limit=1"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["executions"].as_array().unwrap().is_empty(),
        "{task}: not every execution succeeded: {v}"
    );
    wall
}

/// Flows against single-action executions, in the same run.
async fn flows(base: &str, single: f64) {
    let client = reqwest::Client::new();
    let steps: Vec<Value> = (1..=5)
        .map(|i| json!({"name": format!("s{i}"), "action": "noop"}))
        .collect();
    for spec in [
        json!({"name": "flow5", "steps": steps}),
        json!({"name": "each100", "steps": [{"name": "each",
            "for_each": {"items": "inputs.items", "concurrency": 10, "step": {"action": "noop"}}}]}),
    ] {
        let r = client
            .post(format!("{base}/api/v1/tasks"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
    load_task(base, "flow5", json!({}), 200).await; // warm up
    let n = 2_000;
    let wall = load_task(base, "flow5", json!({}), n).await.as_secs_f64();
    let flows = n as f64 / wall;
    println!(
        "5-step flow of noop steps, {n} flows at concurrency {CONCURRENCY}: {flows:.0} flows/s, {:.0} steps/s (single-action executions in this run: {single:.0}/s; a step costs {:.2}x an execution)",
        flows * 5.0,
        single / (flows * 5.0)
    );
    let items: Vec<u32> = (0..100).collect();
    // Enough flows for a few seconds of items: a shorter run is mostly noise.
    let n = 300;
    let wall = load_task(base, "each100", json!({"input": {"items": items}}), n)
        .await
        .as_secs_f64();
    let flows = n as f64 / wall;
    println!(
        "for_each of 100 noop items (concurrency 10), {n} flows: {flows:.1} flows/s, {:.0} steps/s (a step costs {:.2}x a single-action execution)",
        flows * 100.0,
        single / (flows * 100.0)
    );
}

/// The server's resident anonymous memory, in MiB (Linux): what it
/// allocated, not the database pages it maps.
fn rss_mib(server: &Server) -> f64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// A dataset of a million rows, read a page at a time and exported whole.
async fn dataset(server: &Server, base: &str, db: &Path) {
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/v1/tasks"))
        .json(&json!({"name": "rows", "steps": [{"name": "a", "action": "noop"}],
            "dataset": {"from": "steps.a.outputs.rows",
                        "schema": {"type": "object", "properties": {"word": {"type": "string"}, "count": {"type": "integer"}}}}}))
        .send()
        .await
        .unwrap();
    let task: Value = r.json().await.unwrap();
    let task_id = task["id"].as_str().unwrap().to_string();
    let n = 1_000_000;
    let mut c = connect(db, "PRAGMA busy_timeout = 10000").await;
    let t = Instant::now();
    // A thousand executions of a thousand rows each.
    sqlx::query(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) INSERT INTO dataset_rows (task_id, execution_id, row_index, created_at, data) SELECT '{task_id}', printf('00000000-0000-7000-b000-%012d', i / 1000), i % 1000, '2026-11-01T00:00:00.000000Z', json_object('word', 'w' || i, 'count', i % 97) FROM n",
        n - 1
    ))
    .execute(&mut c)
    .await
    .unwrap();
    println!(
        "dataset: {n} rows preloaded in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let page = |url: String| {
        let client = client.clone();
        async move {
            let mut times = Vec::new();
            for _ in 0..20 {
                let t = Instant::now();
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["rows"].as_array().unwrap().len(), 1000);
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            pct(&times, 0.5)
        }
    };
    use base64::Engine;
    let deep = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("d1:990000");
    let first = page(format!("{base}/api/v1/tasks/rows/dataset?limit=1000")).await;
    let late = page(format!(
        "{base}/api/v1/tasks/rows/dataset?limit=1000&cursor={deep}"
    ))
    .await;
    println!(
        "dataset pages of 1,000 rows (p50 of 20): the first {first:.1} ms, one 990,000 rows in {late:.1} ms"
    );
    let before = rss_mib(server);
    let t = Instant::now();
    let mut r = client
        .get(format!("{base}/api/v1/tasks/rows/dataset?format=csv"))
        .send()
        .await
        .unwrap();
    let (mut bytes, mut lines, mut peak) = (0usize, 0usize, before);
    while let Some(chunk) = r.chunk().await.unwrap() {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        if lines % 100_000 < 1_000 {
            peak = peak.max(rss_mib(server));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(lines, n + 1, "every row and the header");
    println!(
        "dataset CSV export: {n} rows, {:.1} MB in {secs:.2} s ({:.0} rows/s); server memory {before:.0} MiB before, at most {peak:.0} MiB during",
        bytes as f64 / 1e6,
        n as f64 / secs
    );
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

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(2 * CONCURRENCY)
        .build()
        .unwrap()
}

/// Reads a followed feed until its `end` event.
async fn until_end(r: reqwest::Response) {
    let mut r = r;
    let mut seen = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("event: end") {
            return;
        }
    }
    panic!("the follow closed without an end: {seen}");
}

/// Times `once` (a trigger until the caller knows the end) `n` times in
/// sequence; sorted milliseconds.
async fn sequential<F, Fut>(n: usize, once: F) -> Vec<f64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        once().await;
        lat.push(ms(t));
    }
    sorted(lat)
}

/// Sequential trigger → caller knows SUCCESS, `n` times, by following the
/// execution's events (a trigger, then a follow from the start).
async fn follow_latency(base: &str, n: usize) -> Vec<f64> {
    let client = client();
    sequential(n, || async {
        let r = client
            .post(format!("{base}/api/v1/tasks/noop/executions"))
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let e: Value = r.json().await.unwrap();
        let id = e["id"].as_str().unwrap();
        let r = client
            .get(format!("{base}/api/v1/executions/{id}/events?follow=true"))
            .send()
            .await
            .unwrap();
        until_end(r).await;
    })
    .await
}

/// Sequential trigger with `?wait` → the ended execution, `n` times.
async fn wait_latency(base: &str, n: usize) -> Vec<f64> {
    let client = client();
    sequential(n, || async {
        let r = client
            .post(format!("{base}/api/v1/tasks/noop/executions?wait=30s"))
            .body("")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["state"], "SUCCESS", "{e}");
    })
    .await
}

/// `callers` callers, each triggering with `?wait` and triggering again
/// when told of the end, until `n` executions have ended: executions/s.
async fn closed_loop(base: &str, n: usize, callers: usize) -> f64 {
    let client = client();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, next) = (client.clone(), next.clone());
        let url = format!("{base}/api/v1/tasks/noop/executions?wait=30s");
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let r = client.post(&url).body("").send().await.unwrap();
                assert_eq!(r.status(), 201);
                let e: Value = r.json().await.unwrap();
                assert_eq!(e["state"], "SUCCESS", "{e}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// The process's CPU time so far (user + system), in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces): utime, stime
    // are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks * 1000.0 / 100.0 // USER_HZ is 100 on Linux
}

/// `count` executions that will not change while the benchmark runs:
/// queued behind a blocker of a one-at-a-time task.
async fn held_executions(base: &str, count: usize) -> Vec<String> {
    let client = client();
    let r = client
        .post(format!("{base}/api/v1/tasks"))
        .json(&json!({"name": "held", "action": "chaos", "concurrency": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let start = |input: Value| {
        let client = client.clone();
        let url = format!("{base}/api/v1/tasks/held/executions");
        async move {
            let r = client
                .post(url)
                .json(&json!({ "input": input }))
                .send()
                .await
                .unwrap();
            let e: Value = r.json().await.unwrap();
            e["id"].as_str().unwrap().to_string()
        }
    };
    start(json!({"mode": "sleep", "ms": 3_600_000})).await;
    let mut held = Vec::new();
    for _ in 0..count {
        held.push(start(json!({"mode": "ok"})).await);
    }
    held
}

/// Attaches a follower of its events to each execution; returns the tasks
/// holding them, once all are attached.
async fn idle_followers(base: &str, ids: &[String]) -> Vec<tokio::task::JoinHandle<()>> {
    let mut held = Vec::new();
    for id in ids {
        let url = format!("{base}/api/v1/executions/{id}/events?follow=true");
        let client = reqwest::Client::new();
        let (ready, attached) = tokio::sync::oneshot::channel();
        held.push(tokio::spawn(async move {
            let mut r = client.get(url).send().await.unwrap();
            // The stored `created` event, then nothing.
            let _ = r.chunk().await;
            let _ = ready.send(());
            while let Ok(Some(_)) = r.chunk().await {}
        }));
        attached.await.unwrap();
    }
    held
}

async fn waiting(server: &Server, base: &str, sections: &[String], open_loop: f64) {
    let has = |s: &str| sections.iter().any(|x| x == s);
    let line = |label: &str, v: &[f64]| {
        println!(
            "  {label}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99)
        )
    };
    const SEQ: usize = 2_000;
    println!("callers who wait for the result (sequential, {SEQ} each):");
    follow_latency(base, 200).await; // warm up
    line(
        "trigger → end seen following events",
        &follow_latency(base, SEQ).await,
    );
    if !has("wait") {
        return;
    }
    wait_latency(base, 200).await;
    line(
        "trigger with ?wait → ended execution",
        &wait_latency(base, SEQ).await,
    );
    if std::env::var_os("WARD_LOAD_PAUSE").is_some() {
        // For a profiler: attach to the server, then press Enter.
        println!("server pid {}; press Enter", server.child.id());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    let loop_n = 20_000;
    closed_loop(base, 2_000, CONCURRENCY).await;
    let closed = closed_loop(base, loop_n, CONCURRENCY).await;
    println!(
        "closed loop, {CONCURRENCY} callers each using ?wait: {closed:.0} executions/s ({loop_n} executions) = {:.0}% of the open loop's {open_loop:.0}/s in this run",
        100.0 * closed / open_loop
    );
    let pid = server.child.id();
    let cpu_per_execution = || async {
        let before = cpu_ms(pid);
        closed_loop(base, loop_n, CONCURRENCY).await;
        (cpu_ms(pid) - before) / loop_n as f64
    };
    let held = held_executions(base, 1_000).await;
    let bare = cpu_per_execution().await;
    let followers = idle_followers(base, &held).await;
    let followed = cpu_per_execution().await;
    println!(
        "server CPU per execution (closed loop of {CONCURRENCY}, ?wait): {:.3} ms without followers, {:.3} ms with 1,000 idle followers attached = {:.2}×",
        bare,
        followed,
        followed / bare
    );
    for f in followers {
        f.abort();
    }
}

/// Times `GET /analytics` for one day in 1-hour buckets over the preloaded
/// month (about 33,000 executions a day).
async fn analytics_timing(base: &str) {
    let client = client();
    let url = format!(
        "{base}/api/v1/analytics?since=2026-01-15T00:00:00Z&until=2026-01-16T00:00:00Z&bucket=1h"
    );
    let mut times = Vec::new();
    let mut started = 0;
    for _ in 0..11 {
        let t = Instant::now();
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let a: Value = r.json().await.unwrap();
        times.push(ms(t));
        started = a["totals"]["started"].as_u64().unwrap();
        assert_eq!(a["buckets"].as_array().unwrap().len(), 24);
    }
    let times = sorted(times);
    println!(
        "analytics, one day in 1-hour buckets ({started} executions of 1,000,000 stored): p50 {:.1} ms, max {:.1} ms over 11 requests (target ≤ 200 ms)",
        pct(&times, 0.5),
        times[times.len() - 1]
    );
}

/// Adds `count` finished executions (with task runs and attempts) straight
/// into the database, as a year of history would.
/// A connection to the server's database, set up by `pragma`.
async fn connect(db: &Path, pragma: &str) -> sqlx::SqliteConnection {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(pragma).execute(&mut c).await.unwrap();
    c
}

async fn preload(db: &Path, task_id: &str, count: u64) {
    let mut c = connect(db, "PRAGMA journal_mode = WAL").await;
    let t = Instant::now();
    let rows = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {})",
        count - 1
    );
    for sql in [
        // A month of history: one execution every 2.592 s from
        // 2026-01-01, 1 in 50 failed, 1 in 100 killed, durations 1-100 ms.
        format!(
            "{rows}, t(i, at) AS (SELECT i, strftime('%Y-%m-%dT%H:%M:%S', 1767225600 + i * 2592 / 1000, 'unixepoch') \
             || printf('.%06dZ', (i * 2592000) % 1000000) FROM n) \
             INSERT INTO executions (id, task_id, task_version, namespace, trigger, input, state, created_at, started_at, ended_at, duration_ms, outputs, result, error, attempts, fuel, memory_peak) \
             SELECT printf('00000000-0000-7000-8000-%012d', i), '{task_id}', 1, 'default', 'http', '{{}}', \
             CASE WHEN i % 50 = 0 THEN 'FAILED' WHEN i % 100 = 1 THEN 'KILLED' ELSE 'SUCCESS' END, \
             at, at, at, 1.0 + i % 100, '{{}}', 'null', \
             CASE WHEN i % 50 = 0 THEN '{{\"kind\":\"action_fatal\",\"message\":\"x\"}}' END, 1, 10000 + i % 1000, 1048576 FROM t"
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
            "analytics rows",
            "SELECT created_at FROM executions x WHERE created_at >= 'a' AND created_at < 'b'",
        ),
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
    let sections: Vec<String> = std::env::var("WARD_LOAD_SECTIONS")
        .unwrap_or_else(|_| "throughput,wait,follow,flows,dataset,stored".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let has = |s: &str| sections.iter().any(|x| x == s);

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
    if has("throughput") {
        let half = empty.throughput() / 2.0;
        let run = rt.block_on(load(&base, (half * 5.0) as usize, Some(half)));
        run.print(&format!("half load ({half:.0}/s offered)"));
        ordinary_clients(&base);
    }
    if has("wait") || has("follow") {
        rt.block_on(waiting(&server, &base, &sections, empty.throughput()));
    }
    if has("flows") {
        rt.block_on(flows(&base, empty.throughput()));
    }
    if has("dataset") {
        rt.block_on(dataset(&server, &base, &dir.path().join("ward.db")));
    }
    server.stop();
    if !has("stored") {
        return;
    }

    rt.block_on(preload(&dir.path().join("ward.db"), &task_id, 1_000_000));
    let server = Server::start(dir.path());
    let base = format!("http://{}", server.base.trim_start_matches("http://"));
    rt.block_on(analytics_timing(&base));
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
