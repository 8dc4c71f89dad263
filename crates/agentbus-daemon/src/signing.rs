//! Signed senders across machines.
//!
//! Each instance has an Ed25519 key pair, made at its first start
//! (`<data dir>/instance-ed25519.pk8`, 0600) and kept across restarts.
//! Everything its poller hands to a relay is signed over the item's id,
//! kind, sender, recipient, body digest, tier, priority, thread, reply-to,
//! the instance's name and the time, and carries the public key. A
//! receiving daemon verifies the signature and looks the name up in the
//! instances it trusts (`<data dir>/trusted-instances.json`, managed with
//! `agentbus trust`):
//!
//! - signed, the key the one trusted for that name → `TRUST=signed:<name>`;
//! - signed, the name unknown → `network-claimed`, unless the user opted
//!   in to pinning the first key seen for a name (`relay.pin_first_key`);
//! - a signature that does not verify (a body, sender or recipient changed
//!   on the way), or a key other than the one trusted for that name → not
//!   delivered, audited with the reason;
//! - unsigned → `network-claimed` (refused with `relay.require_signed`);
//! - a trust list that cannot be read (or a pin that cannot be written)
//!   → left at the relay and tried again: nothing is dropped for it.
//!
//! The relay sees public keys and signatures only; it cannot sign.

use crate::instance::{DaemonError, write_private_file};
use agentbus_proto::jekt::{Trust, instance_name_ok};
use agentbus_proto::relay::{RelayEnvelope, RelaySend, SenderSignature};
use agentbus_proto::sync::lock;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const KEY_FILE: &str = "instance-ed25519.pk8";
pub const TRUST_FILE: &str = "trusted-instances.json";
/// A signature older than this is refused (the relay keeps messages 7
/// days by default; a replay of an older one is not delivered).
const MAX_AGE_MS: i64 = 8 * 86_400_000;
/// Nor one from further ahead than this (clocks differ a little).
const MAX_AHEAD_MS: i64 = 5 * 60_000;
const DOMAIN: &[u8] = b"agentbus relay item signature v1";

/// This instance's key pair and the name it signs as.
pub struct InstanceKey {
    pair: Ed25519KeyPair,
    name: String,
}

impl std::fmt::Debug for InstanceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceKey")
            .field("name", &self.name)
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl InstanceKey {
    /// The key of `data_dir`, made (and written 0600) on first use.
    pub fn load_or_create(data_dir: &Path, name: &str) -> Result<InstanceKey, DaemonError> {
        let path = data_dir.join(KEY_FILE);
        let bad = |why: String| DaemonError::Invalid(format!("{}: {why}", path.display()));
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| bad("could not make a key pair".into()))?;
                write_private_file(&path, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
            Err(e) => return Err(bad(format!("cannot read it: {e}"))),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
            bad(format!(
                "not an Ed25519 key ({e}); move it away to make a new one (peers that trust the old key must trust the new one)"
            ))
        })?;
        Ok(InstanceKey {
            pair,
            name: name.to_string(),
        })
    }

    /// The key of the instance whose data dir is `data_dir`, signing as
    /// `[relay] instance_name`, else as its instance id (`ab-...`).
    pub fn of_instance(
        data_dir: &Path,
        relay: &crate::config::RelayConfig,
    ) -> Result<InstanceKey, DaemonError> {
        let name = match &relay.instance_name {
            Some(n) => n.clone(),
            None => crate::poller::instance_id(data_dir)?,
        };
        InstanceKey::load_or_create(data_dir, &name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public key, base64: what a peer passes to `agentbus trust add`.
    pub fn public(&self) -> String {
        B64.encode(self.pair.public_key().as_ref())
    }

    pub fn key_id(&self) -> String {
        key_id(self.pair.public_key().as_ref())
    }

    /// Signs `item` as this instance, now.
    pub fn sign(&self, item: &RelaySend) -> SenderSignature {
        let at_ms = agentbus_proto::now_ms();
        let bytes = signed_bytes(&Item::of_send(item), &self.name, at_ms);
        SenderSignature {
            instance: self.name.clone(),
            key: self.public(),
            at_ms,
            sig: B64.encode(self.pair.sign(&bytes).as_ref()),
        }
    }
}

/// A short id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// What is signed of an item.
struct Item<'a> {
    id: String,
    kind: String,
    from: &'a str,
    to: &'a str,
    body: &'a str,
    tier: String,
    priority: String,
    thread_id: String,
    reply_to: String,
}

fn wire<T: Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_default()
}

