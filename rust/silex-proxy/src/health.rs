//! Upstream runtime state that outlives routing-table generations: passive outlier ejection per
//! endpoint address and the retry budget per backend id.
//!
//! A [`Registry`] (in [`crate::state::Shared`]) hands out one `Arc` per endpoint address and
//! per backend id. Each generation's [`crate::state::BackendState`] keeps the `Arc`s of its
//! endpoints, so the request path reads and updates them with relaxed atomics and never looks
//! anything up. A table swap reuses the entries of addresses and backends it keeps (nothing is
//! reset or duplicated) and drops the registry's reference to the others; generations still
//! serving in-flight requests keep theirs alive until they finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ServerConfig;

/// Milliseconds since the data plane started; the time base of every runtime timestamp.
#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Passive outlier-ejection settings (from [`ServerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutlierPolicy {
    /// Consecutive failures that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// First ejection length; each further ejection in a row doubles it.
    pub base_ejection_ms: u64,
    /// Longest ejection.
    pub max_ejection_ms: u64,
}

impl OutlierPolicy {
    pub(crate) fn from_config(config: &ServerConfig) -> Self {
        Self {
            consecutive_failures: config.outlier_consecutive_failures,
            base_ejection_ms: config.outlier_base_ejection_ms,
            max_ejection_ms: config
                .outlier_max_ejection_ms
                .max(config.outlier_base_ejection_ms),
        }
    }
}

/// What passive checks know about one endpoint address.
#[derive(Debug, Default)]
pub(crate) struct EndpointHealth {
    /// Failures (connect error, reset, 5xx) since the last success.
    consecutive_failures: AtomicU32,
    /// Ejections in a row without a success in between (sets the back-off).
    ejections: AtomicU32,
    /// [`Clock::now_ms`] until which the endpoint is ejected (0: never ejected).
    ejected_until_ms: AtomicU64,
    /// Set while active health checks find the endpoint down.
    actively_down: AtomicBool,
    /// Attempts in flight to the endpoint, until their response bodies end.
    in_flight: AtomicU32,
    /// Attempts ever made (the status page's request rate).
    attempts: AtomicU64,
    /// The status page's last (attempts, time) sample and the rate it gave.
    rate_sample: std::sync::Mutex<RateSample>,
    /// Peak-EWMA response-head latency in milliseconds, as `f64` bits.
    ewma_bits: AtomicU64,
    /// [`Clock::now_ms`] of the last EWMA update.
    ewma_stamp_ms: AtomicU64,
}

