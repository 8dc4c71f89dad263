//! The daemon's configuration: one typed struct, loaded from the config
//! file, then environment variables, then command-line flags, each
//! overriding the one before. `agentbus config show` prints the result.

use agentbus_proto::api::Provider;
use agentbus_term::Profile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub panes: PanesConfig,
    pub jekt: JektConfig,
    pub events: EventsConfig,
    pub mailbox: MailboxConfig,
    pub hold: HoldConfig,
    pub limits: LimitsConfig,
    pub retention: RetentionConfig,
    pub policy: PolicyConfig,
    pub relay: RelayConfig,
    pub app_api: AppApiConfig,
    pub conn: ConnConfig,
    pub screenshot: ScreenshotConfig,
    pub files: FilesConfig,
    pub ui: UiConfig,
    /// Per-provider overrides of the built-in paste/submit profiles.
    pub profiles: BTreeMap<Provider, ProfileOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address to bind; port 0 picks a free one. Loopback only is the
    /// intended use: every route is authenticated, none is encrypted.
    pub listen: String,
    /// Holds `daemon.json`, `authkey` and `agentbus.db`.
    pub data_dir: PathBuf,
    /// Shared cross-instance registry; default `<data_dir>/registry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PanesConfig {
    /// Lines of text kept per pane after they scroll off the screen.
    pub scrollback_lines: usize,
    pub rows: u16,
    pub cols: u16,
    /// How long each step of a stop (quit, SIGTERM) may take.
    pub stop_grace_ms: u64,
    /// How long a write may wait for a program to read its input.
    pub input_timeout_ms: u64,
    /// How far (bytes) the screen parser may fall behind a flooding
    /// program before the oldest unparsed output is skipped.
    pub max_parse_backlog_bytes: usize,
    /// Variables of the daemon's environment a pane's program gets (names,
    /// or a prefix and `*`); each provider adds its own
    /// (`[profiles.<provider>] env_pass`). Nothing else is passed.
    pub env_pass: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JektConfig {
    /// A pane counts as idle after this long without output.
    pub idle_quiet_ms: u64,
    /// `wait_for_idle: true` waits at most this long.
    pub idle_max_wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events buffered per subscriber before it is told it lagged.
    pub channel_capacity: usize,
    /// History kept of agentbus's own events, per (type, scope).
    pub persist_builtin: u32,
    /// Most history a published event may ask for (`persist`).
    pub max_persist: u32,
    /// A quiet event stream gets a heartbeat line this often, so a client
    /// that went away is noticed and its subscription freed.
    pub heartbeat_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxConfig {
    /// Unacked messages a mailbox may hold; a send beyond it fails (507).
    pub quota: i64,
    /// Largest message body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Lifetime of a message that does not say (7 days).
    pub default_ttl_s: u64,
    /// Longest lifetime a message may ask for (30 days).
    pub max_ttl_s: u64,
    /// Longest a read may wait for mail (`wait`).
    pub max_wait_s: u64,
    /// Bytes of unacked mail one sender may have waiting in all mailboxes
    /// together; a send beyond it fails (507), nothing is evicted.
    pub max_sender_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HoldConfig {
    /// How long a held jekt waits for its agent (24 h).
    pub ttl_s: u64,
    pub per_agent: i64,
    pub per_instance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Jekts and messages per second per sender (token bucket refill).
    pub sender_per_s: f64,
    /// Bucket size: how many a sender may send at once.
    pub sender_burst: f64,
    /// Jekts and messages from one sender to one target per minute; stops
    /// two agents answering each other forever.
    pub pair_per_minute: u32,
    /// How many instances a jekt may pass through.
    pub max_hops: u32,
    /// Hold the instance key to the limits too (off: the admin is the user).
    pub apply_to_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// How often the sweeper runs.
    pub sweep_interval_s: u64,
    /// Rows deleted per transaction, so writers never wait long.
    pub batch: u32,
    /// Event history older than this is deleted.
    pub events_days: u64,
    /// Audit entries older than this are deleted.
    pub audit_days: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Which agents (by token) may jekt which. Empty: every agent may
    /// jekt every other agent of this instance. `*` matches any agent.
    pub jekt_allow: Vec<AllowRule>,
    /// Agents allowed to jekt into `shell` panes with their own token (a
    /// jekt into a shell runs a command). The instance key always may.
    pub shell_jekt_senders: Vec<String>,
    /// Scopes of every agent's own token on the App API (`/ws`), unless
    /// `app_agents` names the agent. `method[@target]`, see docs/app-api.md.
    pub app_scopes: Vec<String>,
    /// Scopes for named agents' own tokens, replacing `app_scopes`.
    pub app_agents: Vec<AgentScopes>,
}

/// The App API scopes of one agent's own token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentScopes {
    pub agent: String,
    pub scopes: Vec<String>,
}

/// The JSON-RPC WebSocket App API (`/ws`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppApiConfig {
    /// Frames queued for one connection's socket; events beyond it are
    /// dropped for that connection and counted in a `lagged` notice.
    pub out_queue: usize,
    /// Bytes those frames may hold together; a frame larger than this is
    /// sent alone.
    pub out_queue_bytes: usize,
    /// A client that takes no frame for this long is closed (its calls
    /// and subscriptions end, and what was queued for it is freed).
    pub write_deadline_s: u64,
    /// Calls one connection may have running at once; reading its next
    /// frame waits beyond that.
    pub max_in_flight: usize,
    /// Most calls in one batch frame (at most `max_in_flight`); a larger
    /// batch is refused whole with -32600.
    pub max_batch: usize,
    /// A ping this often; a connection silent for three is closed.
    pub ping_interval_s: u64,
    /// A connection that has not authenticated after this long is closed.
    pub auth_timeout_s: u64,
    /// Calls per second per agent token (token bucket refill), and the
    /// bucket size. The instance key is not limited.
    pub calls_per_s: f64,
    pub calls_burst: f64,
    /// How often a `sysinfo` block publishes its event.
    pub sysinfo_interval_ms: u64,
    /// Events a pull subscription (`eventsub` with `"mode":"pull"`) keeps
    /// for `eventrecv`; older ones are dropped and counted.
    pub pull_queue: usize,
}

