//! Loading components: validate against the `ward:action` world, compile
//! once per content digest, cache the compiled artifact on disk, and keep an
//! `InstancePre` ready for every attempt.
//!
//! Owns the digest → loaded-action map and the artifact cache folder. A file
//! that is not a component of the world fails here with a `LoadError` that
//! names what is missing, before any attempt runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::ActionPre;
use super::state::AttemptState;

/// Why a component could not be loaded; the message is meant for its author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// A component ready to run: compiled, linked, type-checked.
pub struct LoadedAction {
    /// Hex sha256 of the component's bytes.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: usize,
    /// Core instances one attempt creates; admission control reserves them
    /// in the instance pool.
    pub core_instances: u32,
    pub(crate) pre: ActionPre<AttemptState>,
}

impl std::fmt::Debug for LoadedAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedAction")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("core_instances", &self.core_instances)
            .finish()
    }
}

/// The sha256 of `bytes`, in hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) struct ComponentCache {
    loaded: Mutex<HashMap<String, Arc<LoadedAction>>>,
    artifacts: Option<PathBuf>,
    fingerprint: String,
}

impl ComponentCache {
    pub fn new(artifacts: Option<PathBuf>, fingerprint: String) -> std::io::Result<Self> {
        if let Some(dir) = &artifacts {
            std::fs::create_dir_all(dir)?;
            prune_artifacts(dir, std::time::SystemTime::now());
        }
        Ok(ComponentCache {
            loaded: Mutex::new(HashMap::new()),
            artifacts,
            fingerprint,
        })
    }

    pub fn get(&self, digest: &str) -> Option<Arc<LoadedAction>> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// Loads `bytes`, or returns the action already loaded for their digest.
    pub fn load(
        &self,
        engine: &Engine,
        linker: &Linker<AttemptState>,
        bytes: &[u8],
    ) -> Result<Arc<LoadedAction>, LoadError> {
        let digest = digest(bytes);
        if let Some(hit) = self.get(&digest) {
            return Ok(hit);
        }
        let core_instances = inspect(bytes)?;
        let component = self.compile(engine, &digest, bytes)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| link_error(&e, bytes))?;
        let pre = ActionPre::new(instance_pre).map_err(|e| {
            LoadError(format!(
                "component does not export `run: func(invocation: invocation) -> result<string, action-error>` \
                 of the ward:action@0.1.0 world: {}",
                error_text(&e)
            ))
        })?;
        let action = Arc::new(LoadedAction {
            digest: digest.clone(),
            size: bytes.len(),
            core_instances,
            pre,
        });
        let mut map = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.entry(digest).or_insert(action).clone())
    }

    fn artifact_path(&self, digest: &str) -> Option<PathBuf> {
        self.artifacts
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{}.cwasm", self.fingerprint)))
    }

    fn compile(&self, engine: &Engine, digest: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let Some(path) = self.artifact_path(digest) else {
            return Component::new(engine, bytes).map_err(|e| compile_error(&e));
        };
        if path.exists() {
            // A hit counts as a use: pruning goes by the file's modified time.
            if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            // SAFETY: the artifact folder belongs to this host and holds only
            // files this function wrote with `precompile_component` for an
            // engine of the same settings (the fingerprint is in the name);
            // wasmtime also checks the settings and rejects a mismatch.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cached artifact unusable; recompiling")
                }
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| compile_error(&e))?;
        if let Err(e) = write_atomically(&path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache compiled component");
            // SAFETY: `artifact` was produced just now by this engine.
            return unsafe { Component::deserialize(engine, &artifact) }
                .map_err(|e| compile_error(&e));
        }
        // SAFETY: as above; the file holds exactly `artifact`.
        unsafe { Component::deserialize_file(engine, &path) }.map_err(|e| compile_error(&e))
    }
}

/// An artifact unused this long is removed when a cache opens: it is only a
/// compiled copy of a component (recompiled on demand), and without pruning a
/// plugin author's cache grows by one artifact, tens of MB, per build.
pub(crate) const ARTIFACT_MAX_IDLE: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 3600);

