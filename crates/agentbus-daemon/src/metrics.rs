//! The daemon's `/metrics` (docs/metrics.md): counters bumped where the
//! work is done, gauges read from the live state when a scrape comes,
//! the store's commit times, and the read-only metrics token.
//!
//! Every label value comes from a fixed list here (jekt outcomes,
//! refusal kinds, the App API's method table), never from a request, so
//! the number of series is bounded and no name a user chose is ever
//! exported. Each series exists from the start at 0, so `rate()` sees
//! the first event.

use crate::DaemonError;
use crate::private_dir::PrivateDir;
use crate::state::AppState;
use agentbus_proto::api::InjectOutcome;
use agentbus_proto::metrics::{Counter, Kind, Text};
use agentbus_proto::sync::lock;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// The metrics token's file in the data dir (0600, kept across restarts).
pub const TOKEN_FILE: &str = "metrics.token";

/// Metrics tokens made here start with this, so a leaked one is
/// recognisable.
pub const TOKEN_PREFIX: &str = "abm_";

/// What became of a jekt, as `agentbus_jekts_total` labels it.
const JEKT_OUTCOMES: [&str; 5] = ["delivered", "held", "queued", "forwarded", "refused"];

/// What became of a message sent here (`agentbus_messages_total`).
#[derive(Debug, Clone, Copy)]
pub enum MessageOutcome {
    /// Committed to a mailbox of this instance (sent here, or handed
    /// over by the relay).
    Stored = 0,
    /// Handed to the relay for another machine.
    Queued = 1,
    /// Handed to the instance on this machine that hosts the recipient.
    Forwarded = 2,
}

const MESSAGE_OUTCOMES: [&str; 3] = ["stored", "queued", "forwarded"];

/// The audit log's kinds of refusal (`AuditRecord::refusal`); any other
/// counts as `other`.
const REFUSAL_KINDS: [&str; 7] = [
    "auth",
    "jekt",
    "message",
    "ack",
    "rpc",
    "relay_item",
    "other",
];

/// What the daemon counts as it works.
pub struct Metrics {
    jekts: [Counter; JEKT_OUTCOMES.len()],
    messages: [Counter; MESSAGE_OUTCOMES.len()],
    acked: Counter,
    refusals: [Counter; REFUSAL_KINDS.len()],
    /// One pair (ok, error) per method of the App API's table, then one
    /// for names not in it.
    calls: Box<[[Counter; 2]]>,
    /// SHA-256 of the metrics token, once it is loaded.
    token: Mutex<Option<[u8; 32]>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            jekts: Default::default(),
            messages: Default::default(),
            acked: Counter::default(),
            refusals: Default::default(),
            calls: (0..=crate::rpc::methods::TABLE.len())
                .map(|_| Default::default())
                .collect(),
            token: Mutex::new(None),
        }
    }
}

impl Metrics {
    /// A jekt answered with `outcome` (a first answer, not a replay of
    /// it for a repeated request id).
    pub fn jekt(&self, outcome: InjectOutcome) {
        let i = match outcome {
            InjectOutcome::Delivered => 0,
            InjectOutcome::Held => 1,
            InjectOutcome::Queued => 2,
            InjectOutcome::Forwarded => 3,
        };
        self.jekts[i].inc();
    }

    /// A jekt refused (a `JektError` answered).
    pub fn jekt_refused(&self) {
        self.jekts[4].inc();
    }

    pub fn message(&self, outcome: MessageOutcome) {
        self.messages[outcome as usize].inc();
    }

    /// Messages acked now that were not acked before.
    pub fn acked(&self, n: usize) {
        self.acked.add(n as u64);
    }

    /// A refusal the audit log records, of audit kind `kind`.
    pub fn refusal(&self, kind: &str) {
        let last = REFUSAL_KINDS.len() - 1;
        let i = REFUSAL_KINDS[..last]
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(last);
        self.refusals[i].inc();
    }

    /// An App API call of `method` (any name a client sent) answered.
    pub fn app_api_call(&self, method: &str, ok: bool) {
        let table = crate::rpc::methods::TABLE;
        let i = table
            .iter()
            .position(|m| m.name == method)
            .unwrap_or(table.len());
        self.calls[i][usize::from(!ok)].inc();
    }

