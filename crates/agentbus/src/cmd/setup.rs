//! `agentbus setup claude|codex|gemini [--write]`: the config that
//! registers `agentbus mcp` with an agent CLI — printed, or merged into
//! its config file (kept 0600, every other server kept) — and the CLI's
//! own approvals that stand between a registered server and its first
//! use:
//! - Claude Code uses a project's `.mcp.json` server only once approved
//!   (`enabledMcpjsonServers` in the project's `.claude/settings.local.json`);
//! - Gemini CLI ignores a project's servers until the folder is trusted;
//! - Codex needs nothing more: agentbus gives each Codex pane its own
//!   `CODEX_HOME` (see the daemon's `codex_home`).
//!
//! Trusting a folder gives the CLI more than the server (it may read and
//! run what is there), and letting the tools run without asking is a
//! choice too: both only with `--trust-folder` / `--allow-tools`; without
//! them, what remains is printed.
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
    /// Also mark the current directory as trusted by the CLI (Claude Code's
    /// and Gemini CLI's folder trust, Codex's project trust_level), so it
    /// starts at its prompt; with --write
    #[arg(long, requires = "write")]
    pub trust_folder: bool,
    /// Also let the CLI call agentbus's tools without asking each time;
    /// with --write
    #[arg(long, requires = "write")]
    pub allow_tools: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupClient {
    Claude,
    Codex,
    Gemini,
}

impl SetupClient {
    fn program(self) -> &'static str {
        match self {
            SetupClient::Claude => "claude",
            SetupClient::Codex => "codex",
            SetupClient::Gemini => "gemini",
        }
    }
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
fn json_entry(client: SetupClient, command: &str, channel: bool, allow_tools: bool) -> Value {
    let mut entry = json!({ "command": command, "args": server_args(channel) });
    if client == SetupClient::Gemini {
        let env: serde_json::Map<String, Value> = PANE_VARS
            .iter()
            .map(|v| (v.to_string(), json!(format!("${v}"))))
            .collect();
        entry["env"] = Value::Object(env);
        if allow_tools {
            entry["trust"] = json!(true);
        }
    }
    entry
}

/// `existing` (a JSON config, maybe empty) changed by `edit` on its
/// root object; everything else kept, in order.
fn edit_json(
    existing: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let mut doc: Value = if existing.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(existing).context("the existing file is not valid JSON")?
    };
    let Some(root) = doc.as_object_mut() else {
        bail!("the existing file is not a JSON object");
    };
    edit(root)?;
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// The object at `key` in `obj`, made if missing.
fn object_at<'a>(
    obj: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> anyhow::Result<&'a mut serde_json::Map<String, Value>> {
    obj.entry(key)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .with_context(|| format!("{key:?} in the existing file is not an object"))
}

/// Adds `item` to the list at `key` in `obj` (made if missing), once.
fn add_to_list(
    obj: &mut serde_json::Map<String, Value>,
    key: &str,
    item: &str,
) -> anyhow::Result<()> {
    let list = obj
        .entry(key)
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .with_context(|| format!("{key:?} in the existing file is not a list"))?;
    if !list.iter().any(|v| v == item) {
        list.push(json!(item));
    }
    Ok(())
}

/// `existing` (a JSON config, maybe empty) with `mcpServers.agentbus`
/// set to `entry`; everything else kept, in order.
pub fn merge_json(existing: &str, entry: Value) -> anyhow::Result<String> {
    edit_json(existing, |root| {
        object_at(root, "mcpServers")?.insert(SERVER.into(), entry);
        Ok(())
    })
}

fn parse_toml(existing: &str) -> anyhow::Result<toml_edit::DocumentMut> {
    existing
        .parse()
        .context("the existing file is not valid TOML")
}

/// The table `key` of `doc` (made, without a header of its own, if
/// missing).
fn table_at<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    key: &str,
) -> anyhow::Result<&'a mut toml_edit::Table> {
    doc.entry(key)
        .or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            toml_edit::Item::Table(t)
        })
        .as_table_mut()
        .with_context(|| format!("{key} in the existing file is not a table"))
}

