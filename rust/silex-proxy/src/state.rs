//! The state every request reads: the current routing generation, the upstream client, counters.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::Authority;
use serde::Serialize;
use silex_routing::{BalancePolicy, CompiledTable, RoutingTable, TABLE_VERSION};

use crate::access_log::AccessLog;
use crate::balance::{affinity_token, parse_token, random, Ring};
use crate::config::ServerConfig;
use crate::health::{Clock, EndpointHealth, Handles, OutlierPolicy, Registry, RetryBudget};
use crate::metrics::{MetricsRegistry, RouteMetrics};
use crate::tls::TlsTable;
use crate::upstream::{Clients, UpstreamClient};

/// Shared by every connection of one data plane.
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub table: ArcSwap<Generation>,
    pub clients: Clients,
    /// Shared with every connection (its active-request gauge).
    pub stats: Arc<Counters>,
    /// Per-route metrics label sets, kept across generations.
    pub metrics: MetricsRegistry,
    /// The access-log writer; `None` when the access log is off.
    pub access_log: Option<AccessLog>,
    pub draining: AtomicBool,
    /// The operator's metrics (OpenMetrics text), as last pushed; served after the core's.
    pub operator_metrics: ArcSwap<bytes::Bytes>,
    /// What the status page shows of the serving table (replaced with it).
    pub routes_view: ArcSwap<crate::status::RoutesView>,
    /// The operator's part of the status page, as last pushed.
    pub operator_status: ArcSwap<crate::status::OperatorStatus>,
    /// Served on HTTPS listeners when the table has no certificate for the client's SNI and
    /// no `default_certificate`: self-signed, generated at start.
    pub default_certificate: Arc<rustls::sign::CertifiedKey>,
    /// `Strict-Transport-Security` value for HTTPS responses, when HSTS is on.
    pub hsts: Option<http::HeaderValue>,
    /// Port of the first HTTPS listener (0: none), used in HTTP -> HTTPS redirects.
    pub https_port: AtomicU16,
    /// Upstream runtime state (ejections, retry budgets) kept across table generations.
    pub registry: Registry,
    /// Time base of the runtime state.
    pub clock: Clock,
    /// Passive outlier-ejection settings.
    pub outlier: OutlierPolicy,
    /// Active health-check tasks, reconciled on each apply.
    pub checkers: crate::active::Checkers,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: ServerConfig) -> Result<Self, String> {
        let clients = Clients::new(&config);
        let hsts = config.hsts_value();
        let outlier = OutlierPolicy::from_config(&config);
        let access_log = AccessLog::start(&config).map_err(|e| e.to_string())?;
        Ok(Self {
            metrics: MetricsRegistry::default(),
            access_log,
            registry: Registry::default(),
            checkers: crate::active::Checkers::default(),
            clock: Clock::new(),
            outlier,
            hsts,
            config,
            table: ArcSwap::from_pointee(Generation::empty()),
            clients,
            stats: Arc::default(),
            draining: AtomicBool::new(false),
            operator_metrics: ArcSwap::from_pointee(bytes::Bytes::new()),
            routes_view: ArcSwap::from_pointee(crate::status::RoutesView::default()),
            operator_status: ArcSwap::from_pointee(crate::status::OperatorStatus::default()),
            default_certificate: crate::tls::self_signed()?,
            https_port: AtomicU16::new(0),
        })
    }

    /// Counts an upgraded connection (a tunnel) as open until the guard is dropped: the
    /// client connection's own count ends when hyper hands its socket over.
    pub(crate) fn tunnel_opened(self: &Arc<Self>) -> OpenTunnel {
        self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        self.stats.tunnels_open.fetch_add(1, Ordering::Relaxed);
        OpenTunnel(Arc::clone(self))
    }

    /// Ready: a table has been applied and the data plane is not draining.
    pub(crate) fn is_ready(&self) -> bool {
        self.table.load().id > 0 && !self.draining.load(Ordering::Relaxed)
    }
}

/// One applied routing table with the per-backend state that lives exactly as long.
pub(crate) struct Generation {
    /// 0 for the empty table present before the first apply, then 1, 2, ...
    pub id: u64,
    pub table: CompiledTable,
    /// The certificates of this table.
    pub tls: TlsTable,
    /// Parallel to `table.backends()`.
    pub backends: Vec<BackendState>,
    /// Metrics of each match target, parallel to `table.targets()`.
    pub route_metrics: Vec<Arc<RouteMetrics>>,
}

