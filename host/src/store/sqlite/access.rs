//! Who may call, and what was done: tokens (by the hash of their secret),
//! the audit trail, and namespaces' limits and stored bytes.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use sqlx::Row;

use super::SqliteStore;
use crate::model::auth::{AuditEntry, NamespaceLimits, Scope, Token};
use crate::store::{StoreError, StoreResult};

fn token_from_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<Token> {
    let scopes: String = r.try_get("scopes")?;
    let scopes: Vec<Scope> = serde_json::from_str(&scopes)?;
    Ok(Token {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        namespace: r.try_get("namespace")?,
        scopes: scopes.into_iter().collect(),
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn audit_from_row(r: &sqlx::sqlite::SqliteRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: r.try_get("id")?,
        ts: r.try_get("ts")?,
        token_id: r.try_get("token_id")?,
        namespace: r.try_get("namespace")?,
        action: r.try_get("action")?,
        method: r.try_get("method")?,
        path: r.try_get("path")?,
        status: r.try_get::<i64, _>("status")? as u16,
        object: r.try_get("object")?,
    })
}

fn put_token(c: &Connection, t: &Token, hash: &str) -> StoreResult<()> {
    let scopes = serde_json::to_string(&t.scopes)?;
    c.prepare_cached(
        "INSERT INTO tokens (id, hash, name, namespace, scopes, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        t.id,
        hash,
        t.name,
        t.namespace,
        scopes,
        t.created_at,
        t.expires_at
    ])?;
    Ok(())
}

fn revoke(c: &Connection, id: &str, at: &str) -> StoreResult<bool> {
    c.prepare_cached("UPDATE tokens SET revoked_at = IFNULL(revoked_at, ?) WHERE id = ?")?
        .execute(params![at, id])?;
    let found: Option<String> = c
        .prepare_cached("SELECT id FROM tokens WHERE id = ?")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

impl SqliteStore {
    pub(super) async fn put_token_row(&self, token: &Token, hash: &str) -> StoreResult<()> {
        let (token, hash) = (token.clone(), hash.to_string());
        self.writer.run(move |c| put_token(c, &token, &hash)).await
    }

    pub(super) async fn token_row(&self, column: &str, value: &str) -> StoreResult<Option<Token>> {
        let mut c = self.reader().await?;
        let sql = format!("SELECT * FROM tokens WHERE {column} = ?");
        let row = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&mut *c)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    pub(super) async fn token_rows(&self) -> StoreResult<Vec<Token>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM tokens ORDER BY created_at, id")
            .fetch_all(&mut *c)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    pub(super) async fn revoke_token_row(&self, id: &str, at: &str) -> StoreResult<Option<Token>> {
        let (key, at) = (id.to_string(), at.to_string());
        let found = self.writer.run(move |c| revoke(c, &key, &at)).await?;
        if !found {
            return Ok(None);
        }
        self.token_row("id", id).await
    }

    pub(super) async fn audit_append(&self, e: AuditEntry) -> StoreResult<()> {
        self.writer
            .run(move |c| {
                c.prepare_cached(
                    "INSERT INTO audit (ts, token_id, namespace, action, method, path, status, object) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )?
                .execute(params![
                    e.ts, e.token_id, e.namespace, e.action, e.method, e.path, e.status, e.object
                ])?;
                Ok(())
            })
            .await
    }

    pub(super) async fn audit_rows(
        &self,
        namespace: Option<&str>,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut c = self.reader().await?;
        let rows = match namespace {
            Some(ns) => {
                sqlx::query(
                    "SELECT * FROM audit WHERE namespace = ? AND id > ? ORDER BY id LIMIT ?",
                )
                .bind(ns)
                .bind(after)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?
            }
        };
        rows.iter().map(audit_from_row).collect()
    }

    pub(super) async fn set_limits_row(
        &self,
        namespace: &str,
        l: &NamespaceLimits,
    ) -> StoreResult<()> {
        let (ns, l) = (namespace.to_string(), l.clone());
        self.writer
            .run(move |c| {
                c.prepare_cached(
                    "INSERT INTO namespace_limits (namespace, running, triggers_per_second, burst, stored_bytes) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (namespace) DO UPDATE SET \
                     running = ?2, triggers_per_second = ?3, burst = ?4, stored_bytes = ?5",
                )?
                .execute(params![
                    ns,
                    l.running,
                    l.triggers_per_second,
                    l.burst,
                    l.stored_bytes.map(|b| b.min(i64::MAX as u64) as i64)
                ])?;
                Ok(())
            })
            .await
    }

    pub(super) async fn limits_rows(&self) -> StoreResult<BTreeMap<String, NamespaceLimits>> {
        let mut c = self.reader().await?;
        let rows = sqlx::query("SELECT * FROM namespace_limits")
            .fetch_all(&mut *c)
            .await?;
        rows.iter()
            .map(|r| {
                let count = |col: &str| -> StoreResult<Option<u32>> {
                    r.try_get::<Option<i64>, _>(col)?
                        .map(|n| {
                            u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{col} {n}")))
                        })
                        .transpose()
                };
                Ok((
                    r.try_get("namespace")?,
                    NamespaceLimits {
                        running: count("running")?,
                        triggers_per_second: r.try_get("triggers_per_second")?,
                        burst: count("burst")?,
                        stored_bytes: r
                            .try_get::<Option<i64>, _>("stored_bytes")?
                            .map(|n| n.max(0) as u64),
                    },
                ))
            })
            .collect()
    }

    pub(super) async fn stored_bytes_of(&self, namespace: &str) -> StoreResult<u64> {
        let mut c = self.reader().await?;
        let row = sqlx::query(
            "SELECT \
               (SELECT IFNULL(SUM(m.size), 0) FROM media m JOIN executions e ON e.id = m.execution_id \
                WHERE e.namespace = ?1) + \
               (SELECT IFNULL(SUM(LENGTH(outputs)), 0) FROM executions \
                WHERE namespace = ?1 AND outputs != '{}') AS bytes",
        )
        .bind(namespace)
        .fetch_one(&mut *c)
        .await?;
        Ok(row.try_get::<i64, _>("bytes")?.max(0) as u64)
    }
}
