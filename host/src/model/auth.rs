//! Who may do what: API tokens' scopes and namespaces, and the one rule
//! that decides whether a caller reaches an object.
//!
//! Pure: the API maps routes to scopes and asks [`Caller::require`]; the
//! runtime makes and looks up tokens. Another namespace's object is always
//! answered as missing (see [`Caller::sees`]), so that no caller learns what
//! exists outside its namespace.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a token may do. `admin` is every scope in every namespace.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Scope {
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "plugins:write")]
    PluginsWrite,
    #[serde(rename = "tasks:read")]
    TasksRead,
    #[serde(rename = "tasks:write")]
    TasksWrite,
    #[serde(rename = "executions:trigger")]
    ExecutionsTrigger,
    #[serde(rename = "executions:read")]
    ExecutionsRead,
    #[serde(rename = "executions:control")]
    ExecutionsControl,
    #[serde(rename = "media:read")]
    MediaRead,
}

impl Scope {
    pub const ALL: [Scope; 8] = [
        Scope::Admin,
        Scope::PluginsWrite,
        Scope::TasksRead,
        Scope::TasksWrite,
        Scope::ExecutionsTrigger,
        Scope::ExecutionsRead,
        Scope::ExecutionsControl,
        Scope::MediaRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::PluginsWrite => "plugins:write",
            Scope::TasksRead => "tasks:read",
            Scope::TasksWrite => "tasks:write",
            Scope::ExecutionsTrigger => "executions:trigger",
            Scope::ExecutionsRead => "executions:read",
            Scope::ExecutionsControl => "executions:control",
            Scope::MediaRead => "media:read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("no scope {s:?}; scopes are {}", names.join(", "))
            })
    }
}

/// Scopes written `a,b c` (commas or spaces), each known, at least one.
pub fn parse_scopes(text: &str) -> Result<BTreeSet<Scope>, String> {
    let scopes = text
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(Scope::from_str)
        .collect::<Result<BTreeSet<_>, _>>()?;
    if scopes.is_empty() {
        return Err("at least one scope is needed".into());
    }
    Ok(scopes)
}

/// A stored token, never its secret: the secret is shown once, when made,
/// and kept only as a hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    pub id: String,
    /// What it is for, as its maker wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its namespace; `null` for an admin token, which reaches all.
    pub namespace: Option<String>,
    #[schema(value_type = Vec<String>)]
    pub scopes: BTreeSet<Scope>,
    pub created_at: String,
    /// After this instant the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl Token {
    /// Whether it is accepted at `now` (stored form, see
    /// [`crate::model::parse_instant`]).
    pub fn valid_at(&self, now: &str) -> bool {
        self.revoked_at.is_none() && self.expires_at.as_deref().is_none_or(|e| now < e)
    }

    /// The caller this token makes.
    pub fn caller(&self) -> Caller {
        Caller {
            token_id: Some(self.id.clone()),
            namespace: if self.scopes.contains(&Scope::Admin) {
                None
            } else {
                self.namespace.clone()
            },
            scopes: self.scopes.clone(),
        }
    }
}

/// Checks what `ward token create` (`POST /tokens`) asks for: an admin
/// token has no namespace, every other token exactly one.
pub fn check_token_request(
    namespace: Option<&str>,
    scopes: &BTreeSet<Scope>,
) -> Result<(), String> {
    if scopes.is_empty() {
        return Err("at least one scope is needed".into());
    }
    match (scopes.contains(&Scope::Admin), namespace) {
        (true, Some(ns)) => Err(format!(
            "an admin token reaches every namespace; it cannot belong to {ns:?} (leave the namespace out, or drop admin)"
        )),
        (false, None) => Err("a token that is not admin belongs to one namespace: give it".into()),
        (false, Some(ns)) => super::limits::check_name("namespace", ns),
        (true, None) => Ok(()),
    }
}

/// Who is calling: a token's scopes over its namespace, or over every
/// namespace (`namespace: None`, an admin token or a server run with
/// `--no-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id (`None` without auth): what the audit trail records.
    pub token_id: Option<String>,
    pub namespace: Option<String>,
    pub scopes: BTreeSet<Scope>,
}

/// A scope the caller lacks (answered 403 naming it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this token lacks the scope {0}")]
pub struct MissingScope(pub Scope);

impl Caller {
    /// Everything everywhere: a server with auth off.
    pub fn unrestricted() -> Caller {
        Caller {
            token_id: None,
            namespace: None,
            scopes: [Scope::Admin].into(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the caller holds `scope` (`admin` holds all).
    pub fn require(&self, scope: Scope) -> Result<(), MissingScope> {
        if self.is_admin() || self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(MissingScope(scope))
        }
    }

    /// Whether an object of `namespace` exists for this caller.
    pub fn sees(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|own| own == namespace)
    }

    /// The namespace a request works in: the one it names, or the caller's
    /// own (`default` for an admin). `Err` when it names one the caller
    /// does not see.
    pub fn namespace_for(&self, asked: Option<&str>) -> Result<String, String> {
        match (asked, self.namespace.as_deref()) {
            (Some(asked), Some(own)) if asked != own => Err(asked.to_string()),
            (Some(asked), _) => Ok(asked.to_string()),
            (None, Some(own)) => Ok(own.to_string()),
            (None, None) => Ok("default".to_string()),
        }
    }
}

/// A namespace's fair share, set by an admin (`PUT /namespaces/{ns}/limits`);
/// a field left out is no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceLimits {
    /// Attempts of the namespace running at once on a host (also accepted
    /// as `running_attempts`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "running_attempts"
    )]
    pub running: Option<u32>,
    /// Executions triggered per second (a token bucket); more are 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers_per_second: Option<f64>,
    /// The bucket's size: triggers allowed at once after a quiet spell
    /// [default: one second's worth, at least 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Bytes of media and outputs the namespace's executions may hold: a
    /// number, or a size such as `"10GiB"` (shown as a number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bytes_or_size"
    )]
    #[schema(value_type = Option<u64>)]
    pub stored_bytes: Option<u64>,
}

