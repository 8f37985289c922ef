//! Tasks: the durable definition a caller writes once and triggers many
//! times. JSON over the API; the CLI also reads YAML. Validation lives here
//! so that the API and the CLI refuse the same things with the same words.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::flow::StepSpec;
use crate::model::limits::{Limits, check_name, exact_size, humantime_serde_compat};

/// What a caller submits to create or replace a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// 1–128 chars of `[A-Za-z0-9_.:-]`, unique within the namespace; not
    /// a UUID (that is how ids look).
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$", example = "greet")]
    pub name: String,
    #[serde(default = "default_namespace")]
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$", default = "default")]
    pub namespace: String,
    /// The plugin to run: its name (newest version) or `sha256:<digest>`.
    /// Absent (empty) when the task has `steps`.
    #[schema(example = "hello")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// A flow: steps run one after another, each a task run of its own
    /// (instead of `action`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
    /// Execution variables and their defaults (a trigger may override
    /// them, a step's `save` sets them; `{{ vars.NAME }}` in templates).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub variables: serde_json::Map<String, Value>,
    /// The execution's outputs, as templates (a flow's last step's outputs
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, Value>>,
    /// A JSON Schema the input of every trigger must match (else 422 and
    /// nothing is created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub input_schema: Option<Value>,
    /// A JSON Schema the outputs of a successful attempt of the action
    /// must match (an object, output name → value), else the attempt ends
    /// `invalid_result` and its outputs are not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outputs_schema: Option<Value>,
    /// Starts executions from signed requests to `POST /webhooks/{task}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<crate::model::webhook::WebhookSpec>,
    /// Starts an execution at each tick of a cron.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::model::schedule::ScheduleSpec>,
    /// Rows a successful execution adds to the task's dataset (flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<crate::model::dataset::DatasetSpec>,
    /// Input used when an execution is started without one.
    #[serde(default = "empty_object")]
    pub input: Value,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub limits: TaskLimits,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default = "default_queue")]
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$", default = "default")]
    pub queue: String,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// At most this many of the task's task runs run at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// The plugin each action named here resolved to (`sha256:<hex>`) when
    /// the task was created or last changed: its executions run those bytes
    /// until the task changes, whatever is uploaded under the names later.
    /// Filled in by Ward; what a caller sends here is replaced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved_actions: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "default".into()
}

fn default_queue() -> String {
    "default".into()
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Text like "1s" or "1m 30s" (a number of milliseconds is read too).
    #[serde(with = "humantime_serde_compat")]
    #[schema(value_type = String, example = "1s")]
    pub initial_backoff: Duration,
    pub multiplier: f64,
    #[serde(with = "humantime_serde_compat")]
    #[schema(value_type = String, example = "1m")]
    pub max_backoff: Duration,
    /// Fraction of the backoff added or removed at random (0 to 1).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            jitter: 0.1,
        }
    }
}

/// Per-attempt limits; unset ones take the host defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TaskLimits {
    pub fuel: Option<u64>,
    /// e.g. "30s", "500ms", "1m 30s", or a number of milliseconds.
    #[serde(with = "humantime_serde_compat::option")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub timeout: Option<Duration>,
    /// e.g. "128MiB" (KiB, MiB, GiB: powers of 1024; kB, MB, GB: of 1000),
    /// or a number of bytes.
    #[serde(serialize_with = "exact_size::option::serialize")]
    #[schema(value_type = Option<String>, example = "128MiB")]
    pub memory: Option<ByteSize>,
}

/// What an attempt is given beyond the bare sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields, try_from = "GrantsWritten")]
pub struct Grants {
    /// A fresh scratch dir at `/scratch` per attempt.
    pub scratch: bool,
    /// Variables `get-variable` returns. A value may also be written
    /// `{"value": "…", "secret": true}`: such a variable is kept in
    /// `secrets`.
    pub variables: BTreeMap<String, String>,
    /// Secret variables `get-variable` also returns: sealed before the task
    /// is stored, never shown by the API (each value reads
    /// [`SECRET_SHOWN`]), redacted from what an attempt reports. A value of
    /// [`SECRET_SHOWN`] in an update keeps the one stored.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Outbound HTTP through `wasi:http` to the hosts it allows; without
    /// it every request is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<super::net::HttpGrant>,
}

