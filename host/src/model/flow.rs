//! Flows: a task made of steps, run one after another, each step a task
//! run with attempts of its own. This holds the step definitions, their
//! checks at create/update, and the templates (Jinja, by minijinja) that
//! pass inputs, outputs and variables between steps.
//!
//! Templates are rendered by the planner when a step's task run is
//! claimed, so they see everything finished before it; `save` is rendered
//! when the step succeeds, the task's `outputs` when the flow ends. Pure:
//! no I/O; each template string runs on a fuel budget and its rendered text
//! is cut off at a size limit. (A single expression such as `'x' * N` is
//! evaluated in memory before its size is checked; templates are written
//! by task authors, never by guests, whose outputs are only data here.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::limits::check_name;
use super::task::{Grants, RetryPolicy, TaskLimits};

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique in the task: 1–128 chars of `[A-Za-z0-9_.:-]`, and a valid
    /// template name (`[A-Za-z_][A-Za-z0-9_]*`) to be referred to as
    /// `steps.NAME`.
    #[schema(example = "fetch")]
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The plugin to run: its name (newest version) or `sha256:<digest>`
    /// (absent for a `for_each` step).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// Runs `step` once per item instead of an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEachSpec>,
    /// Starts an execution of another task instead of an action (a child:
    /// its `parent_id` is this execution), and by default waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subflow: Option<SubflowSpec>,
    /// Runs these action steps at once instead of an action; the step ends
    /// when all of them have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub parallel: Option<Vec<StepSpec>>,
    /// The input, a template: every string in it is rendered; a string
    /// that is exactly one `{{ expression }}` becomes the expression's
    /// JSON value. Default `{}`.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// An expression: when false, the step's task run is `SKIPPED`.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// The step's own retry policy (the task's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The step's own limits (the task's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TaskLimits>,
    /// The step's own grants (the task's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
    /// A failure of this step does not stop the flow; the flow then ends
    /// `WARNING`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
    /// Execution variables to set when the step succeeds: name → template
    /// (`outputs` and `result` are this step's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, String>,
    /// A JSON Schema the step's outputs (an object, output name → value)
    /// must match when an attempt succeeds, else it ends `invalid_result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub outputs_schema: Option<Value>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A step run once per item: one task run per item, never more than
/// `concurrency` at once; its outputs are the items' outputs, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEachSpec {
    /// An expression giving an array: `steps.list.outputs.urls`.
    #[schema(example = "steps.list.outputs.urls")]
    pub items: String,
    /// Items run at once (1-100, default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// What runs per item: an action step whose templates also see `item`
    /// and `index` (its `name` may be left out).
    #[schema(no_recursion)]
    pub step: Box<StepSpec>,
}

fn default_concurrency() -> u32 {
    4
}

/// A step that runs another task as a child execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubflowSpec {
    /// The task: its id, or its name in this task's namespace.
    pub task: String,
    /// The child's input, a template (the child task's own when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Wait for the child to end and take its outputs (default); when
    /// false, the step ends as the child starts, its output the child's id.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

/// Most items a `for_each` runs at once.
pub const MAX_CONCURRENCY: u32 = 100;
/// Most items one `for_each` may have.
pub const MAX_ITEMS: usize = 10_000;

impl StepSpec {
    /// The steps run at once by a `parallel` step (none for others).
    pub fn children(&self) -> &[StepSpec] {
        self.parallel.as_deref().unwrap_or_default()
    }

    /// Every grants of this step and the steps inside it.
    pub fn all_grants<'a>(&'a self, out: &mut Vec<&'a Grants>) {
        out.extend(self.grants.as_ref());
        for child in self.parallel.iter().flatten() {
            child.all_grants(out);
        }
        if let Some(each) = &self.for_each {
            each.step.all_grants(out);
        }
    }

    /// Calls `f` on every grants of this step and the steps inside it.
    pub fn visit_grants_mut(&mut self, f: &mut dyn FnMut(&mut Grants)) {
        if let Some(g) = &mut self.grants {
            f(g);
        }
        for child in self.parallel.iter_mut().flatten() {
            child.visit_grants_mut(f);
        }
        if let Some(each) = &mut self.for_each {
            each.step.visit_grants_mut(f);
        }
    }

    /// What runs for this step's task runs: the step itself, or a
    /// `for_each`'s per-item step.
    pub fn runnable(&self) -> &StepSpec {
        match &self.for_each {
            Some(f) => &f.step,
            None => self,
        }
    }
}

