//! Benchmarks of the attempt path (run with `cargo bench -p ward --bench attempt`).
//!
//! Criterion measures each case; a summary at the end measures Ward and
//! its baselines interleaved in the same run and prints the ratios, because
//! this shared machine's speed drifts between runs:
//! - Ward's attempt vs a raw-wasmtime baseline doing the same new store,
//!   instantiate and call, with the same engine and the same no-op component;
//! - no-op attempts per second on one core;
//! - a CPU-bound guest under fuel + epoch vs an engine with neither;
//! - a cached component's first attempt in a new `ward run` process vs a
//!   compiling one;
//! - how long a spinning guest takes to stop after cancel;
//! - Python and JavaScript components: loading compiling and from the
//!   artifact cache, and a hello attempt in each against the Rust one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use ward::sandbox::engine::{EngineConfig, wasmtime_config};
use ward::sandbox::{
    AttemptSpec, Invocation, Limits, LoadedAction, MediaStore, MediaUrls, Sandbox,
};

/// The same world, bound directly with no Ward in between.
mod raw {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "action",
        imports: { "ward:action/host.checkpoint": async },
        exports: { default: async },
    });
}
use raw::ward::action::{host, types};

struct RawState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for RawState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for RawState {}

impl host::Host for RawState {
    fn log(&mut self, _: types::Level, _: String) {}
    fn set_output(&mut self, _: String, _: String) -> Result<(), String> {
        Ok(())
    }
    fn counter(&mut self, _: String, _: i64, _: Vec<(String, String)>) {}
    fn duration(&mut self, _: String, _: u64, _: Vec<(String, String)>) {}
    fn put_media(&mut self, _: String, _: String, _: Vec<u8>) -> Result<types::MediaRef, String> {
        Err("no media in the baseline".into())
    }
    async fn checkpoint(&mut self, _: String) -> Result<(), String> {
        Ok(())
    }
    fn last_checkpoint(&mut self) -> Option<String> {
        None
    }
    fn get_variable(&mut self, _: String) -> Option<String> {
        None
    }
    fn warn(&mut self, _: String) {}
}

/// New store, instantiate, call: what any embedder must do per attempt.
struct Baseline {
    engine: Engine,
    pre: raw::ActionPre<RawState>,
    limits: bool,
}

impl Baseline {
    fn new(engine: Engine, wasm: &[u8], limits: bool) -> Self {
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        raw::Action::add_to_linker::<RawState, HasSelf<RawState>>(&mut linker, |s| s).unwrap();
        let component = Component::new(&engine, wasm).unwrap();
        let pre = raw::ActionPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Baseline {
            engine,
            pre,
            limits,
        }
    }

    async fn attempt(&self, input: &str) -> String {
        let state = RawState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&self.engine, state);
        if self.limits {
            store.set_fuel(u64::MAX / 2).unwrap();
            store.fuel_async_yield_interval(Some(1_000_000)).unwrap();
            store.set_epoch_deadline(u64::MAX / 2);
        }
        let action = self.pre.instantiate_async(&mut store).await.unwrap();
        let inv = types::Invocation {
            input: input.to_string(),
            execution_id: "0".into(),
            task_id: "bench".into(),
            step: "main".into(),
            attempt: 1,
        };
        action.call_run(&mut store, &inv).await.unwrap().unwrap()
    }
}

fn plugin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../plugins/target/wasm32-wasip2/release/{name}.wasm"
    ));
    assert!(
        p.exists(),
        "build the plugins first: (cd plugins && cargo build --release)"
    );
    p
}

struct Fixture {
    sandbox: Sandbox,
    noop: Arc<LoadedAction>,
    chaos: Arc<LoadedAction>,
    media: Arc<MediaStore>,
    baseline: Baseline,
    cpu_no_limits: Baseline,
    _media_dir: tempfile::TempDir,
}

const CPU_INPUT: &str = r#"{"mode":"cpu","rounds":50}"#;