/// `Grants` as a caller may write them: a variable marked secret in place.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GrantsWritten {
    scratch: bool,
    variables: BTreeMap<String, VariableWritten>,
    secrets: BTreeMap<String, String>,
    http: Option<super::net::HttpGrant>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum VariableWritten {
    Plain(String),
    Marked {
        value: String,
        #[serde(default)]
        secret: bool,
    },
}

impl TryFrom<GrantsWritten> for Grants {
    type Error = String;

    fn try_from(w: GrantsWritten) -> Result<Grants, String> {
        let mut grants = Grants {
            scratch: w.scratch,
            variables: BTreeMap::new(),
            secrets: w.secrets,
            http: w.http,
        };
        for (name, value) in w.variables {
            let (value, secret) = match value {
                VariableWritten::Plain(v) => (v, false),
                VariableWritten::Marked { value, secret } => (value, secret),
            };
            if !secret {
                grants.variables.insert(name, value);
                continue;
            }
            match grants.secrets.entry(name) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    return Err(format!(
                        "grants: {:?} is both a variable marked secret and in grants.secrets",
                        e.key()
                    ));
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(value);
                }
            }
        }
        Ok(grants)
    }
}

/// What the API shows in place of a secret's value.
pub const SECRET_SHOWN: &str = "(secret)";

/// How a caller points at a task: by id, or by name within one namespace.
///
/// A string that parses as a UUID is an id and matches by id only; task
/// names may not look like one (see [`TaskSpec::problems`]), so a lookup is
/// never ambiguous and deleting by id deletes exactly that task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskRef {
    /// The canonical (lowercase, hyphenated) id.
    Id(String),
    Name {
        namespace: String,
        name: String,
    },
}

impl TaskRef {
    /// `id_or_name` as an id when it is a UUID, else as a name in `namespace`.
    pub fn new(id_or_name: &str, namespace: &str) -> TaskRef {
        match uuid::Uuid::try_parse(id_or_name) {
            Ok(id) => TaskRef::Id(id.hyphenated().to_string()),
            Err(_) => TaskRef::name(namespace, id_or_name),
        }
    }

    pub fn name(namespace: &str, name: &str) -> TaskRef {
        TaskRef::Name {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// Reads as the end of "no …": `task 0193…` or `task "greet" in namespace
/// "default"`. Ids never contain quotes, so it is also a unique key.
impl std::fmt::Display for TaskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskRef::Id(id) => write!(f, "task {id}"),
            TaskRef::Name { namespace, name } => {
                write!(f, "task {name:?} in namespace {namespace:?}")
            }
        }
    }
}

/// Whether a string would be taken for a task id (see [`TaskRef::new`]).
pub fn looks_like_id(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok()
}

/// A stored task: its spec plus identity and version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Task {
    pub id: String,
    pub version: i64,
    #[serde(flatten)]
    pub spec: TaskSpec,
    pub created_at: String,
    pub updated_at: String,
    /// For a task with a schedule: whether it is paused and when it fires
    /// next (filled in by the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_state: Option<crate::model::schedule::ScheduleState>,
}

impl Task {
    /// The task as the API shows it: write-only fields (the webhook's
    /// secret) left out.
    pub fn redacted(mut self) -> Task {
        if let Some(w) = &mut self.spec.webhook {
            w.secret = None;
        }
        self.spec = self.spec.without_secrets();
        self
    }
}

/// Host-wide bounds a task's settings must stay within.
#[derive(Debug, Clone, Copy)]
pub struct TaskBounds {
    pub max_memory_bytes: u64,
    pub max_timeout: Duration,
    pub max_attempts: u32,
}

impl Default for TaskBounds {
    fn default() -> Self {
        TaskBounds {
            max_memory_bytes: 4 << 30,
            max_timeout: Duration::from_secs(24 * 3600),
            max_attempts: 100,
        }
    }
}