impl Generation {
    fn empty() -> Self {
        let table = RoutingTable {
            version: TABLE_VERSION,
            listeners: Default::default(),
            defaults: Default::default(),
            hosts: Vec::new(),
            backends: Default::default(),
            default_backend: None,
            certificates: Default::default(),
            default_certificate: None,
        };
        let compiled = CompiledTable::compile(&table).expect("the empty routing table compiles");
        Self::new(
            0,
            compiled,
            TlsTable::default(),
            &Handles::none(),
            Vec::new(),
            Vec::new(),
        )
    }

    /// `handles` come from [`Registry::for_table`] for this table, `route_metrics` from
    /// [`MetricsRegistry::for_table`], `clients` from [`Clients::for_table`] (parallel to its
    /// backends).
    pub(crate) fn new(
        id: u64,
        table: CompiledTable,
        tls: TlsTable,
        handles: &Handles,
        route_metrics: Vec<Arc<RouteMetrics>>,
        clients: Vec<Arc<UpstreamClient>>,
    ) -> Self {
        let backends = table
            .backends()
            .iter()
            .zip(clients)
            .map(|(backend, client)| BackendState::new(backend, handles, client))
            .collect();
        Self {
            id,
            table,
            tls,
            backends,
            route_metrics,
        }
    }
}

/// Load-balancing state of one backend: its endpoints, the structures its policy needs, and
/// the runtime state (kept across generations) of the backend and of each endpoint.
pub(crate) struct BackendState {
    /// `ip:port` of each endpoint, ready to put in an upstream URI.
    pub authorities: Vec<Authority>,
    /// `ip:port` of each endpoint as text, parallel to `authorities` (for logs and errors,
    /// without formatting it per request).
    pub names: Vec<Box<str>>,
    /// Health and load of each endpoint, parallel to `authorities`.
    pub health: Vec<Arc<EndpointHealth>>,
    /// The backend's retry budget.
    pub budget: Arc<RetryBudget>,
    /// The balancing policy and what it was built into.
    pub policy: Policy,
    /// The client that reaches the endpoints with the backend's protocol.
    pub client: Arc<UpstreamClient>,
    /// The endpoints speak HTTP/2 (`h2c`, `grpc`, `grpcs`).
    pub http2: bool,
    /// Scheme of HTTP/2 upstream URIs (`:scheme`) and of health-check URIs; HTTP/1.1 requests
    /// go out in origin form.
    pub scheme: http::uri::Scheme,
    /// Endpoint indexes in smooth weighted round-robin order (each index appears `weight`
    /// times, reduced by the weights' GCD, interleaved).
    schedule: Vec<u32>,
    cursor: AtomicUsize,
    /// Running sums of the weights (for weighted random choices); empty when all are equal.
    cumulative_weights: Vec<u64>,
}

/// A backend's balancing policy, compiled.
pub(crate) enum Policy {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Power of two choices on requests in flight.
    LeastRequest,
    /// Power of two choices on peak-EWMA latency times requests in flight.
    Ewma,
    /// Consistent hash of a request value; round robin without one.
    Hash {
        by: silex_routing::HashBy,
        ring: Ring,
    },
    /// A cookie names the endpoint; round robin for clients without a valid one.
    Cookie {
        cookie: silex_routing::AffinityCookie,
        /// [`crate::balance::affinity_token`] of each endpoint, parallel to `authorities`.
        tokens: Vec<u64>,
    },
}

impl Policy {
    /// Whether attempts must be counted in flight (and latencies recorded).
    pub(crate) fn tracks_load(&self) -> bool {
        matches!(self, Self::LeastRequest | Self::Ewma)
    }
}

/// Longest round-robin schedule kept per backend; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 4096;