impl EndpointHealth {
    /// True while the endpoint is out of load balancing: ejected by passive checks or found
    /// down by active ones. The single notion of "usable" (balancers and metrics read it).
    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
            || self.actively_down.load(Ordering::Relaxed)
    }

    /// Active health checks' verdict; returns true when it changed.
    pub(crate) fn set_actively_down(&self, down: bool) -> bool {
        self.actively_down.swap(down, Ordering::Relaxed) != down
    }

    /// Whether active health checks currently find the endpoint down.
    pub(crate) fn is_actively_down(&self) -> bool {
        self.actively_down.load(Ordering::Relaxed)
    }

    /// Attempts in flight to the endpoint.
    pub(crate) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts an attempt as in flight until the guard is dropped (with the response body).
    pub(crate) fn begin_attempt(self: &Arc<Self>) -> AttemptGuard {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        AttemptGuard(Arc::clone(self))
    }

    /// Attempts per second since the previous sample, resampled when that is at least a second
    /// old (the status page calls it; the request path never does).
    pub(crate) fn attempt_rate(&self, now_ms: u64) -> f64 {
        let attempts = self.attempts.load(Ordering::Relaxed);
        let mut sample = self.rate_sample.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed_ms = now_ms.saturating_sub(sample.at_ms);
        if elapsed_ms >= 1000 {
            #[allow(clippy::cast_precision_loss)] // counts and milliseconds far below 2^52
            let rate = attempts.saturating_sub(sample.attempts) as f64 * 1000.0 / elapsed_ms as f64;
            *sample = RateSample {
                attempts,
                at_ms: now_ms,
                rate,
            };
        }
        sample.rate
    }

    /// Feeds one response-head latency into the peak EWMA.
    pub(crate) fn record_latency(&self, rtt_ms: f64, now_ms: u64) {
        let ewma = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp_ms.load(Ordering::Relaxed);
        let next = crate::balance::peak_ewma(ewma, stamp, rtt_ms, now_ms);
        self.ewma_bits.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_stamp_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The EWMA decayed to `now_ms` (towards 0, as ingress-nginx scores an idle endpoint), times
    /// the attempts in flight plus one (Finagle's and linkerd's peak-EWMA cost).
    pub(crate) fn ewma_cost(&self, now_ms: u64) -> f64 {
        let ewma = f64::from_bits(self.ewma_bits.load(Ordering::Relaxed));
        let stamp = self.ewma_stamp_ms.load(Ordering::Relaxed);
        crate::balance::decay_ewma(ewma, stamp, 0.0, now_ms) * f64::from(self.in_flight() + 1)
    }

    /// True when the endpoint takes traffic: the one place that says whether an endpoint is
    /// healthy (metrics read it; any further health source feeds the state behind it).
    pub(crate) fn is_healthy(&self, now_ms: u64) -> bool {
        !self.is_ejected(now_ms)
    }

    /// A response that was not a 5xx: the endpoint is healthy again.
    pub(crate) fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A connect failure, reset or 5xx. Returns true when this failure ejected the endpoint.
    /// After a readmission, while no success has been seen, one failure ejects it again for
    /// twice as long.
    pub(crate) fn record_failure(&self, policy: &OutlierPolicy, now_ms: u64) -> bool {
        if policy.consecutive_failures == 0
            || self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
        {
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let ejections = self.ejections.load(Ordering::Relaxed);
        if failures < policy.consecutive_failures && ejections == 0 {
            return false;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let factor = 1u64 << ejections.saturating_sub(1).min(20);
        let length = policy
            .base_ejection_ms
            .saturating_mul(factor)
            .min(policy.max_ejection_ms);
        self.ejected_until_ms
            .store(now_ms.saturating_add(length), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        true
    }
}

/// Keeps one attempt counted in [`EndpointHealth::in_flight`] while alive.
#[derive(Debug)]
pub(crate) struct AttemptGuard(Arc<EndpointHealth>);

/// See [`EndpointHealth::attempt_rate`].
#[derive(Debug, Default)]
struct RateSample {
    attempts: u64,
    at_ms: u64,
    rate: f64,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Milli-tokens a retry costs.
const RETRY_COST: i64 = 1000;
/// Milli-tokens each request earns: retries stay under 20 % of requests ...
const RETRY_DEPOSIT: i64 = 200;
/// ... plus this floor. The balance never grows beyond the floor plus 20 % of the previous
/// second's requests: a burst of retries (every request in flight to an endpoint that just
/// died) is covered at any traffic level, and a long calm period saves nothing more.
const RETRY_FLOOR: i64 = 10 * RETRY_COST;

/// Per-backend retry budget: a token bucket filled by requests and drained by retries.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    balance: AtomicI64,
    /// The second (of [`Clock::now_ms`]) that `current` counts.
    second: AtomicU64,
    /// Requests in that second, and in the second before it (which sets the cap).
    current: AtomicI64,
    previous: AtomicI64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            balance: AtomicI64::new(RETRY_FLOOR),
            second: AtomicU64::new(0),
            current: AtomicI64::new(0),
            previous: AtomicI64::new(0),
        }
    }
}

impl RetryBudget {
    /// Called once per request routed to the backend.
    pub(crate) fn deposit(&self, now_ms: u64) {
        let second = now_ms / 1000;
        let counted = self.second.load(Ordering::Relaxed);
        if second != counted
            && self
                .second
                .compare_exchange(counted, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let finished = self.current.swap(0, Ordering::Relaxed);
            let previous = if second == counted + 1 { finished } else { 0 };
            self.previous.store(previous, Ordering::Relaxed);
        }
        self.current.fetch_add(1, Ordering::Relaxed);
        let cap = RETRY_FLOOR + self.previous.load(Ordering::Relaxed) * RETRY_DEPOSIT;
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < cap).then(|| (b + RETRY_DEPOSIT).min(cap))
            });
    }

    /// Takes one retry from the budget; false when it is exhausted.
    pub(crate) fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= RETRY_COST).then_some(b - RETRY_COST)
            })
            .is_ok()
    }
}

/// The runtime entries by key, consulted only when a table is applied.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryMaps>,
}

#[derive(Debug, Default)]
struct RegistryMaps {
    endpoints: HashMap<SocketAddr, Arc<EndpointHealth>>,
    budgets: HashMap<String, Arc<RetryBudget>>,
}

