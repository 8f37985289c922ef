//! `ward serve`'s configuration: one typed [`ServeConfig`], merged once
//! from the command line (flags, then `WARD_*` variables: clap reads both),
//! an optional file (`--config ward.toml`, or YAML or JSON) and the
//! defaults, in that order of precedence, then validated as a whole so that
//! a bad setup is refused at start with every problem named.
//!
//! Also home of [`ServiceConfig`], the part the execution service reads.
//! Knows nothing of clap: the command line hands over a [`Settings`] layer.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::model::limits::{check_name, exact_size};
use crate::model::task::TaskBounds;
use crate::sandbox::Quotas;

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Attempts this host runs at once.
    pub slots: usize,
    /// Per-queue limits on attempts at once (queues not named: no limit but `slots`).
    pub queue_limits: HashMap<String, usize>,
    /// Names this host in leases and in `GET /workers`.
    pub worker_id: String,
    /// How long a running task run's lease lasts without renewal.
    pub lease: Duration,
    /// How long shutdown waits for running attempts.
    pub shutdown_grace: Duration,
    pub bounds: TaskBounds,
    pub quotas: Quotas,
    /// Where uploaded components are kept, by digest.
    /// The key that seals secret task variables (made, 0600, on first use):
    /// `secret.key` beside `plugins_dir` by default.
    pub secret_key: PathBuf,
    pub plugins_dir: PathBuf,
    /// Largest component accepted.
    pub max_plugin_bytes: usize,
    /// Longest a caller may wait for an execution's end in one request
    /// (`?wait=`); longer asks are cut to this.
    pub max_wait: Duration,
    /// Every API call shows a bearer token (off: `--no-auth`, every caller
    /// is admin).
    pub require_tokens: bool,
    /// Streams (`?follow=true`) one token may hold open at once.
    pub max_follows_per_token: usize,
}

impl ServiceConfig {
    pub fn new(plugins_dir: PathBuf) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        ServiceConfig {
            slots: 512,
            queue_limits: HashMap::new(),
            worker_id: format!("{host}-{}", std::process::id()),
            lease: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            bounds: TaskBounds::default(),
            quotas: Quotas::default(),
            secret_key: plugins_dir.with_file_name("secret.key"),
            plugins_dir,
            max_plugin_bytes: 64 << 20,
            max_wait: Duration::from_secs(60),
            require_tokens: true,
            max_follows_per_token: 32,
        }
    }
}

/// One source's settings, each unset unless that source sets it: the
/// command line fills one, the config file another, and [`ServeConfig::resolve`]
/// merges them over the defaults. Also the config file's format.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Where the database, media, components and compiled artifacts live.
    pub data_dir: Option<PathBuf>,
    /// A folder of example components (`*.wasm`) registered at start.
    pub plugins: Option<PathBuf>,
    /// Attempts run at once on this host.
    pub slots: Option<usize>,
    /// Attempts run at once per queue (queues not named: only `slots`).
    pub queue_limits: Option<BTreeMap<String, usize>>,
    /// How long shutdown waits for running attempts (`30s`, `2m`).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Option<Duration>,
    /// How long a running task run's lease lasts without renewal.
    #[serde(with = "humantime_serde")]
    pub lease: Option<Duration>,
    /// Largest component `POST /plugins` accepts (`64MiB`, or bytes).
    pub max_plugin_size: Option<ByteSize>,
    /// Largest `limits.memory` a task may ask for.
    pub max_task_memory: Option<ByteSize>,
    /// Longest `limits.timeout` a task may ask for.
    #[serde(with = "humantime_serde")]
    pub max_task_timeout: Option<Duration>,
    /// Longest `?wait=` a request may wait for an execution's end.
    #[serde(with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// HTTP connections open at once; at the cap the longest idle one is
    /// closed for a new one.
    pub max_connections: Option<usize>,
    /// Linear memory all attempts may hold at once; each reserves its
    /// memory limit before it starts (`12GiB`, or bytes).
    pub memory_budget: Option<ByteSize>,
    /// Disk all scratch dirs may hold at once; each attempt with a scratch
    /// dir reserves its quota first.
    pub scratch_budget: Option<ByteSize>,
    /// How long a client may take to send a request's headers, or each part
    /// of its body, before it is cut off.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    /// Serve without tokens: every caller is admin. Only on a loopback
    /// address.
    pub no_auth: Option<bool>,
}

