//! `chaos`: a misbehaving action for Ward's tests, one behaviour per mode.
//!
//! Input `{"mode": "...", ...}`. It implements the raw WIT export instead of
//! using `ward_sdk::action!`, so that it can return what the SDK never would
//! (a result that is not JSON).
//!
//! | mode | does |
//! |---|---|
//! | `ok` | returns `{"ok": true}` |
//! | `echo` | returns the invocation it got |
//! | `loop` | spins forever (fuel, timeout, cancel) |
//! | `spin` | spins for `ms` then returns |
//! | `sleep` | blocks in a WASI sleep for `ms` (default 1 h) |
//! | `talk` | logs `lines` lines (default 20), one every `ms` (default 200), then returns |
//! | `memory_bomb` | allocates 1 MiB chunks until memory runs out |
//! | `stack_overflow` | recurses without end |
//! | `fs_escape` | tries to read and write outside its sandbox, reports each try |
//! | `disk_fill` | writes 1 MiB chunks to `/scratch/fill` until `size` bytes (default 8 GiB) or an error |
//! | `disk_files` | creates `count` empty files under `/scratch` (default 1,000,000) |
//! | `socket` | tries TCP, UDP and name lookup, reports each try |
//! | `output_flood` | sets outputs of `size` bytes until refused |
//! | `log_flood` | writes `lines` lines of `size` bytes to host log, stdout and stderr |
//! | `media_flood` | stores media of `size` bytes until refused |
//! | `metric_flood` | adds to `series` distinct counters |
//! | `bad_names` | calls each host function with invalid arguments, reports the errors |
//! | `panic` | panics |
//! | `retryable`, `fatal`, `invalid_input` | returns that `action-error` |
//! | `non_json` | returns text that is not JSON |
//! | `big_result` | returns a JSON string of `size` bytes |
//! | `warn` | records a warning and returns |
//! | `flaky` | first attempt: checkpoints, then fails retryably; later: returns the checkpoint |
//! | `slow` | runs `steps` steps of `step_ms`, checkpointing after each and resuming from the last |
//! | `variable` | returns the granted variable `name` |
//! | `cpu` | hashes a 1 MiB buffer `rounds` times (a CPU-bound guest for benchmarks) |
//! | `residue` | counts pages of its static memory that differ from the image, then dirties every other page |

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ward_sdk::bindings::Guest;
use ward_sdk::bindings::ward::action::host;
use ward_sdk::bindings::ward::action::types::{ActionError, Invocation, Level};

struct Chaos;

fn num(input: &Value, key: &str, default: u64) -> u64 {
    input.get(key).and_then(Value::as_u64).unwrap_or(default)
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(
    op: &str,
    target: &str,
    r: Result<T, E>,
) -> Value {
    match r {
        Ok(v) => json!({"op": op, "target": target, "ok": true, "detail": format!("{v:?}")}),
        Err(e) => json!({"op": op, "target": target, "ok": false, "detail": e.to_string()}),
    }
}

/// Recursion that uses wasm call frames only (no address-taken locals, so
/// nothing on Rust's shadow stack in linear memory) and that LLVM cannot
/// turn into a loop: it overflows the wasm stack itself.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    let r = recurse(n - 1);
    r.wrapping_mul(r | 1) ^ n
}

/// FNV-1a over a 1 MiB buffer, `rounds` times, feeding each round's hash
/// into the next: deterministic CPU work with memory traffic.
fn cpu(rounds: u64) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for b in buf.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for round in 0..rounds {
        for &b in &buf {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let len = buf.len();
        buf[(round as usize) % len] = hash as u8;
    }
    hash
}

fn fs_escape() -> Value {
    use std::fs;
    let mut tries = Vec::new();
    for path in [
        "/etc/passwd",
        "../../etc/passwd",
        "/scratch/../../etc/passwd",
        "/proc/self/environ",
        "/",
    ] {
        tries.push(outcome("read", path, fs::read(path).map(|b| b.len())));
    }
    for path in ["/", ".", "/scratch/.."] {
        tries.push(outcome(
            "read_dir",
            path,
            fs::read_dir(path).map(|d| d.count()),
        ));
    }
    for path in ["/tmp/ward-escape", "escape.txt", "/scratch/../escape.txt"] {
        tries.push(outcome("write", path, fs::write(path, b"escaped")));
    }
    let scratch = fs::write("/scratch/probe.txt", b"inside")
        .and_then(|_| fs::read("/scratch/probe.txt"))
        .map(|b| b == b"inside");
    let mut stdin = String::new();
    let stdin_bytes = std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin).unwrap_or(0);
    json!({
        "tries": tries,
        "scratch_ok": scratch.as_ref().is_ok_and(|ok| *ok),
        "scratch_detail": format!("{scratch:?}"),
        "env": std::env::vars().count(),
        "args": std::env::args().count(),
        "stdin_bytes": stdin_bytes,
    })
}

