//! Metrics in the Prometheus text exposition format (version 0.0.4), for
//! the daemon's and the relay's `/metrics`: lock-free counters, gauges
//! and duration histograms, and [`Text`], the writer that renders them.
//!
//! Everything here is an atomic, so recording costs one relaxed add and
//! no lock; the work is done when a scrape renders. Label values are
//! written as given (escaped), so callers pass only values from bounded
//! sets of their own, never text a user chose.

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge raised while a guard lives (long-polls waiting, say).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

/// Holds a [`Gauge`] one higher until dropped.
#[derive(Debug)]
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

/// A histogram of durations, in seconds, over fixed bucket bounds.
///
/// Each observation lands in one bucket (the first bound it does not
/// pass, or the overflow past the last); a scrape adds them up into the
/// cumulative `le` buckets, and `_count` is that same sum, so `+Inf` and
/// `_count` always agree even while observations race the scrape.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then the overflow.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// Bounds for latencies from half a millisecond to five seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

impl Histogram {
    /// A histogram over `bounds`, which must rise strictly.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must rise strictly"
        );
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// The type a metric family declares.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A `/metrics` page being written: families one after another, each
/// its `# HELP` and `# TYPE` lines, then its samples.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    pub fn new() -> Text {
        Text::default()
    }

    /// Starts family `name`. Counters are named `..._total`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(
            !matches!(kind, Kind::Counter) || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
        self
    }

    /// One sample of the family being written.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family of one sample with no labels.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// A family with one label: a sample for each `(label value, value)`.
    pub fn by_label<'v>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'v str, u64)>,
    ) -> &mut Self {
        self.family(name, kind, help);
        for (v, n) in values {
            self.sample(name, &[(label, v)], n);
        }
        self
    }

    /// A histogram family: cumulative `_bucket`s up to `+Inf`, `_sum`
    /// (seconds) and `_count`.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        self.family(name, Kind::Histogram, help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, b) in h.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = h.bounds.get(i).map_or("+Inf".to_string(), f64::to_string);
            self.sample(&bucket, &[("le", &le)], cumulative);
        }
        let sum = h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_falls_when_its_guard_goes() {
        let g = Gauge::default();
        {
            let _a = g.hold();
            let _b = g.hold();
            assert_eq!(g.get(), 2);
        }
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_in_its_count() {
        static BOUNDS: &[f64] = &[0.001, 0.01, 1.0];
        let h = Histogram::new(BOUNDS);
        for ms in [0, 1, 5, 5, 2000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut t = Text::new();
        t.histogram("x_seconds", "Test.", &h);
        assert_eq!(
            t.finish(),
            "# HELP x_seconds Test.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{le=\"0.001\"} 2\n\
             x_seconds_bucket{le=\"0.01\"} 4\n\
             x_seconds_bucket{le=\"1\"} 4\n\
             x_seconds_bucket{le=\"+Inf\"} 5\n\
             x_seconds_sum 2.011\n\
             x_seconds_count 5\n"
        );
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let mut t = Text::new();
        t.family("a_total", Kind::Counter, "Line one\nback\\slash.")
            .sample("a_total", &[("k", "q\"uo\\te\nx"), ("o", "ok")], 3);
        assert_eq!(
            t.finish(),
            "# HELP a_total Line one\\nback\\\\slash.\n# TYPE a_total counter\n\
             a_total{k=\"q\\\"uo\\\\te\\nx\",o=\"ok\"} 3\n"
        );
    }
}