/// `[conn]`: connections to other hosts over SSH (the App API's `conn*`
/// methods and panes opened with `conn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnConfig {
    /// The ssh client to run: a path, or a name looked up in `PATH`.
    pub ssh: String,
    /// An ssh config file passed to every ssh run with `-F` (instead of
    /// `~/.ssh/config`); none: ssh's own defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_config: Option<PathBuf>,
    /// How long ssh may take to reach a host (`ConnectTimeout`); a whole
    /// connect may take 5 s more.
    pub connect_timeout_s: u64,
}

impl Default for ConnConfig {
    fn default() -> Self {
        Self {
            ssh: "ssh".into(),
            ssh_config: None,
            connect_timeout_s: 15,
        }
    }
}

impl Default for AppApiConfig {
    fn default() -> Self {
        Self {
            out_queue: 256,
            out_queue_bytes: 64 << 20,
            write_deadline_s: 30,
            max_in_flight: 32,
            max_batch: 32,
            ping_interval_s: 20,
            auth_timeout_s: 10,
            calls_per_s: 20.0,
            calls_burst: 40.0,
            sysinfo_interval_ms: 2_000,
            pull_queue: 1_000,
        }
    }
}

/// Screen shots of panes (`captureblockscreenshot`): the font the PNG is
/// drawn with and how large it may be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScreenshotConfig {
    /// A monospace TrueType or OpenType font file. Unset: the first of the
    /// known system paths (DejaVu Sans Mono, Liberation Mono, Noto Sans
    /// Mono), then what `fc-match monospace` names.
    pub font: Option<PathBuf>,
    /// The bold face to go with `font`; unset, bold cells use `font`.
    pub bold_font: Option<PathBuf>,
    /// The glyph size in pixels (6-72); a cell's size follows from the
    /// font's advance and line height at this size.
    pub font_px: u16,
    /// The largest picture drawn, in pixels (width x height); larger asks
    /// are refused (`SCREENSHOT_TOO_LARGE`), `format: "text"` still works.
    pub max_pixels: u64,
}

/// The browser dashboard (`/`, `agentbus ui`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// How long a login link from `agentbus ui` may wait to be opened.
    pub link_ttl_s: u64,
    /// How long a dashboard session lasts after its login, whatever is
    /// done in it.
    pub session_ttl_s: u64,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            link_ttl_s: 120,
            session_ttl_s: 12 * 3600,
        }
    }
}