fn socket() -> Value {
    use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
    let timeout = Duration::from_secs(2);
    let tries = vec![
        outcome(
            "tcp_connect",
            "127.0.0.1:80",
            TcpStream::connect_timeout(&"127.0.0.1:80".parse().unwrap(), timeout),
        ),
        outcome(
            "tcp_connect",
            "1.1.1.1:443",
            TcpStream::connect_timeout(&"1.1.1.1:443".parse().unwrap(), timeout),
        ),
        outcome(
            "tcp_listen",
            "127.0.0.1:0",
            TcpListener::bind("127.0.0.1:0"),
        ),
        outcome(
            "udp_send",
            "127.0.0.1:53",
            UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", "127.0.0.1:53")),
        ),
        outcome(
            "lookup",
            "example.com:80",
            "example.com:80".to_socket_addrs().map(|a| a.count()),
        ),
    ];
    json!({ "tries": tries })
}

fn bad_names() -> Value {
    let long = "x".repeat(129);
    let media_err = |name: &str, ct: &str| host::put_media(name, ct, b"x").err();
    json!({
        "output_bad_name": host::set_output("bad name", "1").err(),
        "output_long_name": host::set_output(&long, "1").err(),
        "output_not_json": host::set_output("ok_name", "{not json").err(),
        "media_path_name": media_err("../escape.txt", "text/plain"),
        "media_bad_type": media_err("a.txt", "not a type"),
        "checkpoint_not_json": host::checkpoint("{nope").err(),
    })
}

fn slow(input: &Value, inv: &Invocation) -> Result<Value, ActionError> {
    let steps = num(input, "steps", 5);
    let step_ms = num(input, "step_ms", 200);
    let start: u64 = host::last_checkpoint()
        .and_then(|c| serde_json::from_str::<Value>(&c).ok())
        .and_then(|c| c.get("done").and_then(Value::as_u64))
        .unwrap_or(0);
    let mut ran = Vec::new();
    for step in start..steps {
        std::thread::sleep(Duration::from_millis(step_ms));
        ran.push(step);
        host::log(
            Level::Info,
            &format!("step {step} done (attempt {})", inv.attempt),
        );
        host::checkpoint(&json!({ "done": step + 1 }).to_string()).map_err(ActionError::Fatal)?;
    }
    Ok(json!({ "resumed_from": start, "ran": ran, "attempt": inv.attempt }))
}

const PAGE: usize = 4096;
/// Zero in the image (`.bss`): 256 pages.
static ZEROED: [AtomicU8; 256 * PAGE] = [const { AtomicU8::new(0) }; 256 * PAGE];
/// Sevens in the image (`.data`): 32 pages.
static SEVENS: [AtomicU8; 32 * PAGE] = [const { AtomicU8::new(7) }; 32 * PAGE];

/// What a fresh instance must never see: memory another instance wrote.
/// Counts the pages of both statics that differ from the image (first and
/// last byte of each), then writes every other page of both, so that the
/// dirty memory left behind is split into about 144 separate runs.
fn residue() -> Value {
    let differs = |pages: &[AtomicU8], image: u8| {
        pages
            .chunks(PAGE)
            .filter(|p| {
                p[0].load(Ordering::Relaxed) != image
                    || p[PAGE - 1].load(Ordering::Relaxed) != image
            })
            .count()
    };
    let (zeroed, sevens) = (differs(&ZEROED, 0), differs(&SEVENS, 7));
    for statics in [&ZEROED[..], &SEVENS[..]] {
        for page in statics.chunks(PAGE).step_by(2) {
            page[0].store(0xAB, Ordering::Relaxed);
            page[PAGE - 1].store(0xAB, Ordering::Relaxed);
        }
    }
    json!({ "zeroed_pages_changed": zeroed, "data_pages_changed": sevens })
}

