//! `agentbus setup claude|codex|gemini [--write]`: the config that
//! registers `agentbus mcp` with an agent CLI — printed, or merged into
//! its config file (kept 0600, every other server kept).
//!
//! No secret is ever written: in a pane the server finds its daemon and
//! token in the pane's environment. Codex passes a server only the
//! variables it names, so its entry lists them; Gemini's entry forwards
//! them by `$NAME` reference.

use agentbus_daemon::instance::write_private_file;
use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SetupArgs {
    /// The agent CLI to register the agentbus MCP server with
    pub client: SetupClient,
    /// Merge the entry into the config file (0600) instead of printing it
    #[arg(long)]
    pub write: bool,
    /// The config file [default: claude ./.mcp.json, codex $CODEX_HOME/config.toml
    /// (~/.codex/config.toml), gemini ./.gemini/settings.json]
    #[arg(long, value_name = "FILE")]
    pub path: Option<PathBuf>,
    /// Register `agentbus mcp --channel`: new mail is pushed to Claude Code
    #[arg(long)]
    pub channel: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupClient {
    Claude,
    Codex,
    Gemini,
}

/// What a server needs from the pane's environment.
const PANE_VARS: [&str; 3] = ["AGENTBUS_URL", "AGENTBUS_AGENT_ID", "AGENTBUS_AGENT_TOKEN"];
const SERVER: &str = "agentbus";

/// `agentbus` when that name on PATH is this program, else this
/// program's full path (so a build that is not installed still works).
fn command() -> String {
    let Ok(me) = std::env::current_exe().and_then(|p| p.canonicalize()) else {
        return SERVER.into();
    };
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(SERVER))
            .find(|p| p.is_file())
    });
    match on_path.and_then(|p| p.canonicalize().ok()) {
        Some(p) if p == me => SERVER.into(),
        _ => me.to_string_lossy().into_owned(),
    }
}

fn server_args(channel: bool) -> Vec<&'static str> {
    if channel {
        vec!["mcp", "--channel"]
    } else {
        vec!["mcp"]
    }
}

fn default_path(client: SetupClient) -> anyhow::Result<PathBuf> {
    let home = || {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .context("HOME is not set")
    };
    Ok(match client {
        SetupClient::Claude => PathBuf::from(".mcp.json"),
        SetupClient::Gemini => PathBuf::from(".gemini").join("settings.json"),
        SetupClient::Codex => match std::env::var_os("CODEX_HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h).join("config.toml"),
            _ => home()?.join(".codex").join("config.toml"),
        },
    })
}

/// The JSON entry of `mcpServers.agentbus` for Claude Code or Gemini CLI.
fn json_entry(client: SetupClient, command: &str, channel: bool) -> Value {
    let mut entry = json!({ "command": command, "args": server_args(channel) });
    if client == SetupClient::Gemini {
        let env: serde_json::Map<String, Value> = PANE_VARS
            .iter()
            .map(|v| (v.to_string(), json!(format!("${v}"))))
            .collect();
        entry["env"] = Value::Object(env);
    }
    entry
}

/// `existing` (a JSON config, maybe empty) with `mcpServers.agentbus`
/// set to `entry`; everything else kept, in order.
pub fn merge_json(existing: &str, entry: Value) -> anyhow::Result<String> {
    let mut doc: Value = if existing.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(existing).context("the existing file is not valid JSON")?
    };
    let Some(root) = doc.as_object_mut() else {
        bail!("the existing file is not a JSON object");
    };
    let servers = root.entry("mcpServers").or_insert_with(|| json!({}));
    let Some(servers) = servers.as_object_mut() else {
        bail!("\"mcpServers\" in the existing file is not an object");
    };
    servers.insert(SERVER.into(), entry);
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// `existing` (Codex's TOML config, maybe empty) with
/// `[mcp_servers.agentbus]` set; comments and every other table kept.
pub fn merge_toml(existing: &str, command: &str, channel: bool) -> anyhow::Result<String> {
    use toml_edit::{Array, DocumentMut, Item, Table, value};
    let mut doc: DocumentMut = existing
        .parse()
        .context("the existing file is not valid TOML")?;
    let servers = doc
        .entry("mcp_servers")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .context("mcp_servers in the existing file is not a table")?;
    let mut entry = Table::new();
    entry["command"] = value(command);
    entry["args"] = value(server_args(channel).into_iter().collect::<Array>());
    entry["env_vars"] = value(PANE_VARS.into_iter().collect::<Array>());
    servers.insert(SERVER, Item::Table(entry));
    Ok(doc.to_string())
}