impl<'a> Item<'a> {
    fn of_send(s: &'a RelaySend) -> Self {
        Item {
            id: s.id.to_string(),
            kind: wire(&Some(s.kind)),
            from: &s.from,
            to: s.to.as_str(),
            body: &s.body,
            tier: wire(&s.tier),
            priority: wire(&s.priority),
            thread_id: wire(&s.thread_id),
            reply_to: wire(&s.reply_to),
        }
    }

    fn of_envelope(e: &'a RelayEnvelope) -> Self {
        Item {
            id: e.id.to_string(),
            kind: wire(&Some(e.kind)),
            from: &e.from,
            to: &e.to,
            body: &e.body,
            tier: wire(&e.tier),
            priority: wire(&e.priority),
            thread_id: wire(&e.thread_id),
            reply_to: wire(&e.reply_to),
        }
    }
}

/// The bytes signed: a domain string, then each field as a 4-byte
/// big-endian length and its bytes (so no field can run into the next),
/// the body as its SHA-256.
fn signed_bytes(item: &Item<'_>, instance: &str, at_ms: i64) -> Vec<u8> {
    let digest = Sha256::digest(item.body.as_bytes());
    let at = at_ms.to_string();
    let fields: [&[u8]; 11] = [
        instance.as_bytes(),
        at.as_bytes(),
        item.id.as_bytes(),
        item.kind.as_bytes(),
        item.from.as_bytes(),
        item.to.as_bytes(),
        &digest,
        item.tier.as_bytes(),
        item.priority.as_bytes(),
        item.thread_id.as_bytes(),
        item.reply_to.as_bytes(),
    ];
    let mut out = DOMAIN.to_vec();
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// One instance this daemon trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trusted {
    /// The public key, base64.
    pub key: String,
    pub added_ms: i64,
    /// Pinned on first sight (`relay.pin_first_key`), not added by hand.
    #[serde(default)]
    pub pinned: bool,
}

/// The instances trusted here, by name, as kept in the data dir.
#[derive(Debug)]
pub struct TrustStore {
    path: PathBuf,
    /// Serializes this process's read-modify-writes of the file.
    write: Mutex<()>,
    /// The list as last read, and the file it was read from (inode,
    /// size, mtime): read again only when the file changed (every write
    /// replaces it), not for every relayed item.
    cache: Mutex<Option<(FileStamp, Arc<TrustList>)>>,
}

/// Trusted instances by name.
pub type TrustList = BTreeMap<String, Trusted>;

type FileStamp = (u64, u64, Option<std::time::SystemTime>);

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.ino(), m.len(), m.modified().ok()))
}

/// Checks a public key given in base64; its raw bytes.
pub fn parse_public(key: &str) -> Result<Vec<u8>, String> {
    let raw = B64
        .decode(key.trim())
        .map_err(|e| format!("the key is not base64 ({e})"))?;
    if raw.len() != 32 {
        return Err(format!(
            "an Ed25519 public key is 32 bytes; this one is {}",
            raw.len()
        ));
    }
    Ok(raw)
}

impl TrustStore {
    pub fn new(data_dir: &Path) -> TrustStore {
        TrustStore {
            path: data_dir.join(TRUST_FILE),
            write: Mutex::new(()),
            cache: Mutex::new(None),
        }
    }

    /// Everything trusted; an absent file is an empty list.
    pub fn load(&self) -> Result<BTreeMap<String, Trusted>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not valid: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// What is trusted now, from the cache while the file is unchanged.
    pub fn current(&self) -> Result<Arc<TrustList>, String> {
        let now = match stamp(&self.path) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let mut cache = lock(&self.cache);
        if let (Some(now), Some((seen, all))) = (now, cache.as_ref())
            && *seen == now
        {
            return Ok(all.clone());
        }
        let all = Arc::new(self.load()?);
        // Stamped after the read: a change in between is read next time.
        *cache = now.map(|s| (s, all.clone()));
        Ok(all)
    }

    fn save(&self, all: &BTreeMap<String, Trusted>) -> Result<(), String> {
        let json = serde_json::to_vec_pretty(all).map_err(|e| e.to_string())?;
        write_private_file(&self.path, &json).map_err(|e| e.to_string())
    }

    /// Trusts `key` for `name` (replacing what was trusted for it).
    pub fn add(&self, name: &str, key: &str, pinned: bool) -> Result<Trusted, String> {
        if !instance_name_ok(name) {
            return Err(format!(
                "instance name {} must be 1-64 of A-Z a-z 0-9 _ - .",
                agentbus_proto::ids::escape_for_display(name, 80)
            ));
        }
        let raw = parse_public(key)?;
        let _w = lock(&self.write);
        let mut all = self.load()?;
        let entry = Trusted {
            key: B64.encode(raw),
            added_ms: agentbus_proto::now_ms(),
            pinned,
        };
        all.insert(name.to_string(), entry.clone());
        self.save(&all)?;
        Ok(entry)
    }