impl BackendState {
    fn new(
        backend: &silex_routing::CompiledBackend,
        handles: &Handles,
        client: Arc<UpstreamClient>,
    ) -> Self {
        let mut authorities = Vec::with_capacity(backend.endpoints.len());
        let mut names = Vec::with_capacity(backend.endpoints.len());
        let mut health = Vec::with_capacity(backend.endpoints.len());
        let mut weights = Vec::with_capacity(backend.endpoints.len());
        for e in &backend.endpoints {
            let address = std::net::SocketAddr::new(e.address, e.port);
            let name = address.to_string();
            if let Ok(authority) = Authority::try_from(name.as_str()) {
                authorities.push(authority);
                names.push(name.into_boxed_str());
                health.push(handles.endpoint(address));
                weights.push(u64::from(e.weight.max(1)));
            }
        }
        let balance = &backend.balance;
        let policy = match (balance.policy, &balance.hash_by, &balance.cookie) {
            (BalancePolicy::LeastRequest, _, _) => Policy::LeastRequest,
            (BalancePolicy::Ewma, _, _) => Policy::Ewma,
            (BalancePolicy::Hash, Some(by), _) => Policy::Hash {
                by: by.clone(),
                ring: Ring::new(&names, &weights),
            },
            (BalancePolicy::Cookie, _, Some(cookie)) => Policy::Cookie {
                cookie: cookie.clone(),
                tokens: names.iter().map(|n| affinity_token(n)).collect(),
            },
            // Validation guarantees the settings; without them, round robin.
            _ => Policy::RoundRobin,
        };
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative_weights = if uniform {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0, |sum, w| {
                    *sum += w;
                    Some(*sum)
                })
                .collect()
        };
        Self {
            authorities,
            names,
            health,
            budget: handles.budget(&backend.id),
            policy,
            client,
            http2: backend.protocol.is_http2(),
            scheme: if backend.protocol.is_tls() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            schedule: smooth_weighted_schedule(&weights),
            cursor: AtomicUsize::new(0),
            cumulative_weights,
        }
    }

    /// The next endpoint index in round-robin order, or `None` when the backend has none.
    fn next_index(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        usize::try_from(self.schedule[turn]).ok()
    }

    fn usable(&self, index: usize, now_ms: u64, tried: &[usize]) -> bool {
        !tried.contains(&index) && !self.health.get(index).is_some_and(|h| h.is_ejected(now_ms))
    }

    /// What the policy keys a request on: the hash of the `hash` policy's value, or the
    /// endpoint token in the `cookie` policy's cookie. `None` for other policies (no work).
    pub(crate) fn request_key(&self, parts: &http::request::Parts) -> Option<u64> {
        match &self.policy {
            Policy::Hash { by, .. } => crate::balance::request_key(by, parts),
            Policy::Cookie { cookie, .. } => {
                crate::balance::cookie(&parts.headers, &cookie.name).and_then(parse_token)
            }
            _ => None,
        }
    }

    /// The endpoint for the next attempt, by the backend's policy, skipping ejected endpoints
    /// and those in `tried`. When every untried endpoint is ejected, ejection is ignored (fail
    /// open: a backend is never emptied by ejection). `None` when every endpoint was tried.
    /// `key` is [`Self::request_key`]'s.
    pub(crate) fn pick(&self, now_ms: u64, tried: &[usize], key: Option<u64>) -> Option<usize> {
        match &self.policy {
            Policy::RoundRobin => self.pick_round_robin(now_ms, tried),
            Policy::LeastRequest => {
                self.pick_two_choices(now_ms, tried, |h| f64::from(h.in_flight()))
            }
            Policy::Ewma => self.pick_two_choices(now_ms, tried, |h| h.ewma_cost(now_ms)),
            Policy::Hash { ring, .. } => match key {
                Some(key) => ring
                    .walk(key)
                    .take(ring_walk_limit(self.authorities.len()))
                    .find(|&i| self.usable(i, now_ms, tried))
                    .or_else(|| self.pick_round_robin(now_ms, tried)),
                None => self.pick_round_robin(now_ms, tried),
            },
            Policy::Cookie { tokens, .. } => key
                .and_then(|token| tokens.iter().position(|&t| t == token))
                .filter(|&i| self.usable(i, now_ms, tried))
                .or_else(|| self.pick_round_robin(now_ms, tried)),
        }
    }

    /// The `Set-Cookie` value a response from endpoint `index` needs under the `cookie` policy:
    /// when the client's cookie (`key`) did not name that endpoint. `None` otherwise.
    pub(crate) fn affinity_cookie(
        &self,
        index: usize,
        key: Option<u64>,
        route_path: &str,
    ) -> Option<String> {
        let Policy::Cookie { cookie, tokens } = &self.policy else {
            return None;
        };
        let token = *tokens.get(index)?;
        (key != Some(token)).then(|| crate::balance::set_cookie_value(cookie, token, route_path))
    }

    fn pick_round_robin(&self, now_ms: u64, tried: &[usize]) -> Option<usize> {
        let mut fallback = None;
        // Each endpoint appears in the schedule at least once per cycle.
        for _ in 0..self.schedule.len() {
            let index = self.next_index()?;
            if tried.contains(&index) {
                continue;
            }
            if !self.health.get(index).is_some_and(|h| h.is_ejected(now_ms)) {
                return Some(index);
            }
            fallback.get_or_insert(index);
        }
        self.first_usable(now_ms, tried).or(fallback)
    }

    /// Concurrent requests move the cursor too and may have taken the turns of untried
    /// endpoints: look at every untried endpoint before failing open.
    fn first_usable(&self, now_ms: u64, tried: &[usize]) -> Option<usize> {
        let mut untried = (0..self.authorities.len()).filter(|i| !tried.contains(i));
        let first = untried.next();
        let healthy = first
            .into_iter()
            .chain(untried)
            .find(|&i| !self.health.get(i).is_some_and(|h| h.is_ejected(now_ms)));
        healthy.or(first)
    }

    /// Power of two choices: two weighted random usable endpoints, the cheaper wins.
    fn pick_two_choices(
        &self,
        now_ms: u64,
        tried: &[usize],
        cost: impl Fn(&EndpointHealth) -> f64,
    ) -> Option<usize> {
        let n = self.authorities.len();
        if n == 0 {
            return None;
        }
        let Some(first) = self.sample(now_ms, tried, None) else {
            return self.first_usable(now_ms, tried);
        };
        let Some(second) = self.sample(now_ms, tried, Some(first)) else {
            return Some(first);
        };
        if cost(&self.health[second]) < cost(&self.health[first]) {
            Some(second)
        } else {
            Some(first)
        }
    }

    /// A weighted random usable endpoint other than `not`: a few weighted draws, then a scan
    /// from a random place (so the choice is only `None` when no other endpoint is usable).
    fn sample(&self, now_ms: u64, tried: &[usize], not: Option<usize>) -> Option<usize> {
        let ok = |index: usize| Some(index) != not && self.usable(index, now_ms, tried);
        for _ in 0..4 {
            let index = self.weighted_random();
            if ok(index) {
                return Some(index);
            }
        }
        let n = self.authorities.len();
        let start = usize::try_from(random() % n as u64).unwrap_or(0);
        (0..n).map(|k| (start + k) % n).find(|&index| ok(index))
    }

    fn weighted_random(&self) -> usize {
        let n = self.authorities.len() as u64;
        match self.cumulative_weights.last() {
            None => usize::try_from(random() % n.max(1)).unwrap_or(0),
            Some(&total) => {
                let r = random() % total;
                self.cumulative_weights.partition_point(|&sum| sum <= r)
            }
        }
    }
}

