//! `/metrics` on the admin listener: the data plane's counters and the operator's metrics in
//! one OpenMetrics exposition.
//!
//! The core never calls into Python. The operator renders its own registry (Python
//! prometheus-client) and pushes the text with [`crate::DataPlane::set_operator_metrics`]; a
//! scrape reads the latest push with one `ArcSwap` load, so neither side ever waits on a lock
//! held by the other or by a request.
//!
//! Per-route metrics live in [`RouteMetrics`], one per label set (namespace, ingress, service,
//! host), resolved when a table is applied ([`MetricsRegistry::for_table`]) and reached by the
//! request path through the generation's array, indexed by the match target: a request only
//! does relaxed atomic adds into fixed arrays. Label sets survive table swaps while the new
//! table still names them; those it no longer names are dropped (their series disappear), so
//! memory is bounded by the current table under any churn.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use silex_routing::CompiledTable;

use crate::state::Shared;

/// Content type of the exposition (Prometheus negotiates OpenMetrics 1.0.0).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `method` label values; anything else is `other`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the duration buckets in microseconds: Prometheus' default buckets, which
/// ingress-nginx uses for its request and response durations.
const DURATION_BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
/// Upper bounds of the size buckets in bytes (10 B to 10 MB, one per power of ten).
const SIZE_BUCKETS: [u64; 7] = [10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// The label value for requests matching no virtual host.
const OTHER_HOST: &str = "other";

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

fn status_class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// A histogram with fixed buckets: per-bucket (not cumulative) counts, made cumulative when
/// rendered, so an observation is two relaxed adds.
struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        Self {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        match self.bounds.iter().position(|&bound| value <= bound) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Writes the `_bucket`, `_count` and `_sum` samples; values are divided by `scale`.
    fn render(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = to_float(*bound, scale);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        let sum = to_float(self.sum.load(Ordering::Relaxed), scale);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
    }
}

/// `value / scale` as OpenMetrics wants floats (always with a decimal point or exponent).
fn to_float(value: u64, scale: f64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let float = value as f64 / scale;
    let text = format!("{float}");
    if text.contains(['.', 'e', 'E']) {
        text
    } else {
        format!("{text}.0")
    }
}

/// The labels of one route's metrics. `host` is the virtual host as configured (a wildcard
/// host is its pattern), `other` when no host matched; `ingress` and `service` are names
/// (without namespace), empty for a default backend or no match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Labels {
    pub namespace: Box<str>,
    pub ingress: Box<str>,
    pub service: Box<str>,
    pub host: Box<str>,
}

impl Labels {
    fn other() -> Self {
        Self {
            namespace: "".into(),
            ingress: "".into(),
            service: "".into(),
            host: OTHER_HOST.into(),
        }
    }

    fn for_target(table: &CompiledTable, target: &silex_routing::MatchTarget) -> Self {
        let split = |qualified: &str| -> (Box<str>, Box<str>) {
            match qualified.split_once('/') {
                Some((namespace, name)) => (namespace.into(), name.into()),
                None => ("".into(), qualified.into()),
            }
        };
        let (ingress_ns, ingress) = target.ingress.as_deref().map(split).unwrap_or_default();
        let (service_ns, service) = table
            .backend(target.backend)
            .and_then(|b| b.service.as_deref())
            .map(split)
            .unwrap_or_default();
        let namespace = if ingress_ns.is_empty() {
            service_ns
        } else {
            ingress_ns
        };
        let host = if target.host.is_empty() {
            OTHER_HOST.into()
        } else {
            target.host.clone()
        };
        Self {
            namespace,
            ingress,
            service,
            host,
        }
    }

    /// `namespace="..",ingress="..",service="..",host=".."`.
    fn render(&self) -> String {
        format!(
            "namespace=\"{}\",ingress=\"{}\",service=\"{}\",host=\"{}\"",
            escape(&self.namespace),
            escape(&self.ingress),
            escape(&self.service),
            escape(&self.host)
        )
    }
}

/// OpenMetrics label value escaping.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    std::borrow::Cow::Owned(
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
}

