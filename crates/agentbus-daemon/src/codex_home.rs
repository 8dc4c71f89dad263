//! A Codex pane's own `CODEX_HOME`.
//!
//! Codex starts the MCP servers of every session that shares a
//! `CODEX_HOME` from one background app-server, with the environment of
//! whichever session started it first. Two Codex panes on one home would
//! then share one `agentbus mcp`, acting as the first pane's agent for
//! both. So each Codex pane gets a home of its own under the data dir,
//! made anew at each open: every entry of the user's home (sign-in,
//! sessions, history, logs) is linked in, so nothing of theirs is copied
//! or lost; only `config.toml` is a copy, so that the settings the pane
//! needs can be set for it alone (see [`PANE_SETTINGS`]).

use crate::private_dir::PrivateDir;
use agentbus_proto::AgentId;
use std::path::{Path, PathBuf};

/// The config file, copied rather than linked.
const CONFIG: &str = "config.toml";

/// Set in the pane's copy of the config (table, key, value): each TUI
/// hosts its own MCP servers as its children (they end with it) instead
/// of handing them to a shared background server that outlives it.
pub const PANE_SETTINGS: [(&str, &str, bool); 1] = [("features", "daemon_auto_start", false)];

/// The user's Codex home, as a pane would find it: `CODEX_HOME` from the
/// request or the daemon's environment, else `~/.codex`.
pub fn user_home(requested: Option<&str>) -> Option<PathBuf> {
    let from_env = std::env::var("CODEX_HOME").ok();
    match requested.or(from_env.as_deref()).filter(|h| !h.is_empty()) {
        Some(h) => Some(PathBuf::from(h)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".codex")),
    }
}

/// `user`'s config with the pane's settings on top; comments and every
/// other key kept. Unreadable TOML is replaced by the pane's settings
/// alone (Codex would refuse it anyway), and says so.
pub fn pane_config(user: &str) -> String {
    let mut doc: toml_edit::DocumentMut = user.parse().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the Codex config.toml is not valid TOML; a Codex pane gets only agentbus's settings");
        toml_edit::DocumentMut::new()
    });
    for (table, key, value) in PANE_SETTINGS {
        if !doc.get(table).is_some_and(toml_edit::Item::is_table) {
            doc[table] = toml_edit::table();
        }
        doc[table][key] = toml_edit::value(value);
    }
    doc.to_string()
}

/// Makes (or refreshes) `agent`'s Codex home under `data_dir`, linked to
/// `user`'s; returns its path.
pub fn prepare(data_dir: &Path, agent: &AgentId, user: &Path) -> Result<PathBuf, String> {
    let homes = PrivateDir::open(&data_dir.join("codex-homes")).map_err(|e| e.to_string())?;
    let home = homes.sub(agent.as_str()).map_err(|e| e.to_string())?;
    let dir = home.path().to_path_buf();
    // Links of an earlier open go: the user's home may have changed.
    for name in home.names() {
        let p = dir.join(&name);
        if p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            let _ = std::fs::remove_file(&p);
        }
    }
    if let Ok(entries) = std::fs::read_dir(user) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let here = dir.join(&name);
            // What Codex wrote into this pane's home itself stays.
            if name == CONFIG || here.symlink_metadata().is_ok() {
                continue;
            }
            if let Err(e) = std::os::unix::fs::symlink(entry.path(), &here) {
                tracing::warn!(error = %e, entry = ?name, "could not link a Codex home entry");
            }
        }
    }
    let user_config = std::fs::read_to_string(user.join(CONFIG)).unwrap_or_default();
    home.write(CONFIG, pane_config(&user_config).as_bytes())
        .map_err(|e| format!("failed to write {}: {e}", dir.join(CONFIG).display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pane_config_keeps_the_users_and_adds_its_own() {
        let user = "# mine\nmodel = \"x\"\n\n[features]\nplugins = false\ndaemon_auto_start = true\n\n[mcp_servers.agentbus]\ncommand = \"agentbus\"\n";
        let out = pane_config(user);
        let doc: toml_edit::DocumentMut = out.parse().unwrap();
        assert_eq!(doc["model"].as_str(), Some("x"));
        assert_eq!(doc["features"]["daemon_auto_start"].as_bool(), Some(false));
        assert_eq!(doc["features"]["plugins"].as_bool(), Some(false));
        assert_eq!(
            doc["mcp_servers"]["agentbus"]["command"].as_str(),
            Some("agentbus")
        );
        assert!(out.contains("# mine"));
        for start in ["not [ toml", "", "features = 3\n"] {
            let doc: toml_edit::DocumentMut = pane_config(start).parse().unwrap();
            assert_eq!(
                doc["features"]["daemon_auto_start"].as_bool(),
                Some(false),
                "{start:?}"
            );
        }
    }

    #[test]
    fn a_home_links_the_users_entries_and_copies_the_config() {
        let data = tempfile::tempdir().unwrap();
        let user = tempfile::tempdir().unwrap();
        std::fs::write(user.path().join("auth.json"), "{}").unwrap();
        std::fs::create_dir(user.path().join("sessions")).unwrap();
        std::fs::write(user.path().join(CONFIG), "model = \"m\"\n").unwrap();
        let agent = AgentId::parse("cx").unwrap();
        let home = prepare(data.path(), &agent, user.path()).unwrap();
        assert!(
            home.join("auth.json")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(home.join("sessions").is_dir());
        let cfg = home.join(CONFIG);
        assert!(!cfg.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(
            std::fs::read_to_string(&cfg)
                .unwrap()
                .contains("model = \"m\"")
        );
        // Again, after the user's home changed: links follow it.
        std::fs::remove_file(user.path().join("auth.json")).unwrap();
        std::fs::write(user.path().join("history.jsonl"), "").unwrap();
        let again = prepare(data.path(), &agent, user.path()).unwrap();
        assert_eq!(again, home);
        assert!(home.join("auth.json").symlink_metadata().is_err());
        assert!(home.join("history.jsonl").exists());
    }
}