    /// Takes `token` as the metrics token, in place of the one before.
    pub fn set_token(&self, token: &str) {
        *lock(&self.token) = Some(Sha256::digest(token.as_bytes()).into());
    }

    /// Makes a new metrics token in [`TOKEN_FILE`] in `data_dir` and
    /// takes it in place of the old one. File and memory change under
    /// one lock, so two rotations at once cannot leave the daemon on a
    /// token the file no longer holds. Blocks on the file's fsync.
    pub fn rotate_token(&self, data_dir: &Path) -> Result<(), DaemonError> {
        let mut held = lock(&self.token);
        let dir = PrivateDir::open(data_dir)?;
        let token = write_new_token(&dir, data_dir.join(TOKEN_FILE))?;
        *held = Some(Sha256::digest(token.as_bytes()).into());
        Ok(())
    }

    /// Whether `presented` is the metrics token (constant time).
    pub fn is_token(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        lock(&self.token).is_some_and(|t| bool::from(d.ct_eq(&t)))
    }

    /// The `/metrics` page: the counters, and gauges read from `state` now.
    pub fn render(&self, state: &AppState) -> String {
        let mut t = Text::new();
        t.by_label(
            "agentbus_jekts_total",
            Kind::Counter,
            "Jekts answered, by outcome (a request id answered again from its first delivery is not counted again).",
            "outcome",
            labelled(&JEKT_OUTCOMES, &self.jekts),
        );
        t.by_label(
            "agentbus_messages_total",
            Kind::Counter,
            "Messages accepted, by where they went: stored in a mailbox here, queued at the relay, forwarded to a peer instance.",
            "outcome",
            labelled(&MESSAGE_OUTCOMES, &self.messages),
        );
        t.single(
            "agentbus_messages_acked_total",
            Kind::Counter,
            "Messages acked (each once).",
            self.acked.get(),
        );
        t.by_label(
            "agentbus_refusals_total",
            Kind::Counter,
            "Requests refused, by the audit log's kind (each counted, also those the audit log only summarizes).",
            "kind",
            labelled(&REFUSAL_KINDS, &self.refusals),
        );
        self.render_calls(&mut t);
        render_gauges(&mut t, state);
        let store = state.store().writer_stats();
        t.single(
            "agentbus_store_writes_total",
            Kind::Counter,
            "Writes run by the store's writer thread.",
            store.writes.get(),
        );
        t.histogram(
            "agentbus_store_commit_duration_seconds",
            "Group commits of the store's writer thread: BEGIN, the batch's writes, COMMIT with its fsync.",
            &store.commit_seconds,
        );
        t.finish()
    }

    fn render_calls(&self, t: &mut Text) {
        const NAME: &str = "agentbus_app_api_calls_total";
        t.family(
            NAME,
            Kind::Counter,
            "App API calls answered, by method (unknown: not a method of the table) and outcome.",
        );
        let names = crate::rpc::methods::TABLE
            .iter()
            .map(|m| m.name)
            .chain(["unknown"]);
        for (method, [ok, error]) in names.zip(self.calls.iter()) {
            t.sample(NAME, &[("method", method), ("outcome", "ok")], ok.get());
            t.sample(
                NAME,
                &[("method", method), ("outcome", "error")],
                error.get(),
            );
        }
    }
}

