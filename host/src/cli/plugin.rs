//! `ward plugin push|list`: upload components to a Ward server and list them.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::client::Client;
use super::exit;
use super::output::{or_dash, out, outln, print_json, short_digest, table};
use super::time::short_time;
use crate::model::execution::Plugin;
use crate::model::limits::bytes_display;

#[derive(Debug, Args)]
pub struct PluginArgs {
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload a component (.wasm); the same bytes again return the existing plugin.
    Push(PushArgs),
    /// List the plugins on the server.
    List,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The component to upload.
    pub file: PathBuf,
    /// The plugin's name (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// The plugin's version, e.g. 0.1.0.
    #[arg(long)]
    pub version: Option<String>,
}

pub async fn main(client: Client, args: PluginArgs) -> anyhow::Result<u8> {
    match args.command {
        PluginCommand::Push(push) => {
            let name = match push.name {
                Some(n) => n,
                None => push
                    .file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .with_context(|| {
                        format!("{}: no file name; pass --name", push.file.display())
                    })?,
            };
            let bytes = std::fs::read(&push.file)
                .with_context(|| format!("cannot read {}", push.file.display()))?;
            let (plugin, created) = client
                .push_plugin(bytes, &name, push.version.as_deref())
                .await?;
            if args.json {
                print_json(&plugin.json);
            } else {
                outln!("{}", pushed_line(&plugin.value, created));
            }
        }
        PluginCommand::List => {
            let list = client.plugins().await?;
            if args.json {
                print_json(&list.json);
            } else {
                out!("{}", plugin_table(&list.value.plugins));
            }
        }
    }
    Ok(exit::OK)
}

fn pushed_line(plugin: &Plugin, created: bool) -> String {
    let verb = if created {
        "pushed"
    } else {
        "already present:"
    };
    let version = match &plugin.version {
        Some(v) => format!(" {v}"),
        None => String::new(),
    };
    format!(
        "{verb} plugin {}{version} ({}, {})",
        plugin.name,
        plugin.id,
        bytes_display(plugin.size)
    )
}

fn plugin_table(plugins: &[Plugin]) -> String {
    let rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            vec![
                short_digest(&p.id),
                p.name.clone(),
                or_dash(p.version.as_ref()),
                bytes_display(p.size),
                short_time(&p.created_at),
            ]
        })
        .collect();
    table(&["ID", "NAME", "VERSION", "SIZE", "CREATED"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugins_print_as_a_table_and_a_line() {
        let plugin = |v| serde_json::from_value::<Plugin>(v).unwrap();
        let p = plugin(json!({"id": "sha256:00112233445566778899", "name": "hello",
            "version": "0.1.0", "size": 145076, "created_at": "2026-03-01T12:00:03.5Z"}));
        let q = plugin(
            json!({"id": "sha256:ffee", "name": "chaos", "version": null, "size": 10,
                       "created_at": "2026-03-02T01:02:03Z"}),
        );
        assert_eq!(
            plugin_table(&[p.clone(), q]),
            "ID                   NAME   VERSION  SIZE       CREATED\n\
             sha256:001122334455  hello  0.1.0    141.7 KiB  2026-03-01 12:00:03\n\
             sha256:ffee          chaos  -        10 B       2026-03-02 01:02:03\n"
        );
        assert_eq!(
            pushed_line(&p, true),
            "pushed plugin hello 0.1.0 (sha256:00112233445566778899, 141.7 KiB)"
        );
        assert!(pushed_line(&p, false).starts_with("already present: plugin hello"));
    }
}
