//! One daemon's life: claim the data dir, make the instance key, bind,
//! publish the discovery file, serve, and clean up.
//!
//! Files in the data dir (0700; an existing dir is tightened):
//! - `daemon.lock` — held (flock) while the daemon runs; a second daemon on
//!   the same dir fails to take it and refuses to start;
//! - `authkey` (0600) — the instance key, new at every launch;
//! - `daemon.json` (0600) — `{url, pid, started_at}` for the CLI;
//! - `agentbus.db` — the store;
//! - `instance_id` — this instance's name at the relay (kept across runs);
//! - `relay.json` (0600) — the relay target set at run time, if any;
//! - `metrics.token` (0600) — the read-only token of `/metrics`, kept
//!   across runs (made at the first start).
//!
//! Secret files are created with their final mode (never chmod after the
//! write) under a temporary name and renamed into place.

use crate::config::Config;
use crate::routes;
use crate::state::AppState;
use agentbus_store::Store;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const AUTHKEY_FILE: &str = "authkey";
pub const DISCOVERY_FILE: &str = "daemon.json";
pub const LOCK_FILE: &str = "daemon.lock";
pub const DB_FILE: &str = "agentbus.db";

/// The discovery file: how CLI commands find the running daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Discovery {
    pub url: String,
    pub pid: u32,
    /// Unix milliseconds.
    pub started_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("failed to {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another agentbus daemon{owner} is already using {dir}; stop it first or choose another --data-dir"
    )]
    AlreadyRunning { dir: PathBuf, owner: String },
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("failed to open the database: {0}")]
    Store(#[from] agentbus_store::StoreError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("refusing {path}: {why}; {fix}")]
    UnsafeDir {
        path: PathBuf,
        why: String,
        fix: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` with mode 0700, or tightens it to 0700 if it exists; a
/// directory that is not this user's alone (or a link) is refused, see
/// [`crate::private_dir`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), DaemonError> {
    crate::private_dir::PrivateDir::open(dir).map(|_| ())
}

/// Writes `contents` to `path` atomically, the file being 0600 from the
/// moment it exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), DaemonError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io("write", path))
}

/// A daemon that has claimed its data dir and bound its listener, ready
/// to serve.
pub struct Daemon {
    state: AppState,
    listener: tokio::net::TcpListener,
    data_dir: PathBuf,
    // Held for the daemon's life: the flock is released when it closes.
    _lock: File,
}

impl Daemon {
    /// Claims the data dir, makes a new instance key, opens the store,
    /// binds the listener and writes `daemon.json`.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        let dir = config.daemon.data_dir.clone();
        ensure_private_dir(&dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        if lock.try_lock().is_err() {
            let owner = read_discovery(&dir)
                .map(|d| format!(" (pid {}, {})", d.pid, d.url))
                .unwrap_or_default();
            return Err(DaemonError::AlreadyRunning { dir, owner });
        }
        let instance_key = crate::auth::new_secret();
        write_private_file(&dir.join(AUTHKEY_FILE), instance_key.as_bytes())?;
        let metrics_token = crate::metrics::load_or_create_token(&dir)?;
        let store = Store::open(&dir.join(DB_FILE))?;

        let listener = bind(&config.daemon.listen)?;
        let addr = listener.local_addr().map_err(DaemonError::Serve)?;
        let url = format!("http://{addr}");
        let discovery = Discovery {
            url: url.clone(),
            pid: std::process::id(),
            started_at: agentbus_proto::now_ms(),
        };
        let json = serde_json::to_vec_pretty(&discovery).unwrap_or_default();
        write_private_file(&dir.join(DISCOVERY_FILE), &json)?;
        let known: Vec<_> = store
            .known_agents()?
            .into_iter()
            .filter_map(|(id, at)| Some((agentbus_proto::AgentId::parse(&id).ok()?, at)))
            .collect();
        let held = store.held_counts(agentbus_proto::now_ms())?;
        let forward_token = crate::auth::new_secret();
        let registry =
            crate::registry::Registry::new(&config.registry_dir(), &url, &forward_token)?;
        let configured = config
            .relay
            .url
            .as_ref()
            .map(|u| crate::poller::RelayTarget {
                url: u.trim_end_matches('/').to_string(),
                token: config.relay.token.clone().unwrap_or_default(),
            });
        let instance_id = crate::poller::instance_id(&dir)?;
        let signing = crate::poller::Signing {
            key: crate::signing::InstanceKey::of_instance(&dir, &config.relay)?,
            trusted: crate::signing::TrustStore::new(&dir),
            policy: crate::signing::Policy {
                pin_first_key: config.relay.pin_first_key,
                require_signed: config.relay.require_signed,
            },
        };
        let poller =
            crate::poller::Poller::new(&dir, instance_id, configured).with_signing(signing);
        let state = AppState::new(
            config,
            url,
            store,
            &instance_key,
            &forward_token,
            Some(registry),
            poller,
        );
        state.metrics().set_token(&metrics_token);
        // Agents of earlier runs are known (offline): jekts to them are
        // held until they come back.
        state.agents().remember(known);
        state.held().reset(held);
        Ok(Daemon {
            state,
            listener,
            data_dir: dir,
            _lock: lock,
        })
    }

    pub fn url(&self) -> &str {
        self.state.url()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully:
    /// in-flight requests finish, attached terminals are told, panes get
    /// SIGHUP, the database is closed, and the discovery and key files are
    /// removed.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let Daemon {
            state,
            listener,
            data_dir,
            _lock,
        } = self;
        tokio::spawn(crate::events::log_events(state.events().subscribe()));
        tokio::spawn(crate::retention::run(state.clone()));
        tokio::spawn(crate::agent_state::run(state.clone()));
        let registry = tokio::spawn(crate::registry::maintain(state.clone()));
        let marks = tokio::spawn(crate::mailbox::flush_marks(state.clone()));
        let refusals = tokio::spawn(crate::refusals::flush(state.clone()));
        tokio::spawn(crate::poller::run(state.clone()));
        let app = routes::app(state.clone());
        let signal_state = state.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down");
                signal_state.begin_shutdown();
            })
            .await;
        crate::panes::hang_up_all(&state).await;
        // The last delivered marks are written before the store closes,
        // and this instance's registry entries are gone.
        let _ = marks.await;
        let _ = refusals.await;
        let _ = registry.await;
        state.store().close();
        remove_instance_files(&data_dir);
        served.map_err(DaemonError::Serve)
    }
}

/// Removes `daemon.json` and `authkey`: the instance they describe is gone.
pub fn remove_instance_files(data_dir: &Path) {
    for f in [DISCOVERY_FILE, AUTHKEY_FILE] {
        let _ = std::fs::remove_file(data_dir.join(f));
    }
}

pub fn read_discovery(data_dir: &Path) -> Option<Discovery> {
    let text = std::fs::read_to_string(data_dir.join(DISCOVERY_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

fn bind(addr: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    let err = |source| DaemonError::Bind {
        addr: addr.to_string(),
        source,
    };
    let sock_addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let socket = if sock_addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(sock_addr).map_err(err)?;
    // A deep backlog: a burst of connections is queued, not refused.
    socket.listen(1024).map_err(err)
}

/// Makes this process non-dumpable, so that processes of the same user
/// (a pane's program among them) cannot read its memory or environment
/// through `/proc/<pid>/{mem,environ}` nor attach to it: the daemon and
/// the relay hold keys that no pane may have. The flag is reset when a
/// child execs, so panes are not affected.
pub fn protect_process() {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "could not make the process non-dumpable");
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is called (call it
/// before announcing a server, so no signal finds the default handler),
/// and returns a future that resolves on the first. A second signal after
/// that runs `on_force` and exits the process at once, for a shutdown
/// that hangs.
pub fn shutdown_signal(
    on_force: impl FnOnce() + Send + 'static,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::warn!("second signal: exiting now");
            on_force();
            std::process::exit(130);
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_and_dirs_get_their_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = dir.join("secret");
        write_private_file(&f, b"one").unwrap();
        write_private_file(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left behind"
        );
    }
}
