//! The catalog: plugins (uploaded components) and tasks, validated and
//! stored, with the in-memory caches that keep the trigger and attempt hot
//! paths off the store. This host is the only writer of tasks and plugins
//! (SQLite) and clears the caches on every change; a multi-host store must
//! invalidate them across hosts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::{ServiceError, ServiceResult};
use super::service::Service;
use crate::model::execution::Plugin;
use crate::model::now;
use crate::model::task::{Task, TaskRef, TaskSpec};
use crate::sandbox::component::{LoadError, LoadedAction, digest};

impl Service {
    /// Validates and stores a component; returns the plugin and whether it is new.
    pub async fn add_plugin(
        &self,
        namespace: &str,
        name: &str,
        version: Option<String>,
        bytes: Vec<u8>,
    ) -> ServiceResult<(Plugin, bool)> {
        crate::model::limits::check_plugin_name(name)
            .and_then(|()| crate::model::limits::check_name("namespace", namespace))
            .and_then(|()| match &version {
                Some(v) => crate::model::limits::check_plugin_version(v),
                None => Ok(()),
            })
            .map_err(|m| ServiceError::Invalid {
                message: m.clone(),
                problems: vec![m],
            })?;
        if bytes.len() > self.config.max_plugin_bytes {
            return Err(ServiceError::Invalid {
                message: "component too large".into(),
                problems: vec![format!(
                    "component is over {} bytes",
                    self.config.max_plugin_bytes
                )],
            });
        }
        let hex = digest(&bytes);
        let sandbox = self.sandbox.clone();
        let size = bytes.len();
        let path = self.config.plugins_dir.join(format!("{hex}.wasm"));
        // Checked first (a bad component is the caller's 422), stored
        // second (a failed write is the server's fault).
        let checked =
            tokio::task::spawn_blocking(move || -> ServiceResult<Result<(), LoadError>> {
                if let Err(e) = sandbox.load(&bytes) {
                    return Ok(Err(e));
                }
                if !path.exists() {
                    std::fs::write(&path, &bytes).map_err(|source| ServiceError::Io {
                        context: format!("storing the component at {}", path.display()),
                        source,
                    })?;
                }
                Ok(Ok(()))
            })
            .await??;
        checked.map_err(|e| ServiceError::Invalid {
            message: "not a component of the ward:action world".into(),
            problems: vec![e.0],
        })?;
        let plugin = Plugin {
            id: format!("sha256:{hex}"),
            namespace: namespace.to_string(),
            name: name.to_string(),
            version,
            size: size as u64,
            created_at: now(),
        };
        let stored = self.store.put_plugin(&plugin).await?;
        // A name may now mean a newer component.
        lock(&self.actions).clear();
        Ok(stored)
    }

    /// Checks a task and resolves each action it names to the plugin it
    /// means now (`spec.resolved_actions`).
    async fn check_task(&self, spec: &mut TaskSpec) -> ServiceResult<()> {
        let mut problems = spec.problems(&self.config.bounds);
        for step in &spec.steps {
            for s in std::iter::once(step).chain(step.children()) {
                let Some(sub) = &s.subflow else {
                    continue;
                };
                let target = crate::model::task::TaskRef::new(&sub.task, &spec.namespace);
                if sub.task == spec.name {
                    problems.push(format!(
                        "step {}: subflow.task {:?} is this task: a flow cannot start itself",
                        s.name, sub.task
                    ));
                } else if self.task(&target).await?.is_none() {
                    problems.push(format!(
                        "step {}: subflow.task {:?} is no task in namespace {} (create it first)",
                        s.name, sub.task, spec.namespace
                    ));
                } else if let Some(path) = self.subflow_cycle(spec, &target).await? {
                    problems.push(format!(
                        "step {}: subflow.task {:?} leads back to this task ({}): a cycle",
                        s.name,
                        sub.task,
                        path.join(" → ")
                    ));
                }
            }
        }
        let mut resolved = std::collections::BTreeMap::new();
        for (place, action) in spec.actions() {
            if action.trim().is_empty() || resolved.contains_key(action) {
                continue;
            }
            match self.store.plugin(Some(&spec.namespace), action).await? {
                Some(plugin) => {
                    resolved.insert(action.to_string(), plugin.id);
                }
                None => problems.push(format!(
                    "{place} {action:?} is not a registered plugin in namespace {} (push it first: POST /api/v1/plugins)",
                    spec.namespace
                )),
            }
        }
        spec.resolved_actions = resolved;
        invalid_task_if_any(problems)
    }

