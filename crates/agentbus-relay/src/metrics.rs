//! Counters for `/metrics`, in the Prometheus text format (the writer
//! and the atomics are `agentbus_proto::metrics`, shared with the daemon).

use agentbus_proto::metrics::{Counter, Gauge, Histogram, Kind, LATENCY_BUCKETS, Text};

pub struct Metrics {
    pub sends: Counter,
    pub refused_full: Counter,
    pub recvs: Counter,
    pub polls: Counter,
    pub acks: Counter,
    pub unauthorized: Counter,
    /// Long-polls (agent-bus `recv?block=true` and extension polls) waiting now.
    pub waiting: Gauge,
    /// How long the storage took to answer a send (stored, a duplicate,
    /// or a full queue): SQLite's commit, or JetStream's acknowledgement
    /// and this node's index.
    pub append_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            sends: Counter::default(),
            refused_full: Counter::default(),
            recvs: Counter::default(),
            polls: Counter::default(),
            acks: Counter::default(),
            unauthorized: Counter::default(),
            waiting: Gauge::default(),
            append_seconds: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl Metrics {
    pub fn render(&self, stored: Option<u64>) -> String {
        let mut t = Text::new();
        for (name, help, value) in [
            (
                "agentbus_relay_sends_total",
                "Messages accepted.",
                &self.sends,
            ),
            (
                "agentbus_relay_refused_full_total",
                "Sends refused because a queue was full.",
                &self.refused_full,
            ),
            (
                "agentbus_relay_recv_total",
                "Agent-bus recv requests.",
                &self.recvs,
            ),
            (
                "agentbus_relay_polls_total",
                "Extension polls.",
                &self.polls,
            ),
            ("agentbus_relay_acks_total", "Extension acks.", &self.acks),
            (
                "agentbus_relay_unauthorized_total",
                "Requests refused for a missing or unknown token.",
                &self.unauthorized,
            ),
        ] {
            t.single(name, Kind::Counter, help, value.get());
        }
        t.single(
            "agentbus_relay_waiting",
            Kind::Gauge,
            "Long-polls waiting now.",
            self.waiting.get(),
        );
        t.histogram(
            "agentbus_relay_append_duration_seconds",
            "Sends answered by the storage (stored, duplicate or queue full): SQLite's commit, or JetStream's acknowledgement and this node's index.",
            &self.append_seconds,
        );
        if let Some(n) = stored {
            t.single(
                "agentbus_relay_messages_stored",
                Kind::Gauge,
                "Messages stored.",
                n,
            );
        }
        t.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_and_gauge_is_rendered() {
        let m = Metrics::default();
        let _waiting = m.waiting.hold();
        m.sends.inc();
        m.append_seconds
            .observe(std::time::Duration::from_millis(3));
        let text = m.render(Some(7));
        assert!(text.contains(
            "# HELP agentbus_relay_sends_total Messages accepted.\n\
             # TYPE agentbus_relay_sends_total counter\nagentbus_relay_sends_total 1\n"
        ));
        assert!(text.contains("# TYPE agentbus_relay_waiting gauge\nagentbus_relay_waiting 1\n"));
        assert!(text.contains("agentbus_relay_messages_stored 7\n"));
        assert!(text.contains("# TYPE agentbus_relay_append_duration_seconds histogram\n"));
        assert!(text.contains("agentbus_relay_append_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("agentbus_relay_append_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("agentbus_relay_append_duration_seconds_count 1\n"));
        assert!(!m.render(None).contains("agentbus_relay_messages_stored"));
    }
}