impl TaskSpec {
    /// Every problem with the spec, each a sentence; empty when valid.
    pub fn problems(&self, bounds: &TaskBounds) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = check_name("task", &self.name) {
            p.push(e);
        } else if looks_like_id(&self.name) {
            p.push(format!(
                "task name {:?} looks like a task id (a UUID); names cannot look like ids",
                self.name
            ));
        }
        if let Err(e) = check_name("namespace", &self.namespace) {
            p.push(e);
        }
        if let Some(e) = super::limits::input_problem("input", &self.input) {
            p.push(e);
        }
        if let Err(e) = check_name("queue", &self.queue) {
            p.push(e);
        }
        match (self.action.trim().is_empty(), self.steps.is_empty()) {
            (true, true) => {
                p.push("action must name a plugin (its name, or sha256:<digest>), or steps must list the flow's steps".into())
            }
            (false, false) => p.push("a task has either action or steps, not both".into()),
            _ => {}
        }
        if self.steps.is_empty() && self.outputs.is_some() {
            p.push("outputs need steps to come from".into());
        }
        for (place, schema) in [
            ("input_schema", &self.input_schema),
            ("outputs_schema", &self.outputs_schema),
        ] {
            if let Some(schema) = schema {
                p.extend(crate::model::schema::problem(place, schema));
            }
        }
        if !self.steps.is_empty() && self.outputs_schema.is_some() {
            p.push("outputs_schema belongs on each step of a flow".into());
        }
        for step in self
            .steps
            .iter()
            .flat_map(|s| std::iter::once(s).chain(s.children()))
        {
            if let Some(schema) = &step.runnable().outputs_schema {
                let place = format!("step {}: outputs_schema", step.name);
                p.extend(crate::model::schema::problem(&place, schema));
            }
        }
        if let Some(webhook) = &self.webhook {
            p.extend(crate::model::webhook::problems(webhook, false));
        }
        if let Some(schedule) = &self.schedule {
            if let Err(e) = schedule.parse() {
                p.push(e);
            }
            if let Some(schema) = &self.input_schema {
                let input = schedule.input.as_ref().unwrap_or(&self.input);
                for v in crate::model::schema::violations(schema, input) {
                    p.push(format!(
                        "the schedule's input does not match input_schema: {v}"
                    ));
                }
            }
        }
        if let Some(dataset) = &self.dataset {
            if self.steps.is_empty() {
                p.push("dataset needs steps: write the action as a one-step flow".into());
            } else {
                let names: Vec<&str> = self
                    .steps
                    .iter()
                    .flat_map(|s| std::iter::once(s).chain(s.children()))
                    .map(|s| s.name.as_str())
                    .collect();
                p.extend(dataset.problems(&names));
            }
        }
        p.extend(crate::model::flow::problems(
            &self.steps,
            &self.variables,
            self.outputs.as_ref(),
        ));
        for step in self
            .steps
            .iter()
            .flat_map(|s| std::iter::once(s).chain(s.children()))
        {
            if let Some(limits) = &step.runnable().limits
                && let Err(e) = limits_within(limits, bounds)
            {
                p.push(format!("step {}: {e}", step.name));
            }
        }
        let r = &self.retry;
        if r.max_attempts == 0 || r.max_attempts > bounds.max_attempts {
            p.push(format!(
                "retry.max_attempts must be 1-{}, got {}",
                bounds.max_attempts, r.max_attempts
            ));
        }
        if !(r.multiplier.is_finite() && (1.0..=100.0).contains(&r.multiplier)) {
            p.push(format!(
                "retry.multiplier must be 1-100, got {}",
                r.multiplier
            ));
        }
        if !(r.jitter.is_finite() && (0.0..=1.0).contains(&r.jitter)) {
            p.push(format!("retry.jitter must be 0-1, got {}", r.jitter));
        }
        if r.initial_backoff > r.max_backoff {
            p.push("retry.initial_backoff must not exceed retry.max_backoff".into());
        }
        if r.max_backoff > Duration::from_secs(7 * 24 * 3600) {
            p.push("retry.max_backoff must be at most 7 days".into());
        }
        if let Err(e) = self.limits(bounds) {
            p.push(e);
        }
        if self.concurrency == Some(0) {
            p.push("concurrency must be at least 1 (or absent for no limit)".into());
        }
        for name in self.grants.variables.keys() {
            if let Err(e) = check_name("variable", name) {
                p.push(e);
            }
        }
        for g in self.all_grants() {
            if let Some(http) = &g.http {
                p.extend(http.problems());
            }
            for (name, value) in &g.secrets {
                if let Err(e) = check_name("secret", name) {
                    p.push(e);
                }
                if g.variables.contains_key(name) {
                    p.push(format!("grants: {name:?} is both a variable and a secret"));
                }
                if value.is_empty() || value.len() > 4096 {
                    p.push(format!("grants.secrets.{name}: a secret is 1-4096 bytes"));
                }
            }
        }
        p
    }

    /// The task's grants and every step's.
    pub fn all_grants(&self) -> Vec<&Grants> {
        let mut out = vec![&self.grants];
        for step in &self.steps {
            step.all_grants(&mut out);
        }
        out
    }

    /// Calls `f` on the task's grants and every step's.
    pub fn visit_grants_mut(&mut self, f: &mut dyn FnMut(&mut Grants)) {
        f(&mut self.grants);
        for step in &mut self.steps {
            step.visit_grants_mut(f);
        }
    }

    /// The task as the API shows it: every secret's value replaced.
    pub fn without_secrets(mut self) -> TaskSpec {
        self.visit_grants_mut(&mut |g| {
            for v in g.secrets.values_mut() {
                *v = SECRET_SHOWN.to_string();
            }
        });
        self
    }

    /// Whether the task is a flow of steps (else one action, step `main`).
    pub fn is_flow(&self) -> bool {
        !self.steps.is_empty()
    }

    /// Whether a step of the flow runs once per item.
    pub fn has_for_each(&self) -> bool {
        self.steps.iter().any(|s| s.for_each.is_some())
    }

    /// The step named `name` of a flow, or of one of its `parallel` steps.
    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.steps
            .iter()
            .flat_map(|s| std::iter::once(s).chain(s.children()))
            .find(|s| s.name == name)
    }

    /// The top-level step whose task runs `name`'s are: `name` itself, or
    /// the `parallel` step it is one of.
    pub fn top_level(&self, name: &str) -> Option<&StepSpec> {
        self.steps
            .iter()
            .find(|s| s.name == name || s.children().iter().any(|c| c.name == name))
    }

    /// What the task runs of step `name` run: the step, or its `for_each`'s
    /// per-item step.
    pub fn runnable(&self, name: &str) -> Option<&StepSpec> {
        self.step(name).map(StepSpec::runnable)
    }

    /// The most task runs one plan of this flow may create: a step's run,
    /// a `parallel` step's runs, or a `for_each`'s first items.
    pub fn most_new_runs(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match &s.for_each {
                Some(f) => f.concurrency.min(crate::model::flow::MAX_CONCURRENCY) as usize,
                None => s.children().len(),
            })
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// The name of a new execution's first task run.
    pub fn first_step(&self) -> &str {
        self.steps.first().map_or("main", |s| s.name.as_str())
    }

    /// The action that `step` runs.
    pub fn action_of(&self, step: &str) -> &str {
        self.runnable(step).map_or(&self.action, |s| &s.action)
    }

    /// The plugin `step` runs: the digest its action resolved to, or the
    /// action's name for a task stored before actions were resolved.
    pub fn plugin_of(&self, step: &str) -> &str {
        let action = self.action_of(step);
        self.resolved_actions
            .get(action)
            .map_or(action, String::as_str)
    }

    /// Every action named in the task: its own and its steps'.
    pub fn actions(&self) -> Vec<(String, &str)> {
        let mut actions = vec![("action".to_string(), self.action.as_str())];
        for step in &self.steps {
            for s in std::iter::once(step).chain(step.children()) {
                actions.push((
                    format!("step {}: action", s.name),
                    s.runnable().action.as_str(),
                ));
            }
        }
        actions
    }

    /// The JSON Schema of `step`'s outputs, if it has one.
    pub fn outputs_schema_of(&self, step: &str) -> Option<&Value> {
        match self.runnable(step) {
            Some(s) => s.outputs_schema.as_ref(),
            None => self.outputs_schema.as_ref(),
        }
    }

    /// The retry policy of `step`: its own, else the task's.
    pub fn retry_of(&self, step: &str) -> RetryPolicy {
        self.runnable(step)
            .and_then(|s| s.retry)
            .unwrap_or(self.retry)
    }

    /// The grants of `step`: its own, else the task's.
    pub fn grants_of(&self, step: &str) -> &Grants {
        self.runnable(step)
            .and_then(|s| s.grants.as_ref())
            .unwrap_or(&self.grants)
    }

    /// The attempt limits of `step` (its own, else the task's), within the
    /// host's bounds.
    pub fn limits_of(&self, step: &str, bounds: &TaskBounds) -> Result<Limits, String> {
        let own = self.runnable(step).and_then(|s| s.limits.as_ref());
        limits_within(own.unwrap_or(&self.limits), bounds)
    }

    /// The attempt limits this task asks for, within the host's bounds.
    pub fn limits(&self, bounds: &TaskBounds) -> Result<Limits, String> {
        limits_within(&self.limits, bounds)
    }
}