/// `existing` (Codex's TOML config, maybe empty) with
/// `[mcp_servers.agentbus]` set; comments and every other table kept.
pub fn merge_toml(
    existing: &str,
    command: &str,
    channel: bool,
    allow_tools: bool,
) -> anyhow::Result<String> {
    use toml_edit::{Array, Item, Table, value};
    let mut doc = parse_toml(existing)?;
    let servers = table_at(&mut doc, "mcp_servers")?;
    let mut entry = Table::new();
    entry["command"] = value(command);
    entry["args"] = value(server_args(channel).into_iter().collect::<Array>());
    entry["env_vars"] = value(PANE_VARS.into_iter().collect::<Array>());
    if allow_tools {
        entry["default_tools_approval_mode"] = value("approve");
    }
    servers.insert(SERVER, Item::Table(entry));
    Ok(doc.to_string())
}

/// Codex's config with `[projects."<dir>"] trust_level = "trusted"`.
pub fn trust_toml(existing: &str, dir: &str) -> anyhow::Result<String> {
    use toml_edit::{Item, Table, value};
    let mut doc = parse_toml(existing)?;
    let projects = table_at(&mut doc, "projects")?;
    let project = projects
        .entry(dir)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .with_context(|| format!("projects.{dir:?} in the existing file is not a table"))?;
    project["trust_level"] = value("trusted");
    Ok(doc.to_string())
}

fn rendered(args: &SetupArgs, existing: &str) -> anyhow::Result<String> {
    let command = command();
    match args.client {
        SetupClient::Codex => merge_toml(existing, &command, args.channel, args.allow_tools),
        c => merge_json(
            existing,
            json_entry(c, &command, args.channel, args.allow_tools),
        ),
    }
}