impl Settings {
    /// Each setting from `self` if set there, else from `lower`.
    pub fn over(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            plugins: self.plugins.or(lower.plugins),
            slots: self.slots.or(lower.slots),
            queue_limits: self.queue_limits.or(lower.queue_limits),
            shutdown_grace: self.shutdown_grace.or(lower.shutdown_grace),
            lease: self.lease.or(lower.lease),
            max_plugin_size: self.max_plugin_size.or(lower.max_plugin_size),
            max_task_memory: self.max_task_memory.or(lower.max_task_memory),
            max_task_timeout: self.max_task_timeout.or(lower.max_task_timeout),
            max_wait: self.max_wait.or(lower.max_wait),
            max_connections: self.max_connections.or(lower.max_connections),
            memory_budget: self.memory_budget.or(lower.memory_budget),
            scratch_budget: self.scratch_budget.or(lower.scratch_budget),
            read_timeout: self.read_timeout.or(lower.read_timeout),
            no_auth: self.no_auth.or(lower.no_auth),
        }
    }

    /// Reads a config file: `.toml` as TOML, `.yaml`/`.yml` as YAML, `.json`
    /// as JSON, anything else as JSON, else YAML.
    pub fn read(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Settings::parse(path, &text)
            .map_err(|e| ConfigError::one(format!("{}: {e}", path.display())))
    }

    fn parse(path: &Path, text: &str) -> Result<Settings, String> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("toml") => toml::from_str(text).map_err(|e| e.to_string()),
            Some("yaml" | "yml") => yaml_serde::from_str(text).map_err(|e| e.to_string()),
            Some("json") => serde_json::from_str(text).map_err(|e| e.to_string()),
            _ => serde_json::from_str(text).or_else(|json| {
                yaml_serde::from_str(text)
                    .map_err(|yaml| format!("neither valid JSON ({json}) nor valid YAML ({yaml})"))
            }),
        }
    }
}

/// Everything `ward serve` runs with, merged and checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Explicitly configured example components; else `ward serve` looks
    /// for `plugins/target/wasm32-wasip2/release`.
    pub plugins: Option<PathBuf>,
    pub slots: usize,
    pub queue_limits: BTreeMap<String, usize>,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(serialize_with = "exact_size::serialize")]
    pub max_plugin_size: ByteSize,
    #[serde(serialize_with = "exact_size::serialize")]
    pub max_task_memory: ByteSize,
    #[serde(with = "humantime_serde")]
    pub max_task_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(serialize_with = "exact_size::serialize")]
    pub memory_budget: ByteSize,
    #[serde(serialize_with = "exact_size::serialize")]
    pub scratch_budget: ByteSize,
    pub no_auth: bool,
}

/// The address `ward serve` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";