/// `asked`, with the defaults for what it leaves out, within `bounds`.
fn limits_within(asked: &TaskLimits, bounds: &TaskBounds) -> Result<Limits, String> {
    let mut limits = Limits::default();
    if let Some(fuel) = asked.fuel {
        if fuel == 0 {
            return Err("limits.fuel must be positive".into());
        }
        limits.fuel = fuel;
    }
    if let Some(d) = asked.timeout {
        if d.is_zero() || d > bounds.max_timeout {
            return Err(format!(
                "limits.timeout must be between 1ms and {}",
                humantime::format_duration(bounds.max_timeout)
            ));
        }
        limits.timeout = d;
    }
    if let Some(m) = asked.memory {
        let bytes = m.as_u64();
        if bytes < (1 << 20) || bytes > bounds.max_memory_bytes {
            return Err(format!(
                "limits.memory must be between 1 MiB and {}",
                crate::model::limits::bytes_display(bounds.max_memory_bytes)
            ));
        }
        limits.memory_bytes = bytes;
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<TaskSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn a_minimal_spec_takes_defaults() {
        let s = spec(json!({"name": "greet", "action": "hello"})).unwrap();
        assert_eq!(s.namespace, "default");
        assert_eq!(s.retry.max_attempts, 1);
        assert_eq!(s.queue, "default");
        assert!(s.problems(&TaskBounds::default()).is_empty());
        assert_eq!(s.limits(&TaskBounds::default()).unwrap(), Limits::default());
    }

    #[test]
    fn a_variable_marked_secret_is_kept_as_a_secret() {
        let s = spec(
            json!({"name": "t", "action": "hello", "grants": {"variables": {
                "region": "eu", "plain": {"value": "x"},
                "api_key": {"value": "k-123", "secret": true},
            }}}),
        )
        .unwrap();
        assert_eq!(
            s.grants.variables,
            BTreeMap::from([("region".into(), "eu".into()), ("plain".into(), "x".into())])
        );
        assert_eq!(
            s.grants.secrets,
            BTreeMap::from([("api_key".to_string(), "k-123".to_string())])
        );
        assert!(s.problems(&TaskBounds::default()).is_empty());
        // Shown as the API shows secrets; written back, the same spec.
        let shown = serde_json::to_value(s.clone().without_secrets()).unwrap();
        assert_eq!(shown["grants"]["secrets"]["api_key"], SECRET_SHOWN);
        assert_eq!(shown["grants"]["variables"].get("api_key"), None);
        let again = spec(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        let twice = spec(json!({"name": "t", "action": "hello", "grants": {
            "variables": {"k": {"value": "a", "secret": true}}, "secrets": {"k": "b"},
        }}));
        assert!(twice.unwrap_err().to_string().contains("\"k\""));
    }

    #[test]
    fn limits_and_retry_accept_human_units() {
        let s = spec(json!({
            "name": "t", "action": "hello",
            "retry": {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "2s"},
            "limits": {"timeout": "5s", "memory": "64MiB", "fuel": 1000}
        }))
        .unwrap();
        let l = s.limits(&TaskBounds::default()).unwrap();
        assert_eq!(l.timeout, Duration::from_secs(5));
        assert_eq!(l.memory_bytes, 64 << 20);
        assert_eq!(s.retry.initial_backoff, Duration::from_millis(100));
    }

    #[test]
    fn durations_and_sizes_also_accept_plain_numbers() {
        let s = spec(json!({
            "name": "t", "action": "hello",
            "retry": {"max_attempts": 2, "initial_backoff": 250, "max_backoff": "1m 30s"},
            "limits": {"timeout": 1500, "memory": 67108864}
        }))
        .unwrap();
        assert_eq!(s.retry.initial_backoff, Duration::from_millis(250));
        assert_eq!(s.retry.max_backoff, Duration::from_secs(90));
        assert_eq!(s.limits.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.limits.memory, Some(ByteSize::mib(64)));
        // Decimal units are decimal; binary ones binary.
        let s = spec(json!({"name": "t", "action": "a", "limits": {"memory": "64MB"}})).unwrap();
        assert_eq!(s.limits.memory, Some(ByteSize::mb(64)));
        let bad = spec(json!({"name": "t", "action": "a", "limits": {"timeout": "5 parsecs"}}));
        assert!(bad.unwrap_err().to_string().contains("parsecs"));
    }

    #[test]
    fn specs_serialize_to_text_that_reads_back_the_same() {
        let s = spec(json!({
            "name": "t", "action": "hello",
            "retry": {"initial_backoff": "200ms", "max_backoff": 90000},
            "limits": {"timeout": "30s", "memory": 100000000}
        }))
        .unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["retry"]["initial_backoff"], "200ms");
        assert_eq!(v["retry"]["max_backoff"], "1m 30s");
        assert_eq!(v["limits"]["timeout"], "30s");
        assert_eq!(v["limits"]["memory"], "100000000B");
        assert_eq!(spec(v).unwrap(), s);
        let mut mib = s.clone();
        mib.limits.memory = Some(ByteSize::mib(128));
        assert_eq!(
            serde_json::to_value(&mib).unwrap()["limits"]["memory"],
            "128MiB"
        );
        let none = spec(json!({"name": "t", "action": "a"})).unwrap();
        let v = serde_json::to_value(&none).unwrap();
        assert!(v["limits"]["timeout"].is_null() && v["limits"]["memory"].is_null());
    }

    #[test]
    fn every_problem_is_reported() {
        let s = spec(json!({
            "name": "bad name", "action": "",
            "retry": {"max_attempts": 0, "jitter": 2.0},
            "limits": {"memory": "1TiB"}, "concurrency": 0
        }))
        .unwrap();
        let p = s.problems(&TaskBounds::default());
        assert!(p.len() >= 5, "{p:?}");
        assert!(spec(json!({"name": "t", "action": "a", "bogus": 1})).is_err());
    }

    #[test]
    fn a_name_that_looks_like_an_id_is_refused() {
        for name in [
            "0193a6f0-5c1e-7d2a-9b3c-4d5e6f708192",
            "0193A6F05C1E7D2A9B3C4D5E6F708192",
            "urn:uuid:0193a6f0-5c1e-7d2a-9b3c-4d5e6f708192",
        ] {
            let s = spec(json!({"name": name, "action": "hello"})).unwrap();
            let p = s.problems(&TaskBounds::default());
            assert!(
                p.iter().any(|p| p.contains("looks like a task id")),
                "{name}: {p:?}"
            );
        }
        let s = spec(json!({"name": "0193a6f0-greet", "action": "hello"})).unwrap();
        assert!(s.problems(&TaskBounds::default()).is_empty());
    }

    #[test]
    fn an_id_matches_by_id_and_anything_else_by_name_in_its_namespace() {
        assert_eq!(
            TaskRef::new("0193A6F0-5C1E-7D2A-9B3C-4D5E6F708192", "team"),
            TaskRef::Id("0193a6f0-5c1e-7d2a-9b3c-4d5e6f708192".into())
        );
        assert_eq!(
            TaskRef::new("greet", "team"),
            TaskRef::name("team", "greet")
        );
        assert_ne!(
            TaskRef::new("greet", "team").to_string(),
            TaskRef::new("greet", "default").to_string()
        );
    }
}
