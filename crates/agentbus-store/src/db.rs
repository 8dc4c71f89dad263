//! The SQLite engine under every agentbus database: one file in WAL
//! mode, one writer thread that commits in groups, a small pool of reader
//! connections, and migrations applied at open.
//!
//! All writes go through the writer thread: it takes every job waiting in
//! its queue, runs each in its own savepoint inside one transaction,
//! commits with `synchronous=FULL`, and only then answers each caller. A
//! caller that got an answer therefore knows its row is on disk (it
//! survives `kill -9`, and a crash of the machine), and many concurrent
//! writers share one fsync. A checkpoint thread with its own connection
//! copies the WAL into the database file in the background, so no commit
//! waits for that. Reads use separate connections, so a query
//! never waits behind the writer (WAL lets readers and one writer run at
//! once) nor, mostly, behind another read.

use agentbus_proto::metrics::{Counter, Histogram, LATENCY_BUCKETS};
use agentbus_proto::sync::lock;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored data is malformed: {0}")]
    Malformed(String),
    #[error("the store is closed")]
    Closed,
    /// A search the full-text engine cannot parse (the caller's fault).
    #[error("the search query cannot be parsed: {0}")]
    BadQuery(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A write: runs inside the batch transaction and returns what to do once
/// the batch's commit outcome is known (`None` = committed).
type Job = Box<dyn FnOnce(&Connection) -> Finisher + Send>;
type Finisher = Box<dyn FnOnce(Option<&str>) + Send>;

enum Msg {
    Job(Job),
    Close,
}

/// Cheap-clone handle to a database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: mpsc::Sender<Msg>,
    // Dropped (closing the channel) to stop the checkpointer.
    checkpoint_stop: Mutex<Option<mpsc::Sender<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    // Plain mutexes: reads are short, run on blocking threads, and never
    // hold one across an await.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    writer: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<WriterStats>,
}

/// What the writer thread records of its work, for `/metrics`.
#[derive(Debug)]
pub struct WriterStats {
    /// Each group commit, from `BEGIN` to the end of its `COMMIT` (the
    /// fsync included): how long the batch held the writer, and about
    /// how long its callers waited once it began.
    pub commit_seconds: Histogram,
    /// Writes (jobs) run, committed or not.
    pub writes: Counter,
}

/// Reader connections per store.
const READERS: usize = 4;

/// Most jobs one commit takes; bounds the latency a single batch adds.
const MAX_BATCH: usize = 512;

/// How often the checkpointer copies committed WAL frames into the
/// database file (when there were commits).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);

/// Quiet checkpoints (no commit) after which the WAL file is truncated.
const TRUNCATE_AFTER_QUIET: u32 = 2;

/// The size the WAL file is cut back to when it is reset, in bytes.
const WAL_SIZE_LIMIT: i64 = 4 << 20;

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is fsynced before the writer answers, so an answered
    // write survives a crash of the process and of the machine.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A commit invalidates every other connection's page cache; with the
    // file memory-mapped, a reader re-reads pages from the OS cache
    // without a system call each (inbox p99 under concurrent writes).
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    Ok(())
}

