//! Dashboard logins: one-time links and the sessions they open.
//!
//! `agentbus ui` asks the daemon (with the instance key) for a login
//! link. Following it once trades the link's code for a session: a
//! random secret held by the browser in an HttpOnly cookie, and a CSRF
//! token the page reads from `/ui/session` and sends back on every
//! request that changes something. Both secrets are kept here only as
//! SHA-256 digests; a code works once, before it expires; a session
//! ends at its expiry, at logout, or for all at once with
//! `agentbus ui --logout-all`. Everything is in memory: a restarted
//! daemon (which also has a new instance key) starts with no session.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use subtle::ConstantTimeEq;

/// Most login links waiting at once; minting another forgets the oldest.
const MAX_LINKS: usize = 32;
/// Most live sessions; a new login ends the oldest beyond this.
const MAX_SESSIONS: usize = 128;

/// A dashboard session, as the daemon knows it (no secret in it but the
/// CSRF token, which the page is given anyway).
#[derive(Debug, Clone)]
pub struct Session {
    /// A short name for the audit log (`ui:<id>`); not a credential.
    pub id: String,
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

impl Session {
    /// Whether `presented` is this session's CSRF token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(digest(presented).ct_eq(&digest(&self.csrf)))
    }
}

#[derive(Default)]
struct Book {
    /// code digest → expiry (ms)
    links: HashMap<[u8; 32], i64>,
    /// cookie secret digest → session
    sessions: HashMap<[u8; 32], Session>,
}

#[derive(Default)]
pub struct UiSessions {
    book: Mutex<Book>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl UiSessions {
    /// A new one-time login code, valid until `expires_ms`.
    pub fn new_link(&self, now_ms: i64, expires_ms: i64) -> String {
        let code = crate::auth::new_secret();
        let mut book = agentbus_proto::sync::lock(&self.book);
        book.links.retain(|_, exp| *exp > now_ms);
        while book.links.len() >= MAX_LINKS {
            let oldest = book
                .links
                .iter()
                .min_by_key(|(_, exp)| **exp)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => book.links.remove(&k),
                None => break,
            };
        }
        book.links.insert(digest(&code), expires_ms);
        code
    }

    /// Trades a login code for a session (the cookie secret and the
    /// session); `None` if the code is unknown, used or expired.
    pub fn redeem(&self, code: &str, now_ms: i64, ttl_ms: i64) -> Option<(String, Session)> {
        let mut book = agentbus_proto::sync::lock(&self.book);
        let expires = book.links.remove(&digest(code))?;
        if expires <= now_ms {
            return None;
        }
        book.sessions.retain(|_, s| s.expires_ms > now_ms);
        while book.sessions.len() >= MAX_SESSIONS {
            let oldest = book
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created_ms)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => book.sessions.remove(&k),
                None => break,
            };
        }
        let secret = crate::auth::new_secret();
        let session = Session {
            id: crate::auth::new_secret()[..12].to_string(),
            csrf: crate::auth::new_secret(),
            created_ms: now_ms,
            expires_ms: now_ms + ttl_ms,
        };
        book.sessions.insert(digest(&secret), session.clone());
        Some((secret, session))
    }

    /// The live session a cookie secret opens.
    pub fn session(&self, secret: &str, now_ms: i64) -> Option<Session> {
        let mut book = agentbus_proto::sync::lock(&self.book);
        let key = digest(secret);
        match book.sessions.get(&key) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                book.sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// The live session with this id.
    pub fn by_id(&self, id: &str, now_ms: i64) -> Option<Session> {
        agentbus_proto::sync::lock(&self.book)
            .sessions
            .values()
            .find(|s| s.id == id && s.expires_ms > now_ms)
            .cloned()
    }

    /// Ends the session with this id.
    pub fn end(&self, id: &str) {
        agentbus_proto::sync::lock(&self.book)
            .sessions
            .retain(|_, s| s.id != id);
    }

    /// Ends every session and forgets every waiting link; how many
    /// sessions were live.
    pub fn end_all(&self, now_ms: i64) -> usize {
        let mut book = agentbus_proto::sync::lock(&self.book);
        let live = book
            .sessions
            .values()
            .filter(|s| s.expires_ms > now_ms)
            .count();
        book.sessions.clear();
        book.links.clear();
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_one_session_once_before_it_expires() {
        let s = UiSessions::default();
        let code = s.new_link(1_000, 2_000);
        assert!(s.redeem("not-the-code", 1_100, 10_000).is_none());
        let (secret, session) = s.redeem(&code, 1_100, 10_000).unwrap();
        assert!(s.redeem(&code, 1_200, 10_000).is_none(), "used twice");
        assert_eq!(s.session(&secret, 5_000).unwrap().id, session.id);
        assert!(s.session(&secret, 11_100).is_none(), "expired");
        assert!(
            s.session(&secret, 5_000).is_none(),
            "an expired session is gone"
        );
        let late = s.new_link(1_000, 2_000);
        assert!(s.redeem(&late, 2_000, 10_000).is_none(), "link expired");
    }

    #[test]
    fn sessions_end_alone_or_all_together() {
        let s = UiSessions::default();
        let (a, sa) = s.redeem(&s.new_link(0, 100), 1, 1_000).unwrap();
        let (b, _) = s.redeem(&s.new_link(0, 100), 1, 1_000).unwrap();
        assert!(sa.csrf_matches(&sa.csrf) && !sa.csrf_matches("x"));
        s.end(&sa.id);
        assert!(s.session(&a, 2).is_none());
        assert!(s.session(&b, 2).is_some());
        let pending = s.new_link(2, 100);
        assert_eq!(s.end_all(2), 1);
        assert!(s.session(&b, 3).is_none());
        assert!(s.redeem(&pending, 3, 1_000).is_none(), "links go too");
    }

    #[test]
    fn links_and_sessions_are_bounded() {
        let s = UiSessions::default();
        let first = s.new_link(0, 1_000);
        for i in 0..MAX_LINKS {
            s.new_link(0, 1_001 + i as i64);
        }
        assert!(
            s.redeem(&first, 1, 1_000).is_none(),
            "the oldest link was forgotten"
        );
        let mut secrets = Vec::new();
        for _ in 0..MAX_SESSIONS + 5 {
            let code = s.new_link(1, 1_000);
            secrets.push(s.redeem(&code, 2, 1_000).unwrap().0);
        }
        let live = secrets.iter().filter(|c| s.session(c, 3).is_some()).count();
        assert_eq!(live, MAX_SESSIONS);
    }
}
