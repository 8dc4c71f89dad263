//! Rate limits and storm protection for jekts and messages.
//!
//! Two limits, both per sender identity:
//! - a **token bucket** (`limits.sender_per_s`, burst `limits.sender_burst`)
//!   bounds how fast one sender sends at all;
//! - a **pair window** (`limits.pair_per_minute` in any 60 s) bounds one
//!   sender → one target, which stops two agents that answer each other
//!   from ping-ponging forever, while each can still talk to others.
//!
//! A send is allowed only if both allow it, and only then is it counted.
//! A refusal says how long to wait (`Retry-After`).

use crate::config::LimitsConfig;
use agentbus_proto::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Seconds until a retry can succeed (at least 1).
    pub retry_after_s: u64,
    pub reason: String,
}

/// 429 `rate_limited` with `Retry-After`.
impl From<Refusal> for crate::error::ApiError {
    fn from(r: Refusal) -> Self {
        let mut e = Self::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            r.reason,
        );
        e.retry_after_s = Some(r.retry_after_s);
        e
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Refills for the time passed; if no whole token is left, how long
    /// until one is.
    fn refill(&mut self, now: Instant, per_s: f64, burst: f64) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_s).min(burst);
        self.at = now;
        (self.tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - self.tokens) / per_s))
    }

    fn is_full_at(&self, now: Instant, per_s: f64, burst: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_s >= burst
    }
}

#[derive(Default)]
struct State {
    buckets: HashMap<String, Bucket>,
    pairs: HashMap<(String, String), VecDeque<Instant>>,
    /// App API calls, per token.
    calls: HashMap<String, Bucket>,
}

pub struct Limiter {
    config: LimitsConfig,
    /// App API calls per second and burst, per token.
    calls: (f64, f64),
    // A std mutex: each check is a few map operations, never awaited.
    state: Mutex<State>,
}

fn ceil_secs(d: Duration) -> u64 {
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

impl Limiter {
    pub fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            calls: (20.0, 40.0),
            state: Mutex::new(State::default()),
        }
    }

    /// Sets the App API's per-token call rate and burst.
    pub fn with_call_rate(mut self, per_s: f64, burst: f64) -> Self {
        self.calls = (per_s, burst);
        self
    }

    /// Counts `n` App API calls of token `key` (a frame: one call or a
    /// batch), or refuses them all.
    pub fn check_calls(&self, key: &str, n: u32) -> Result<(), Refusal> {
        let (per_s, burst) = self.calls;
        let now = Instant::now();
        let n = f64::from(n);
        if n > burst {
            return Err(Refusal {
                retry_after_s: 1,
                reason: format!("a frame of {n} calls is more than this token's burst of {burst}"),
            });
        }
        let mut st = lock(&self.state);
        let bucket = st
            .calls
            .entry(key.to_string())
            .or_insert_with(|| Bucket::full(burst, now));
        bucket.refill(now, per_s, burst);
        if bucket.tokens < n {
            let wait = Duration::from_secs_f64((n - bucket.tokens) / per_s);
            return Err(Refusal {
                retry_after_s: ceil_secs(wait),
                reason: format!(
                    "this token is calling faster than {per_s} per second (burst {burst})"
                ),
            });
        }
        bucket.tokens -= n;
        Ok(())
    }

    /// Counts one send from `sender` to `target`, or refuses it.
    pub fn check(&self, sender: &str, target: &str) -> Result<(), Refusal> {
        self.check_at(sender, target, Instant::now())
    }

    fn check_at(&self, sender: &str, target: &str, now: Instant) -> Result<(), Refusal> {
        let c = &self.config;
        let mut st = lock(&self.state);
        let bucket = st
            .buckets
            .entry(sender.to_string())
            .or_insert_with(|| Bucket::full(c.sender_burst, now));
        if let Some(wait) = bucket.refill(now, c.sender_per_s, c.sender_burst) {
            return Err(Refusal {
                retry_after_s: ceil_secs(wait),
                reason: format!(
                    "{sender} is sending faster than {} per second (burst {})",
                    c.sender_per_s, c.sender_burst
                ),
            });
        }
        let window = st
            .pairs
            .entry((sender.to_string(), target.to_string()))
            .or_default();
        while window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            window.pop_front();
        }
        if window.len() >= c.pair_per_minute as usize {
            let oldest = window.front().copied().unwrap_or(now);
            let wait = WINDOW.saturating_sub(now.saturating_duration_since(oldest));
            return Err(Refusal {
                retry_after_s: ceil_secs(wait),
                reason: format!(
                    "{sender} has sent {} jekts or messages to {target} in the last minute (the limit); \
                     two agents answering each other is the usual cause",
                    window.len()
                ),
            });
        }
        window.push_back(now);
        if let Some(b) = st.buckets.get_mut(sender) {
            b.tokens -= 1.0;
        }
        Ok(())
    }

    /// Forgets senders whose bucket is full and pairs with no recent send.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let (rate, burst) = (self.config.sender_per_s, self.config.sender_burst);
        st.buckets.retain(|_, b| !b.is_full_at(now, rate, burst));
        let (rate, burst) = self.calls;
        st.calls.retain(|_, b| !b.is_full_at(now, rate, burst));
        st.pairs.retain(|_, w| {
            w.back()
                .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
        });
    }

    pub fn tracked(&self) -> (usize, usize) {
        let s = lock(&self.state);
        (s.buckets.len(), s.pairs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_s: f64, burst: f64, pair: u32) -> Limiter {
        Limiter::new(LimitsConfig {
            sender_per_s: per_s,
            sender_burst: burst,
            pair_per_minute: pair,
            ..Default::default()
        })
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = limiter(10.0, 3.0, 1000);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.check_at("a", &format!("t{i}"), t0).is_ok());
        }
        let r = l.check_at("a", "t9", t0).unwrap_err();
        assert_eq!(r.retry_after_s, 1);
        // 100 ms later one token is back.
        assert!(
            l.check_at("a", "t9", t0 + Duration::from_millis(100))
                .is_ok()
        );
        // Another sender has its own bucket.
        assert!(l.check_at("b", "t0", t0).is_ok());
    }

    #[test]
    fn the_pair_window_stops_a_ping_pong_but_not_other_targets() {
        let l = limiter(1000.0, 1000.0, 30);
        let t0 = Instant::now();
        for i in 0..30 {
            assert!(l.check_at("a", "b", t0 + Duration::from_millis(i)).is_ok());
        }
        let r = l
            .check_at("a", "b", t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(r.retry_after_s, 50, "{r:?}");
        assert!(r.reason.contains("answering each other"));
        assert!(l.check_at("a", "c", t0 + Duration::from_secs(10)).is_ok());
        assert!(l.check_at("b", "a", t0 + Duration::from_secs(10)).is_ok());
        // A minute after the first, the window has room again.
        assert!(l.check_at("a", "b", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn a_refused_send_is_not_counted() {
        let l = limiter(1000.0, 1000.0, 1);
        let t0 = Instant::now();
        assert!(l.check_at("a", "b", t0).is_ok());
        for _ in 0..5 {
            assert!(l.check_at("a", "b", t0).is_err());
        }
        assert!(l.check_at("a", "b", t0 + WINDOW).is_ok());
    }
}