impl Fixture {
    fn new() -> Self {
        let config = EngineConfig::default();
        let sandbox = Sandbox::new(config.clone()).unwrap();
        let noop_wasm = std::fs::read(plugin("noop")).unwrap();
        let chaos_wasm = std::fs::read(plugin("chaos")).unwrap();
        let noop = sandbox.load(&noop_wasm).unwrap();
        let chaos = sandbox.load(&chaos_wasm).unwrap();
        // Same settings as Ward's engine (pooling, fuel, epochs).
        let same_engine = Engine::new(&wasmtime_config(&config).unwrap()).unwrap();
        let baseline = Baseline::new(same_engine, &noop_wasm, true);
        // Same settings but neither fuel nor epochs, for the CPU-bound guest.
        let mut bare = wasmtime_config(&config).unwrap();
        bare.consume_fuel(false).epoch_interruption(false);
        let cpu_no_limits = Baseline::new(Engine::new(&bare).unwrap(), &chaos_wasm, false);
        let media_dir = tempfile::tempdir().unwrap();
        let media = Arc::new(MediaStore::open(media_dir.path(), MediaUrls::FilePath).unwrap());
        Fixture {
            sandbox,
            noop,
            chaos,
            media,
            baseline,
            cpu_no_limits,
            _media_dir: media_dir,
        }
    }

    fn spec(&self, input: &str) -> AttemptSpec {
        let mut spec = AttemptSpec::new(
            Invocation {
                input: input.to_string(),
                execution_id: "0".into(),
                task_id: "bench".into(),
                step: "main".into(),
                attempt: 1,
            },
            self.media.clone(),
        );
        spec.limits = Limits {
            fuel: u64::MAX / 2,
            ..Limits::default()
        };
        spec
    }

    async fn ward_noop(&self) {
        let r = self.sandbox.run(&self.noop, self.spec("{}")).await;
        assert!(r.status.is_ok(), "{:?}", r.error);
    }

    async fn ward_cpu(&self) {
        let r = self.sandbox.run(&self.chaos, self.spec(CPU_INPUT)).await;
        assert!(r.status.is_ok(), "{:?}", r.error);
    }
}

fn criterion_benches(c: &mut Criterion, fx: &Fixture, rt: &tokio::runtime::Runtime) {
    let mut g = c.benchmark_group("noop_attempt");
    g.bench_function("ward", |b| b.to_async(rt).iter(|| fx.ward_noop()));
    g.bench_function("raw_wasmtime", |b| {
        b.to_async(rt).iter(|| fx.baseline.attempt("{}"))
    });
    g.finish();
    let mut g = c.benchmark_group("cpu_guest");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.bench_function("ward_fuel_and_epoch", |b| {
        b.to_async(rt).iter(|| fx.ward_cpu())
    });
    g.bench_function("no_fuel_no_epoch", |b| {
        b.to_async(rt).iter(|| fx.cpu_no_limits.attempt(CPU_INPUT))
    });
    g.finish();
}

/// Median of per-round means, rounds interleaved so that drift hits both sides.
async fn interleaved<A, B, FA, FB>(
    rounds: usize,
    n: usize,
    mut a: A,
    mut b: B,
) -> (Duration, Duration)
where
    A: FnMut() -> FA,
    B: FnMut() -> FB,
    FA: Future<Output = ()>,
    FB: Future<Output = ()>,
{
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..n {
            a().await;
        }
        ta.push(t.elapsed() / n as u32);
        let t = Instant::now();
        for _ in 0..n {
            b().await;
        }
        tb.push(t.elapsed() / n as u32);
    }
    ta.sort();
    tb.sort();
    (ta[rounds / 2], tb[rounds / 2])
}