impl Default for ScreenshotConfig {
    fn default() -> Self {
        Self {
            font: None,
            bold_font: None,
            font_px: 16,
            max_pixels: 16 << 20,
        }
    }
}

impl ScreenshotConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(6..=72).contains(&self.font_px) || !(1..=256 << 20).contains(&self.max_pixels) {
            return Err(ConfigError::Invalid(
                "screenshot.font_px must be between 6 and 72 and screenshot.max_pixels between 1 and 268435456".into(),
            ));
        }
        if self.bold_font.is_some() && self.font.is_none() {
            return Err(ConfigError::Invalid(
                "screenshot.bold_font needs screenshot.font (the regular face) set too".into(),
            ));
        }
        Ok(())
    }
}

/// The App API's file methods (`file*`, docs/app-api.md): the
/// directories they may act beneath, and their limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Largest file (or range) `fileread` returns, in bytes; the streams
    /// have no cap.
    pub max_read_bytes: u64,
    /// Largest `filewrite` / `filecreate` / `fileappend` data, and
    /// largest file `filecopy` copies, in bytes. A write is also bounded
    /// by `daemon.max_body_bytes` (the largest frame).
    pub max_write_bytes: u64,
    /// Most entries `filelist` returns (`truncated: true` beyond).
    pub max_entries: usize,
    /// The roots, as `[[files.roots]]` tables of `name` (1-64 of A-Z a-z
    /// 0-9 _ -) and `path` (an absolute directory, not a symlink itself).
    /// None: every file method is refused (`FILES_DISABLED`).
    pub roots: Vec<FileRoot>,
}

/// One directory the file methods may act beneath.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoot {
    /// How calls and scopes name it (`root: "docs"`, `fileread@root:docs`).
    pub name: String,
    /// Its directory: absolute, without `..`. Symlinks above it are
    /// followed as the system does; the directory itself must not be one.
    pub path: PathBuf,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            max_read_bytes: 16 << 20,
            max_write_bytes: 16 << 20,
            max_entries: 10_000,
            roots: Vec::new(),
        }
    }
}

impl FilesConfig {
    fn validate(&self) -> Result<(), String> {
        if self.max_read_bytes == 0 || self.max_write_bytes == 0 {
            return Err("files.max_read_bytes and files.max_write_bytes must be at least 1".into());
        }
        if !(1..=1_000_000).contains(&self.max_entries) {
            return Err("files.max_entries must be 1 to 1000000".into());
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.roots {
            let name_ok = (1..=64).contains(&r.name.len())
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(format!(
                    "files.roots: name {:?} must be 1-64 of A-Z a-z 0-9 _ -",
                    r.name
                ));
            }
            if !seen.insert(&r.name) {
                return Err(format!("files.roots: the name {} is used twice", r.name));
            }
            if crate::rpc::files::beneath::clean_abs(&r.path).is_none() {
                return Err(format!(
                    "files.roots: the path of {} ({}) must be absolute, without ..",
                    r.name,
                    r.path.display()
                ));
            }
        }
        Ok(())
    }
}

/// Scopes of an agent's own App API token when the config names none:
/// look, talk, and watch; acting on processes and panes only its own.
pub const DEFAULT_APP_SCOPES: [&str; 16] = [
    "agent.list",
    "agent.status",
    "agent.send",
    "agent.output@self",
    "agent.process-list@self",
    "agent.tracked-blocks",
    "blockinfo@self",
    "blockslist",
    "controllerresync@self",
    "eventpublish",
    "eventsub",
    "eventunsub",
    "eventunsuball",
    "eventreadhistory",
    "eventrecv",
    "agent.kill-process@self",
];

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            jekt_allow: Vec::new(),
            shell_jekt_senders: Vec::new(),
            app_scopes: DEFAULT_APP_SCOPES.map(String::from).to_vec(),
            app_agents: Vec::new(),
        }
    }
}

impl PolicyConfig {
    /// The App API scopes of `agent`'s own token.
    pub fn app_scopes_of(&self, agent: &str) -> &[String] {
        self.app_agents
            .iter()
            .find(|a| a.agent == agent)
            .map_or(&self.app_scopes, |a| &a.scopes)
    }
}

