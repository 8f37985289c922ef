//! API tokens, the audit trail and namespaces' fair shares: making and
//! revoking tokens (secrets shown once, stored as sha256), finding the
//! caller a secret makes, the admin token of a first start, and the
//! per-namespace trigger buckets and running caps.
//!
//! The rules of who reaches what are the model's (`model::auth`); the API
//! maps routes to scopes. Nothing here knows HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::catalog::lock;
use super::error::{ServiceError, ServiceResult};
use super::service::Service;
use crate::model::auth::{AuditEntry, Caller, NamespaceLimits, Scope, Token};

/// What every secret starts with, so that a leaked one is recognisable
/// (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "ward_";

/// Where a first start writes the admin token, in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// How long a looked-up token is believed without asking the store again;
/// a revocation on this host clears it at once.
const TOKEN_CACHE_FOR: Duration = Duration::from_secs(5);

/// The state behind tokens and shares, one per service.
#[derive(Default)]
pub(super) struct Access {
    /// Streams each token holds open (`?follow=true`).
    follows: std::sync::Arc<Mutex<HashMap<String, usize>>>,
    /// Tokens by the hash of their secret, with when they were read (ms).
    tokens: Mutex<HashMap<String, (Option<Token>, i64)>>,
    /// Namespaces' limits as last read or set.
    limits: Mutex<BTreeMap<String, NamespaceLimits>>,
    /// Trigger buckets by namespace: tokens left and when last filled (ms).
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

/// What `create_token` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub scopes: BTreeSet<Scope>,
    /// How long it lives; for ever when `None`.
    pub expires_in: Option<Duration>,
}

/// A trigger refused because its namespace is over its rate.
#[derive(Debug, Clone, PartialEq)]
pub struct OverRate {
    pub namespace: String,
    pub rate: f64,
    /// When a trigger will be let through again.
    pub retry_after: Duration,
}

/// A followed stream held open by a token; the count goes down when it
/// is dropped (with the stream).
pub struct FollowPermit {
    counts: std::sync::Arc<Mutex<HashMap<String, usize>>>,
    key: Option<String>,
}

impl Drop for FollowPermit {
    fn drop(&mut self) {
        let Some(key) = &self.key else { return };
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(key);
            }
        }
    }
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

impl Service {
    /// Makes a token; returns it and its secret, which is never shown again.
    pub async fn create_token(&self, new: NewToken) -> ServiceResult<(Token, String)> {
        let mut problems = Vec::new();
        if let Err(e) =
            crate::model::auth::check_token_request(new.namespace.as_deref(), &new.scopes)
        {
            problems.push(e);
        }
        if let Some(name) = &new.name
            && (name.is_empty() || name.len() > 128 || name.chars().any(char::is_control))
        {
            problems.push("a token's name is 1-128 characters without control characters".into());
        }
        let now_ms = self.clock.now_ms();
        let expires_at = match new.expires_in {
            Some(d) if d.is_zero() || d > Duration::from_secs(10 * 365 * 86_400) => {
                problems.push("expires must be over 0 and at most 10 years".into());
                None
            }
            Some(d) => Some(ms_to_stored(now_ms + d.as_millis() as i64)),
            None => None,
        };
        if !problems.is_empty() {
            return Err(ServiceError::Invalid {
                message: "invalid token".into(),
                problems,
            });
        }
        let secret = new_secret();
        let token = Token {
            id: uuid::Uuid::now_v7().to_string(),
            name: new.name,
            namespace: new.namespace,
            scopes: new.scopes,
            created_at: ms_to_stored(now_ms),
            expires_at,
            revoked_at: None,
        };
        self.store.put_token(&token, &hash_secret(&secret)).await?;
        Ok((token, secret))
    }

    pub async fn tokens(&self) -> ServiceResult<Vec<Token>> {
        Ok(self.store.tokens().await?)
    }

    /// Revokes a token at once (on this host; others within
    /// [`TOKEN_CACHE_FOR`]).
    pub async fn revoke_token(&self, id: &str) -> ServiceResult<Token> {
        let at = ms_to_stored(self.clock.now_ms());
        // Never the last live admin token: nobody could make another.
        let tokens = self.store.tokens().await?;
        let live_admin = |t: &Token| t.valid_at(&at) && t.scopes.contains(&Scope::Admin);
        if tokens.iter().any(|t| t.id == id && live_admin(t))
            && !tokens.iter().any(|t| t.id != id && live_admin(t))
        {
            return Err(ServiceError::Conflict(format!(
                "token {id} is the last live admin token: make another admin token before revoking it"
            )));
        }
        let token = self
            .store
            .revoke_token(id, &at)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no token {id}")))?;
        lock(&self.access.tokens).clear();
        Ok(token)
    }