/// Ring points looked at before a hash pick gives up and falls back to round robin: enough to
/// meet every endpoint almost surely, bounded so a fully ejected backend stays cheap.
fn ring_walk_limit(endpoints: usize) -> usize {
    endpoints.saturating_mul(64).max(64)
}

/// nginx's smooth weighted round robin, unrolled into one cycle so picking is one atomic add.
fn smooth_weighted_schedule(weights: &[u64]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let gcd = weights.iter().copied().fold(0, gcd);
    let mut reduced: Vec<u64> = weights.iter().map(|w| w / gcd.max(1)).collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_SCHEDULE {
        // Keep proportions approximately; every endpoint keeps at least one turn.
        reduced = reduced
            .iter()
            .map(|w| (w * MAX_SCHEDULE / total).max(1))
            .collect();
    }
    let total: u64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut schedule = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, weight) in reduced.iter().enumerate() {
            current[i] += i64::try_from(*weight).unwrap_or(i64::MAX);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= i64::try_from(total).unwrap_or(i64::MAX);
        schedule.push(u32::try_from(best).unwrap_or(0));
    }
    schedule
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Keeps a tunnel counted as an open connection; see [`Shared::tunnel_opened`].
pub(crate) struct OpenTunnel(Arc<Shared>);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        let stats = &self.0.stats;
        stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        stats.tunnels_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters read by stats snapshots; the request path only does relaxed atomic adds.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections_open: AtomicU64,
    connections_active: AtomicU64,
    tunnels_open: AtomicU64,
    requests_total: AtomicU64,
    responses: [AtomicU64; 5],
    upstream_errors: AtomicU64,
    upstream_connect_errors: AtomicU64,
    upstream_retries: AtomicU64,
    /// Success, failure, timeout.
    tls_handshakes: [AtomicU64; 3],
}

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Handshake {
    Success = 0,
    Failure = 1,
    Timeout = 2,
}