/// The counters and histograms of one label set.
pub(crate) struct RouteMetrics {
    pub labels: Labels,
    /// By method, then status class.
    requests: [[AtomicU64; 5]; METHODS.len()],
    request_duration_us: Histogram<11>,
    upstream_duration_us: Histogram<11>,
    request_size: Histogram<7>,
    response_size: Histogram<7>,
}

/// What one finished request contributes to its route's metrics.
pub(crate) struct Observation<'a> {
    pub method: &'a Method,
    pub status: u16,
    pub duration: Duration,
    /// Time to the upstream's response head, when an upstream answered.
    pub upstream_duration: Option<Duration>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl RouteMetrics {
    fn new(labels: Labels) -> Self {
        Self {
            labels,
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            request_duration_us: Histogram::new(&DURATION_BUCKETS_US),
            upstream_duration_us: Histogram::new(&DURATION_BUCKETS_US),
            request_size: Histogram::new(&SIZE_BUCKETS),
            response_size: Histogram::new(&SIZE_BUCKETS),
        }
    }

    /// Records one finished request (relaxed atomic adds only).
    pub(crate) fn record(&self, o: &Observation<'_>) {
        self.requests[method_index(o.method)][status_class_index(o.status)]
            .fetch_add(1, Ordering::Relaxed);
        self.request_duration_us.observe(micros(o.duration));
        if let Some(upstream) = o.upstream_duration {
            self.upstream_duration_us.observe(micros(upstream));
        }
        self.request_size.observe(o.bytes_in);
        self.response_size.observe(o.bytes_out);
    }
}

/// The label sets of the current table, by labels; consulted only when a table is applied and
/// when `/metrics` is scraped, never by a request.
pub(crate) struct MetricsRegistry {
    sets: Mutex<HashMap<Labels, Arc<RouteMetrics>>>,
    /// Requests that matched nothing (no host, no route, no default backend).
    other: Arc<RouteMetrics>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self {
            sets: Mutex::default(),
            other: Arc::new(RouteMetrics::new(Labels::other())),
        }
    }
}

impl MetricsRegistry {
    /// One entry per target of `table` (parallel to [`CompiledTable::targets`]): label sets
    /// the registry holds are reused, new ones created, those `table` does not name dropped.
    pub(crate) fn for_table(&self, table: &CompiledTable) -> Vec<Arc<RouteMetrics>> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept: HashMap<Labels, Arc<RouteMetrics>> = HashMap::new();
        let handles = table
            .targets()
            .iter()
            .map(|target| {
                let labels = Labels::for_target(table, target);
                if labels == self.other.labels {
                    return Arc::clone(&self.other);
                }
                if let Some(found) = kept.get(&labels) {
                    return Arc::clone(found);
                }
                let entry = sets
                    .get(&labels)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(RouteMetrics::new(labels.clone())));
                kept.insert(labels, Arc::clone(&entry));
                entry
            })
            .collect();
        *sets = kept;
        handles
    }

    /// The label set of requests that matched nothing.
    pub(crate) fn other(&self) -> &Arc<RouteMetrics> {
        &self.other
    }

    /// Every label set, sorted by labels (the lock is held only to copy the `Arc`s).
    fn snapshot(&self) -> Vec<Arc<RouteMetrics>> {
        let mut all: Vec<Arc<RouteMetrics>> = {
            let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.values().cloned().collect()
        };
        all.push(Arc::clone(&self.other));
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        all
    }
}

/// The whole exposition: core metrics, then the operator's last push, then `# EOF`.
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_core(shared, &mut out);
    let operator: Bytes = Bytes::clone(&shared.operator_metrics.load());
    out.push_str(&without_eof(&String::from_utf8_lossy(&operator)));
    out.push_str("# EOF\n");
    out
}

