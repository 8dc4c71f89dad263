//! Wire types shared by every agentbus component: validated ids, the jekt
//! sanitizer and marker, HTTP request/response bodies, events, and the
//! Prometheus text format of `/metrics`.
//!
//! Nothing here does I/O or depends on an async runtime, so the rules that
//! keep a terminal safe (what a jekt body may contain, what the marker looks
//! like) can be tested and fuzzed on their own.

pub mod api;
pub mod event;
pub mod ids;
pub mod jekt;
pub mod metrics;
pub mod relay;
pub mod sync;

pub use ids::{AgentId, BlockId, IdError, MessageId, RequestId, ThreadId};

/// Version of the HTTP API under `/v1`. Bumped only on a breaking change.
pub const API_VERSION: &str = "v1";

/// Milliseconds since the Unix epoch, the one time unit on the wire.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The committed seed inputs of fuzz target `target` (`fuzz/seeds/`), for
/// the tests that replay them. Panics (a test's failure) when there are
/// fewer than five.
#[doc(hidden)]
pub fn fuzz_seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = format!("{}/../../fuzz/seeds/{target}", env!("CARGO_MANIFEST_DIR"));
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|f| std::fs::read(f.path()).unwrap_or_default())
        .collect();
    assert!(seeds.len() >= 5, "{dir} holds {} seeds", seeds.len());
    seeds
}