    /// Stops trusting `name`; whether it was trusted.
    pub fn remove(&self, name: &str) -> Result<bool, String> {
        let _w = lock(&self.write);
        let mut all = self.load()?;
        let had = all.remove(name).is_some();
        if had {
            self.save(&all)?;
        }
        Ok(had)
    }
}

/// What a relayed item's signature says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No signature.
    Unsigned,
    /// Signed with the key trusted for this name.
    Signed(String),
    /// Signed correctly, by a name not trusted here.
    Untrusted(String),
    /// Not to be delivered; why.
    Refused(String),
    /// Cannot be decided now (the trust list cannot be read or written):
    /// left at the relay, tried again later.
    Later(String),
}

impl Verdict {
    /// The trust to write for a sender the relay did or did not verify.
    pub fn trust(&self, relay_verified: bool) -> Trust {
        match self {
            Verdict::Signed(name) => Trust::Signed(name.clone()),
            _ if relay_verified => Trust::ChannelVerified,
            _ => Trust::NetworkClaimed,
        }
    }
}

/// How a daemon treats signatures (`[relay]` in the config).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Trust the first key seen for a name not yet trusted.
    pub pin_first_key: bool,
    /// Refuse items that carry no signature.
    pub require_signed: bool,
}

/// Verifies `env`'s signature against `store`.
pub fn verify(env: &RelayEnvelope, store: &TrustStore, policy: Policy) -> Verdict {
    let Some(sig) = &env.signature else {
        return if policy.require_signed {
            Verdict::Refused("unsigned, and relay.require_signed is on".into())
        } else {
            Verdict::Unsigned
        };
    };
    if !instance_name_ok(&sig.instance) {
        return Verdict::Refused("the signature names no valid instance".into());
    }
    let Ok(public) = parse_public(&sig.key) else {
        return Verdict::Refused("the signature's key is not an Ed25519 public key".into());
    };
    let Ok(raw_sig) = B64.decode(&sig.sig) else {
        return Verdict::Refused("the signature is not base64".into());
    };
    let now = agentbus_proto::now_ms();
    if sig.at_ms < now - MAX_AGE_MS || sig.at_ms > now + MAX_AHEAD_MS {
        return Verdict::Refused(format!(
            "signed at {} ms, outside the accepted window",
            sig.at_ms
        ));
    }
    let bytes = signed_bytes(&Item::of_envelope(env), &sig.instance, sig.at_ms);
    if UnparsedPublicKey::new(&ED25519, &public)
        .verify(&bytes, &raw_sig)
        .is_err()
    {
        return Verdict::Refused(format!(
            "the signature of {} (key {}) does not match the item: changed on the way",
            sig.instance,
            key_id(&public)
        ));
    }
    let all = match store.current() {
        Ok(all) => all,
        Err(e) => return Verdict::Later(format!("the trust list cannot be read: {e}")),
    };
    match all.get(&sig.instance) {
        Some(t) if parse_public(&t.key).is_ok_and(|k| k == public) => {
            Verdict::Signed(sig.instance.clone())
        }
        Some(t) => Verdict::Refused(format!(
            "signed by key {} but {} is trusted with key {}",
            key_id(&public),
            sig.instance,
            parse_public(&t.key)
                .map(|k| key_id(&k))
                .unwrap_or_else(|_| "?".into())
        )),
        None if policy.pin_first_key => match store.add(&sig.instance, &sig.key, true) {
            Ok(_) => {
                tracing::info!(instance = %sig.instance, key_id = %key_id(&public), "pinned the first key seen for an instance");
                Verdict::Signed(sig.instance.clone())
            }
            Err(e) => Verdict::Later(format!("could not pin the key: {e}")),
        },
        None => Verdict::Untrusted(sig.instance.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentbus_proto::relay::RelayKind;
    use agentbus_proto::{AgentId, MessageId};

    fn send() -> RelaySend {
        RelaySend {
            id: MessageId::new(),
            from: "alice".into(),
            to: AgentId::parse("bob").unwrap(),
            kind: RelayKind::Jekt,
            body: "hello".into(),
            thread_id: None,
            reply_to: None,
            tier: None,
            priority: None,
            origin_trust: None,
            signature: None,
        }
    }

    fn envelope(s: &RelaySend) -> RelayEnvelope {
        RelayEnvelope {
            id: s.id,
            seq: 1,
            ts: 1.0,
            channel: "default".into(),
            from: s.from.clone(),
            to: s.to.to_string(),
            kind: s.kind,
            body: s.body.clone(),
            thread_id: s.thread_id.clone(),
            reply_to: s.reply_to,
            tier: s.tier,
            priority: s.priority,
            sender_verified: false,
            signature: s.signature.clone(),
        }
    }

    #[test]
    fn a_signed_item_verifies_and_any_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstanceKey::load_or_create(dir.path(), "laptop").unwrap();
        let again = InstanceKey::load_or_create(dir.path(), "laptop").unwrap();
        assert_eq!(key.public(), again.public(), "kept across restarts");
        let store = TrustStore::new(dir.path());
        let mut s = send();
        s.signature = Some(key.sign(&s));
        let env = envelope(&s);
        let policy = Policy::default();
        assert_eq!(
            verify(&env, &store, policy),
            Verdict::Untrusted("laptop".into())
        );
        store.add("laptop", &key.public(), false).unwrap();
        assert_eq!(
            verify(&env, &store, policy),
            Verdict::Signed("laptop".into())
        );
        type Change = fn(&mut RelayEnvelope);
        let changes: [(&str, Change); 8] = [
            ("body", |e| e.body.push('!')),
            ("from", |e| e.from = "mallory".into()),
            ("to", |e| e.to = "carol".into()),
            ("id", |e| e.id = MessageId::new()),
            ("kind", |e| e.kind = RelayKind::Message),
            ("priority", |e| {
                e.priority = Some(agentbus_proto::jekt::Priority::Urgent)
            }),
            ("instance", |e| {
                e.signature.as_mut().unwrap().instance = "desk".into()
            }),
            ("time", |e| e.signature.as_mut().unwrap().at_ms -= 1),
        ];
        for (what, change) in changes {
            let mut bad = env.clone();
            change(&mut bad);
            assert!(
                matches!(verify(&bad, &store, policy), Verdict::Refused(_)),
                "changed {what}"
            );
        }
        // Another key under a trusted name: refused, not delivered.
        let other_dir = tempfile::tempdir().unwrap();
        let other = InstanceKey::load_or_create(other_dir.path(), "laptop").unwrap();
        let mut forged = send();
        forged.signature = Some(other.sign(&forged));
        let why = verify(&envelope(&forged), &store, policy);
        assert!(
            matches!(&why, Verdict::Refused(w) if w.contains("is trusted with key")),
            "{why:?}"
        );
    }

    #[test]
    fn pinning_and_requiring_are_opt_in() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstanceKey::load_or_create(dir.path(), "desk").unwrap();
        let store = TrustStore::new(dir.path());
        let mut s = send();
        let unsigned = envelope(&s);
        assert_eq!(
            verify(&unsigned, &store, Policy::default()),
            Verdict::Unsigned
        );
        let strict = Policy {
            require_signed: true,
            ..Policy::default()
        };
        assert!(matches!(
            verify(&unsigned, &store, strict),
            Verdict::Refused(_)
        ));
        s.signature = Some(key.sign(&s));
        let pin = Policy {
            pin_first_key: true,
            ..Policy::default()
        };
        assert_eq!(
            verify(&envelope(&s), &store, pin),
            Verdict::Signed("desk".into())
        );
        assert!(store.load().unwrap()["desk"].pinned);
    }

    #[test]
    fn trust_entries_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        for (name, key) in [
            ("bad name", "AAAA"),
            ("ok", "not base64!"),
            ("ok", "AAAA"),
            (
                "x\u{1b}[31m",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
        ] {
            assert!(store.add(name, key, false).is_err(), "{name} {key}");
        }
        let key = B64.encode([7u8; 32]);
        store.add("desk.home", &key, false).unwrap();
        assert_eq!(store.load().unwrap()["desk.home"].key, key);
        assert!(store.remove("desk.home").unwrap());
        assert!(!store.remove("desk.home").unwrap());
    }

    #[test]
    fn the_daemon_sees_what_another_process_changed_in_the_trust_list() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = TrustStore::new(dir.path());
        let cli = TrustStore::new(dir.path());
        assert!(daemon.current().unwrap().is_empty());
        let key = B64.encode([9u8; 32]);
        cli.add("laptop", &key, false).unwrap();
        assert_eq!(daemon.current().unwrap()["laptop"].key, key);
        assert_eq!(daemon.current().unwrap()["laptop"].key, key);
        cli.remove("laptop").unwrap();
        assert!(daemon.current().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_trust_list_leaves_items_for_later_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = InstanceKey::load_or_create(dir.path(), "desk").unwrap();
        let store = TrustStore::new(dir.path());
        std::fs::write(dir.path().join(TRUST_FILE), "{not json").unwrap();
        let mut s = send();
        s.signature = Some(key.sign(&s));
        assert!(matches!(
            verify(&envelope(&s), &store, Policy::default()),
            Verdict::Later(_)
        ));
    }
}