/// The data plane's own families.
fn render_core(shared: &Shared, out: &mut String) {
    render_routes(&shared.metrics.snapshot(), out);
    let c = shared.stats.snapshot();
    family(
        out,
        "silex_connections",
        "gauge",
        "Client connections by state: open, active (a request in flight), tunnel (upgraded).",
    );
    for (state, value) in [
        ("open", c.connections_open),
        ("active", c.connections_active),
        ("tunnel", c.tunnels_open),
    ] {
        let _ = writeln!(out, "silex_connections{{state=\"{state}\"}} {value}");
    }
    family(
        out,
        "silex_tls_handshakes",
        "counter",
        "TLS handshakes on HTTPS listeners by result.",
    );
    for (result, value) in [
        ("success", c.tls_handshakes_ok),
        ("failure", c.tls_handshakes_failed),
        ("timeout", c.tls_handshakes_timed_out),
    ] {
        let _ = writeln!(
            out,
            "silex_tls_handshakes_total{{result=\"{result}\"}} {value}"
        );
    }
    let counters = [
        (
            "silex_upstream_errors",
            "Requests that failed because of the upstream (connect, reset, timeout, invalid).",
            c.upstream_errors,
        ),
        (
            "silex_upstream_connect_errors",
            "Upstream connection attempts that failed (refused, unreachable, timed out).",
            c.upstream_connect_errors,
        ),
        (
            "silex_upstream_retries",
            "Attempts retried on another endpoint.",
            c.upstream_retries,
        ),
        (
            "silex_access_log_dropped",
            "Access-log lines dropped because the log writer was behind (its queue was full).",
            shared.access_log.as_ref().map_or(0, |log| log.dropped()),
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        let _ = writeln!(out, "{name}_total {value}");
    }
    render_endpoint_health(shared, out);
    family(
        out,
        "silex_config_generation",
        "gauge",
        "Generation of the routing table the data plane serves (0: none yet).",
    );
    let _ = writeln!(out, "silex_config_generation {}", shared.table.load().id);
}

fn render_routes(sets: &[Arc<RouteMetrics>], out: &mut String) {
    let labels: Vec<String> = sets.iter().map(|set| set.labels.render()).collect();
    family(
        out,
        "silex_requests",
        "counter",
        "Requests by route, method and status class.",
    );
    for (set, labels) in sets.iter().zip(&labels) {
        for (method, row) in METHODS.iter().zip(&set.requests) {
            for (class, count) in STATUS_CLASSES.iter().zip(row) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "silex_requests_total{{{labels},method=\"{method}\",status_class=\"{class}\"}} {count}"
                    );
                }
            }
        }
    }
    let histograms: [(&str, &str, HistogramOf); 4] = [
        (
            "silex_request_duration_seconds",
            "Time from the request head to the last byte of the response.",
            |m| &m.request_duration_us,
        ),
        (
            "silex_upstream_duration_seconds",
            "Time from sending the request upstream to the upstream's response head.",
            |m| &m.upstream_duration_us,
        ),
        (
            "silex_request_size_bytes",
            "Request body bytes received from the client.",
            |m| &m.request_size,
        ),
        (
            "silex_response_size_bytes",
            "Response body bytes sent to the client.",
            |m| &m.response_size,
        ),
    ];
    for (name, help, get) in histograms {
        family(out, name, "histogram", help);
        let scale = if name.ends_with("_seconds") { 1e6 } else { 1.0 };
        for (set, labels) in sets.iter().zip(&labels) {
            get(set).render_to(out, name, labels, scale);
        }
    }
}

/// Picks one histogram of a label set.
type HistogramOf = fn(&RouteMetrics) -> &dyn Render;

/// Object-safe rendering of histograms of any bucket count.
trait Render {
    fn render_to(&self, out: &mut String, name: &str, labels: &str, scale: f64);
}

impl<const N: usize> Render for Histogram<N> {
    fn render_to(&self, out: &mut String, name: &str, labels: &str, scale: f64) {
        self.render(out, name, labels, scale);
    }
}