impl Guest for Chaos {
    fn run(inv: Invocation) -> Result<String, ActionError> {
        let input: Value = serde_json::from_str(&inv.input)
            .map_err(|e| ActionError::InvalidInput(format!("input is not JSON: {e}")))?;
        let mode = input.get("mode").and_then(Value::as_str).unwrap_or("ok");
        let value = match mode {
            "ok" => json!({ "ok": true }),
            "echo" => json!({
                "input": input, "execution_id": inv.execution_id, "task_id": inv.task_id,
                "step": inv.step, "attempt": inv.attempt,
            }),
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "spin" => {
                let until = Instant::now() + Duration::from_millis(num(&input, "ms", 100));
                let mut n = 0u64;
                while Instant::now() < until {
                    n = std::hint::black_box(n + 1);
                }
                json!({ "spins": n })
            }
            "talk" => {
                let lines = num(&input, "lines", 20);
                for i in 0..lines {
                    host::log(Level::Info, &format!("line {i} of {lines}"));
                    std::thread::sleep(Duration::from_millis(num(&input, "ms", 200)));
                }
                json!({ "lines": lines })
            }
            "sleep" => {
                std::thread::sleep(Duration::from_millis(num(&input, "ms", 3_600_000)));
                json!({ "slept": true })
            }
            "memory_bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "stack_overflow" => json!({ "depth": recurse(std::hint::black_box(u64::MAX)) }),
            "fs_escape" => fs_escape(),
            "disk_fill" => {
                use std::io::Write;
                let size = num(&input, "size", 8 << 30);
                let chunk = vec![0x5au8; 1 << 20];
                let mut written = 0u64;
                let error = match std::fs::File::create("/scratch/fill") {
                    Err(e) => Some(e.to_string()),
                    Ok(mut f) => loop {
                        if written >= size {
                            break None;
                        }
                        if let Err(e) = f.write_all(&chunk) {
                            break Some(e.to_string());
                        }
                        written += chunk.len() as u64;
                    },
                };
                json!({ "written": written, "error": error })
            }
            "disk_files" => {
                let count = num(&input, "count", 1_000_000);
                let mut made = 0u64;
                let mut error = None;
                while made < count {
                    if let Err(e) = std::fs::File::create(format!("/scratch/f{made}")) {
                        error = Some(e.to_string());
                        break;
                    }
                    made += 1;
                }
                json!({ "made": made, "error": error })
            }
            "socket" => socket(),
            "output_flood" => {
                let value =
                    serde_json::to_string(&"x".repeat(num(&input, "size", 512 * 1024) as usize))
                        .unwrap();
                let mut accepted = 0;
                let error = loop {
                    if let Err(e) = host::set_output(&format!("out_{accepted}"), &value) {
                        break e;
                    }
                    accepted += 1;
                };
                json!({ "accepted": accepted, "error": error })
            }
            "log_flood" => {
                let line = "y".repeat(num(&input, "size", 1024) as usize);
                let lines = num(&input, "lines", 10_000);
                for i in 0..lines {
                    host::log(Level::Info, &line);
                    println!("{i} {line}");
                    eprintln!("{i} {line}");
                }
                json!({ "written": lines })
            }
            "media_flood" => {
                let data = vec![7u8; num(&input, "size", 8 << 20) as usize];
                let mut accepted = 0;
                let error = loop {
                    if let Err(e) = host::put_media(
                        &format!("blob-{accepted}.bin"),
                        "application/octet-stream",
                        &data,
                    ) {
                        break e;
                    }
                    accepted += 1;
                };
                json!({ "accepted": accepted, "error": error })
            }
            "metric_flood" => {
                let series = num(&input, "series", 2_000);
                for i in 0..series {
                    host::counter(&format!("series_{i}"), 1, &[]);
                }
                json!({ "series": series })
            }
            "bad_names" => bad_names(),
            "panic" => panic!(
                "chaos panic: {}",
                input
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("as asked")
            ),
            "retryable" => return Err(ActionError::Retryable("chaos: try again".into())),
            "fatal" => return Err(ActionError::Fatal("chaos: give up".into())),
            "invalid_input" => return Err(ActionError::InvalidInput("chaos: bad input".into())),
            "non_json" => return Ok("this is not JSON".into()),
            "big_result" => json!("z".repeat(num(&input, "size", 2 << 20) as usize)),
            "warn" => {
                host::warn("chaos: something looks off");
                json!({ "warned": true })
            }
            "flaky" => match host::last_checkpoint() {
                None => {
                    host::checkpoint(&json!({ "step": 1, "attempt": inv.attempt }).to_string())
                        .map_err(ActionError::Fatal)?;
                    return Err(ActionError::Retryable(
                        "flaky: failing once after a checkpoint".into(),
                    ));
                }
                Some(cp) => json!({
                    "resumed_from": serde_json::from_str::<Value>(&cp).unwrap_or(Value::Null),
                    "attempt": inv.attempt,
                }),
            },
            "slow" => slow(&input, &inv)?,
            "variable" => {
                let name = input.get("name").and_then(Value::as_str).unwrap_or("");
                json!({ "value": host::get_variable(name) })
            }
            "cpu" => json!({ "hash": cpu(num(&input, "rounds", 50)) }),
            "residue" => residue(),
            other => {
                return Err(ActionError::InvalidInput(format!(
                    "unknown chaos mode {other:?}"
                )));
            }
        };
        Ok(value.to_string())
    }
}

ward_sdk::bindings::__export_ward_action!(Chaos);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_default_when_missing_or_wrong() {
        let v = json!({"ms": 5, "bad": "x"});
        assert_eq!(num(&v, "ms", 1), 5);
        assert_eq!(num(&v, "bad", 1), 1);
        assert_eq!(num(&v, "none", 7), 7);
    }

    #[test]
    fn outcomes_record_success_and_failure() {
        let ok = outcome::<u32, String>("read", "/x", Ok(3));
        assert_eq!(ok["ok"], true);
        let err = outcome::<u32, String>("read", "/x", Err("denied".into()));
        assert_eq!(err["ok"], false);
        assert_eq!(err["detail"], "denied");
    }
}