/// The relay this instance's poller long-polls (docs/relay.md). Off unless a
/// URL is set here, by `--relay-url`, or at run time with
/// `POST /agentmux/reactive/poller/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The relay token (or `$AGENTBUS_RELAY_TOKEN`). Never printed.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// How long one poll waits at the relay for mail (at most 30).
    pub poll_wait_s: u64,
    /// After errors, the backoff starts again from 1 s once polls have
    /// succeeded for this long.
    pub healthy_after_s: u64,
    /// PEM file of CA certificates trusted besides the system's, for an
    /// `https://` relay with a private CA (or `$AGENTBUS_CA_FILE`,
    /// `--ca-file`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Allow a plain `http://` relay URL whose host is not loopback (or
    /// `$AGENTBUS_INSECURE_HTTP=1`, `--insecure-http`).
    pub insecure_http: bool,
    /// The name this instance signs what it hands to a relay with
    /// (default: its `instance_id`, `ab-...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// Trust the first key seen for an instance name not yet trusted
    /// (`agentbus trust` adds keys by hand).
    pub pin_first_key: bool,
    /// Refuse relayed items that carry no signature.
    pub require_signed: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            poll_wait_s: 25,
            healthy_after_s: 30,
            ca_file: None,
            insecure_http: false,
            instance_name: None,
            pin_first_key: false,
            require_signed: false,
        }
    }
}

impl RelayConfig {
    /// How the poller's client trusts the relay and which URLs it takes.
    pub fn client_tls(&self) -> crate::tls::ClientTls {
        crate::tls::ClientTls {
            ca_file: self.ca_file.clone(),
            insecure_http: self.insecure_http,
        }
    }
}

/// A relay URL as the poller uses it: http(s), no trailing slash; plain
/// http only to loopback unless `tls` allows it. Several nodes of one
/// relay may be listed, separated by commas; each is checked.
pub fn relay_url(raw: &str, tls: &crate::tls::ClientTls) -> Result<String, String> {
    let mut urls = Vec::new();
    for one in raw.split(',') {
        let trimmed = one.trim().trim_end_matches('/');
        tls.check_url(trimmed)
            .map_err(|e| format!("relay URL: {e}"))?;
        urls.push(trimmed);
    }
    Ok(urls.join(","))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub from: String,
    pub to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileOverride {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bracketed_paste: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quit_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear_input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_quiet_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_quiet_ms: Option<u64>,
    /// Replaces the provider's screen rules as a whole (`prompt`,
    /// `placeholder`, `busy`, `blocked`); an empty table turns readiness
    /// from the screen off for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen: Option<agentbus_term::ScreenRules>,
    /// Replaces the provider's own list of variables passed to its panes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_pass: Option<Vec<String>>,
}

/// `~/.agentbus`, or `./.agentbus` when there is no home directory.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".agentbus")
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            data_dir: default_data_dir(),
            registry_dir: None,
            max_body_bytes: 1 << 20,
        }
    }
}

impl Default for PanesConfig {
    fn default() -> Self {
        Self {
            scrollback_lines: 10_000,
            rows: 24,
            cols: 80,
            stop_grace_ms: 5_000,
            input_timeout_ms: 10_000,
            max_parse_backlog_bytes: 4 << 20,
            env_pass: crate::pane_env::BASE_PASS.map(String::from).to_vec(),
        }
    }
}

impl Default for JektConfig {
    fn default() -> Self {
        Self {
            idle_quiet_ms: 1_000,
            idle_max_wait_ms: 30_000,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 4096,
            persist_builtin: 100,
            max_persist: 10_000,
            heartbeat_s: 15,
        }
    }
}

impl Default for MailboxConfig {
    fn default() -> Self {
        Self {
            quota: 10_000,
            max_body_bytes: 64 * 1024,
            default_ttl_s: 7 * 86_400,
            max_ttl_s: 30 * 86_400,
            max_wait_s: 60,
            max_sender_bytes: 64 << 20,
        }
    }
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            ttl_s: 86_400,
            per_agent: 64,
            per_instance: 1_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sender_per_s: 10.0,
            sender_burst: 20.0,
            pair_per_minute: 30,
            max_hops: 3,
            apply_to_admin: false,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sweep_interval_s: 60,
            batch: 500,
            events_days: 7,
            audit_days: 90,
        }
    }
}