/// `silex_upstream_endpoint_healthy{service,endpoint}` for the endpoints of the serving table.
fn render_endpoint_health(shared: &Shared, out: &mut String) {
    family(
        out,
        "silex_upstream_endpoint_healthy",
        "gauge",
        "1 when the endpoint takes traffic, 0 while it is ejected.",
    );
    let generation = shared.table.load();
    let now = shared.clock.now_ms();
    let mut lines = std::collections::BTreeMap::new();
    for (backend, state) in generation.table.backends().iter().zip(&generation.backends) {
        let service = backend.service.as_deref().unwrap_or(&backend.id);
        for (name, health) in state.names.iter().zip(&state.health) {
            lines.insert((service, &**name), u8::from(health.is_healthy(now)));
        }
    }
    for ((service, endpoint), healthy) in lines {
        let _ = writeln!(
            out,
            "silex_upstream_endpoint_healthy{{service=\"{}\",endpoint=\"{endpoint}\"}} {healthy}",
            escape(service)
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `text` without its final `# EOF` line (an exposition carries exactly one, at the end).
fn without_eof(text: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = text.trim_end_matches('\n');
    match trimmed.strip_suffix("# EOF") {
        Some(rest) => std::borrow::Cow::Owned(rest.to_owned()),
        None if text.is_empty() || text.ends_with('\n') => std::borrow::Cow::Borrowed(text),
        None => std::borrow::Cow::Owned(format!("{text}\n")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn eof_is_removed_and_a_final_newline_kept() {
        assert_eq!(without_eof("a 1\n# EOF\n"), "a 1\n");
        assert_eq!(without_eof("a 1\n# EOF"), "a 1\n");
        assert_eq!(without_eof("a 1\n"), "a 1\n");
        assert_eq!(without_eof("a 1"), "a 1\n");
        assert_eq!(without_eof(""), "");
    }

    #[test]
    fn histograms_render_cumulative_buckets_count_and_sum() {
        let h = Histogram::new(&SIZE_BUCKETS);
        for value in [5, 10, 11, 50_000_000] {
            h.observe(value);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"", 1.0);
        assert!(out.contains("x_bucket{a=\"b\",le=\"10.0\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"100.0\"} 3\n"), "{out}");
        assert!(
            out.contains("x_bucket{a=\"b\",le=\"10000000.0\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 50000026.0\n"), "{out}");
        assert_eq!(to_float(5_000, 1e6), "0.005");
    }

    fn table(hosts: &[(&str, &str)]) -> CompiledTable {
        let hosts: Vec<serde_json::Value> = hosts
            .iter()
            .map(|(host, ingress)| {
                serde_json::json!({"name": host, "routes": [
                    {"path": "/", "match": "prefix", "backend": "b", "ingress": ingress}
                ]})
            })
            .collect();
        let json = serde_json::json!({
            "version": 1,
            "hosts": hosts,
            "backends": {"b": {"service": "ns/svc", "endpoints": []}},
        });
        let parsed = silex_routing::parse_table(json.to_string().as_bytes()).unwrap();
        CompiledTable::compile(&parsed).unwrap()
    }

    #[test]
    fn label_sets_are_kept_across_tables_and_dropped_with_their_routes() {
        let registry = MetricsRegistry::default();
        let first = registry.for_table(&table(&[("a.com", "ns/a"), ("*.b.com", "ns/b")]));
        assert_eq!(first.len(), 2);
        let a = first.iter().find(|m| &*m.labels.host == "a.com").unwrap();
        assert_eq!(
            (&*a.labels.namespace, &*a.labels.ingress, &*a.labels.service),
            ("ns", "a", "svc")
        );
        let second = registry.for_table(&table(&[("a.com", "ns/a")]));
        assert!(Arc::ptr_eq(a, &second[0]));
        let hosts: Vec<Box<str>> = registry
            .snapshot()
            .iter()
            .map(|m| m.labels.host.clone())
            .collect();
        assert_eq!(hosts, vec!["other".into(), "a.com".into()]);
    }

    #[test]
    fn methods_and_status_classes_are_bounded() {
        assert_eq!(method_index(&Method::GET), 0);
        assert_eq!(method_index(&Method::from_bytes(b"PURGE").unwrap()), 9);
        assert_eq!(status_class_index(101), 0);
        assert_eq!(status_class_index(599), 4);
        assert_eq!(status_class_index(0), 0);
        assert_eq!(escape("a\"b\\"), "a\\\"b\\\\");
    }
}