impl Db {
    /// Opens (creating if needed, mode 0600) the database at `path`,
    /// applies `migrations` not yet applied, and starts the writer thread.
    pub fn open(path: &Path, migrations: &[&str]) -> Result<Db> {
        // Create the file 0600 before SQLite does (it would use the umask);
        // its -wal and -shm files take the database file's mode.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| {
                    StoreError::Malformed(format!("failed to create {}: {e}", path.display()))
                })?;
        }
        let writer = Connection::open(path)?;
        configure(&writer)?;
        crate::schema::migrate(&writer, migrations)?;
        // Checkpoints run on their own thread and connection, so a commit
        // never waits for one.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        // When the WAL is reset after a full checkpoint, it is cut back to
        // this size: a burst of writes leaves no large file behind.
        writer.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let checkpoints = Connection::open(path)?;
        configure(&checkpoints)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open(path)?;
            configure(&reader)?;
            readers.push(Mutex::new(reader));
        }
        let dirty = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let flag = dirty.clone();
        let checkpointer = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, stop_rx, flag))
            .map_err(|e| {
                StoreError::Malformed(format!("failed to start checkpoint thread: {e}"))
            })?;
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(WriterStats {
            commit_seconds: Histogram::new(LATENCY_BUCKETS),
            writes: Counter::default(),
        });
        let recorded = stats.clone();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer, rx, dirty, &recorded))
            .map_err(|e| StoreError::Malformed(format!("failed to start writer thread: {e}")))?;
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                tx,
                checkpoint_stop: Mutex::new(Some(stop_tx)),
                checkpointer: Mutex::new(Some(checkpointer)),
                readers,
                next_reader: std::sync::atomic::AtomicUsize::new(0),
                writer: Mutex::new(Some(handle)),
                stats,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer thread's commit times and write count.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Runs `f` in the writer's transaction and resolves once it is
    /// committed. An error from `f` rolls back only `f`'s own changes.
    pub fn write<T, F>(&self, f: F) -> impl std::future::Future<Output = Result<T>> + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            let result = run_in_savepoint(conn, f);
            Box::new(move |commit_error: Option<&str>| {
                let out = match (result, commit_error) {
                    (Ok(v), None) => Ok(v),
                    (Ok(_), Some(err)) => {
                        Err(StoreError::Malformed(format!("commit failed: {err}")))
                    }
                    (Err(e), _) => Err(e),
                };
                let _ = reply_tx.send(out);
            })
        });
        let sent = self.inner.tx.send(Msg::Job(job)).is_ok();
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            reply_rx.await.unwrap_or(Err(StoreError::Closed))
        }
    }

    /// Runs a read on the reader connection. Blocking: call it from a
    /// blocking thread in async code.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        // The first free connection; if all are busy, wait for one in turn.
        let readers = &self.inner.readers;
        for r in readers {
            if let Ok(conn) = r.try_lock() {
                return f(&conn);
            }
        }
        let start = self
            .inner
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let conn = lock(&readers[start % readers.len()]);
        f(&conn)
    }

    /// Finishes every queued write, checkpoints the WAL and stops the
    /// writer thread. Later writes fail with [`StoreError::Closed`].
    pub fn close(&self) {
        {
            let mut stop = lock(&self.inner.checkpoint_stop);
            stop.take();
        }
        let checkpointer = lock(&self.inner.checkpointer).take();
        if let Some(h) = checkpointer {
            let _ = h.join();
        }
        let _ = self.inner.tx.send(Msg::Close);
        let handle = lock(&self.inner.writer).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run_in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            Err(e)
        }
    }
}

/// Copies committed WAL frames into the database file every
/// [`CHECKPOINT_EVERY`] there were commits, until `stop` closes. PASSIVE:
/// it never blocks the writer or a reader. Once the store has been quiet
/// for a while after writes, the WAL file is truncated to nothing
/// (TRUNCATE, which waits briefly for readers), so a daemon or relay
/// that runs for months after a burst does not keep a large WAL.
fn checkpoint_loop(
    conn: Connection,
    stop: mpsc::Receiver<()>,
    dirty: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let mut quiet = 0u32;
    let mut to_truncate = false;
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if dirty.swap(false, Ordering::AcqRel) {
            quiet = 0;
            to_truncate = true;
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
            continue;
        }
        quiet += 1;
        if to_truncate && quiet >= TRUNCATE_AFTER_QUIET {
            // (busy, frames in the WAL, frames copied): busy means a reader
            // or writer held it; try again at the next quiet tick.
            match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            }) {
                Ok(0) => to_truncate = false,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL truncation failed"),
            }
        }
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    dirty: Arc<std::sync::atomic::AtomicBool>,
    stats: &WriterStats,
) {
    let mut closing = false;
    while !closing {
        let first = match rx.recv() {
            Ok(Msg::Job(j)) => j,
            Ok(Msg::Close) | Err(_) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        stats.writes.add(batch.len() as u64);
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        let finishers: Vec<Finisher> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit_res = began.and_then(|_| conn.execute_batch("COMMIT"));
        let commit_err = match commit_res {
            Ok(()) => {
                dirty.store(true, std::sync::atomic::Ordering::Release);
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                Some(e.to_string())
            }
        };
        stats.commit_seconds.observe(started.elapsed());
        for finish in finishers {
            finish(commit_err.as_deref());
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "WAL checkpoint at close failed");
    }
    drop(conn);
}

/// Counts the rows of `table`; for tests and diagnostics.
pub fn count_rows(conn: &Connection, table: &str) -> Result<i64> {
    Ok(
        conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
            r.get(0)
        })?,
    )
}