fn bytes_or_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<bytesize::ByteSize>::deserialize(d)?.map(|b| b.as_u64()))
}

impl NamespaceLimits {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.running == Some(0) {
            problems.push("running must be at least 1".into());
        }
        if let Some(r) = self.triggers_per_second
            && !(r.is_finite() && r > 0.0 && r <= 1e6)
        {
            problems.push(format!(
                "triggers_per_second must be over 0 and at most 1000000, got {r}"
            ));
        }
        if self.burst == Some(0) {
            problems.push("burst must be at least 1".into());
        }
        if self.burst.is_some() && self.triggers_per_second.is_none() {
            problems.push("burst needs triggers_per_second".into());
        }
        problems
    }

    /// The trigger bucket's size.
    pub fn bucket_size(&self) -> Option<f64> {
        let rate = self.triggers_per_second?;
        Some(self.burst.map_or(rate.max(1.0), f64::from))
    }
}

/// One line of the audit trail: a control request, an upload or a change,
/// and the token that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub ts: String,
    /// `null` on a server run with `--no-auth`.
    pub token_id: Option<String>,
    pub namespace: Option<String>,
    /// What was asked: `plugin.upload`, `task.create`, `execution.cancel`…
    pub action: String,
    pub method: String,
    pub path: String,
    /// The answer's HTTP status.
    pub status: u16,
    /// The id or name acted on, when the request names one.
    pub object: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_limits_take_sizes_and_the_long_name_of_running() {
        let l: NamespaceLimits = serde_json::from_value(serde_json::json!({
            "running_attempts": 2, "stored_bytes": "10MiB", "triggers_per_second": 5.0,
        }))
        .unwrap();
        assert_eq!((l.running, l.stored_bytes), (Some(2), Some(10 << 20)));
        let l: NamespaceLimits =
            serde_json::from_value(serde_json::json!({"stored_bytes": 1000})).unwrap();
        assert_eq!(l.stored_bytes, Some(1000));
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({"stored_bytes": 1000})
        );
        assert!(
            serde_json::from_value::<NamespaceLimits>(serde_json::json!({"stored_bytes": "lots"}))
                .is_err()
        );
    }

    fn token(namespace: Option<&str>, scopes: &[Scope]) -> Token {
        Token {
            id: "t".into(),
            name: None,
            namespace: namespace.map(String::from),
            scopes: scopes.iter().copied().collect(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn scopes_read_and_write_by_their_names() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            parse_scopes("tasks:read, executions:trigger").unwrap(),
            [Scope::TasksRead, Scope::ExecutionsTrigger].into()
        );
        let e = parse_scopes("tasks:read,tasks:delete").unwrap_err();
        assert!(e.contains("no scope \"tasks:delete\""), "{e}");
        assert!(parse_scopes(" , ").is_err());
    }

    #[test]
    fn a_caller_holds_its_scopes_and_admin_holds_all() {
        let reader = token(Some("acme"), &[Scope::TasksRead]).caller();
        assert_eq!(reader.require(Scope::TasksRead), Ok(()));
        assert_eq!(
            reader.require(Scope::TasksWrite),
            Err(MissingScope(Scope::TasksWrite))
        );
        let admin = token(None, &[Scope::Admin]).caller();
        for s in Scope::ALL {
            assert_eq!(admin.require(s), Ok(()));
        }
        assert_eq!(reader.token_id.as_deref(), Some("t"));
    }

    #[test]
    fn a_namespaced_caller_sees_only_its_namespace() {
        let acme = token(Some("acme"), &[Scope::TasksRead]).caller();
        assert!(acme.sees("acme"));
        assert!(!acme.sees("default"));
        assert_eq!(acme.namespace_for(None), Ok("acme".into()));
        assert_eq!(acme.namespace_for(Some("acme")), Ok("acme".into()));
        assert_eq!(acme.namespace_for(Some("other")), Err("other".into()));
        let admin = Caller::unrestricted();
        assert!(admin.sees("anything"));
        assert_eq!(admin.namespace_for(None), Ok("default".into()));
        assert_eq!(admin.namespace_for(Some("x")), Ok("x".into()));
    }

    #[test]
    fn expired_and_revoked_tokens_are_refused() {
        let mut t = token(Some("a"), &[Scope::TasksRead]);
        let now = "2026-06-01T00:00:00.000000Z";
        assert!(t.valid_at(now));
        t.expires_at = Some("2026-05-31T00:00:00.000000Z".into());
        assert!(!t.valid_at(now));
        t.expires_at = Some("2026-06-02T00:00:00.000000Z".into());
        assert!(t.valid_at(now));
        t.revoked_at = Some(now.into());
        assert!(!t.valid_at(now));
    }

    #[test]
    fn admin_tokens_have_no_namespace_and_others_exactly_one() {
        let admin: BTreeSet<_> = [Scope::Admin].into();
        let read: BTreeSet<_> = [Scope::TasksRead].into();
        assert!(check_token_request(None, &admin).is_ok());
        assert!(check_token_request(Some("a"), &admin).is_err());
        assert!(check_token_request(None, &read).is_err());
        assert!(check_token_request(Some("a"), &read).is_ok());
        assert!(check_token_request(Some("no spaces"), &read).is_err());
        assert!(check_token_request(Some("a"), &BTreeSet::new()).is_err());
    }
}
