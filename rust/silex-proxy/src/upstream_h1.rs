//! HTTP/1.1 towards backends: idle keep-alive connections pooled per endpoint.
//!
//! Not hyper-util's pooled client, for what it costs per request on the hot path: it hashes
//! the pool key byte by byte with SipHash several times, races a lazy connect against the
//! checkout, and spawns a task per response that waits for the connection to be ready again
//! before returning it. Here the caller already knows the endpoint, a checkout is one short
//! lock and a `Vec::pop`, and a connection goes back to the pool from the response body the
//! moment that body has been read to its end (normally the connection is then already
//! waiting for its next request; only when it is not does a task wait for it).
//!
//! Idle connections are used last-in first-out, so the warm ones serve and the others reach
//! the idle timeout, after which a sweeper task closes them. Each worker thread has its own
//! idle connections (as each nginx worker has its own `keepalive` cache): a connection's task
//! runs on the worker that made it, and a request on that worker uses it without waking
//! another thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::rt::{Read, Write};
use tokio::time::Instant;
use tower_service::Service;

use crate::config::ServerConfig;
use crate::upstream::{timed_out, BoxError, RequestBody, UpstreamError};
use crate::workers;

/// HTTP/1.1 connections to endpoints, made by `connector`, kept while idle.
pub(crate) struct H1Pool<C> {
    connector: C,
    builder: http1::Builder,
    idle: Arc<IdleConnections>,
}

/// The pool's idle connections by worker, then by endpoint (`ip:port`).
struct IdleConnections {
    timeout: Duration,
    max_per_endpoint: usize,
    per_worker: Vec<Mutex<HashMap<Box<str>, Vec<Idle>>>>,
    sweeper_started: AtomicBool,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// A connection lent to one request, given back when its response has been read.
pub(crate) struct Lent {
    sender: SendRequest<RequestBody>,
    endpoint: Authority,
    idle: Arc<IdleConnections>,
}

impl Lent {
    /// The response was read to its end: the connection may serve another request.
    pub(crate) fn give_back(self) {
        let Self {
            mut sender,
            endpoint,
            idle,
        } = self;
        if sender.is_ready() {
            idle.put(endpoint.as_str(), sender);
        } else if !sender.is_closed() {
            // Still finishing this exchange (a request body still being sent, say).
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    idle.put(endpoint.as_str(), sender);
                }
            });
        }
    }
}

impl IdleConnections {
    /// The current worker's idle connections.
    fn here(&self) -> &Mutex<HashMap<Box<str>, Vec<Idle>>> {
        &self.per_worker[workers::current() % self.per_worker.len()]
    }

    fn take(&self, endpoint: &str) -> Option<SendRequest<RequestBody>> {
        let mut by_endpoint = self.here().lock().unwrap_or_else(|e| e.into_inner());
        let idle = by_endpoint.get_mut(endpoint)?;
        while let Some(connection) = idle.pop() {
            if !connection.sender.is_closed() && connection.since.elapsed() < self.timeout {
                return Some(connection.sender);
            }
        }
        None
    }

    fn put(&self, endpoint: &str, sender: SendRequest<RequestBody>) {
        if self.max_per_endpoint == 0 {
            return;
        }
        let connection = Idle {
            sender,
            since: Instant::now(),
        };
        let mut by_endpoint = self.here().lock().unwrap_or_else(|e| e.into_inner());
        match by_endpoint.get_mut(endpoint) {
            Some(idle) if idle.len() < self.max_per_endpoint => idle.push(connection),
            Some(_) => {}
            None => {
                by_endpoint.insert(endpoint.into(), vec![connection]);
            }
        }
    }

