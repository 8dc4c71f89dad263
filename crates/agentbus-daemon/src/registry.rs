//! The cross-instance registry: how instances of one user on one machine
//! find each other's agents (docs/relay.md, "Instances on one machine").
//!
//! Every instance of a user shares `<registry dir>/agents/`: one file per
//! agent, `<agent_id>.json`, naming the instance that hosts it. A jekt for
//! an agent that is not local is forwarded to that instance over loopback,
//! authenticated by the entry's `forward_token` — a per-launch secret that
//! opens only the inject route of its instance, never the instance key.
//!
//! Files are written whole under a temporary name, 0600 from creation, and
//! renamed into place; the directory is 0700. An instance removes only its
//! own entries. Entries are refreshed while their agents live and swept
//! continuously when older than 4 hours or when their instance's pid is
//! dead.

use crate::private_dir::PrivateDir;
use agentbus_proto::{AgentId, BlockId, now_ms};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The error code and message of a peer's error answer (its body as
/// text when it is not an agentbus error).
pub fn peer_error(body: &[u8]) -> (String, String) {
    let f = agentbus_proto::api::ApiFailure::from_body(0, body, "peer_error");
    (f.code, f.message)
}

/// An entry older than this is stale.
pub const STALE_MS: i64 = 4 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub agent_id: String,
    /// Base URL of the instance hosting the agent (loopback only).
    pub local_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_id: Option<String>,
    /// Pid of that instance's daemon.
    pub pid: u32,
    /// Unix ms of the last write.
    pub updated_at: i64,
    /// Opens only `POST /agentmux/reactive/inject` on that instance.
    pub forward_token: String,
}

pub struct Registry {
    // `<root>/agents`, open: entries are reached through it, never by path.
    dir: PrivateDir,
    url: String,
    pid: u32,
    forward_token: String,
}

/// A file name for `agent`: only `[A-Za-z0-9_-]` survive (ids are already
/// that; this guards the file system regardless).
fn file_name(agent: &str) -> String {
    let safe: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

/// Whether `url` points at this machine.
pub fn is_loopback_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            }
    })
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

impl Registry {
    /// Opens (creating, 0700) `<root>/agents` for an instance at `url`.
    /// A root or `agents` dir that is not this user's alone is refused
    /// (see [`PrivateDir`]).
    pub fn new(
        root: &Path,
        url: &str,
        forward_token: &str,
    ) -> Result<Registry, crate::DaemonError> {
        let dir = PrivateDir::open(root)?.sub("agents")?;
        Ok(Registry {
            dir,
            url: url.to_string(),
            pid: std::process::id(),
            forward_token: forward_token.to_string(),
        })
    }

    /// The entry file `name` (as [`file_name`] makes them), if it is one
    /// this user wrote and it parses. One another user could have written
    /// is ignored (and reported once).
    fn read(&self, name: &str) -> Option<Entry> {
        let bytes = self.dir.read(name).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Entries found that another user could have written.
    pub fn untrusted(&self) -> usize {
        self.dir.untrusted()
    }

    fn is_ours(&self, e: &Entry) -> bool {
        e.local_url == self.url && e.pid == self.pid
    }

    /// Writes (or refreshes) this instance's entry for `agent`.
    pub fn publish(&self, agent: &AgentId, block: Option<BlockId>) {
        let entry = Entry {
            agent_id: agent.to_string(),
            local_url: self.url.clone(),
            block_id: block.map(|b| b.to_string()),
            pid: self.pid,
            updated_at: now_ms(),
            forward_token: self.forward_token.clone(),
        };
        let Ok(json) = serde_json::to_vec(&entry) else {
            return;
        };
        if let Err(e) = self.dir.write(&file_name(agent.as_str()), &json) {
            tracing::warn!(agent = %agent, error = %e, "failed to write a registry entry");
        }
    }

    /// Removes `agent`'s entry if this instance wrote it.
    pub fn withdraw(&self, agent: &AgentId) {
        let name = file_name(agent.as_str());
        if self.read(&name).is_some_and(|e| self.is_ours(&e)) {
            self.dir.remove(&name);
        }
    }

    /// The peer instance hosting `agent`, if a live one has an entry.
    /// Entries of this instance, stale ones, ones of dead instances and
    /// ones pointing off this machine are ignored (the last three deleted).
    pub fn lookup(&self, agent: &AgentId) -> Option<Entry> {
        let e = self.read(&file_name(agent.as_str()))?;
        if self.is_ours(&e) || e.agent_id != agent.as_str() {
            return None;
        }
        if !Self::live(&e) {
            self.evict(&e);
            return None;
        }
        Some(e)
    }

    /// Fresh, of a running instance, and on this machine.
    fn live(e: &Entry) -> bool {
        now_ms() - e.updated_at <= STALE_MS && pid_alive(e.pid) && is_loopback_url(&e.local_url)
    }

    /// Every agent a live peer instance hosts, by name.
    pub fn peers(&self) -> Vec<Entry> {
        let mut found: Vec<Entry> = self
            .entry_files()
            .iter()
            .filter_map(|name| self.read(name))
            .filter(|e| !self.is_ours(e) && Self::live(e))
            .collect();
        found.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        found
    }

    /// The entry files of the registry dir (`*.json`; a file being
    /// written has a temporary name, starting with `.`, and is not one
    /// yet).
    fn entry_files(&self) -> Vec<String> {
        self.dir
            .names()
            .into_iter()
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect()
    }

    /// Deletes `e` if the file still holds exactly it (a peer may have
    /// rewritten it meanwhile).
    pub fn evict(&self, e: &Entry) {
        let name = file_name(&e.agent_id);
        if self.read(&name).as_ref() == Some(e) {
            tracing::info!(agent = %e.agent_id, url = %e.local_url, "evicting a stale registry entry");
            self.dir.remove(&name);
        }
    }

    /// POSTs `body` to `path` on the instance of `entry`, with its
    /// forward token. `None` when that instance is gone for this agent
    /// (unreachable, restarted with a new token, or without the agent):
    /// the entry is evicted and the caller goes on to its next tier.
    pub async fn post_to_peer(
        &self,
        http: &reqwest::Client,
        entry: &Entry,
        path: &str,
        body: &impl Serialize,
        timeout: std::time::Duration,
    ) -> Option<(reqwest::StatusCode, bytes::Bytes)> {
        let sent = http
            .post(format!("{}{path}", entry.local_url))
            .bearer_auth(&entry.forward_token)
            .json(body)
            .timeout(timeout)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(agent = %entry.agent_id, peer = %entry.local_url, error = %e, "peer unreachable");
                self.evict(entry);
                return None;
            }
        };
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::NOT_FOUND {
            self.evict(entry);
            return None;
        }
        Some((status, bytes))
    }

    /// Deletes stale entries, entries of dead instances and files of this
    /// user's that do not parse; returns how many. Entries another user
    /// could have written are left alone (ignored, reported).
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for name in self.entry_files() {
            let dead = match self.dir.read(&name) {
                Ok(Some(bytes)) => serde_json::from_slice::<Entry>(&bytes)
                    .map_or(true, |e| !self.is_ours(&e) && !Self::live(&e)),
                Ok(None) | Err(_) => false,
            };
            if dead && self.dir.remove(&name) {
                removed += 1;
            }
        }
        removed
    }
}

