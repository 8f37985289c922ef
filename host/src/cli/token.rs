//! `ward token create|list|revoke` (an admin's, over `/api/v1/tokens`), and
//! which token the client commands send: `--token` or `WARD_TOKEN`, else
//! `token` in the client's config file, else — for a server on this
//! machine — the admin token a first start wrote to the data dir.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::Client;
use super::exit;
use super::output::{out, outln, print_json, table};
use crate::model::auth::{Token, parse_scopes};
use crate::runtime::access::ADMIN_TOKEN_FILE;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once.
    Create {
        /// Its namespace (every token but an admin one has exactly one).
        #[arg(long)]
        namespace: Option<String>,
        /// One or more, comma- or space-separated, or the flag repeated:
        /// admin, plugins:write, tasks:read, tasks:write, executions:trigger,
        /// executions:read, executions:control, media:read.
        #[arg(long, required = true, num_args = 1.., value_parser = parse_scopes)]
        scopes: Vec<std::collections::BTreeSet<crate::model::auth::Scope>>,
        /// How long it lives (`30d`, `12h`) [default: for ever].
        #[arg(long)]
        expires: Option<String>,
        /// What it is for.
        #[arg(long)]
        name: Option<String>,
    },
    /// List every token (never a secret).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's id.
        id: String,
    },
}

pub async fn main(client: Client, args: TokenArgs) -> anyhow::Result<u8> {
    match args.command {
        TokenCommand::Create {
            namespace,
            scopes,
            expires,
            name,
        } => {
            let scopes: std::collections::BTreeSet<_> = scopes.into_iter().flatten().collect();
            let reply = client
                .create_token(&json!({
                    "namespace": namespace, "scopes": scopes, "expires": expires, "name": name,
                }))
                .await?;
            if args.json {
                print_json(&reply.json);
            } else {
                let secret = reply.json["secret"].as_str().unwrap_or_default();
                outln!("{secret}");
                eprintln!(
                    "token {} made; the secret above is shown only now (send it as `Authorization: Bearer …`, or set WARD_TOKEN)",
                    reply.value.id
                );
            }
        }
        TokenCommand::List => {
            let reply = client.tokens().await?;
            if args.json {
                print_json(&reply.json);
            } else {
                out!("{}", token_table(&reply.value.tokens));
            }
        }
        TokenCommand::Revoke { id } => {
            let reply = client.revoke_token(&id).await?;
            if args.json {
                print_json(&reply.json);
            } else {
                outln!("revoked {}", reply.value.id);
            }
        }
    }
    Ok(exit::OK)
}

fn token_table(tokens: &[Token]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let scopes: Vec<_> = t.scopes.iter().map(|s| s.as_str()).collect();
            let state = if t.revoked_at.is_some() {
                "revoked".to_string()
            } else {
                t.expires_at
                    .as_deref()
                    .map_or("live".to_string(), |e| format!("expires {e}"))
            };
            vec![
                t.id.clone(),
                t.namespace.clone().unwrap_or_else(|| "*".into()),
                scopes.join(","),
                state,
                t.name.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["ID", "NAMESPACE", "SCOPES", "STATE", "NAME"], &rows)
}

/// The client's config file: `$WARD_CLIENT_CONFIG`, else
/// `$XDG_CONFIG_HOME/ward/config.toml` or `~/.config/ward/config.toml`.
fn config_file() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("WARD_CLIENT_CONFIG").or_else(|| {
        var("XDG_CONFIG_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".config")))
            .map(|d| d.join("ward/config.toml"))
    })
}

/// The client config file's settings (`server = "http://…"`,
/// `token = "ward_…"`), each used where no flag or variable gives it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    pub server: Option<String>,
    pub token: Option<String>,
}

impl ClientConfig {
    /// The config file's settings; none when there is no file.
    pub fn load() -> Result<ClientConfig, String> {
        let Some(path) = config_file().filter(|p| p.is_file()) else {
            return Ok(ClientConfig::default());
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let config: ClientConfig = toml::from_str(&text)
            .map_err(|e| format!("{} (keys: server, token): {e}", path.display()))?;
        Ok(ClientConfig {
            server: non_blank(config.server),
            token: non_blank(config.token),
        })
    }
}

/// A setting with its blanks trimmed; none when nothing is left.
pub fn non_blank(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// The token to send to `server`: `given` (`--token`, `WARD_TOKEN`), else
/// the config file's, else, when `server` is on a loopback address, the
/// admin token in `$WARD_DATA_DIR` or the default data dir. `None` when
/// there is none (the server will say 401).
pub fn resolve(given: Option<String>, config: &ClientConfig, server: &str) -> Option<String> {
    if let Some(t) = non_blank(given).or_else(|| config.token.clone()) {
        return Some(t);
    }
    let local = reqwest::Url::parse(server).ok().is_some_and(|u| {
        let host = u.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if !local {
        return None;
    }
    let dir = std::env::var_os("WARD_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(crate::runtime::config::default_data_dir);
    non_blank(std::fs::read_to_string(dir.join(ADMIN_TOKEN_FILE)).ok())
}