impl ServeConfig {
    /// The settings of `layers`, highest precedence first, over the
    /// defaults; every problem with the result at once, or none.
    pub fn resolve(layers: impl IntoIterator<Item = Settings>) -> Result<ServeConfig, ConfigError> {
        let s = layers
            .into_iter()
            .fold(Settings::default(), |merged, lower| merged.over(lower));
        let service = ServiceConfig::new(PathBuf::new());
        let bounds = TaskBounds::default();
        let config = ServeConfig {
            listen: s
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("the default address parses")),
            data_dir: s.data_dir.unwrap_or_else(default_data_dir),
            plugins: s.plugins,
            slots: s.slots.unwrap_or(service.slots),
            queue_limits: s.queue_limits.unwrap_or_default(),
            shutdown_grace: s.shutdown_grace.unwrap_or(service.shutdown_grace),
            lease: s.lease.unwrap_or(service.lease),
            max_plugin_size: s
                .max_plugin_size
                .unwrap_or(ByteSize::b(service.max_plugin_bytes as u64)),
            max_task_memory: s
                .max_task_memory
                .unwrap_or(ByteSize::b(bounds.max_memory_bytes)),
            max_task_timeout: s.max_task_timeout.unwrap_or(bounds.max_timeout),
            max_wait: s.max_wait.unwrap_or(service.max_wait),
            max_connections: s.max_connections.unwrap_or_else(default_max_connections),
            read_timeout: s.read_timeout.unwrap_or(Duration::from_secs(10)),
            memory_budget: s
                .memory_budget
                .unwrap_or_else(|| ByteSize::b(crate::sandbox::engine::default_memory_budget())),
            scratch_budget: s.scratch_budget.unwrap_or_else(|| {
                ByteSize::b(crate::sandbox::scratch::default_budget(
                    &std::env::temp_dir(),
                ))
            }),
            no_auth: s.no_auth.unwrap_or(false),
        };
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Every problem with the settings, each a sentence naming its key.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=100_000).contains(&self.slots) {
            p.push(format!("slots must be 1-100000, got {}", self.slots));
        }
        for (queue, limit) in &self.queue_limits {
            if let Err(e) = check_name("queue", queue) {
                p.push(format!("queue_limits: {e}"));
            }
            if *limit == 0 {
                p.push(format!("queue_limits.{queue} must be at least 1"));
            }
        }
        if self.lease < Duration::from_secs(1) {
            p.push(format!(
                "lease must be at least 1s, got {}",
                humantime::format_duration(self.lease)
            ));
        }
        if self.shutdown_grace > Duration::from_secs(3600) {
            p.push(format!(
                "shutdown_grace must be at most 1h, got {}",
                humantime::format_duration(self.shutdown_grace)
            ));
        }
        let size = |name: &str, v: ByteSize, min: u64, max: u64, p: &mut Vec<String>| {
            if v.as_u64() < min || v.as_u64() > max {
                p.push(format!(
                    "{name} must be between {} and {}, got {}",
                    exact_size::text(min),
                    exact_size::text(max),
                    exact_size::text(v.as_u64())
                ));
            }
        };
        size(
            "max_plugin_size",
            self.max_plugin_size,
            1 << 10,
            1 << 30,
            &mut p,
        );
        size(
            "max_task_memory",
            self.max_task_memory,
            1 << 20,
            64 << 30,
            &mut p,
        );
        size(
            "memory_budget",
            self.memory_budget,
            16 << 20,
            1 << 50,
            &mut p,
        );
        size(
            "scratch_budget",
            self.scratch_budget,
            1 << 20,
            1 << 50,
            &mut p,
        );
        if self.max_task_timeout < Duration::from_secs(1) {
            p.push("max_task_timeout must be at least 1s".into());
        }
        if self.max_wait > Duration::from_secs(3600) {
            p.push(format!(
                "max_wait must be at most 1h, got {}",
                humantime::format_duration(self.max_wait)
            ));
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            p.push(format!(
                "max_connections must be 1-1000000, got {}",
                self.max_connections
            ));
        }
        if self.read_timeout < Duration::from_millis(100)
            || self.read_timeout > Duration::from_secs(600)
        {
            p.push(format!(
                "read_timeout must be between 100ms and 10m, got {}",
                humantime::format_duration(self.read_timeout)
            ));
        }
        if self.no_auth && !self.listen.ip().is_loopback() {
            p.push(format!(
                "no_auth is allowed only on a loopback address (127.0.0.1, ::1), not {}: anyone who reaches the port would be admin",
                self.listen
            ));
        }
        if let Some(dir) = &self.plugins
            && !dir.is_dir()
        {
            p.push(format!("plugins: {} is not a directory", dir.display()));
        }
        p
    }

    /// The service's part, keeping its files under `data_dir`.
    pub fn service(&self) -> ServiceConfig {
        let mut s = ServiceConfig::new(self.data_dir.join("components"));
        s.slots = self.slots;
        s.queue_limits = self.queue_limits.clone().into_iter().collect();
        s.shutdown_grace = self.shutdown_grace;
        s.lease = self.lease;
        s.max_plugin_bytes = usize::try_from(self.max_plugin_size.as_u64()).unwrap_or(usize::MAX);
        s.bounds.max_memory_bytes = self.max_task_memory.as_u64();
        s.bounds.max_timeout = self.max_task_timeout;
        s.max_wait = self.max_wait;
        s.require_tokens = !self.no_auth;
        s
    }

    /// The config as a TOML file that reproduces it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serializes as TOML")
    }
}

/// The default cap on HTTP connections: 1,024, or fewer when this process
/// may open fewer files (a quarter of the descriptors stay for the store,
/// components and media).
fn default_max_connections() -> usize {
    match open_files_limit() {
        Some(n) => (n.saturating_mul(3) / 4).clamp(16, 1024),
        None => 1024,
    }
}

/// The soft limit on open files (Linux: `/proc/self/limits`).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `$XDG_DATA_HOME/ward`, else `~/.local/share/ward`, else `.ward`.
pub fn default_data_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_DATA_HOME")
        .map(|p| p.join("ward"))
        .or_else(|| var("HOME").map(|p| p.join(".local/share/ward")))
        .unwrap_or_else(|| PathBuf::from(".ward"))
}

