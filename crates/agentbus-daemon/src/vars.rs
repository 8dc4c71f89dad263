//! Live settings: the parts of the config that `setvar` may change while
//! the daemon runs. Each is read where it is used, so a change takes
//! effect at its next use. They are kept in `<data_dir>/vars.json` (0600,
//! written whole and renamed) and applied over the config file,
//! environment and flags at start; `setvar` with `null` returns a
//! setting to what those say.

use crate::config::Config;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// One live setting.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    pub about: &'static str,
    get: fn(&Config) -> Value,
    set: fn(&mut Config, Value) -> Result<(), String>,
}

impl Var {
    pub fn get(&self, c: &Config) -> Value {
        (self.get)(c)
    }
}

/// Reads a number of type `T` in `range` from `v`.
fn number<T>(v: Value, range: RangeInclusive<T>) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + PartialOrd + std::fmt::Display,
{
    let shown = v.to_string();
    let x: T = serde_json::from_value(v).map_err(|_| {
        format!(
            "{} is not a number from {} to {}",
            crate::auth::truncate(&shown, 40),
            range.start(),
            range.end()
        )
    })?;
    if !range.contains(&x) {
        return Err(format!(
            "{x} is out of range: from {} to {}",
            range.start(),
            range.end()
        ));
    }
    Ok(x)
}

macro_rules! var {
    ($name:literal, $($field:ident).+, $ty:ty, $range:expr, $about:literal) => {
        Var {
            name: $name,
            about: $about,
            get: |c| json!(c.$($field).+),
            set: |c, v| {
                c.$($field).+ = number::<$ty>(v, $range)?;
                Ok(())
            },
        }
    };
}

const DAY_S: u64 = 86_400;

/// Every live setting. Settings a running part copied at start (listen
/// address, data dir, rate limiter buckets, event channel sizes) are not
/// here: they change with a restart.
pub static VARS: &[Var] = &[
    var!(
        "jekt.idle_quiet_ms",
        jekt.idle_quiet_ms,
        u64,
        10..=600_000,
        "a pane counts as idle after this long without output"
    ),
    var!(
        "jekt.idle_max_wait_ms",
        jekt.idle_max_wait_ms,
        u64,
        0..=3_600_000,
        "longest a jekt with wait_for_idle waits for quiet"
    ),
    var!(
        "panes.stop_grace_ms",
        panes.stop_grace_ms,
        u64,
        100..=600_000,
        "how long each step of a stop (quit, SIGTERM) may take"
    ),
    var!(
        "panes.input_timeout_ms",
        panes.input_timeout_ms,
        u64,
        100..=600_000,
        "how long a write may wait for a program to read its input (panes opened after the change)"
    ),
    var!(
        "panes.scrollback_lines",
        panes.scrollback_lines,
        usize,
        0..=1_000_000,
        "lines of text kept per pane after they scroll off (panes opened after the change)"
    ),
    var!(
        "mailbox.quota",
        mailbox.quota,
        i64,
        1..=10_000_000,
        "unacked messages a mailbox may hold"
    ),
    var!(
        "mailbox.max_body_bytes",
        mailbox.max_body_bytes,
        usize,
        1..=64 * 1024 * 1024,
        "largest message body in bytes"
    ),
    var!(
        "mailbox.default_ttl_s",
        mailbox.default_ttl_s,
        u64,
        1..=365 * DAY_S,
        "lifetime of a message that does not say"
    ),
    var!(
        "mailbox.max_ttl_s",
        mailbox.max_ttl_s,
        u64,
        1..=365 * DAY_S,
        "longest lifetime a message may ask for"
    ),
    var!(
        "mailbox.max_wait_s",
        mailbox.max_wait_s,
        u64,
        0..=600,
        "longest a mailbox read may wait for mail"
    ),
    var!(
        "mailbox.max_sender_bytes",
        mailbox.max_sender_bytes,
        u64,
        1..=u64::MAX / 2,
        "bytes of unacked mail one sender may have waiting in all mailboxes"
    ),
    var!(
        "hold.ttl_s",
        hold.ttl_s,
        u64,
        1..=30 * DAY_S,
        "how long a held jekt waits for its agent (jekts held after the change)"
    ),
    var!(
        "retention.events_days",
        retention.events_days,
        u64,
        1..=3_650,
        "event history older than this is deleted"
    ),
    var!(
        "retention.audit_days",
        retention.audit_days,
        u64,
        1..=3_650,
        "audit entries older than this are deleted"
    ),
    var!(
        "app_api.sysinfo_interval_ms",
        app_api.sysinfo_interval_ms,
        u64,
        100..=3_600_000,
        "how often a sysinfo block publishes (blocks opened after the change)"
    ),
    var!(
        "events.heartbeat_s",
        events.heartbeat_s,
        u64,
        1..=3_600,
        "heartbeat of a quiet event stream (streams opened after the change)"
    ),
];

pub fn find(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

pub fn names() -> String {
    VARS.iter().map(|v| v.name).collect::<Vec<_>>().join(", ")
}

/// The settings changed with `setvar`, by name.
pub type Saved = BTreeMap<String, Value>;

pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("vars.json")
}

/// Reads the saved settings; entries that are no longer settings, or
/// whose value is no longer valid, are left out with a warning.
pub fn load(data_dir: &Path) -> Saved {
    let path = file(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the live settings could not be read; the config's values are used");
            return Saved::new();
        }
    };
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the live settings file is not a JSON object; the config's values are used");
            return Saved::new();
        }
    };
    let mut probe = Config::default();
    saved
        .into_iter()
        .filter(|(name, value)| match find(name) {
            Some(var) => match (var.set)(&mut probe, value.clone()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(var = %name, error = %e, "a saved live setting is not valid and is left out");
                    false
                }
            },
            None => {
                tracing::warn!(var = %name, "a saved live setting is no longer one; it is left out");
                false
            }
        })
        .collect()
}

