//! The agentbus relay: the cross-machine hub. Daemons and agent-bus clients
//! reach it outbound; it never calls anyone.
//!
//! - [`http`] — the small HTTP/1.1 server under it (memory per waiting
//!   long-poll);
//! - [`server`] — the routes: agent-bus `/send` `/recv` `/inbox` `/healthz`,
//!   the daemon extension `/v1/relay/*`, `/metrics`;
//! - [`storage`] — the storage trait (what a backend must guarantee);
//! - [`sqlite`] — the embedded SQLite backend;
//! - [`nats`] — the NATS JetStream backend (relay nodes sharing one JetStream);
//! - [`metrics`] — counters for `/metrics`;
//! - [`Relay`] — binding, locking the database, serving, shutting down.

pub mod http;
pub mod metrics;
pub mod nats;
pub mod server;
pub mod sqlite;
pub mod storage;
pub mod tls;

pub use server::{AuthMode, RelayState, token_digest};
pub use sqlite::SqliteStorage;
pub use storage::Storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How to run a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub listen: String,
    pub db: PathBuf,
    /// `None`: open on loopback, auth elsewhere.
    pub mode: Option<AuthMode>,
    /// Messages older than this are deleted.
    pub retention: Duration,
    /// Most messages one (channel, recipient) queue may hold.
    pub queue_cap: u64,
    /// The longest an agent-bus `recv?block=true` waits.
    pub recv_wait: Duration,
    /// Serve HTTPS with this (see [`tls::server_config`]); plain HTTP
    /// without.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            db: PathBuf::from("relay.db"),
            mode: None,
            retention: Duration::from_secs(7 * 86_400),
            queue_cap: 100_000,
            recv_wait: server::RECV_WAIT,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("open mode is only allowed on a loopback address ({0}); use --auth")]
    OpenOffLoopback(String),
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("another relay is using {0}")]
    Locked(PathBuf),
    #[error("failed to prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

/// A bound relay on its storage, ready to serve.
pub struct Relay<S: Storage = SqliteStorage> {
    listener: tokio::net::TcpListener,
    storage: S,
    mode: AuthMode,
    url: String,
    config: RelayConfig,
    /// SQLite: held while the database is ours.
    _lock: Option<std::fs::File>,
}

/// The auth mode for `config` (open only on loopback), and its address.
fn mode_of(config: &RelayConfig) -> Result<(std::net::SocketAddr, AuthMode), RelayError> {
    let addr: std::net::SocketAddr = config.listen.parse().map_err(|e| RelayError::Bind {
        addr: config.listen.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    let mode = match config.mode {
        Some(AuthMode::Open) if !addr.ip().is_loopback() => {
            return Err(RelayError::OpenOffLoopback(config.listen.clone()));
        }
        Some(m) => m,
        None if addr.ip().is_loopback() => AuthMode::Open,
        None => AuthMode::Auth,
    };
    Ok((addr, mode))
}

impl Relay<SqliteStorage> {
    /// A relay on the SQLite database `config.db` (one relay node).
    pub async fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        mode_of(&config)?;
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| RelayError::Io { path, source }
        };
        if let Some(dir) = config.db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let lock_path = config.db.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(RelayError::Locked(config.db.clone()));
        }
        let storage = SqliteStorage::open(&config.db, config.queue_cap)?;
        Relay::bind(config, storage, Some(lock)).await
    }
}

impl Relay<nats::NatsStorage> {
    /// A relay node on NATS JetStream: any number of them may serve the
    /// same relay.
    pub async fn start_nats(
        config: RelayConfig,
        nats: &nats::NatsOptions,
    ) -> Result<Relay<nats::NatsStorage>, RelayError> {
        mode_of(&config)?;
        let storage = nats::NatsStorage::connect(nats).await?;
        Relay::bind(config, storage, None).await
    }
}

impl<S: Storage> Relay<S> {
    async fn bind(
        config: RelayConfig,
        storage: S,
        lock: Option<std::fs::File>,
    ) -> Result<Relay<S>, RelayError> {
        let (addr, mode) = mode_of(&config)?;
        let bind_err = |source| RelayError::Bind {
            addr: config.listen.clone(),
            source,
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(bind_err)?;
        socket.set_reuseaddr(true).map_err(bind_err)?;
        socket.bind(addr).map_err(bind_err)?;
        // A deep backlog: a burst of a thousand connections is queued, not
        // refused.
        let listener = socket.listen(4096).map_err(bind_err)?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", listener.local_addr().map_err(bind_err)?);
        if config.tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                listen = %config.listen,
                "serving plain HTTP off loopback: tokens and messages cross the network \
                 unencrypted (use --tls-cert and --tls-key)"
            );
        }
        Ok(Relay {
            listener,
            storage,
            mode,
            url,
            config,
            _lock: lock,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Serves until `shutdown`, then lets waiting long-polls answer, finishes
    /// in-flight requests and closes the database.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (down_tx, down_rx) = watch::channel(false);
        let state = RelayState {
            storage: self.storage.clone(),
            mode: self.mode,
            metrics: Arc::new(metrics::Metrics::default()),
            shutdown: down_rx,
            recv_wait: self.config.recv_wait,
        };
        let sweeper = tokio::spawn(sweep(
            self.storage.clone(),
            self.config.retention,
            state.shutdown.clone(),
        ));
        let down = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("relay shutting down");
            let _ = down_tx.send(true);
        });
        // Long-polls answer at shutdown; a drain bound covers the rest.
        let served = http::serve(
            self.listener,
            state,
            http::Limits::default(),
            down,
            Duration::from_secs(10),
            self.config.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        )
        .await;
        let _ = sweeper.await;
        self.storage.close();
        served
    }
}

/// Deletes messages past the retention every minute, in small batches.
async fn sweep<S: Storage>(storage: S, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|d| *d) => return,
        }
        let before = agentbus_proto::now_ms() - retention.as_millis() as i64;
        loop {
            match storage.sweep(before, 500).await {
                Ok(500) => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(deleted = n, "relay retention sweep");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "relay retention sweep failed");
                    break;
                }
            }
        }
        storage.prune_waiters();
    }
}

/// A new relay token: 256 random bits, `abr_` + hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // invariant: the OS random source is available; without it no token
    // could be made at all.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    format!("abr_{}", hex::encode(bytes))
}