/// Decrements the open-connection count when dropped.
pub(crate) struct OpenConnection<'a>(&'a Counters);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    pub(crate) fn open_connections(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }

    pub(crate) fn request(&self) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn response(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.upstream_retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upstream_connect_error(&self) {
        self.upstream_connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_handshake(&self, result: Handshake) {
        self.tls_handshakes[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection went from idle to having a request in flight (`true`) or back.
    pub(crate) fn connection_active(&self, active: bool) {
        if active {
            self.connections_active.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> CountersSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            connections_open: load(&self.connections_open),
            connections_active: load(&self.connections_active),
            requests_total: load(&self.requests_total),
            responses: ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .iter()
                .zip(&self.responses)
                .map(|(k, v)| ((*k).to_string(), load(v)))
                .collect(),
            upstream_errors: load(&self.upstream_errors),
            upstream_retries: load(&self.upstream_retries),
            upstream_connect_errors: load(&self.upstream_connect_errors),
            tunnels_open: load(&self.tunnels_open),
            tls_handshakes_ok: load(&self.tls_handshakes[Handshake::Success as usize]),
            tls_handshakes_failed: load(&self.tls_handshakes[Handshake::Failure as usize]),
            tls_handshakes_timed_out: load(&self.tls_handshakes[Handshake::Timeout as usize]),
        }
    }
}

/// Plain values of [`Counters`].
#[derive(Debug, Clone, Serialize)]
pub struct CountersSnapshot {
    /// Client connections currently open.
    pub connections_open: u64,
    /// Client connections with at least one request in flight.
    pub connections_active: u64,
    /// Requests received on proxy listeners.
    pub requests_total: u64,
    /// Responses sent by status class (`"2xx"`, ...).
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Requests that failed because of the upstream (connect, reset, timeout, invalid).
    pub upstream_errors: u64,
    /// Attempts retried on another endpoint.
    pub upstream_retries: u64,
    /// Upstream connection attempts that failed.
    pub upstream_connect_errors: u64,
    /// TLS handshakes completed.
    pub tls_handshakes_ok: u64,
    /// TLS handshakes that failed.
    pub tls_handshakes_failed: u64,
    /// TLS handshakes not completed within the header timeout.
    pub tls_handshakes_timed_out: u64,
    /// Upgraded (WebSocket) connections currently tunnelled.
    pub tunnels_open: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use silex_routing::{AffinityCookie, Balance, CompiledBackend, Endpoint, HashBy, HashSource};

    fn backend(weights: &[u32], balance: Balance) -> BackendState {
        let endpoints = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Endpoint {
                address: std::net::IpAddr::from([10, 0, 0, u8::try_from(i).unwrap_or(0)]),
                port: 80,
                weight,
            })
            .collect();
        let compiled = CompiledBackend {
            id: "b".into(),
            service: None,
            endpoints,
            balance,
            health_check: None,
            protocol: silex_routing::BackendProtocol::Http,
            tls: None,
        };
        let clients = crate::upstream::Clients::new(&crate::config::ServerConfig::default());
        BackendState::new(&compiled, &Handles::none(), Arc::clone(&clients.http1))
    }

    fn policy(policy: BalancePolicy) -> Balance {
        Balance {
            policy,
            ..Balance::default()
        }
    }

    fn counts(state: &BackendState, picks: usize, key: Option<u64>) -> Vec<usize> {
        let mut counts = vec![0; state.authorities.len()];
        for _ in 0..picks {
            if let Some(i) = state.pick(0, &[], key) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let state = backend(&[1, 1, 1], policy(BalancePolicy::LeastRequest));
        let _busy: Vec<_> = (0..5).map(|_| state.health[0].begin_attempt()).collect();
        assert_eq!(state.health[0].in_flight(), 5);
        let c = counts(&state, 300, None);
        // Two distinct choices: the busy one loses every comparison.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 100 && c[2] > 100, "{c:?}");
        drop(_busy);
        assert_eq!(state.health[0].in_flight(), 0);
    }

    #[test]
    fn two_choices_honour_weights_when_idle() {
        let state = backend(&[3, 1], policy(BalancePolicy::LeastRequest));
        let c = counts(&state, 4000, None);
        // Ties keep the first (weighted) choice: about 3:1.
        assert!((2600..3400).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn ewma_avoids_the_slow_endpoint() {
        let state = backend(&[1, 1, 1], policy(BalancePolicy::Ewma));
        state.health[0].record_latency(500.0, 0);
        state.health[1].record_latency(2.0, 0);
        state.health[2].record_latency(3.0, 0);
        let c = counts(&state, 300, None);
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 50 && c[2] > 50, "{c:?}");
    }

    #[test]
    fn hash_is_stable_and_skips_unusable_endpoints() {
        let balance = Balance {
            policy: BalancePolicy::Hash,
            hash_by: Some(HashBy {
                source: HashSource::Header,
                name: Some("x-user".into()),
            }),
            cookie: None,
        };
        let state = backend(&[1, 1, 1], balance);
        let key = Some(crate::balance::stable_hash(b"user-1"));
        let owner = state.pick(0, &[], key).unwrap_or(usize::MAX);
        assert!(counts(&state, 50, key)[owner] == 50);
        // Retried elsewhere, and taken elsewhere while down; back when it is up again.
        let retry = state.pick(0, &[owner], key).unwrap_or(owner);
        assert_ne!(retry, owner);
        state.health[owner].set_actively_down(true);
        assert_ne!(state.pick(0, &[], key), Some(owner));
        state.health[owner].set_actively_down(false);
        assert_eq!(state.pick(0, &[], key), Some(owner));
        // Everything down: fail open.
        for h in &state.health {
            h.set_actively_down(true);
        }
        assert!(state.pick(0, &[], key).is_some());
    }

    #[test]
    fn cookie_pins_to_the_token_and_says_when_to_set_it() {
        let balance = Balance {
            policy: BalancePolicy::Cookie,
            hash_by: None,
            cookie: Some(AffinityCookie {
                name: "route".into(),
                max_age_s: None,
                path: None,
                samesite: None,
                secure: false,
            }),
        };
        let state = backend(&[1, 1, 1], balance);
        let token = affinity_token(&state.names[2]);
        assert_eq!(counts(&state, 20, Some(token))[2], 20);
        assert_eq!(state.affinity_cookie(2, Some(token), "/"), None);
        let set = state.affinity_cookie(1, Some(token), "/app");
        let expected = format!(
            "route={:016x}; Path=/app; HttpOnly",
            affinity_token(&state.names[1])
        );
        assert_eq!(set, Some(expected));
        // The pinned endpoint is down: another one serves.
        state.health[2].set_actively_down(true);
        assert_ne!(state.pick(0, &[], Some(token)), Some(2));
    }

    #[test]
    fn actively_down_endpoints_are_skipped_by_round_robin() {
        let state = backend(&[1, 1, 1], Balance::default());
        state.health[1].set_actively_down(true);
        assert!(state.health[1].is_ejected(0));
        assert_eq!(counts(&state, 30, None)[1], 0);
    }

    #[test]
    fn schedule_spreads_by_weight_and_interleaves() {
        assert_eq!(smooth_weighted_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        let s = smooth_weighted_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 5);
        // Smooth: the heavy endpoint never gets all its turns in a row.
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_weighted_schedule(&[2, 4]), vec![1, 0, 1]);
        assert!(smooth_weighted_schedule(&[]).is_empty());
        let big = smooth_weighted_schedule(&[1_000_000, 1]);
        assert!(big.len() <= 4097 && big.contains(&1));
    }
}
