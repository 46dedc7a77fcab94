//! Active health checks: one task per (endpoint address, check settings) on the core's runtime,
//! reconciled on every table apply — new pairs start, removed ones stop, unchanged ones keep
//! running with their counts. A task's verdict goes into the endpoint's
//! [`EndpointHealth`], which every balancing policy reads through `is_ejected`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{header, HeaderValue, Request, Uri};
use http_body_util::BodyExt;
use silex_routing::HealthCheck;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::health::EndpointHealth;
use crate::state::Generation;
use crate::upstream::{RequestBody, UpstreamClient};

/// The running checkers by (address, settings).
#[derive(Default)]
pub(crate) struct Checkers {
    running: Mutex<HashMap<(SocketAddr, HealthCheck), CancellationToken>>,
}

impl Checkers {
    /// Makes the running checkers exactly those `generation` asks for.
    pub(crate) fn reconcile(&self, generation: &Generation, runtime: &Handle) {
        let mut wanted: HashMap<(SocketAddr, HealthCheck), Target> = HashMap::new();
        for (backend, state) in generation.table.backends().iter().zip(&generation.backends) {
            let Some(check) = &backend.health_check else {
                continue;
            };
            for (endpoint, health) in backend.endpoints.iter().zip(&state.health) {
                let address = SocketAddr::new(endpoint.address, endpoint.port);
                // Checked with the backend's own client: an HTTPS backend over TLS, an h2c
                // one over HTTP/2.
                wanted.insert(
                    (address, check.clone()),
                    Target {
                        health: Arc::clone(health),
                        client: Arc::clone(&state.client),
                        scheme: state.scheme.clone(),
                    },
                );
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|key, stop| {
            let keep = wanted.contains_key(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, target) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            runtime.spawn(run(target, key.0, key.1.clone(), stop.clone()));
            running.insert(key, stop);
        }
        // An endpoint no checker watches any more is not held down by an old verdict.
        let watched: HashSet<SocketAddr> = running.keys().map(|(address, _)| *address).collect();
        for (backend, state) in generation.table.backends().iter().zip(&generation.backends) {
            for (endpoint, health) in backend.endpoints.iter().zip(&state.health) {
                let address = SocketAddr::new(endpoint.address, endpoint.port);
                if !watched.contains(&address) && health.set_actively_down(false) {
                    tracing::info!(endpoint = %address, "health checks removed; endpoint back in load balancing");
                }
            }
        }
    }

    /// Checkers running now.
    pub(crate) fn count(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops every checker (shutdown).
    pub(crate) fn stop_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for stop in running.values() {
            stop.cancel();
        }
        running.clear();
    }
}

/// What one checker probes, and where its verdict goes.
struct Target {
    health: Arc<EndpointHealth>,
    client: Arc<UpstreamClient>,
    /// `https` for TLS backends (it selects the client's pool, not the protocol).
    scheme: Scheme,
}

async fn run(target: Target, address: SocketAddr, check: HealthCheck, stop: CancellationToken) {
    let Target {
        health,
        client,
        scheme,
    } = target;
    let Ok(uri) = Uri::try_from(format!("{scheme}://{address}{}", check.path)) else {
        tracing::warn!(endpoint = %address, path = %check.path, "health check path is not a valid URI; not checking");
        return;
    };
    let host = check.host.clone().unwrap_or_else(|| address.to_string());
    let Ok(host) = HeaderValue::from_str(&host) else {
        return;
    };
    let Ok(authority) = Authority::try_from(address.to_string().as_str()) else {
        return;
    };
    let timeout = Duration::from_millis(check.timeout_ms);
    let mut ticks = tokio::time::interval(Duration::from_millis(check.interval_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = probe(&client, &authority, &uri, &host, timeout) => outcome,
        };
        match outcome {
            Ok(()) => {
                failures = 0;
                successes = successes.saturating_add(1);
                if successes >= check.healthy_threshold
                    && health.is_actively_down()
                    && health.set_actively_down(false)
                {
                    tracing::info!(endpoint = %address, successes, "endpoint passed its health checks; back in load balancing");
                }
            }
            Err(reason) => {
                successes = 0;
                failures = failures.saturating_add(1);
                if failures >= check.unhealthy_threshold && health.set_actively_down(true) {
                    tracing::warn!(endpoint = %address, failures, %reason, "endpoint failed its health checks; out of load balancing");
                }
            }
        }
    }
}

/// One check: a GET whose response head arrives within `timeout` with a 2xx or 3xx status; the
/// body is read (within the same time) so the connection can be reused.
async fn probe(
    client: &UpstreamClient,
    authority: &Authority,
    uri: &Uri,
    host: &HeaderValue,
    timeout: Duration,
) -> Result<(), String> {
    let mut request = Request::new(RequestBody::new(None, 0, None, None));
    *request.uri_mut() = uri.clone();
    request.headers_mut().insert(header::HOST, host.clone());
    request.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("silex-health-check"),
    );
    let exchange = async {
        let response = client
            .request(authority, request, timeout)
            .await
            .map_err(|e| crate::upstream::root_cause(e.chain()))?;
        let status = response.status();
        // Drained, not collected: a health endpoint's body is not kept in memory.
        let mut body = response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("status {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no response within {} ms", timeout.as_millis())),
    }
}