    /// Closes connections idle for longer than the timeout, or closed by their endpoint.
    fn sweep(&self) {
        for worker in &self.per_worker {
            let mut by_endpoint = worker.lock().unwrap_or_else(|e| e.into_inner());
            by_endpoint.retain(|_, idle| {
                idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < self.timeout);
                !idle.is_empty()
            });
        }
    }

    /// Starts the sweeper once, from within the runtime; it ends with the pool.
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeper_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let period = (self.timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(),
                    None => return,
                }
            }
        });
    }
}

impl<C, T> H1Pool<C>
where
    C: Service<Uri, Response = T> + Clone + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    T: Read + Write + Unpin + Send + 'static,
{
    pub(crate) fn new(connector: C, config: &ServerConfig) -> Self {
        Self {
            connector,
            builder: http1::Builder::new(),
            idle: Arc::new(IdleConnections {
                timeout: Duration::from_millis(config.upstream_idle_timeout_ms),
                max_per_endpoint: config.upstream_max_idle_per_endpoint,
                per_worker: (0..workers::count(config.workers))
                    .map(|_| Mutex::new(HashMap::new()))
                    .collect(),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// Sends `request` to `endpoint` on an idle connection, or on a new one when there is
    /// none. A request an idle connection refused before sending (its endpoint closed it
    /// meanwhile) goes on the next one. The response comes with the connection, to give back
    /// once the response has been read (`None` after an upgrade: the connection is the
    /// tunnel's).
    pub(crate) async fn request(
        &self,
        endpoint: &Authority,
        mut request: Request<RequestBody>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Lent>), UpstreamError> {
        origin_form(request.uri_mut());
        while let Some(mut sender) = self.idle.take(endpoint.as_str()) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lend(response, sender, endpoint)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Send(error.into_error().into())),
                },
            }
        }
        // Boxed: connecting (and a TLS handshake) is a future of KiBs that, inline, would
        // enlarge every request's future, which hyper keeps per client connection.
        let mut sender = Box::pin(self.connect(endpoint, connect_timeout)).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Send(e.into()))?;
        Ok(self.lend(response, sender, endpoint))
    }

    fn lend(
        &self,
        response: Response<Incoming>,
        sender: SendRequest<RequestBody>,
        endpoint: &Authority,
    ) -> (Response<Incoming>, Option<Lent>) {
        let lent = (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Lent {
            sender,
            endpoint: endpoint.clone(),
            idle: Arc::clone(&self.idle),
        });
        (response, lent)
    }

    /// A new connection to `endpoint`, connected (and for TLS, handshaken) within `timeout`.
    async fn connect(
        &self,
        endpoint: &Authority,
        timeout: Duration,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        self.idle.start_sweeper();
        let io = connect_within(self.connector.clone(), endpoint, timeout).await?;
        let (sender, connection) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        spawn_connection(connection.with_upgrades(), endpoint, "HTTP/1.1");
        Ok(sender)
    }
}

/// `connector`'s connection to `endpoint`, made within `timeout`.
pub(crate) async fn connect_within<C>(
    mut connector: C,
    endpoint: &Authority,
    timeout: Duration,
) -> Result<C::Response, UpstreamError>
where
    C: Service<Uri>,
    C::Error: Into<BoxError>,
{
    let uri = Uri::builder()
        .scheme("http")
        .authority(endpoint.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| UpstreamError::Connect(e.into()))?;
    match tokio::time::timeout(timeout, connector.call(uri)).await {
        Ok(connected) => connected.map_err(|e| UpstreamError::Connect(e.into())),
        Err(_) => Err(UpstreamError::Connect(timed_out(timeout))),
    }
}

/// Runs an upstream connection (hyper's connection future) on its own task until it ends.
pub(crate) fn spawn_connection<F, E>(connection: F, endpoint: &Authority, protocol: &'static str)
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let shown = endpoint.to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(endpoint = %shown, %error, protocol, "upstream connection ended");
        }
    });
}

/// HTTP/1.1 requests name only the path and query (the `Host` header names the site).
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_some() || uri.authority().is_some() {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *uri = Uri::from(path);
    }
}