fn rendered(client: SetupClient, existing: &str, channel: bool) -> anyhow::Result<String> {
    let command = command();
    match client {
        SetupClient::Codex => merge_toml(existing, &command, channel),
        _ => merge_json(existing, json_entry(client, &command, channel)),
    }
}

/// Creates `dir` (0700) if it is missing; an existing one is left as is.
fn ensure_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create {}", dir.display())),
        _ => Ok(()),
    }
}

pub fn run(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let path = match &args.path {
        Some(p) => p.clone(),
        None => default_path(args.client)?,
    };
    let existing = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    if !args.write {
        // Only the entry itself: what to add, wherever the user keeps it.
        let snippet = rendered(args.client, "", args.channel)?;
        outln!("# add to {} (or run with --write):", path.display());
        out!("{snippet}");
        if args.client == SetupClient::Claude {
            let flag = if args.channel { " --channel" } else { "" };
            outln!("# or: claude mcp add {SERVER} -- {} mcp{flag}", command());
        }
        channel_hint(args.channel);
        return Ok(ExitCode::SUCCESS);
    }
    let merged = rendered(args.client, &existing, args.channel)
        .with_context(|| format!("cannot merge into {}", path.display()))?;
    ensure_parent(&path)?;
    write_private_file(&path, merged.as_bytes())?;
    outln!(
        "registered the {SERVER} MCP server in {} (0600){}",
        path.display(),
        if existing.trim().is_empty() {
            ""
        } else {
            "; everything else in it is kept"
        }
    );
    channel_hint(args.channel);
    Ok(ExitCode::SUCCESS)
}

fn channel_hint(channel: bool) {
    if channel {
        outln!(
            "# channel push is experimental in Claude Code: start it with \
             `claude --dangerously-load-development-channels server:{SERVER}`"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_merge_keeps_other_servers_and_keys_in_order() {
        let before = r#"{"theme":"dark","mcpServers":{"github":{"command":"gh-mcp"},"agentbus":{"command":"old"}},"z":1}"#;
        let out = merge_json(before, json_entry(SetupClient::Claude, "agentbus", false)).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["mcpServers"]["github"]["command"], "gh-mcp");
        assert_eq!(
            v["mcpServers"]["agentbus"],
            json!({"command":"agentbus","args":["mcp"]})
        );
        assert_eq!(v["theme"], "dark");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["theme", "mcpServers", "z"]);
    }

    #[test]
    fn json_merge_refuses_what_it_cannot_merge_into() {
        assert!(merge_json("[1]", json!({})).is_err());
        assert!(merge_json(r#"{"mcpServers":3}"#, json!({})).is_err());
        assert!(merge_json("{not json", json!({})).is_err());
    }

    #[test]
    fn gemini_forwards_the_pane_variables_by_reference_only() {
        let e = json_entry(SetupClient::Gemini, "agentbus", true);
        assert_eq!(e["env"]["AGENTBUS_AGENT_TOKEN"], "$AGENTBUS_AGENT_TOKEN");
        assert_eq!(e["args"], json!(["mcp", "--channel"]));
    }

    #[test]
    fn toml_merge_keeps_comments_and_other_servers() {
        let before = "# my codex settings\nmodel = \"o4\"\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\" # keep\n";
        let out = merge_toml(before, "agentbus", false).unwrap();
        assert!(
            out.contains("# my codex settings") && out.contains("# keep"),
            "{out}"
        );
        let v: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(
            v["mcp_servers"]["docs"]["command"].as_str(),
            Some("docs-mcp")
        );
        assert_eq!(
            v["mcp_servers"]["agentbus"]["command"].as_str(),
            Some("agentbus")
        );
        assert_eq!(
            v["mcp_servers"]["agentbus"]["env_vars"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        let again = merge_toml(&out, "agentbus", false).unwrap();
        assert_eq!(again, out, "merging twice changes nothing");
    }
}