/// The runtime entries one generation uses, handed out by [`Registry::for_table`].
pub(crate) struct Handles {
    endpoints: HashMap<SocketAddr, Arc<EndpointHealth>>,
    budgets: HashMap<String, Arc<RetryBudget>>,
}

impl Handles {
    /// Entries for a table with no backends (the empty generation).
    pub(crate) fn none() -> Self {
        Self {
            endpoints: HashMap::new(),
            budgets: HashMap::new(),
        }
    }

    pub(crate) fn endpoint(&self, address: SocketAddr) -> Arc<EndpointHealth> {
        self.endpoints.get(&address).cloned().unwrap_or_default()
    }

    pub(crate) fn budget(&self, backend: &str) -> Arc<RetryBudget> {
        self.budgets.get(backend).cloned().unwrap_or_default()
    }
}

impl Registry {
    /// The entries for `table`'s endpoints and backends: existing ones kept, new ones created,
    /// entries the table no longer names forgotten.
    pub(crate) fn for_table(&self, table: &silex_routing::CompiledTable) -> Handles {
        let mut maps = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut endpoints = HashMap::new();
        let mut budgets = HashMap::new();
        for backend in table.backends() {
            let budget = maps.budgets.get(&backend.id).cloned().unwrap_or_default();
            budgets.insert(backend.id.clone(), budget);
            for endpoint in &backend.endpoints {
                let address = SocketAddr::new(endpoint.address, endpoint.port);
                let entry = maps.endpoints.get(&address).cloned().unwrap_or_default();
                endpoints.insert(address, entry);
            }
        }
        maps.endpoints.clone_from(&endpoints);
        maps.budgets.clone_from(&budgets);
        Handles { endpoints, budgets }
    }
}

/// How long a back-off lasts, for logs.
pub(crate) fn remaining(health: &EndpointHealth, now_ms: u64) -> Duration {
    Duration::from_millis(
        health
            .ejected_until_ms
            .load(Ordering::Relaxed)
            .saturating_sub(now_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection_ms: 100,
            max_ejection_ms: 350,
        }
    }

    #[test]
    fn consecutive_failures_eject_with_growing_backoff() {
        let h = EndpointHealth::default();
        let p = policy();
        assert!(!h.record_failure(&p, 0));
        assert!(!h.record_failure(&p, 0));
        assert!(h.record_failure(&p, 0));
        assert!(h.is_ejected(99));
        assert!(!h.is_ejected(100));
        // Readmitted without a success: one failure ejects again, twice as long.
        assert!(h.record_failure(&p, 100));
        assert!(h.is_ejected(299));
        assert!(!h.is_ejected(300));
        assert!(h.record_failure(&p, 300));
        assert_eq!(remaining(&h, 300), Duration::from_millis(350));
        // A success resets everything.
        h.record_success();
        assert!(!h.record_failure(&p, 1000));
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let h = EndpointHealth::default();
        let p = policy();
        h.record_failure(&p, 0);
        h.record_failure(&p, 0);
        h.record_success();
        assert!(!h.record_failure(&p, 0));
        assert!(!h.is_ejected(0));
    }

    #[test]
    fn retry_budget_is_a_fifth_of_requests_plus_a_floor() {
        let b = RetryBudget::default();
        let mut granted = 0;
        for _ in 0..100 {
            b.deposit(0);
            if b.withdraw() {
                granted += 1;
            }
        }
        assert!(granted <= 20 + 10, "{granted}");
        assert!(granted >= 20, "{granted}");
        let idle = RetryBudget::default();
        for _ in 0..10_000 {
            idle.deposit(0);
        }
        let burst = (0..100).filter(|_| idle.withdraw()).count();
        assert_eq!(burst, 10);
    }

    #[test]
    fn retry_budget_cap_follows_the_previous_seconds_traffic() {
        let busy = RetryBudget::default();
        for _ in 0..1000 {
            busy.deposit(1_500); // second 1: 1000 requests
        }
        for _ in 0..1000 {
            busy.deposit(2_100); // second 2: the cap is 10 + 20 % of 1000
        }
        let burst = (0..1000).filter(|_| busy.withdraw()).count();
        assert_eq!(burst, 210);
        // After a quiet gap (no request in second 3) the cap falls back to the floor.
        for _ in 0..1000 {
            busy.deposit(4_000);
        }
        let after_gap = (0..1000).filter(|_| busy.withdraw()).count();
        assert_eq!(after_gap, 10);
    }
}
