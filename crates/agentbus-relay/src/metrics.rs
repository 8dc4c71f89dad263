//! Counters for `/metrics`, in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge raised while a guard lives.
#[derive(Default)]
pub struct Gauge(AtomicU64);

pub struct Held<'a>(&'a Gauge);

impl Gauge {
    pub fn hold(&self) -> Held<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Held(self)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Metrics {
    pub sends: Counter,
    pub refused_full: Counter,
    pub recvs: Counter,
    pub polls: Counter,
    pub acks: Counter,
    pub unauthorized: Counter,
    /// Long-polls (agent-bus `recv?block=true` and extension polls) waiting now.
    pub waiting: Gauge,
}

impl Metrics {
    pub fn render(&self, stored: Option<u64>) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "agentbus_relay_sends_total",
            "counter",
            "Messages accepted.",
            self.sends.get(),
        );
        line(
            "agentbus_relay_refused_full_total",
            "counter",
            "Sends refused because a queue was full.",
            self.refused_full.get(),
        );
        line(
            "agentbus_relay_recv_total",
            "counter",
            "Agent-bus recv requests.",
            self.recvs.get(),
        );
        line(
            "agentbus_relay_polls_total",
            "counter",
            "Extension polls.",
            self.polls.get(),
        );
        line(
            "agentbus_relay_acks_total",
            "counter",
            "Extension acks.",
            self.acks.get(),
        );
        line(
            "agentbus_relay_unauthorized_total",
            "counter",
            "Requests refused for a missing or unknown token.",
            self.unauthorized.get(),
        );
        line(
            "agentbus_relay_waiting",
            "gauge",
            "Long-polls waiting now.",
            self.waiting.get(),
        );
        if let Some(n) = stored {
            line(
                "agentbus_relay_messages_stored",
                "gauge",
                "Messages stored.",
                n,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_falls_when_its_guard_goes() {
        let m = Metrics::default();
        {
            let _a = m.waiting.hold();
            let _b = m.waiting.hold();
            assert_eq!(m.waiting.get(), 2);
        }
        assert_eq!(m.waiting.get(), 0);
        m.sends.inc();
        let text = m.render(Some(7));
        assert!(text.contains("agentbus_relay_sends_total 1\n"));
        assert!(text.contains("# TYPE agentbus_relay_waiting gauge\nagentbus_relay_waiting 0\n"));
        assert!(text.contains("agentbus_relay_messages_stored 7\n"));
    }
}