fn labelled<'a>(
    labels: &'a [&'static str],
    counters: &'a [Counter],
) -> impl Iterator<Item = (&'static str, u64)> + 'a {
    labels
        .iter()
        .copied()
        .zip(counters.iter().map(Counter::get))
}

/// The gauges: what is there now.
fn render_gauges(t: &mut Text, state: &AppState) {
    let live = state.live_counts();
    let as_u64 = |n: usize| n as u64;
    t.by_label(
        "agentbus_panes",
        Kind::Gauge,
        "Panes in the agents table, by state.",
        "state",
        [
            ("running", as_u64(live.panes_running)),
            ("exited", as_u64(live.panes - live.panes_running)),
        ],
    );
    for (name, help, value) in [
        (
            "agentbus_held_jekts",
            "Jekts in the durable hold now.",
            live.held_jekts,
        ),
        (
            "agentbus_jekts_in_flight",
            "Jekts being delivered now: checked, waiting for a ready prompt, or being typed.",
            live.jekts_in_flight,
        ),
        (
            "agentbus_inbox_waiters",
            "Mailbox reads waiting for mail now (long-polls).",
            live.reads_waiting,
        ),
        (
            "agentbus_app_api_connections",
            "App API WebSocket connections now.",
            live.app_api_connections,
        ),
        (
            "agentbus_app_api_subscriptions",
            "App API event subscriptions now.",
            live.app_api_subscriptions,
        ),
        (
            "agentbus_event_subscribers",
            "Subscribers of the event bus now (the daemon's own event log is one).",
            live.event_subscribers,
        ),
    ] {
        t.single(name, Kind::Gauge, help, value);
    }
}

/// The metrics token of the instance whose data dir is `data_dir`: read
/// from [`TOKEN_FILE`], or made and written there (0600) if there is
/// none. A file another user could have read or written is refused, as
/// is one that holds no usable token; the token itself is never in an
/// error.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, DaemonError> {
    let dir = PrivateDir::open(data_dir)?;
    let path = data_dir.join(TOKEN_FILE);
    match dir.read(TOKEN_FILE) {
        Ok(Some(bytes)) => parse_token(&bytes).ok_or_else(|| {
            DaemonError::Invalid(format!(
                "{} holds no usable metrics token (32 to 256 visible ASCII characters); remove it and a new one is made at the next start",
                path.display()
            ))
        }),
        Ok(None) => write_new_token(&dir, path),
        Err(why) => Err(DaemonError::UnsafeDir {
            path,
            why,
            fix: "remove it (a new token is made at start) or make it a plain file of yours with mode 0600".into(),
        }),
    }
}

/// Makes a new metrics token and writes it to [`TOKEN_FILE`] (0600), in
/// place of any there: written beside it, then renamed over it.
fn write_new_token(dir: &PrivateDir, path: std::path::PathBuf) -> Result<String, DaemonError> {
    let token = format!("{TOKEN_PREFIX}{}", crate::auth::new_secret());
    dir.write(TOKEN_FILE, token.as_bytes())
        .map_err(|source| DaemonError::Io {
            what: "write",
            path,
            source,
        })?;
    Ok(token)
}

/// The token a file holds: its text without surrounding white space, if
/// that is 32 to 256 visible ASCII characters.
fn parse_token(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    ((32..=256).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_token_is_made_once_0600_and_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let made = load_or_create_token(tmp.path()).unwrap();
        assert!(made.starts_with(TOKEN_PREFIX) && made.len() == 4 + 64);
        let file = tmp.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(tmp.path()).unwrap(), made);

        // A file others may read is refused, and the error shows no token.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("mode 644") && !e.contains(&made), "{e}");

        std::fs::remove_file(&file).unwrap();
        let mut f = std::fs::OpenOptions::new();
        use std::os::unix::fs::OpenOptionsExt;
        f.write(true).create(true).mode(0o600);
        std::io::Write::write_all(&mut f.open(&file).unwrap(), b"short\n").unwrap();
        let e = load_or_create_token(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("no usable metrics token"), "{e}");
    }

    #[test]
    fn only_the_set_token_matches() {
        let m = Metrics::default();
        assert!(!m.is_token(""), "no token before one is set");
        m.set_token("abm_secret-secret-secret-secret-secret");
        assert!(m.is_token("abm_secret-secret-secret-secret-secret"));
        assert!(!m.is_token("abm_secret-secret-secret-secret-secreT"));
    }

    #[test]
    fn labels_come_only_from_fixed_lists() {
        let m = Metrics::default();
        m.refusal("auth");
        m.refusal("a name someone chose");
        m.app_api_call("agent.list", true);
        m.app_api_call("no such method", false);
        assert_eq!(m.refusals[0].get(), 1);
        assert_eq!(m.refusals[REFUSAL_KINDS.len() - 1].get(), 1);
        let unknown = &m.calls[crate::rpc::methods::TABLE.len()];
        assert_eq!((unknown[0].get(), unknown[1].get()), (0, 1));
    }
}