/// Why a template could not be rendered: the expression and the engine's
/// words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: cannot render {template:?}: {message}")]
pub struct TemplateError {
    /// Where it is, e.g. `step fetch, input.url`.
    pub place: String,
    pub template: String,
    pub message: String,
}

/// Largest rendered value (as JSON): what a step's input may be.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
/// Work one render may do (minijinja fuel: about one unit per instruction).
const FUEL: u64 = 100_000;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(50);
        env
    })
}

/// The expression inside `s` when `s` is exactly one `{{ expression }}`.
fn sole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

fn engine_error(place: &str, template: &str, e: minijinja::Error) -> TemplateError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    TemplateError {
        place: place.to_string(),
        template: template.chars().take(200).collect(),
        message,
    }
}

/// Evaluates `expr` (written as `template`); a name that is not there is
/// an error, not a silent null.
fn eval(
    place: &str,
    template: &str,
    expr: &str,
    ctx: &minijinja::Value,
) -> Result<minijinja::Value, TemplateError> {
    let value = env()
        .compile_expression(expr)
        .and_then(|e| e.eval(ctx.clone()))
        .map_err(|e| engine_error(place, template, e))?;
    if value.is_undefined() {
        return Err(TemplateError {
            place: place.to_string(),
            template: template.chars().take(200).collect(),
            message: format!("{expr} is undefined"),
        });
    }
    Ok(value)
}