/// Why the configuration was refused: every problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration")?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> Settings {
        Settings::parse(Path::new(name), text).unwrap()
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = ServeConfig::resolve([]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.slots, 512);
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.max_plugin_size, ByteSize::mib(64));
        assert_eq!(c.max_task_memory, ByteSize::gib(4));
        let s = c.service();
        assert_eq!(s.max_plugin_bytes, 64 << 20);
        assert_eq!(s.plugins_dir, c.data_dir.join("components"));
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_the_file_over_defaults() {
        let cli = Settings {
            slots: Some(4),
            ..Settings::default()
        };
        let from_file = file(
            "ward.toml",
            "slots = 16\nshutdown_grace = \"2m\"\nmax_plugin_size = \"8MiB\"\n\
             [queue_limits]\ngpu = 1\n",
        );
        let c = ServeConfig::resolve([cli, from_file]).unwrap();
        assert_eq!(c.slots, 4);
        assert_eq!(c.shutdown_grace, Duration::from_secs(120));
        assert_eq!(c.max_plugin_size, ByteSize::mib(8));
        assert_eq!(c.queue_limits, BTreeMap::from([("gpu".into(), 1)]));
        assert_eq!(c.lease, Duration::from_secs(30));
        let s = c.service();
        assert_eq!((s.slots, s.queue_limits["gpu"]), (4, 1));
        assert_eq!(s.max_plugin_bytes, 8 << 20);
    }

    #[test]
    fn files_are_read_as_toml_yaml_or_json() {
        let expected = Settings {
            slots: Some(2),
            shutdown_grace: Some(Duration::from_millis(1500)),
            max_task_memory: Some(ByteSize::mib(256)),
            ..Settings::default()
        };
        let toml = "slots = 2\nshutdown_grace = \"1s 500ms\"\nmax_task_memory = \"256MiB\"\n";
        assert_eq!(file("ward.toml", toml), expected);
        let yaml = "slots: 2\nshutdown_grace: 1s 500ms\nmax_task_memory: 256MiB\n";
        assert_eq!(file("ward.yaml", yaml), expected);
        let json = r#"{"slots": 2, "shutdown_grace": "1500ms", "max_task_memory": 268435456}"#;
        assert_eq!(file("ward.json", json), expected);
        assert_eq!(file("ward.conf", json), expected);
        assert_eq!(file("ward.conf", yaml), expected);
        let e = Settings::parse(Path::new("ward.toml"), "slot = 2\n").unwrap_err();
        assert!(e.contains("unknown field `slot`"), "{e}");
        let e = Settings::parse(Path::new("ward.toml"), "lease = \"soon\"\n").unwrap_err();
        assert!(
            e.contains("lease = \"soon\"") && e.contains("duration"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = file(
            "ward.yaml",
            "slots: 0\nlease: 10ms\nshutdown_grace: 2h\nmax_plugin_size: 2GiB\n\
             max_task_memory: 1KiB\nmax_task_timeout: 0s\nplugins: /no/such/dir\n\
             max_wait: 2h\nqueue_limits: {\"bad queue\": 0}\n",
        );
        let e = ServeConfig::resolve([bad]).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("invalid configuration\n  - "), "{text}");
        assert!(
            text.contains("max_task_memory must be between 1MiB and 64GiB, got 1KiB"),
            "{text}"
        );
        for key in [
            "slots",
            "lease",
            "shutdown_grace",
            "max_plugin_size",
            "max_task_memory",
            "max_task_timeout",
            "max_wait",
            "plugins",
            "queue_limits: queue name",
            "queue_limits.bad queue",
        ] {
            assert!(
                e.problems.iter().any(|p| p.starts_with(key)),
                "{key}: {text}"
            );
        }
        assert_eq!(e.problems.len(), 10, "{text}");
    }

    #[test]
    fn the_printed_config_reads_back_as_the_same_config() {
        let c = ServeConfig::resolve([Settings {
            slots: Some(3),
            lease: Some(Duration::from_secs(90)),
            max_plugin_size: Some(ByteSize::b(10_000_001)),
            queue_limits: Some(BTreeMap::from([("default".into(), 2)])),
            ..Settings::default()
        }])
        .unwrap();
        let text = c.to_toml();
        assert!(text.contains("lease = \"1m 30s\""), "{text}");
        assert!(text.contains("max_task_memory = \"4GiB\""), "{text}");
        let back = ServeConfig::resolve([file("ward.toml", &text)]).unwrap();
        assert_eq!(back, c);
    }
}