    /// The caller a bearer secret makes, if it is a live token's.
    pub async fn authenticate(&self, secret: &str) -> ServiceResult<Option<Caller>> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 256 {
            return Ok(None);
        }
        let hash = hash_secret(secret);
        let now_ms = self.clock.now_ms();
        let cached = lock(&self.access.tokens)
            .get(&hash)
            .filter(|(_, at)| now_ms - at < TOKEN_CACHE_FOR.as_millis() as i64)
            .map(|(t, _)| t.clone());
        let token = match cached {
            Some(t) => t,
            None => {
                let t = self.store.token_by_hash(&hash).await?;
                let mut cache = lock(&self.access.tokens);
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(hash, (t.clone(), now_ms));
                t
            }
        };
        let now = ms_to_stored(now_ms);
        Ok(token.filter(|t| t.valid_at(&now)).map(|t| t.caller()))
    }

    /// On a store without tokens, makes an admin token and writes its
    /// secret to `dir/admin.token` (0600); returns the file when it made
    /// one. A store that has tokens is left alone.
    pub async fn first_admin_token(&self, dir: &Path) -> ServiceResult<Option<PathBuf>> {
        if !self.store.tokens().await?.is_empty() {
            return Ok(None);
        }
        let (_, secret) = self
            .create_token(NewToken {
                name: Some("admin (made at first start)".into()),
                scopes: [Scope::Admin].into(),
                ..NewToken::default()
            })
            .await?;
        let path = dir.join(ADMIN_TOKEN_FILE);
        // Left from a store since removed: its secret opens nothing here.
        let _ = std::fs::remove_file(&path);
        write_private(&path, &secret).map_err(|source| ServiceError::Io {
            context: format!("writing the admin token to {}", path.display()),
            source,
        })?;
        Ok(Some(path))
    }

    /// Appends to the audit trail; a failure is logged, never the caller's.
    pub async fn audit(&self, mut entry: AuditEntry) {
        entry.ts = self.clock.now_rfc3339();
        if let Err(e) = self.store.record_audit(entry).await {
            tracing::error!(error = %e, "an audit entry was not recorded");
        }
    }

    pub async fn audit_trail(
        &self,
        namespace: Option<&str>,
        after: i64,
        limit: u32,
    ) -> ServiceResult<Vec<AuditEntry>> {
        Ok(self.store.audit(namespace, after, limit).await?)
    }

    /// Reads every namespace's limits into memory (at start).
    pub(super) async fn load_namespace_limits(&self) -> ServiceResult<()> {
        let limits = self.store.namespace_limits().await?;
        let mut d = self.lock_dispatch();
        for (ns, l) in &limits {
            d.set_namespace_limit(ns, l.running.map(|n| n as usize), &self.config.queue_limits);
        }
        drop(d);
        *lock(&self.access.limits) = limits;
        Ok(())
    }

    pub async fn set_namespace_limits(
        &self,
        namespace: &str,
        limits: NamespaceLimits,
    ) -> ServiceResult<NamespaceLimits> {
        let mut problems = limits.problems();
        if let Err(e) = crate::model::limits::check_name("namespace", namespace) {
            problems.push(e);
        }
        if !problems.is_empty() {
            return Err(ServiceError::Invalid {
                message: "invalid namespace limits".into(),
                problems,
            });
        }
        self.store.set_namespace_limits(namespace, &limits).await?;
        lock(&self.access.limits).insert(namespace.to_string(), limits.clone());
        lock(&self.access.buckets).remove(namespace);
        // A lower or higher running cap changes what may be dispatched.
        self.lock_dispatch().set_namespace_limit(
            namespace,
            limits.running.map(|n| n as usize),
            &self.config.queue_limits,
        );
        self.wake.notify_one();
        Ok(limits)
    }

    /// A namespace's limits (none set: all `None`).
    pub fn namespace_limits(&self, namespace: &str) -> NamespaceLimits {
        lock(&self.access.limits)
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    /// Takes one trigger from `namespace`'s bucket, or says when one will
    /// be there.
    pub fn take_trigger(&self, namespace: &str) -> Result<(), OverRate> {
        let limits = self.namespace_limits(namespace);
        let (Some(rate), Some(size)) = (limits.triggers_per_second, limits.bucket_size()) else {
            return Ok(());
        };
        let now = self.clock.now_ms();
        let mut buckets = lock(&self.access.buckets);
        let (left, at) = buckets.entry(namespace.to_string()).or_insert((size, now));
        let elapsed = (now - *at).max(0) as f64 / 1000.0;
        *left = (*left + elapsed * rate).min(size);
        *at = now;
        if *left >= 1.0 {
            *left -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - *left) / rate;
        Err(OverRate {
            namespace: namespace.to_string(),
            rate,
            retry_after: Duration::from_secs_f64(wait.max(0.001)),
        })
    }

    /// Lets `caller` hold one more followed stream, or says how many it
    /// may hold (`Err(cap)`). A server without tokens has no cap.
    pub fn follow_permit(&self, caller: &Caller) -> Result<FollowPermit, usize> {
        let counts = self.access.follows.clone();
        let Some(token) = caller.token_id.clone() else {
            return Ok(FollowPermit { counts, key: None });
        };
        let cap = self.config.max_follows_per_token;
        let mut held = lock(&counts);
        let n = held.entry(token.clone()).or_insert(0);
        if *n >= cap {
            return Err(cap);
        }
        *n += 1;
        drop(held);
        Ok(FollowPermit {
            counts,
            key: Some(token),
        })
    }

    /// Bytes of media and outputs a namespace's executions hold.
    pub async fn stored_bytes(&self, namespace: &str) -> ServiceResult<u64> {
        Ok(self.store.stored_bytes(namespace).await?)
    }
}

/// Unix ms in the stored form of times (see `model::parse_instant`).
fn ms_to_stored(ms: i64) -> String {
    crate::model::clock::rfc3339_micros(ms.saturating_mul(1000))
}

/// Writes `text` to a file only its owner may read (created so, never
/// widened after).
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}
