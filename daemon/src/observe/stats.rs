//! `mcpctl stats`: per server and per tool, calls, errors and latency since the daemon started.
//!
//! Latencies go into a log-scale histogram (buckets 10% apart, from 1 µs to hours), so memory
//! is fixed per tool and a percentile is the geometric middle of its bucket: within 5%.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcpd_proto::observe::{CallStats, ServerStats, StatsReport};

/// Bucket `i` holds latencies in [GROWTH^i, GROWTH^(i+1)) microseconds.
const GROWTH: f64 = 1.1;
const BUCKETS: usize = 260;

#[derive(Debug, Clone)]
struct Histogram {
    calls: u64,
    errors: u64,
    max_us: u64,
    counts: Vec<u32>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            calls: 0,
            errors: 0,
            max_us: 0,
            counts: vec![0; BUCKETS],
        }
    }
}

impl Histogram {
    fn add(&mut self, us: u64, error: bool) {
        self.calls += 1;
        self.errors += u64::from(error);
        self.max_us = self.max_us.max(us);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let i = ((us.max(1) as f64).ln() / GROWTH.ln()) as usize;
        let slot = &mut self.counts[i.min(BUCKETS - 1)];
        *slot = slot.saturating_add(1);
    }

    fn merge(&mut self, other: &Self) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.max_us = self.max_us.max(other.max_us);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
    }

    /// The `q` quantile in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total: u64 = self.counts.iter().map(|c| u64::from(*c)).sum();
        if total == 0 {
            return 0.0;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                #[allow(
                    clippy::cast_precision_loss,
                    clippy::cast_possible_wrap,
                    clippy::cast_possible_truncation
                )]
                let middle = GROWTH.powf(i as f64 + 0.5);
                #[allow(clippy::cast_precision_loss)]
                return (middle.min(self.max_us as f64)) / 1000.0;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let max = self.max_us as f64 / 1000.0;
        max
    }

    fn report(&self, name: &str) -> CallStats {
        #[allow(clippy::cast_precision_loss)]
        let max_ms = self.max_us as f64 / 1000.0;
        CallStats {
            name: name.to_owned(),
            calls: self.calls,
            errors: self.errors,
            p50_ms: round(self.quantile_ms(0.50)),
            p90_ms: round(self.quantile_ms(0.90)),
            p99_ms: round(self.quantile_ms(0.99)),
            max_ms: round(max_ms),
        }
    }
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The counters; a `std` mutex held for one map lookup and an increment per request.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    servers: Mutex<BTreeMap<String, BTreeMap<String, Histogram>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            servers: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Stats {
    /// Counts one answered request to `server` (`name`: the tool, prompt or method).
    pub fn add(&self, server: &str, name: &str, took: Duration, error: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let tools = match servers.get_mut(server) {
            Some(tools) => tools,
            None => servers.entry(server.to_owned()).or_default(),
        };
        match tools.get_mut(name) {
            Some(h) => h.add(us, error),
            None => tools.entry(name.to_owned()).or_default().add(us, error),
        }
    }

    /// The report for `mcpctl stats`.
    pub fn report(&self, audit_dropped: u64) -> StatsReport {
        let servers = self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        StatsReport {
            since_start_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            servers: servers
                .iter()
                .map(|(server, tools)| {
                    let mut total = Histogram::default();
                    for h in tools.values() {
                        total.merge(h);
                    }
                    ServerStats {
                        server: server.clone(),
                        total: total.report("(all)"),
                        tools: tools.iter().map(|(name, h)| h.report(name)).collect(),
                    }
                })
                .collect(),
            audit_dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_ten_percent() {
        let stats = Stats::default();
        for ms in 1..=100u64 {
            stats.add("s", "t", Duration::from_millis(ms), ms % 10 == 0);
        }
        let report = stats.report(0);
        let t = &report.servers[0].tools[0];
        assert_eq!((t.calls, t.errors), (100, 10));
        for (got, want) in [(t.p50_ms, 50.0), (t.p90_ms, 90.0), (t.p99_ms, 99.0)] {
            assert!((got - want).abs() / want < 0.1, "{got} vs {want}");
        }
        assert!((t.max_ms - 100.0).abs() < 1e-9);
        assert_eq!(report.servers[0].total.calls, 100);
    }
}