/// A write that died half-way leaves a temporary file; one this old is no
/// write in progress.
const TEMP_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes artifacts idle for `ARTIFACT_MAX_IDLE` (whatever engine settings
/// they were made for: another Ward's are idle for this one) and stale
/// temporary files. Best effort: a file it cannot read or remove stays.
fn prune_artifacts(dir: &Path, now: std::time::SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut removed = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let max_age = if name.ends_with(".cwasm") {
            ARTIFACT_MAX_IDLE
        } else if name.starts_with(".tmp") {
            TEMP_MAX_AGE
        } else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let idle = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.is_file() && idle > max_age && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "pruned idle compiled components");
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn error_text(e: &wasmtime::Error) -> String {
    format!("{e:#}")
}

fn compile_error(e: &wasmtime::Error) -> LoadError {
    LoadError(format!("component failed to compile: {}", error_text(e)))
}

/// Turns a linker error into a message that names the missing import.
fn link_error(e: &wasmtime::Error, bytes: &[u8]) -> LoadError {
    let text = error_text(e);
    let unknown = unknown_imports(bytes);
    let what = if unknown.is_empty() {
        "component needs an import that Ward does not provide".to_string()
    } else {
        format!(
            "component imports {}, which this Ward does not provide (built against another version of \
             the world?)",
            unknown
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    LoadError(format!(
        "{what}; a Ward action may import only ward:action/host@0.1.0 and WASI preview 2 (cli, clocks, \
         filesystem, io, random, sockets) ({text})"
    ))
}

/// The component's top-level imports that are neither this world's
/// interfaces nor WASI's.
fn unknown_imports(bytes: &[u8]) -> Vec<String> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(Payload::ComponentImportSection(reader)) if depth == 0 => {
                // Interfaces only: a world's types are imported by name too.
                for import in reader.into_iter().flatten() {
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Instance(_)) {
                        continue;
                    }
                    let name = import.name.name;
                    let ours = matches!(name, "ward:action/host@0.1.0" | "ward:action/types@0.1.0");
                    if !ours && !name.starts_with("wasi:") {
                        names.push(name.to_string());
                    }
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    names
}

/// What is checked of an upload before it is compiled: that it is a
/// component (its core-instance count) and the imports outside the world it
/// names. Public for the fuzz targets (`fuzz/`).
pub fn check_bytes(bytes: &[u8]) -> Result<(u32, Vec<String>), LoadError> {
    let instances = inspect(bytes)?;
    Ok((instances, unknown_imports(bytes)))
}

/// Checks that `bytes` is a component (not a core module or something else)
/// and counts the core instances one instantiation creates.
fn inspect(bytes: &[u8]) -> Result<u32, LoadError> {
    use wasmparser::{Encoding, Parser, Payload};
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError(
            "not a WebAssembly file (no \\0asm header); expected a component built for wasm32-wasip2".into(),
        ));
    }
    let mut core_instances = 0u32;
    let mut first = true;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError(format!("malformed WebAssembly: {e}")))?;
        match payload {
            Payload::Version { encoding, .. } if first => {
                first = false;
                if encoding != Encoding::Component {
                    return Err(LoadError(
                        "this is a core WebAssembly module, not a component: build with \
                         `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
                            .into(),
                    ));
                }
            }
            Payload::InstanceSection(reader) => {
                for inst in reader {
                    let inst =
                        inst.map_err(|e| LoadError(format!("malformed WebAssembly: {e}")))?;
                    if matches!(inst, wasmparser::Instance::Instantiate { .. }) {
                        core_instances += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(core_instances.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_wasm_and_core_modules_are_refused_with_a_reason() {
        assert!(
            inspect(b"hello world!")
                .unwrap_err()
                .0
                .contains("not a WebAssembly file")
        );
        let module = wat::parse_str("(module)").unwrap();
        assert!(
            inspect(&module)
                .unwrap_err()
                .0
                .contains("core WebAssembly module")
        );
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(inspect(&component).unwrap(), 1);
    }

    #[test]
    fn idle_artifacts_and_stale_temporary_files_are_pruned() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let file = |name: &str, age: Duration| {
            let path = dir.path().join(name);
            let f = std::fs::File::create(&path).unwrap();
            f.set_modified(now - age).unwrap();
            path
        };
        let hour = Duration::from_secs(3600);
        let used = file("aa-1.cwasm", ARTIFACT_MAX_IDLE - hour);
        let idle = file("bb-2.cwasm", ARTIFACT_MAX_IDLE + hour);
        let writing = file(".tmpAbC123", Duration::from_secs(60));
        let dead = file(".tmpXyZ789", 2 * hour);
        let other = file("notes.txt", ARTIFACT_MAX_IDLE * 2);
        prune_artifacts(dir.path(), now);
        assert!(used.exists() && writing.exists() && other.exists());
        assert!(!idle.exists() && !dead.exists());
    }

    #[test]
    fn imports_outside_the_world_and_wasi_are_named() {
        let component = wat::parse_str(
            r#"(component
                (import "wasi:cli/stdout@0.2.6" (instance))
                (import "ward:action/host@0.1.0" (instance))
                (import "ward:action/host@0.2.0" (instance))
                (import "acme:thing/api@1.0.0" (instance))
                (component (import "inner:not/top-level" (instance)))
            )"#,
        )
        .unwrap();
        assert_eq!(
            unknown_imports(&component),
            ["ward:action/host@0.2.0", "acme:thing/api@1.0.0"]
        );
    }
}