fn timed_ward_run(cache: &std::path::Path, wasm: &std::path::Path) -> Duration {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["run", wasm.to_str().unwrap(), "--json"])
        .env("WARD_CACHE_DIR", cache)
        .output()
        .unwrap();
    // Thumbnail without an image ends `invalid_input` (exit 1): it loaded and ran.
    assert_ne!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn summary(fx: &Fixture, rt: &tokio::runtime::Runtime) {
    println!("\n== summary (interleaved, same run)");
    let (ward, base) = rt.block_on(interleaved(
        7,
        3000,
        || fx.ward_noop(),
        || async {
            fx.baseline.attempt("{}").await;
        },
    ));
    println!(
        "no-op attempt: ward {:.2} µs, raw wasmtime {:.2} µs, ratio {:.2}x (target <= 1.3x)",
        ward.as_secs_f64() * 1e6,
        base.as_secs_f64() * 1e6,
        ward.as_secs_f64() / base.as_secs_f64()
    );

    let t = Instant::now();
    let mut n = 0u64;
    rt.block_on(async {
        while t.elapsed() < Duration::from_secs(3) {
            fx.ward_noop().await;
            n += 1;
        }
    });
    println!(
        "no-op attempts/s on one core: {:.0} (target >= 50,000)",
        n as f64 / t.elapsed().as_secs_f64()
    );

    let (limited, bare) = rt.block_on(interleaved(
        5,
        2,
        || fx.ward_cpu(),
        || async {
            fx.cpu_no_limits.attempt(CPU_INPUT).await;
        },
    ));
    println!(
        "cpu guest (50 x 1 MiB FNV): ward fuel+epoch {:.1} ms, none {:.1} ms, ratio {:.3}x (target <= 1.15x)",
        limited.as_secs_f64() * 1e3,
        bare.as_secs_f64() * 1e3,
        limited.as_secs_f64() / bare.as_secs_f64()
    );

    let cache = tempfile::tempdir().unwrap();
    let wasm = plugin("thumbnail");
    let cold = timed_ward_run(cache.path(), &wasm);
    let mut warm: Vec<Duration> = (0..5)
        .map(|_| timed_ward_run(cache.path(), &wasm))
        .collect();
    warm.sort();
    println!(
        "`ward run` of thumbnail.wasm (705 KB), whole process: compiling {:.1} ms, cached artifact {:.1} ms (median of 5), ratio {:.2}x",
        cold.as_secs_f64() * 1e3,
        warm[2].as_secs_f64() * 1e3,
        warm[2].as_secs_f64() / cold.as_secs_f64()
    );

    let mut stops = Vec::new();
    for _ in 0..20 {
        let mut spec = fx.spec(r#"{"mode":"loop"}"#);
        spec.limits.timeout = Duration::from_secs(60);
        let cancel = spec.cancel.clone();
        let took = rt.block_on(async {
            let run = fx.sandbox.run(&fx.chaos, spec);
            tokio::pin!(run);
            let _ = tokio::time::timeout(Duration::from_millis(30), &mut run).await;
            let t = Instant::now();
            cancel.cancel();
            let r = run.await;
            assert_eq!(r.error.unwrap().kind, ward::sandbox::ErrorKind::Cancelled);
            t.elapsed()
        });
        stops.push(took);
    }
    stops.sort();
    println!(
        "cancel -> stopped, spinning guest: p50 {:.1} ms, max {:.1} ms of 20 (target <= 100 ms)",
        stops[10].as_secs_f64() * 1e3,
        stops[19].as_secs_f64() * 1e3
    );
}

/// Python and JavaScript components (built by `plugins/{python,js}/build.sh`):
/// what loading one costs compiling and from the artifact cache (a restart),
/// and a hello attempt in each language against the Rust one, interleaved.
fn polyglot(fx: &Fixture, rt: &tokio::runtime::Runtime) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/target");
    let (py, js) = (root.join("python/hello.wasm"), root.join("js/hello.wasm"));
    if !py.exists() || !js.exists() {
        println!("polyglot: skipped (build with plugins/python/build.sh and plugins/js/build.sh)");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let config = EngineConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let mut loaded = Vec::new();
    for (lang, path) in [("python", &py), ("js", &js)] {
        let bytes = std::fs::read(path).unwrap();
        let t = Instant::now();
        let first = Sandbox::new(config.clone()).unwrap().load(&bytes).unwrap();
        let compiled = t.elapsed();
        // A new engine on the same cache: what a restarted server does.
        let t = Instant::now();
        let again = Sandbox::new(config.clone()).unwrap();
        let cached = again.load(&bytes).unwrap();
        let from_cache = t.elapsed();
        let t = Instant::now();
        let r = rt.block_on(again.run(&cached, fx.spec(r#"{"name":"Ada"}"#)));
        assert!(r.status.is_ok(), "{lang}: {:?}", r.error);
        let first_attempt = t.elapsed();
        println!(
            "{lang} hello.wasm ({:.1} MB): load compiling {:.0} ms, from the artifact cache {:.1} ms, first attempt after that {:.2} ms",
            bytes.len() as f64 / 1e6,
            compiled.as_secs_f64() * 1e3,
            from_cache.as_secs_f64() * 1e3,
            first_attempt.as_secs_f64() * 1e3
        );
        drop(first);
        loaded.push((lang, again, cached));
    }
    let rust = fx
        .sandbox
        .load(&std::fs::read(plugin("hello")).unwrap())
        .unwrap();
    let hello = |sandbox: &Sandbox, action: &Arc<LoadedAction>| {
        let r = rt.block_on(sandbox.run(action, fx.spec(r#"{"name":"Ada"}"#)));
        assert!(r.status.is_ok(), "{:?}", r.error);
    };
    let mut times: Vec<(&str, Vec<Duration>)> =
        vec![("rust", vec![]), ("python", vec![]), ("js", vec![])];
    for _ in 0..7 {
        for (lang, samples) in times.iter_mut() {
            let n = 200;
            let t = Instant::now();
            for _ in 0..n {
                match *lang {
                    "rust" => hello(&fx.sandbox, &rust),
                    _ => {
                        let (_, s, a) = loaded.iter().find(|(l, ..)| l == lang).unwrap();
                        hello(s, a);
                    }
                }
            }
            samples.push(t.elapsed() / n);
        }
    }
    // Page faults per attempt: what a fresh instance touches for the first time.
    let mut faults = Vec::new();
    for (lang, sandbox, action) in &loaded {
        let n = 200;
        let before = minor_faults();
        for _ in 0..n {
            hello(sandbox, action);
        }
        faults.push((*lang, (minor_faults() - before) / n));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let rust_t = median(&mut times[0].1);
    for (lang, samples) in times.iter_mut().skip(1) {
        let t = median(samples);
        let target = if *lang == "python" { 1.5 } else { 0.5 };
        println!(
            "hello attempt, {lang}: {:.3} ms (rust {:.3} ms, {:.1}x; target <= {target} ms)",
            t.as_secs_f64() * 1e3,
            rust_t.as_secs_f64() * 1e3,
            t.as_secs_f64() / rust_t.as_secs_f64()
        );
    }
    for (lang, f) in faults {
        println!("hello attempt, {lang}: {f} minor page faults per attempt");
    }
}

/// This process's minor page faults so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    rest.split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let fx = Fixture::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `WARD_ATTEMPT_SECTIONS=polyglot` (a comma list of criterion, summary,
    // polyglot) runs only those; all by default.
    let sections = std::env::var("WARD_ATTEMPT_SECTIONS").ok();
    let run = |name: &str| {
        sections
            .as_deref()
            .is_none_or(|s| s.split(',').any(|x| x == name))
    };
    if run("criterion") {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c, &fx, &rt);
        c.final_summary();
    }
    if run("summary") {
        summary(&fx, &rt);
    }
    if run("polyglot") {
        polyglot(&fx, &rt);
    }
}