/// Renders one string: its JSON value when it is a sole expression, else
/// its text.
fn render_str(place: &str, s: &str, ctx: &minijinja::Value) -> Result<Value, TemplateError> {
    if !s.contains("{{") && !s.contains("{%") {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(expr) = sole_expression(s) {
        let value = eval(place, s, expr, ctx)?;
        return serde_json::to_value(&value).map_err(|e| TemplateError {
            place: place.to_string(),
            template: s.to_string(),
            message: format!("the value is not JSON: {e}"),
        });
    }
    // Written through a writer that stops at the size limit, so that a
    // loop printing without end fails early instead of filling memory.
    let template = env()
        .template_from_str(s)
        .map_err(|e| engine_error(place, s, e))?;
    let mut out = Capped(Vec::new());
    match template.render_captured_to(ctx.clone(), &mut out) {
        Ok(_) => Ok(Value::String(String::from_utf8_lossy(&out.0).into_owned())),
        Err(_) if out.0.len() >= MAX_RENDERED_BYTES => Err(TemplateError {
            place: place.to_string(),
            template: s.chars().take(200).collect(),
            message: format!("the rendered text is over {MAX_RENDERED_BYTES} bytes"),
        }),
        Err(e) => Err(engine_error(place, s, e)),
    }
}

/// Rendered text, refused past [`MAX_RENDERED_BYTES`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_RENDERED_BYTES {
            self.0.resize(MAX_RENDERED_BYTES, 0);
            return Err(std::io::Error::other("the rendered text is too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders every string in `template` (object keys stay as written).
pub fn render(place: &str, template: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    let rendered = render_value(place, template, &ctx)?;
    let size = serde_json::to_vec(&rendered).map(|v| v.len()).unwrap_or(0);
    if size > MAX_RENDERED_BYTES {
        return Err(TemplateError {
            place: place.to_string(),
            template: String::new(),
            message: format!("the rendered value is {size} bytes, over {MAX_RENDERED_BYTES}"),
        });
    }
    Ok(rendered)
}

fn render_value(place: &str, t: &Value, ctx: &minijinja::Value) -> Result<Value, TemplateError> {
    Ok(match t {
        Value::String(s) => render_str(place, s, ctx)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_value(&format!("{place}[{i}]"), v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), render_value(&format!("{place}.{k}"), v, ctx)?)))
                .collect::<Result<Map<_, _>, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// The variables a replay from a later step starts with: `initial` with
/// the `save` of each earlier step applied in order, as the planner
/// applied them when those steps succeeded. `copied` lists each earlier
/// step's name, end state and what it produced.
pub fn replay_variables(
    steps: &[StepSpec],
    input: &Value,
    initial: &Map<String, Value>,
    copied: &[(String, &str, Option<Value>)],
) -> Result<Map<String, Value>, TemplateError> {
    let mut vars = initial.clone();
    let mut seen = Map::new();
    for (name, state, produced) in copied {
        let field = |k: &str| produced.as_ref().and_then(|p| p.get(k)).cloned();
        let outputs = field("outputs").unwrap_or_else(|| serde_json::json!({}));
        let result = field("result").unwrap_or(Value::Null);
        let succeeded = matches!(*state, "SUCCESS" | "WARNING");
        if let Some(step) = steps.iter().find(|s| &s.name == name).filter(|_| succeeded) {
            let ctx = serde_json::json!({
                "inputs": input, "vars": vars, "steps": seen,
                "outputs": outputs, "result": result,
            });
            let mut saved = vars.clone();
            for (var, template) in &step.save {
                let place = format!("step {name}, save.{var}");
                saved.insert(
                    var.clone(),
                    render(&place, &Value::String(template.clone()), &ctx)?,
                );
            }
            vars = saved;
        }
        seen.insert(
            name.clone(),
            serde_json::json!({"outputs": outputs, "result": result, "state": state}),
        );
    }
    Ok(vars)
}

/// Evaluates an `if`: Jinja truthiness (false, none, 0, "" and empty
/// collections are false). `{{ }}` around it is allowed.
pub fn condition(place: &str, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
    let bare = sole_expression(expr).unwrap_or(expr);
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    eval(place, expr, bare, &ctx).map(|v| v.is_true())
}

/// The names a template reads, dotted as deep as written
/// (`steps.fetch.outputs.url`), or the syntax error.
fn reads(template: &str) -> Result<BTreeSet<String>, String> {
    if let Some(expr) = sole_expression(template) {
        return env()
            .compile_expression(expr)
            .map(|e| e.undeclared_variables(true).into_iter().collect())
            .map_err(|e| e.to_string());
    }
    if !template.contains("{{") && !template.contains("{%") {
        return Ok(BTreeSet::new());
    }
    env()
        .template_from_str(template)
        .map(|t| t.undeclared_variables(true).into_iter().collect())
        .map_err(|e| e.to_string())
}

/// What some templates read of a flow's context: the top-level names, and
/// under `steps` the steps they name. A plan builds only that much of the
/// context, so that a step's templates cost what they read, not what every
/// step before produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reads {
    pub roots: BTreeSet<String>,
    /// `None`: `steps` is read whole (`steps | length`, `steps[name]`).
    pub steps: Option<BTreeSet<String>>,
}

impl Reads {
    /// Just one step (of `steps`).
    pub fn step(name: &str) -> Reads {
        Reads {
            roots: BTreeSet::from(["steps".to_string()]),
            steps: Some(BTreeSet::from([name.to_string()])),
        }
    }

    pub fn reads(&self, root: &str) -> bool {
        self.roots.contains(root)
    }

    pub fn reads_step(&self, name: &str) -> bool {
        self.reads("steps") && self.steps.as_ref().is_none_or(|s| s.contains(name))
    }
}

/// What `templates` (JSON with template strings, or bare expressions)
/// read, or `None` when a template does not parse (its render says why).
/// Remembered per template text: the same few templates are read at every
/// event of a flow.
pub fn reads_of(templates: &[&Value]) -> Option<Reads> {
    thread_local! {
        static SEEN: std::cell::RefCell<BTreeMap<String, Option<BTreeSet<String>>>> =
            const { std::cell::RefCell::new(BTreeMap::new()) };
    }
    let mut texts = Vec::new();
    for t in templates {
        strings(t, String::new(), &mut texts);
    }
    let mut out = Reads {
        roots: BTreeSet::new(),
        steps: Some(BTreeSet::new()),
    };
    for (_, text) in texts {
        let names = SEEN.with(|seen| {
            if let Some(n) = seen.borrow().get(text) {
                return n.clone();
            }
            let n = reads(text).ok();
            let mut seen = seen.borrow_mut();
            if seen.len() >= 4096 {
                seen.clear();
            }
            seen.insert(text.to_string(), n.clone());
            n
        })?;
        for name in names {
            let mut parts = name.split('.');
            let root = parts.next().unwrap_or_default();
            if root == "steps" {
                match (parts.next(), &mut out.steps) {
                    (Some(step), Some(steps)) => {
                        steps.insert(step.to_string());
                    }
                    _ => out.steps = None,
                }
            }
            out.roots.insert(root.to_string());
        }
    }
    Some(out)
}

fn strings<'a>(v: &'a Value, place: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((place, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{place}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, item) in fields {
                strings(item, format!("{place}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Checks one template: its syntax, and that each name it reads is one of
/// `roots`, and each `steps.X` one of `steps`.
fn check_template(
    place: &str,
    template: &str,
    roots: &[&str],
    steps: &[&str],
    problems: &mut Vec<String>,
) {
    let names = match reads(template) {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("{place}: {e}"));
            return;
        }
    };
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if !roots.contains(&root) {
            problems.push(format!(
                "{place}: unknown name {root:?} (known: {})",
                roots.join(", ")
            ));
        } else if root == "steps"
            && let Some(step) = parts.next()
            && !steps.contains(&step)
        {
            problems.push(format!(
                "{place}: steps.{step} is not a step before this one{}",
                if steps.is_empty() {
                    String::new()
                } else {
                    format!(" (those are: {})", steps.join(", "))
                }
            ));
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every problem with a flow's steps, variables and outputs.
pub fn problems(
    steps: &[StepSpec],
    variables: &Map<String, Value>,
    outputs: Option<&BTreeMap<String, Value>>,
) -> Vec<String> {
    let mut p = Vec::new();
    for name in variables.keys() {
        if !is_identifier(name) {
            p.push(format!(
                "variable {name:?} must be a name of letters, digits and _ (not starting with a digit)"
            ));
        }
    }
    p.extend(step_problems(steps, variables, outputs, &[]));
    p
}

/// The problems of `steps`, which come after the steps named `before`.
fn step_problems(
    steps: &[StepSpec],
    variables: &Map<String, Value>,
    outputs: Option<&BTreeMap<String, Value>>,
    before: &[&str],
) -> Vec<String> {
    let mut p = Vec::new();
    let mut seen: Vec<&str> = before.to_vec();
    for step in steps {
        let at = format!("step {}", step.name);
        if let Err(e) = check_name("step name", &step.name) {
            p.push(e);
        } else if !is_identifier(&step.name) {
            p.push(format!(
                "step name {:?} must be letters, digits and _ (not starting with a digit) to be used as steps.{}",
                step.name, step.name
            ));
        }
        if seen.contains(&step.name.as_str()) {
            p.push(format!("step name {:?} is used twice", step.name));
        }
        let roots = ["inputs", "vars", "steps"];
        if let Some(children) = &step.parallel {
            if !step.action.trim().is_empty() || step.for_each.is_some() {
                p.push(format!(
                    "{at}: a parallel step has no action or for_each of its own"
                ));
            }
            if children.is_empty() || children.len() > MAX_CONCURRENCY as usize {
                p.push(format!(
                    "{at}: parallel needs 1-{MAX_CONCURRENCY} steps, got {}",
                    children.len()
                ));
            }
            if !step.save.is_empty() {
                p.push(format!(
                    "{at}: save belongs on the parallel steps themselves"
                ));
            }
            let mut siblings: Vec<&str> = Vec::new();
            for child in children {
                if child.for_each.is_some() || child.parallel.is_some() {
                    p.push(format!(
                        "{at}, parallel step {}: for_each and parallel cannot nest",
                        child.name
                    ));
                }
                if siblings.contains(&child.name.as_str()) {
                    p.push(format!("step name {:?} is used twice", child.name));
                }
                // Siblings run at once: each sees only the steps before the block.
                p.extend(step_problems(
                    std::slice::from_ref(child),
                    variables,
                    None,
                    &seen,
                ));
                siblings.push(&child.name);
            }
            seen.extend(siblings);
            seen.push(&step.name);
            continue;
        }
        if let Some(sub) = &step.subflow {
            if !step.action.trim().is_empty() || step.for_each.is_some() {
                p.push(format!(
                    "{at}: a subflow step has no action or for_each of its own"
                ));
            }
            if sub.task.trim().is_empty() {
                p.push(format!("{at}: subflow.task must name a task"));
            }
            let mut templates = Vec::new();
            if let Some(input) = &sub.input {
                strings(input, format!("{at}, subflow.input"), &mut templates);
            }
            for (place, t) in templates {
                check_template(&place, t, &roots, &seen, &mut p);
            }
        }
        match &step.for_each {
            None if step.subflow.is_some() => {}
            None if step.action.trim().is_empty() => p.push(format!(
                "{at}: action must name a plugin (or for_each give one per item)"
            )),
            None => {}
            Some(_) if !step.action.trim().is_empty() => p.push(format!(
                "{at}: a for_each step has no action of its own (for_each.step has it)"
            )),
            Some(f) => {
                check_template(
                    &format!("{at}, for_each.items"),
                    &f.items,
                    &roots,
                    &seen,
                    &mut p,
                );
                if f.concurrency == 0 || f.concurrency > MAX_CONCURRENCY {
                    p.push(format!(
                        "{at}: for_each.concurrency must be 1-{MAX_CONCURRENCY}, got {}",
                        f.concurrency
                    ));
                }
                let child = &f.step;
                let cat = format!("{at}, for_each.step");
                if child.action.trim().is_empty() {
                    p.push(format!("{cat}: action must name a plugin"));
                }
                if child.for_each.is_some() {
                    p.push(format!("{cat}: for_each cannot nest"));
                }
                if !child.save.is_empty() || child.condition.is_some() {
                    p.push(format!("{cat}: save and if are not supported per item"));
                }
                if !step.save.is_empty() {
                    p.push(format!("{at}: save is not supported on a for_each step"));
                }
                let mut templates = Vec::new();
                strings(&child.input, format!("{cat}, input"), &mut templates);
                for (place, t) in templates {
                    check_template(
                        &place,
                        t,
                        &["inputs", "vars", "steps", "item", "index"],
                        &seen,
                        &mut p,
                    );
                }
                if let Some(r) = &child.retry
                    && (r.max_attempts == 0 || r.max_attempts > 100)
                {
                    p.push(format!(
                        "{cat}: retry.max_attempts must be 1-100, got {}",
                        r.max_attempts
                    ));
                }
            }
        }
        let mut templates = Vec::new();
        strings(&step.input, format!("{at}, input"), &mut templates);
        for (place, t) in templates {
            check_template(&place, t, &roots, &seen, &mut p);
        }
        if let Some(c) = &step.condition {
            check_template(&format!("{at}, if"), c, &roots, &seen, &mut p);
        }
        if let Some(r) = &step.retry
            && (r.max_attempts == 0 || r.max_attempts > 100)
        {
            p.push(format!(
                "{at}: retry.max_attempts must be 1-100, got {}",
                r.max_attempts
            ));
        }
        let mut with_self = seen.clone();
        with_self.push(&step.name);
        for (var, t) in &step.save {
            if !variables.contains_key(var) {
                p.push(format!(
                    "{at}, save: variable {var:?} is not declared in the task's variables"
                ));
            }
            check_template(
                &format!("{at}, save.{var}"),
                t,
                &["inputs", "vars", "steps", "outputs", "result"],
                &with_self,
                &mut p,
            );
        }
        seen.push(&step.name);
    }
    if let Some(outputs) = outputs {
        for (name, t) in outputs {
            let mut templates = Vec::new();
            strings(t, format!("outputs.{name}"), &mut templates);
            for (place, t) in templates {
                check_template(&place, t, &["inputs", "vars", "steps"], &seen, &mut p);
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Value {
        json!({
            "inputs": {"url": "https://x.test/a", "n": 3},
            "vars": {"count": 2},
            "steps": {"list": {"outputs": {"items": [1, 2, 3]}, "result": {"ok": true}}}
        })
    }

    #[test]
    fn a_sole_expression_keeps_its_json_type() {
        let t = json!({
            "items": "{{ steps.list.outputs.items }}",
            "n": "{{ steps.list.outputs.items | length }}",
            "ok": "{{steps.list.result.ok}}",
            "text": "{{ inputs.url }}?n={{ inputs.n }}",
            "plain": "no template",
            "nested": [{"v": "{{ vars.count + 1 }}"}],
            "number": 7
        });
        let r = render("step x, input", &t, &ctx()).unwrap();
        assert_eq!(
            r,
            json!({
                "items": [1, 2, 3], "n": 3, "ok": true,
                "text": "https://x.test/a?n=3", "plain": "no template",
                "nested": [{"v": 3}], "number": 7
            })
        );
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_the_place_and_template() {
        let e = render(
            "step fetch, input",
            &json!({"u": "{{ steps.nope.outputs }}"}),
            &ctx(),
        )
        .unwrap_err();
        assert_eq!(e.place, "step fetch, input.u");
        assert_eq!(e.template, "{{ steps.nope.outputs }}");
        assert!(e.to_string().contains("step fetch, input.u"), "{e}");
        assert!(render("p", &json!("{{ inputs.missing }}"), &ctx()).is_err());
        assert!(render("p", &json!("{{ 1 +  }}"), &ctx()).is_err());
    }

    #[test]
    fn conditions_use_jinja_truthiness() {
        assert!(condition("if", "vars.count > 1", &ctx()).unwrap());
        assert!(condition("if", "{{ steps.list.outputs.items }}", &ctx()).unwrap());
        assert!(!condition("if", "inputs.n == 4", &ctx()).unwrap());
        assert!(!condition("if", "[]", &ctx()).unwrap());
        assert!(condition("if", "inputs.nope", &ctx()).is_err());
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let t = json!(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
        );
        let e = render("p", &t, &ctx()).unwrap_err();
        assert!(e.message.contains("fuel"), "{e}");
    }

    #[test]
    fn an_oversized_result_is_refused() {
        let t = json!("{{ 'x' * 2000000 }}");
        assert!(render("p", &t, &ctx()).is_err());
        let looping = json!("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}");
        let e = render("p", &looping, &ctx()).unwrap_err();
        assert!(e.message.contains("over"), "{e}");
    }

    fn step(name: &str, input: Value) -> StepSpec {
        serde_json::from_value(json!({"name": name, "action": "noop", "input": input})).unwrap()
    }

    #[test]
    fn definitions_list_every_problem() {
        let mut later = step("b", json!({"x": "{{ steps.c.outputs }}"}));
        later
            .save
            .insert("undeclared".into(), "{{ outputs.n }}".into());
        later.condition = Some("{{ nope }}".into());
        let steps = vec![
            step("a", json!({"u": "{{ inputs.url }}", "bad": "{{ 1 + }}"})),
            later,
            step("c", json!({})),
            step("a", json!({})),
            step("not-ident", json!({})),
        ];
        let p = problems(&steps, &Map::new(), None);
        let all = p.join("\n");
        for expected in [
            "step a, input.bad",
            "steps.c is not a step before this one",
            "variable \"undeclared\" is not declared",
            "step b, if: unknown name \"nope\"",
            "step name \"a\" is used twice",
            "step name \"not-ident\" must be letters",
        ] {
            assert!(all.contains(expected), "{expected} in:\n{all}");
        }
        assert_eq!(p.len(), 6, "{all}");
    }

    #[test]
    fn a_valid_flow_has_no_problems() {
        let mut b = step(
            "b",
            json!({"items": "{{ steps.a.outputs.items }}", "n": "{{ vars.n }}"}),
        );
        b.save
            .insert("n".into(), "{{ outputs.count + vars.n }}".into());
        b.condition = Some("steps.a.outputs.items | length > 0".into());
        let steps = vec![step("a", json!({"u": "{{ inputs.url }}"})), b];
        let vars = json!({"n": 0}).as_object().unwrap().clone();
        let outputs = BTreeMap::from([("total".to_string(), json!("{{ vars.n }}"))]);
        assert_eq!(
            problems(&steps, &vars, Some(&outputs)),
            Vec::<String>::new()
        );
    }
}