    /// The chain of subflow tasks from `start` back to the task `spec`
    /// defines (by name in its namespace), if there is one.
    async fn subflow_cycle(
        &self,
        spec: &TaskSpec,
        start: &TaskRef,
    ) -> ServiceResult<Option<Vec<String>>> {
        // Depth-first over the stored tasks' subflow steps, each task once.
        let mut seen = std::collections::HashSet::new();
        let mut stack = vec![(start.clone(), vec![spec.name.clone()])];
        while let Some((at, path)) = stack.pop() {
            let Some(task) = self.task(&at).await? else {
                continue;
            };
            let mut path = path;
            path.push(task.spec.name.clone());
            if task.spec.namespace == spec.namespace && task.spec.name == spec.name {
                return Ok(Some(path));
            }
            if !seen.insert(task.id.clone()) {
                continue;
            }
            for step in &task.spec.steps {
                for s in std::iter::once(step).chain(step.children()) {
                    if let Some(sub) = &s.subflow {
                        let next = TaskRef::new(&sub.task, &task.spec.namespace);
                        stack.push((next, path.clone()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Seals the secrets of `spec`; a value shown as `(secret)` keeps the one
    /// `current` holds under that name.
    fn seal_secrets(&self, spec: &mut TaskSpec, current: Option<&TaskSpec>) -> ServiceResult<()> {
        let stored: std::collections::BTreeMap<&String, &String> = current
            .iter()
            .flat_map(|c| c.all_grants())
            .flat_map(|g| &g.secrets)
            .collect();
        let mut problems = Vec::new();
        spec.visit_grants_mut(&mut |g| {
            for (name, value) in g.secrets.iter_mut() {
                if value == crate::model::task::SECRET_SHOWN {
                    match stored.get(name) {
                        Some(sealed) => *value = (*sealed).clone(),
                        None => problems.push(format!(
                            "grants.secrets.{name}: {:?} keeps a stored secret, and there is none",
                            crate::model::task::SECRET_SHOWN
                        )),
                    }
                } else {
                    *value = self.secrets.seal(value);
                }
            }
        });
        invalid_task_if_any(problems)
    }

    /// The plain secrets `step` of `spec` may read, by name.
    pub(super) fn open_secrets(
        &self,
        spec: &TaskSpec,
        step: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        spec.grants_of(step)
            .secrets
            .iter()
            .map(|(name, sealed)| {
                self.secrets
                    .open(sealed)
                    .map(|plain| (name.clone(), plain))
                    .map_err(|e| format!("secret {name:?}: {e}"))
            })
            .collect()
    }

    pub async fn create_task(&self, mut spec: TaskSpec) -> ServiceResult<Task> {
        self.check_task(&mut spec).await?;
        self.seal_secrets(&mut spec, None)?;
        let ts = now();
        let task = Task {
            id: uuid::Uuid::now_v7().to_string(),
            version: 1,
            spec,
            created_at: ts.clone(),
            updated_at: ts,
            schedule_state: None,
        };
        self.store.create_task(&task).await?;
        lock(&self.tasks).clear();
        self.schedules_changed.notify_one();
        self.lock_dispatch().set_task_limit(
            &task.id,
            task.spec.concurrency,
            &task.spec.namespace,
            &self.config.queue_limits,
        );
        Ok(task)
    }

    pub async fn update_task(&self, task: &TaskRef, mut spec: TaskSpec) -> ServiceResult<Task> {
        // A webhook given without its secret keeps the one stored.
        if let Some(w) = &mut spec.webhook
            && w.secret.is_none()
            && let Some(current) = self.task(task).await?
        {
            w.secret = current.spec.webhook.and_then(|w| w.secret);
        }
        self.check_task(&mut spec).await?;
        let current = self.task(task).await?;
        self.seal_secrets(&mut spec, current.as_ref().map(|t| &t.spec))?;
        let task = self.store.update_task(task, &spec).await?;
        lock(&self.tasks).clear();
        self.schedules_changed.notify_one();
        self.lock_dispatch().set_task_limit(
            &task.id,
            task.spec.concurrency,
            &task.spec.namespace,
            &self.config.queue_limits,
        );
        Ok(task)
    }

    pub async fn delete_task(&self, task: &TaskRef) -> ServiceResult<()> {
        self.store.delete_task(task).await?;
        lock(&self.tasks).clear();
        self.schedules_changed.notify_one();
        Ok(())
    }

    /// A task by id, or by name in a namespace, from memory when it was
    /// looked up before (keyed by both, so a name in one namespace never
    /// answers for another).
    pub async fn task(&self, task: &TaskRef) -> ServiceResult<Option<Task>> {
        let key = task.to_string();
        let generation = {
            let cache = lock(&self.tasks);
            if let Some(t) = cache.entries.get(&key) {
                return Ok(Some(t.clone()));
            }
            cache.generation
        };
        let found = self.store.task(task).await?;
        if let Some(t) = &found {
            lock(&self.tasks).insert(generation, &key, t.clone());
        }
        Ok(found)
    }

    /// The loaded component of a task's action (a digest, or a name in
    /// `namespace`), from memory when possible.
    pub(super) async fn action_for(
        &self,
        namespace: &str,
        action: &str,
    ) -> ServiceResult<Arc<LoadedAction>> {
        let key = format!("{namespace}/{action}");
        let generation = {
            let cache = lock(&self.actions);
            if let Some(a) = cache.entries.get(&key) {
                return Ok(a.clone());
            }
            cache.generation
        };
        let loaded = self.load_action(namespace, action).await?;
        lock(&self.actions).insert(generation, &key, loaded.clone());
        Ok(loaded)
    }

    async fn load_action(&self, namespace: &str, action: &str) -> ServiceResult<Arc<LoadedAction>> {
        // A task's actions are resolved to digests in its namespace when it
        // is stored; a name (a task stored before that) is looked up there.
        let digest =
            action.starts_with("sha256:") || crate::model::limits::looks_like_digest(action);
        let scope = (!digest).then_some(namespace);
        let plugin = self.store.plugin(scope, action).await?.ok_or_else(|| {
            ServiceError::NotFound(format!("plugin {action:?} is not registered"))
        })?;
        let hex = plugin.id.trim_start_matches("sha256:").to_string();
        if let Some(a) = self.sandbox.loaded(&hex) {
            return Ok(a);
        }
        let sandbox = self.sandbox.clone();
        let path = self.config.plugins_dir.join(format!("{hex}.wasm"));
        Ok(tokio::task::spawn_blocking(move || sandbox.load_file(&path)).await??)
    }
}

/// `Ok` without problems, else the task is invalid for each of them.
fn invalid_task_if_any(problems: Vec<String>) -> ServiceResult<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(ServiceError::Invalid {
        message: "invalid task".into(),
        problems,
    })
}

/// Lookups remembered until the next change. The generation makes a lookup
/// that raced with a change drop its (possibly stale) result.
pub(super) struct Cache<T> {
    entries: HashMap<String, T>,
    generation: u64,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache {
            entries: HashMap::new(),
            generation: 0,
        }
    }
}

impl<T> Cache<T> {
    fn insert(&mut self, read_at: u64, key: &str, value: T) {
        if read_at == self.generation {
            self.entries.insert(key.to_string(), value);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.generation += 1;
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_raced_with_a_change_is_not_remembered() {
        let mut c: Cache<u32> = Cache::default();
        let read_at = c.generation;
        c.clear(); // a task changed while the lookup was reading the store
        c.insert(read_at, "t", 1);
        assert!(c.entries.is_empty());
        c.insert(c.generation, "t", 2);
        assert_eq!(c.entries["t"], 2);
    }
}