/// Values given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub registry_dir: Option<PathBuf>,
    pub relay_url: Option<String>,
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `--insecure-http`.
    pub insecure_http: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name} is invalid: {message}")]
    Env { name: &'static str, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads file → environment → flags. The file is `--config`, else
    /// `$AGENTBUS_CONFIG`, else `<data dir>/config.toml` if it exists.
    pub fn load(over: &Overrides) -> Result<Config, ConfigError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let explicit = over
            .config_file
            .clone()
            .or_else(|| env("AGENTBUS_CONFIG").map(PathBuf::from));
        let data_dir_hint = over
            .data_dir
            .clone()
            .or_else(|| env("AGENTBUS_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(default_data_dir);
        let file = match explicit {
            Some(p) => Some(p),
            None => Some(data_dir_hint.join("config.toml")).filter(|p| p.exists()),
        };
        let mut config = match &file {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = env("AGENTBUS_LISTEN") {
            config.daemon.listen = v;
        }
        if let Some(v) = env("AGENTBUS_DATA_DIR") {
            config.daemon.data_dir = v.into();
        }
        if let Some(v) = env("AGENTBUS_REGISTRY_DIR") {
            config.daemon.registry_dir = Some(v.into());
        }
        if let Some(v) = env("AGENTBUS_RELAY_URL") {
            config.relay.url = Some(v);
        }
        if let Some(v) = env("AGENTBUS_RELAY_TOKEN") {
            config.relay.token = Some(v);
        }
        let tls = crate::tls::ClientTls::from_args_or_env(over.ca_file.clone(), over.insecure_http);
        if let Some(v) = tls.ca_file {
            config.relay.ca_file = Some(v);
        }
        config.relay.insecure_http |= tls.insecure_http;
        if let Some(v) = env("AGENTBUS_SCROLLBACK_LINES") {
            config.panes.scrollback_lines = v.parse().map_err(|e| ConfigError::Env {
                name: "AGENTBUS_SCROLLBACK_LINES",
                message: format!("{e}"),
            })?;
        }
        if let Some(v) = &over.listen {
            config.daemon.listen = v.clone();
        }
        if let Some(v) = &over.data_dir {
            config.daemon.data_dir = v.clone();
        }
        if let Some(v) = &over.registry_dir {
            config.daemon.registry_dir = Some(v.clone());
        }
        if let Some(v) = &over.relay_url {
            config.relay.url = Some(v.clone());
        }
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# failed to render config: {e}\n"))
    }

    /// Checks the values together (ranges, roots apart from the data dir).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.daemon.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "daemon.listen {:?} is not an address like 127.0.0.1:0",
                self.daemon.listen
            )));
        }
        if !(1..=1000).contains(&self.panes.rows) || !(1..=1000).contains(&self.panes.cols) {
            return bad("panes.rows and panes.cols must be between 1 and 1000");
        }
        if self.daemon.max_body_bytes < 1024 {
            return bad("daemon.max_body_bytes must be at least 1024");
        }
        if self.events.channel_capacity == 0 || self.events.heartbeat_s == 0 {
            return bad("events.channel_capacity and events.heartbeat_s must be at least 1");
        }
        if self.mailbox.max_wait_s > 600 || self.mailbox.quota < 1 {
            return bad("mailbox.max_wait_s must be at most 600 and mailbox.quota at least 1");
        }
        if self.mailbox.default_ttl_s > self.mailbox.max_ttl_s {
            return bad(
                "mailbox.default_ttl_s must not be longer than mailbox.max_ttl_s (a message that did not say would be refused)",
            );
        }
        if !(self.limits.sender_per_s > 0.0
            && self.limits.sender_burst >= 1.0
            && self.limits.pair_per_minute >= 1)
        {
            return bad(
                "limits: sender_per_s must be > 0, sender_burst >= 1, pair_per_minute >= 1",
            );
        }
        if self.retention.sweep_interval_s == 0 || self.retention.batch == 0 {
            return bad("retention.sweep_interval_s and retention.batch must be at least 1");
        }
        let a = &self.app_api;
        if a.out_queue == 0
            || a.max_in_flight == 0
            || a.pull_queue == 0
            || a.out_queue_bytes < 65_536
            || a.write_deadline_s == 0
        {
            return bad(
                "app_api.out_queue, max_in_flight, pull_queue and write_deadline_s must be at least 1, and app_api.out_queue_bytes at least 65536",
            );
        }
        if a.ping_interval_s == 0 || a.auth_timeout_s == 0 || a.sysinfo_interval_ms < 100 {
            return bad(
                "app_api.ping_interval_s and auth_timeout_s must be at least 1, sysinfo_interval_ms at least 100",
            );
        }
        if !(a.calls_per_s > 0.0 && a.calls_burst >= 1.0) {
            return bad("app_api: calls_per_s must be > 0 and calls_burst >= 1");
        }
        if self.conn.ssh.is_empty() || !(1..=300).contains(&self.conn.connect_timeout_s) {
            return bad("conn.ssh must not be empty and conn.connect_timeout_s must be 1 to 300");
        }
        self.screenshot.validate()?;
        if !(10..=3600).contains(&self.ui.link_ttl_s)
            || !(60..=30 * 86_400).contains(&self.ui.session_ttl_s)
        {
            return bad(
                "ui.link_ttl_s must be 10 to 3600 and ui.session_ttl_s 60 to 2592000 (30 days)",
            );
        }
        self.files.validate().map_err(ConfigError::Invalid)?;
        // A root that holds the data dir would hand out the instance key.
        for dir in [self.daemon.data_dir.clone(), self.registry_dir()] {
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            for r in &self.files.roots {
                if dir.starts_with(&r.path) || r.path.starts_with(&dir) {
                    return Err(ConfigError::Invalid(format!(
                        "files.roots: {} ({}) holds or lies inside {}, which keeps the daemon's keys and tokens; name a directory apart from it",
                        r.name,
                        r.path.display(),
                        dir.display()
                    )));
                }
            }
        }
        let all_scopes = self
            .policy
            .app_scopes
            .iter()
            .chain(self.policy.app_agents.iter().flat_map(|a| &a.scopes));
        for s in all_scopes {
            crate::rpc::scope::Scope::parse(s)
                .map_err(|e| ConfigError::Invalid(format!("policy: {e}")))?;
        }
        for (provider, o) in &self.profiles {
            let too_long = [
                o.ready_quiet_ms,
                o.confirm_ms,
                o.settle_ms,
                o.output_quiet_ms,
            ]
            .into_iter()
            .flatten()
            .any(|ms| ms > 60_000);
            if too_long {
                return bad(&format!(
                    "profiles.{provider}: settle_ms, ready_quiet_ms, output_quiet_ms and confirm_ms must be at most 60000"
                ));
            }
        }
        let env_pass = self.panes.env_pass.iter().chain(
            self.profiles
                .values()
                .flat_map(|p| p.env_pass.iter().flatten()),
        );
        for pattern in env_pass {
            crate::pane_env::check_pattern(pattern).map_err(ConfigError::Invalid)?;
        }
        if let Some(u) = &self.relay.url {
            relay_url(u, &self.relay.client_tls()).map_err(ConfigError::Invalid)?;
        }
        if let Some(ca) = &self.relay.ca_file {
            crate::tls::read_ca_file(ca).map_err(ConfigError::Invalid)?;
        }
        if let Some(n) = &self.relay.instance_name
            && !agentbus_proto::jekt::instance_name_ok(n)
        {
            return bad("relay.instance_name must be 1-64 of A-Z a-z 0-9 _ - .");
        }
        if !(1..=30).contains(&self.relay.poll_wait_s) || self.relay.healthy_after_s == 0 {
            return bad("relay.poll_wait_s must be 1 to 30 and relay.healthy_after_s at least 1");
        }
        Ok(())
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.daemon
            .registry_dir
            .clone()
            .unwrap_or_else(|| self.daemon.data_dir.join("registry"))
    }

    /// The variables of the daemon's environment a `provider` pane gets.
    pub fn env_pass(&self, provider: Provider) -> Vec<&str> {
        let own: Vec<&str> = match self
            .profiles
            .get(&provider)
            .and_then(|p| p.env_pass.as_ref())
        {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => crate::pane_env::provider_pass(provider).to_vec(),
        };
        self.panes
            .env_pass
            .iter()
            .map(String::as_str)
            .chain(own)
            .collect()
    }

    /// The effective profile of `provider`: built-in, then overrides.
    pub fn profile(&self, provider: Provider) -> Profile {
        let mut p = Profile::builtin(provider);
        if let Some(o) = self.profiles.get(&provider) {
            if let Some(v) = o.bracketed_paste {
                p.bracketed_paste = v;
            }
            if let Some(v) = o.settle_ms {
                p.settle_ms = v;
            }
            if let Some(v) = &o.submit {
                p.submit = v.clone();
            }
            if let Some(v) = &o.quit_text {
                p.quit_text = Some(v.clone());
            }
            if let Some(v) = &o.clear_input {
                p.clear_input = v.clone();
            }
            if let Some(v) = &o.interrupt {
                p.interrupt = v.clone();
            }
            if let Some(v) = o.ready_quiet_ms {
                p.ready_quiet_ms = v;
            }
            if let Some(v) = o.confirm_ms {
                p.confirm_ms = v;
            }
            if let Some(v) = o.output_quiet_ms {
                p.output_quiet_ms = v;
            }
            if let Some(v) = &o.screen {
                p.screen = v.clone();
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_defaults_and_overrides_profiles() {
        let c = Config::from_toml(
            "[panes]\nscrollback_lines = 50\n[profiles.claude]\nsettle_ms = 400\n[policy]\nshell_jekt_senders = [\"ops\"]\n",
        )
        .unwrap();
        assert_eq!(c.panes.scrollback_lines, 50);
        assert_eq!(c.panes.rows, 24);
        assert_eq!(c.profile(Provider::Claude).settle_ms, 400);
        assert_eq!(c.profile(Provider::Codex).settle_ms, 250);
        assert_eq!(c.policy.shell_jekt_senders, vec!["ops".to_string()]);
    }

    #[test]
    fn app_api_scopes_come_from_the_policy_and_are_checked_at_load() {
        let c = Config::from_toml(
            "[[policy.app_agents]]\nagent = \"planner\"\nscopes = [\"agent.*\", \"controller.*@worker-*\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.policy.app_scopes_of("planner"),
            ["agent.*", "controller.*@worker-*"]
        );
        assert_eq!(c.policy.app_scopes_of("other"), DEFAULT_APP_SCOPES);
        let bad = Config::from_toml("[policy]\napp_scopes = [\"agent.sned\"]\n").unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("no method named agent.sned"), "{e}");
    }

    #[test]
    fn file_roots_are_checked_at_load_and_grant_no_default_scope() {
        let c = Config::from_toml(
            "[files]\nmax_read_bytes = 10\n[[files.roots]]\nname = \"docs\"\npath = \"/srv/docs\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.files.roots[0].name, "docs");
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        for bad in [
            "[[files.roots]]\nname = \"a b\"\npath = \"/x\"\n",
            "[[files.roots]]\nname = \"a\"\npath = \"rel\"\n",
            "[[files.roots]]\nname = \"a\"\npath = \"/x/../y\"\n",
            "[[files.roots]]\nname = \"a\"\npath = \"/x\"\n[[files.roots]]\nname = \"a\"\npath = \"/y\"\n",
            "[files]\nmax_entries = 0\n",
        ] {
            let e = Config::from_toml(bad).unwrap().validate().unwrap_err();
            assert!(e.to_string().contains("files."), "{e}");
        }
        assert!(Config::default().files.roots.is_empty());
        // No default scope names a file method or covers every method.
        for s in DEFAULT_APP_SCOPES {
            assert!(!s.starts_with("file") && !s.starts_with('*'), "{s}");
        }
    }

    #[test]
    fn a_file_root_may_not_hold_the_data_dir_nor_lie_in_it() {
        for root in [
            "/home/me",
            "/home/me/.agentbus",
            "/home/me/.agentbus/sessions",
            "/",
        ] {
            let c = Config::from_toml(&format!(
                "[daemon]\ndata_dir = \"/home/me/.agentbus\"\n[[files.roots]]\nname = \"r\"\npath = \"{root}\"\n"
            ))
            .unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("keys and tokens"), "{root}: {e}");
        }
        let ok = Config::from_toml(
            "[daemon]\ndata_dir = \"/home/me/.agentbus\"\n[[files.roots]]\nname = \"r\"\npath = \"/home/me/src\"\n",
        )
        .unwrap();
        ok.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors_and_the_rendered_config_reads_back() {
        assert!(Config::from_toml("[panes]\nscrolback = 1\n").is_err());
        let c = Config::default();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }
}
