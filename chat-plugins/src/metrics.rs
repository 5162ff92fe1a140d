//! The chat fabric's metrics, rendered in Prometheus's text format on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (ms) of the delivery latency histogram's buckets.
const LATENCY_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    /// Users announced by the other gateways of a shared cluster.
    pub users_elsewhere: AtomicI64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub ack_timeouts: AtomicU64,
    pub rate_limited: AtomicU64,
    pub slow_disconnects: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Deliveries per bucket (not cumulative; summed when rendered), so recording one is a
    /// single atomic add.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
    /// The plugins' forwarder targets, by name.
    forwarders: std::sync::Mutex<Vec<(String, std::sync::Arc<crate::forward::ForwardMetrics>)>>,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one delivery that took `ms` from the append to the write to the client.
    pub fn observe_delivery(&self, ms: u64) {
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|bound| ms <= *bound) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Hits over lookups of the membership cache (1 when there were none).
    pub fn cache_hit_rate(&self) -> f64 {
        let hits = self.cache_hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.cache_misses.load(Ordering::Relaxed) as f64;
        if total == 0.0 {
            1.0
        } else {
            hits / total
        }
    }

    /// Shows a forwarder target's counters with the rest.
    pub fn register_forwarder(
        &self,
        name: String,
        metrics: std::sync::Arc<crate::forward::ForwardMetrics>,
    ) {
        self.forwarders
            .lock()
            .expect("forwarders lock")
            .push((name, metrics));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "chorus_chat_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "chorus_chat_users_elsewhere",
            "gauge",
            "Users connected to the other gateways of a shared cluster, as announced.",
            self.users_elsewhere.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "chorus_chat_messages_in_total",
            "counter",
            "Messages accepted from clients.",
            load(&self.messages_in).to_string(),
        );
        metric(
            "chorus_chat_messages_out_total",
            "counter",
            "Frames pushed to clients.",
            load(&self.messages_out).to_string(),
        );
        metric(
            "chorus_chat_ack_timeouts_total",
            "counter",
            "Pushed messages redelivered for want of an ack.",
            load(&self.ack_timeouts).to_string(),
        );
        metric(
            "chorus_chat_rate_limited_total",
            "counter",
            "Messages refused by the per-user rate limit.",
            load(&self.rate_limited).to_string(),
        );
        metric(
            "chorus_chat_slow_disconnects_total",
            "counter",
            "Connections closed because their queue overflowed.",
            load(&self.slow_disconnects).to_string(),
        );
        metric(
            "chorus_chat_membership_cache_hit_ratio",
            "gauge",
            "Membership cache hits over lookups.",
            format!("{:.4}", self.cache_hit_rate()),
        );
        let _ = writeln!(
            out,
            "# HELP chorus_chat_delivery_latency_ms Time from the append to the write to the client.\n# TYPE chorus_chat_delivery_latency_ms histogram"
        );
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.latency_buckets) {
            cumulative += load(bucket);
            let _ = writeln!(
                out,
                "chorus_chat_delivery_latency_ms_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(
            out,
            "chorus_chat_delivery_latency_ms_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "chorus_chat_delivery_latency_ms_sum {}",
            load(&self.latency_sum_ms)
        );
        let _ = writeln!(out, "chorus_chat_delivery_latency_ms_count {count}");
        for (name, m) in self.forwarders.lock().expect("forwarders lock").iter() {
            m.render(name, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_delivery(3);
        m.observe_delivery(700);
        let text = m.render();
        assert!(text.contains("chorus_chat_delivery_latency_ms_bucket{le=\"2\"} 0"));
        assert!(text.contains("chorus_chat_delivery_latency_ms_bucket{le=\"5\"} 1"));
        assert!(text.contains("chorus_chat_delivery_latency_ms_bucket{le=\"1000\"} 2"));
        assert!(text.contains("chorus_chat_delivery_latency_ms_count 2"));
        assert!(text.contains("chorus_chat_delivery_latency_ms_sum 703"));
    }
}