/// Reads `path` (missing: empty), applies `change`, writes it back 0600.
fn rewrite(path: &Path, change: impl FnOnce(&str) -> anyhow::Result<String>) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let changed =
        change(&existing).with_context(|| format!("cannot merge into {}", path.display()))?;
    ensure_parent(path)?;
    write_private_file(path, changed.as_bytes())?;
    Ok(())
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// The approvals each CLI needs before the registered server is used in
/// `dir`: done with `--write` (folder trust and tool approval only when
/// asked for); returns what is still left to the user.
fn approvals(args: &SetupArgs, dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir_s = dir.to_string_lossy().into_owned();
    let mut left = Vec::new();
    match args.client {
        SetupClient::Claude => {
            // The project's .mcp.json server, approved for this project.
            let local = dir.join(".claude").join("settings.local.json");
            rewrite(&local, |t| {
                edit_json(t, |root| {
                    add_to_list(root, "enabledMcpjsonServers", SERVER)?;
                    if args.allow_tools {
                        let perms = object_at(root, "permissions")?;
                        add_to_list(perms, "allow", &format!("mcp__{SERVER}"))?;
                    }
                    Ok(())
                })
            })?;
            outln!(
                "approved the {SERVER} server for this project in {}",
                local.display()
            );
            if args.trust_folder {
                let state = home()?.join(".claude.json");
                rewrite(&state, |t| {
                    edit_json(t, |root| {
                        let project = object_at(object_at(root, "projects")?, &dir_s)?;
                        project.insert("hasTrustDialogAccepted".into(), json!(true));
                        Ok(())
                    })
                })?;
                outln!("marked {dir_s} as trusted in {}", state.display());
            } else {
                left.push(format!(
                    "Claude Code asks once whether you trust {dir_s}: answer it in the pane \
                     (until then agentbus holds jekts: `agentbus status` shows \
                     `blocked: folder trust dialog`), or run again with --trust-folder"
                ));
            }
            if !args.allow_tools {
                left.push(
                    "Claude Code asks before each agentbus tool call; run again with \
                     --allow-tools to allow them all (rule mcp__agentbus)"
                        .into(),
                );
            }
        }
        SetupClient::Gemini => {
            if args.trust_folder {
                let file = home()?.join(".gemini").join("trustedFolders.json");
                rewrite(&file, |t| {
                    edit_json(t, |root| {
                        root.insert(dir_s.clone(), json!("TRUST_FOLDER"));
                        Ok(())
                    })
                })?;
                outln!("marked {dir_s} as trusted in {}", file.display());
            } else {
                left.push(format!(
                    "Gemini CLI uses a project's MCP servers only in a trusted folder: answer its \
                     trust dialog for {dir_s} in the pane, or run again with --trust-folder"
                ));
            }
        }
        SetupClient::Codex => {
            if args.trust_folder {
                let file = default_path(SetupClient::Codex)?;
                rewrite(&file, |t| trust_toml(t, &dir_s))?;
                outln!("marked {dir_s} as a trusted project in {}", file.display());
            }
            outln!(
                "each Codex pane agentbus opens gets its own CODEX_HOME (under the data dir, \
                 linked to yours), so every pane's {SERVER} server acts as that pane's agent"
            );
        }
    }
    Ok(left)
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
        let snippet = rendered(&args, "")?;
        outln!("# add to {} (or run with --write):", path.display());
        out!("{snippet}");
        if args.client == SetupClient::Claude {
            let flag = if args.channel { " --channel" } else { "" };
            outln!("# or: claude mcp add {SERVER} -- {} mcp{flag}", command());
        }
        channel_hint(args.channel);
        return Ok(ExitCode::SUCCESS);
    }
    let merged = rendered(&args, &existing)
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
    let dir = std::env::current_dir()
        .and_then(|d| d.canonicalize())
        .context("failed to read the current directory")?;
    let left = approvals(&args, &dir)?;
    channel_hint(args.channel);
    for step in &left {
        outln!("left to do: {step}");
    }
    outln!(
        "the server acts only inside an agentbus pane, as that pane's agent \
         (`agentbus open NAME -- {}`); to use it from outside one, add `--as NAME` \
         (and `--data-dir DIR` for a client that does not pass the environment) to its args",
        args.client.program()
    );
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
        let out = merge_json(
            before,
            json_entry(SetupClient::Claude, "agentbus", false, false),
        )
        .unwrap();
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
        let e = json_entry(SetupClient::Gemini, "agentbus", true, false);
        assert!(e.get("trust").is_none());
        assert_eq!(
            json_entry(SetupClient::Gemini, "agentbus", true, true)["trust"],
            true
        );
        assert_eq!(e["env"]["AGENTBUS_AGENT_TOKEN"], "$AGENTBUS_AGENT_TOKEN");
        assert_eq!(e["args"], json!(["mcp", "--channel"]));
    }

    #[test]
    fn toml_merge_keeps_comments_and_other_servers() {
        let before = "# my codex settings\nmodel = \"o4\"\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\" # keep\n";
        let out = merge_toml(before, "agentbus", false, false).unwrap();
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
        let again = merge_toml(&out, "agentbus", false, false).unwrap();
        assert_eq!(again, out, "merging twice changes nothing");
    }

    #[test]
    fn codex_trust_adds_the_project_and_keeps_the_rest() {
        let before = "model = \"m\"\n[projects.\"/a\"]\ntrust_level = \"untrusted\"\n";
        let out = trust_toml(before, "/b c").unwrap();
        let v: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(
            v["projects"]["/b c"]["trust_level"].as_str(),
            Some("trusted")
        );
        assert_eq!(
            v["projects"]["/a"]["trust_level"].as_str(),
            Some("untrusted")
        );
        assert_eq!(trust_toml(&out, "/b c").unwrap(), out);
        assert!(trust_toml("projects = 1", "/x").is_err());
    }

    #[test]
    fn lists_grow_once_and_refuse_what_is_not_a_list() {
        let once = edit_json("", |r| add_to_list(r, "k", "a")).unwrap();
        let twice = edit_json(&once, |r| add_to_list(r, "k", "a")).unwrap();
        assert_eq!(once, twice);
        assert!(edit_json(r#"{"k":"a"}"#, |r| add_to_list(r, "k", "a")).is_err());
    }
}
