//! The record of one request/response exchange, completed exactly once: when the response
//! body has been sent, or the exchange ended early (client gone, error). Metrics and the access
//! log both consume it.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Method, Request};

use crate::access_log::{Field, LogContext, LogEntry, UpstreamFacts};
use crate::connection::ConnInfo;
use crate::metrics::{Observation, RouteMetrics};
use crate::state::Shared;
use crate::upstream::BodyProgress;

/// What is known about a request while it is served; completed when dropped.
pub(crate) struct Exchange {
    pub shared: Arc<Shared>,
    start: Instant,
    method: Method,
    /// The status sent; 499 (nginx's "client closed request") until a response exists.
    pub status: u16,
    pub outcome: Outcome,
    /// Response body bytes sent so far.
    pub bytes_out: u64,
    /// Gathered only when the access log is on.
    log: Option<Box<LogContext>>,
}

/// What forwarding learned about a request.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The metrics of what served the request; `None`: nothing matched. (Not the generation:
    /// a long response must not keep an old routing table alive.)
    pub route: Option<Arc<RouteMetrics>>,
    /// The streamed request body of the last attempt (counts the bytes received).
    pub request_body: Option<Arc<BodyProgress>>,
    /// The upstream's answer, when one came.
    pub upstream: Option<UpstreamFacts>,
}

/// The status logged for a request whose client went away before a response was sent.
const CLIENT_CLOSED: u16 = 499;

impl Exchange {
    /// Starts the record of `request`, whose id is `request_id`.
    pub(crate) fn begin<B>(
        shared: Arc<Shared>,
        conn: &ConnInfo,
        request: &Request<B>,
        request_id: &HeaderValue,
    ) -> Self {
        let log = shared.access_log.is_some().then(|| {
            let headers = request.headers();
            let uri = request.uri();
            let tls = conn.tls.as_ref();
            let mut log = Box::new(LogContext::new(
                conn.peer,
                request.version(),
                tls.and_then(|t| t.version),
                tls.and_then(|t| t.sni.clone()),
            ));
            let header = |name: header::HeaderName| headers.get(name).map(HeaderValue::as_bytes);
            let host =
                header(header::HOST).or_else(|| uri.authority().map(|a| a.as_str().as_bytes()));
            log.set(Field::RequestId, Some(request_id.as_bytes()));
            log.set(Field::Host, host);
            log.set(Field::Path, Some(uri.path().as_bytes()));
            log.set(Field::Query, uri.query().map(str::as_bytes));
            log.set(Field::UserAgent, header(header::USER_AGENT));
            log.set(Field::Referer, header(header::REFERER));
            log
        });
        Self {
            shared,
            start: Instant::now(),
            method: request.method().clone(),
            status: CLIENT_CLOSED,
            outcome: Outcome::default(),
            bytes_out: 0,
            log,
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let duration = self.start.elapsed();
        let outcome = &mut self.outcome;
        let bytes_in = outcome
            .request_body
            .as_ref()
            .map_or(0, |progress| progress.received());
        let metrics = outcome
            .route
            .as_ref()
            .unwrap_or_else(|| self.shared.metrics.other());
        metrics.record(&Observation {
            method: &self.method,
            status: self.status,
            duration,
            upstream_duration: outcome.upstream.as_ref().map(|u| u.head_time),
            bytes_in,
            bytes_out: self.bytes_out,
        });
        if let (Some(log), Some(context)) = (&self.shared.access_log, self.log.take()) {
            log.submit(LogEntry {
                time: std::time::SystemTime::now(),
                context,
                method: self.method.clone(),
                status: self.status,
                bytes_in,
                bytes_out: self.bytes_out,
                duration,
                upstream: outcome.upstream.take(),
                route: Arc::clone(metrics),
            });
        }
    }
}