/// How often this instance refreshes its entries and sweeps everyone's.
pub const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Until shutdown: keeps this instance's entries fresh and sweeps stale
/// ones continuously; at shutdown, withdraws this instance's entries.
pub async fn maintain(state: crate::state::AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(MAINTAIN_EVERY);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let Some(registry) = state.registry() else {
            return;
        };
        if stop {
            for (id, _) in &state.agents().registered() {
                registry.withdraw(id);
            }
            return;
        }
        for (id, block) in &state.agents().reachable() {
            registry.publish(id, *block);
        }
        let swept = registry.sweep();
        if swept > 0 {
            tracing::info!(swept, "registry entries of gone instances removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_are_private_and_only_the_owner_withdraws_them() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Registry::new(tmp.path(), "http://127.0.0.1:1", "fwd-a").unwrap();
        let mut b = Registry::new(tmp.path(), "http://127.0.0.1:2", "fwd-b").unwrap();
        let bob = AgentId::parse("bob").unwrap();
        b.publish(&bob, None);
        let file = tmp.path().join("agents/bob.json");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(tmp.path().join("agents"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let seen = a.lookup(&bob).unwrap();
        assert_eq!(
            (seen.local_url.as_str(), seen.forward_token.as_str()),
            ("http://127.0.0.1:2", "fwd-b")
        );
        assert!(
            b.lookup(&bob).is_none(),
            "an instance does not forward to itself"
        );
        a.withdraw(&bob);
        assert!(file.exists(), "a peer's entry is not ours to remove");
        b.withdraw(&bob);
        assert!(!file.exists());
        // A dead pid makes an entry stale, and lookup evicts it.
        b.pid = 999_999_999;
        b.publish(&bob, None);
        assert!(a.lookup(&bob).is_none());
        assert!(!file.exists());
    }

    #[test]
    fn the_sweeper_removes_stale_dead_and_unreadable_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let a = Registry::new(tmp.path(), "http://127.0.0.1:1", "fwd").unwrap();
        let dir = tmp.path().join("agents");
        let old = Entry {
            agent_id: "old".into(),
            local_url: "http://127.0.0.1:9".into(),
            block_id: None,
            pid: std::process::id(),
            updated_at: now_ms() - STALE_MS - 1,
            forward_token: "x".into(),
        };
        let private = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        };
        private("old.json", &serde_json::to_vec(&old).unwrap());
        private("junk.json", b"{not json");
        // Open to others: not ours to trust, nor to judge; left alone.
        std::fs::write(dir.join("open.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        std::fs::set_permissions(
            dir.join("open.json"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        a.publish(&AgentId::parse("mine").unwrap(), None);
        assert_eq!(a.sweep(), 2);
        assert!(dir.join("mine.json").exists());
        assert!(dir.join("open.json").exists());
        assert_eq!(a.untrusted(), 1);
    }

    #[test]
    fn names_and_urls_are_checked() {
        assert_eq!(file_name("../x"), "___x.json");
        assert!(is_loopback_url("http://127.0.0.1:4000"));
        assert!(is_loopback_url("http://localhost:1"));
        assert!(is_loopback_url("http://[::1]:80"));
        assert!(!is_loopback_url("http://10.0.0.1:80"));
        assert!(!is_loopback_url("http://example.com"));
        assert!(!is_loopback_url("file:///etc/passwd"));
    }
}