/// `base` with the saved settings applied (each was checked by `load`
/// or `set`).
pub fn apply(base: &Config, saved: &Saved) -> Config {
    let mut c = base.clone();
    for (name, value) in saved {
        if let Some(var) = find(name) {
            let _ = (var.set)(&mut c, value.clone());
        }
    }
    c
}

/// Checks `value` for setting `name` against `config`.
pub fn check(name: &str, value: &Value) -> Result<&'static Var, VarError> {
    let var = find(name).ok_or_else(|| VarError::Unknown(name.to_string()))?;
    (var.set)(&mut Config::default(), value.clone())
        .map_err(|why| VarError::Invalid(var.name, why))?;
    Ok(var)
}

#[derive(Debug, thiserror::Error)]
pub enum VarError {
    #[error("no live setting is named {}; the settings are: {}", crate::auth::truncate(.0, 80), names())]
    Unknown(String),
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("the live settings could not be saved: {0}")]
    Save(std::io::Error),
}

/// Writes the saved settings whole: a new 0600 file, synced, renamed
/// over the old one, and the directory synced.
pub fn save(data_dir: &Path, saved: &Saved) -> Result<(), VarError> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(saved).unwrap_or_else(|_| "{}".into());
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".vars.")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(data_dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(file(data_dir)).map_err(|e| e.error)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(VarError::Save)
}

/// What `getvar` shows of one setting.
pub fn describe(var: &Var, base: &Config, now: &Config, saved: &Saved) -> Value {
    json!({
        "name": var.name,
        "value": var.get(now),
        "config_value": var.get(base),
        "set": saved.contains_key(var.name),
        "about": var.about,
    })
}

/// Values shown by `getfullconfig` in place of secrets.
pub const REDACTED: &str = "[redacted]";

/// The config as JSON with its secrets replaced: fields that hold a
/// token, secret, password or key, and the password of any URL.
pub fn redacted(config: &Config) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or_default();
    redact(&mut v);
    if config.relay.token.is_some() {
        v["relay"]["token"] = json!(REDACTED);
    }
    v
}

fn secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "authkey",
        "private_key",
        "api_key",
    ]
    .iter()
    .any(|s| k.contains(s))
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => redact_map(m),
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Ok(mut u) = url::Url::parse(s)
                && u.password().is_some()
            {
                let _ = u.set_password(Some(REDACTED));
                *s = u.to_string();
            }
        }
        _ => {}
    }
}

fn redact_map(m: &mut Map<String, Value>) {
    for (k, v) in m.iter_mut() {
        if secret_name(k) && !v.is_null() && !v.is_array() && !v.is_object() {
            *v = json!(REDACTED);
        } else {
            redact(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_var_reads_and_writes_its_own_field() {
        for var in VARS {
            let mut c = Config::default();
            let before = var.get(&c);
            // A value in range that differs from the default.
            let probe = [1u64, 100, 1_000, 5_000]
                .into_iter()
                .map(|n| json!(n))
                .find(|n| *n != before && (var.set)(&mut c.clone(), n.clone()).is_ok())
                .unwrap_or_else(|| panic!("no test value for {}", var.name));
            (var.set)(&mut c, probe.clone()).unwrap();
            assert_eq!(var.get(&c), probe, "{}", var.name);
            // Nothing else changed.
            let mut back = c.clone();
            (var.set)(&mut back, before.clone()).unwrap();
            assert_eq!(back, Config::default(), "{}", var.name);
        }
    }

    #[test]
    fn bad_values_and_names_say_what_is_wrong() {
        let e = check("jekt.idle_quiet_ms", &json!("soon"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number from 10 to 600000"), "{e}");
        let e = check("jekt.idle_quiet_ms", &json!(-5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = check("jekt.idle_quiet_ms", &json!(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
        let e = check("daemon.listen", &json!("0.0.0.0:1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mailbox.quota") && e.contains("daemon.listen"),
            "{e}"
        );
    }

    #[test]
    fn saved_settings_survive_a_reload_and_bad_entries_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut saved = Saved::new();
        saved.insert("mailbox.quota".into(), json!(7));
        save(dir.path(), &saved).unwrap();
        assert_eq!(load(dir.path()), saved);
        let mode = std::fs::metadata(file(dir.path())).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        std::fs::write(
            file(dir.path()),
            r#"{"mailbox.quota": 9, "gone.var": 1, "hold.ttl_s": "x"}"#,
        )
        .unwrap();
        let loaded = load(dir.path());
        assert_eq!(loaded.len(), 1);
        assert_eq!(apply(&Config::default(), &loaded).mailbox.quota, 9);
    }

    #[test]
    fn secrets_are_redacted_wherever_they_sit() {
        let mut c = Config::default();
        c.relay.token = Some("s3cret-relay".into());
        c.relay.url = Some("https://me:hunter2@relay.example:8443".into());
        let v = redacted(&c);
        let text = v.to_string();
        assert!(
            !text.contains("s3cret-relay") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(v["relay"]["token"], REDACTED);
        let mut nested = json!({"a": {"api_key": "k", "list": [{"password": "p"}]}, "tokens": 3});
        redact(&mut nested);
        assert_eq!(nested["a"]["api_key"], REDACTED);
        assert_eq!(nested["a"]["list"][0]["password"], REDACTED);
    }
}
