//! The upstream side: the pooled clients shared by every table generation (so pools of
//! unchanged endpoints survive a swap), the streamed request body, and error classification.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::Notify;

use silex_routing::{CompiledBackend, CompiledTable, TableError, UpstreamTls};

use crate::config::ServerConfig;
use crate::health::AttemptGuard;
use crate::upstream_h1::{H1Pool, Lent};
use crate::upstream_h2::H2Pool;
use crate::upstream_tls::TlsConnector;

/// Error type of the connectors.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The error of a connect (and handshake) that took longer than `timeout`.
pub(crate) fn timed_out(timeout: Duration) -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("connect timed out after {} ms", timeout.as_millis()),
    ))
}

/// A pooled client towards endpoints: HTTP/1.1 through [`H1Pool`] (idle connections per
/// endpoint), HTTP/2 through [`H2Pool`] (one multiplexed connection per endpoint).
pub(crate) enum UpstreamClient {
    /// HTTP/1.1 over TCP.
    Plain(H1Pool<HttpConnector>),
    /// HTTP/1.1 over TLS, with one backend's settings.
    Tls(H1Pool<TlsConnector>),
    /// HTTP/2 with prior knowledge over TCP.
    H2c(H2Pool<HttpConnector>),
    /// HTTP/2 over TLS (ALPN `h2`), with one backend's settings.
    H2Tls(H2Pool<TlsConnector>),
}

/// Why an upstream request got no response head.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection to the endpoint (refused, timed out, TLS handshake failed): the request
    /// never reached it.
    Connect(BoxError),
    /// The connection failed (reset, closed, protocol error) after the request was handed
    /// over.
    Send(BoxError),
}

impl UpstreamError {
    /// The underlying error chain.
    pub(crate) fn chain(&self) -> &(dyn StdError + 'static) {
        match self {
            Self::Connect(error) | Self::Send(error) => error.as_ref(),
        }
    }
}

impl UpstreamClient {
    /// Sends `request` (HTTP/1.1: any URI, sent in origin form; HTTP/2: an absolute URI
    /// with the client's host) to `endpoint`; a new connection (and its TLS handshake) must be
    /// made within `connect_timeout`.
    pub(crate) async fn request(
        &self,
        endpoint: &Authority,
        request: Request<RequestBody>,
        connect_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let (response, lent) = match self {
            Self::Plain(pool) => pool.request(endpoint, request, connect_timeout).await?,
            Self::Tls(pool) => pool.request(endpoint, request, connect_timeout).await?,
            // Boxed: an HTTP/2 request may connect (and shake hands) inline, a future of
            // several KiB that would otherwise enlarge every request's future, and hyper keeps a
            // slot of that size per client connection for its whole life.
            Self::H2c(pool) => (
                Box::pin(pool.request(endpoint, request, connect_timeout)).await?,
                None,
            ),
            Self::H2Tls(pool) => (
                Box::pin(pool.request(endpoint, request, connect_timeout)).await?,
                None,
            ),
        };
        Ok(response.map(|body| UpstreamBody::new(body, lent)))
    }

    /// HTTP/2 pools close connections to endpoints not in `keep`; HTTP/1.1 pools expire
    /// idle connections by themselves.
    fn retain(&self, keep: &HashSet<Authority>) {
        match self {
            Self::H2c(pool) => pool.retain(keep),
            Self::H2Tls(pool) => pool.retain(keep),
            Self::Plain(_) | Self::Tls(_) => {}
        }
    }
}

/// What decides which TLS client a backend uses; backends with equal keys share one.
type TlsKey = (UpstreamTls, bool);

/// Every upstream client of the data plane. The plain clients live as long as the data plane;
/// TLS clients are made when a table first needs their settings and kept while tables keep
/// using them, so connection pools survive table swaps.
pub(crate) struct Clients {
    config: ServerConfig,
    /// HTTP/1.1 over TCP: the benchmarked path.
    pub http1: Arc<UpstreamClient>,
    /// HTTP/2 with prior knowledge over TCP (`h2c`, `grpc`), shared by every such backend.
    pub h2c: Arc<UpstreamClient>,
    tls: Mutex<HashMap<TlsKey, Arc<UpstreamClient>>>,
}

impl Clients {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            http1: Arc::new(UpstreamClient::Plain(H1Pool::new(tcp_connector(), config))),
            h2c: Arc::new(UpstreamClient::H2c(H2Pool::new(
                tcp_connector(),
                config,
                false,
            ))),
            tls: Mutex::new(HashMap::new()),
            config: config.clone(),
        }
    }

    /// The client of every backend of `table`, in order, reusing TLS clients whose settings
    /// are unchanged and dropping those no backend uses any more. The error names the JSON
    /// path of bad TLS material.
    pub(crate) fn for_table(
        &self,
        table: &CompiledTable,
    ) -> Result<Vec<Arc<UpstreamClient>>, TableError> {
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept: HashMap<TlsKey, Arc<UpstreamClient>> = HashMap::new();
        // The endpoints each HTTP/2 client serves in this table (its other connections close).
        let mut h2_endpoints: HashMap<TlsKey, HashSet<Authority>> = HashMap::new();
        let mut h2c_endpoints = HashSet::new();
        let mut clients = Vec::with_capacity(table.backends().len());
        for backend in table.backends() {
            let http2 = backend.protocol.is_http2();
            let Some(settings) = &backend.tls else {
                if http2 {
                    h2c_endpoints.extend(endpoints(backend));
                }
                clients.push(Arc::clone(if http2 { &self.h2c } else { &self.http1 }));
                continue;
            };
            let key = (settings.clone(), http2);
            let client = match kept.get(&key).or_else(|| tls.get(&key)) {
                Some(client) => Arc::clone(client),
                None => Arc::new(self.tls_client(settings, http2).map_err(|(field, m)| {
                    let id = serde_json::Value::String(backend.id.clone());
                    TableError::new(format!("$.backends[{id}].tls.{field}"), m)
                })?),
            };
            if http2 {
                h2_endpoints
                    .entry(key.clone())
                    .or_default()
                    .extend(endpoints(backend));
            }
            kept.insert(key, Arc::clone(&client));
            clients.push(client);
        }
        self.h2c.retain(&h2c_endpoints);
        for (key, keep) in &h2_endpoints {
            if let Some(client) = kept.get(key) {
                client.retain(keep);
            }
        }
        *tls = kept;
        Ok(clients)
    }

    fn tls_client(
        &self,
        settings: &UpstreamTls,
        http2: bool,
    ) -> Result<UpstreamClient, (&'static str, String)> {
        let config = crate::upstream_tls::client_config(settings, http2)?;
        let connector = TlsConnector::new(tcp_connector(), config, &settings.server_name)
            .map_err(|m| ("server_name", m))?;
        Ok(if http2 {
            UpstreamClient::H2Tls(H2Pool::new(connector, &self.config, true))
        } else {
            UpstreamClient::Tls(H1Pool::new(connector, &self.config))
        })
    }
}

/// The `ip:port` of each endpoint of `backend`.
fn endpoints(backend: &CompiledBackend) -> impl Iterator<Item = Authority> + '_ {
    backend.endpoints.iter().filter_map(|e| {
        Authority::try_from(
            std::net::SocketAddr::new(e.address, e.port)
                .to_string()
                .as_str(),
        )
        .ok()
    })
}

fn tcp_connector() -> HttpConnector {
    let mut inner = HttpConnector::new();
    inner.set_nodelay(true);
    // Enforced by the pools, per route.
    inner.set_connect_timeout(None);
    inner.set_keepalive(Some(Duration::from_secs(60)));
    inner
}

/// A backend's response body. An HTTP/1.1 connection goes back to its pool once the body has
/// been read to its end; one whose body is abandoned is closed.
pub(crate) struct UpstreamBody {
    inner: Incoming,
    lent: Option<Lent>,
    /// Keeps the attempt counted in flight until the body is done (least-request, EWMA).
    _attempt: Option<AttemptGuard>,
}

impl UpstreamBody {
    fn new(inner: Incoming, lent: Option<Lent>) -> Self {
        let mut body = Self {
            inner,
            lent,
            _attempt: None,
        };
        body.give_back_at_end();
        body
    }

    /// The same body, counting `attempt` in flight while it lives.
    pub(crate) fn counting(mut self, attempt: AttemptGuard) -> Self {
        self._attempt = Some(attempt);
        self
    }

    fn give_back_at_end(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(lent) = self.lent.take() {
                lent.give_back();
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(_))) => this.give_back_at_end(),
            Poll::Ready(None) => {
                if let Some(lent) = this.lent.take() {
                    lent.give_back();
                }
            }
            Poll::Ready(Some(Err(_))) => this.lent = None,
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the proxy learns about a request body while it streams to the upstream.
#[derive(Debug)]
pub(crate) struct BodyProgress {
    /// The body exceeded the route's size limit (the request then ends with 413).
    pub too_large: AtomicBool,
    /// Reading the client's body failed (the client went away or sent garbage).
    pub client_failed: AtomicBool,
    /// The body has been sent completely; the read timeout starts now.
    pub finished: Notify,
    /// Body bytes received from the client so far.
    received: AtomicU64,
    /// Time base of `handed_over_ms`.
    started: tokio::time::Instant,
    /// Milliseconds after `started`, plus one, when the upstream connection took the last
    /// frame and has not asked for the next one yet; 0 while it waits for the client (a slow
    /// client is not a slow upstream) or has not asked for any frame.
    handed_over_ms: AtomicU64,
}

impl Default for BodyProgress {
    fn default() -> Self {
        Self {
            too_large: AtomicBool::new(false),
            client_failed: AtomicBool::new(false),
            finished: Notify::new(),
            received: AtomicU64::new(0),
            started: tokio::time::Instant::now(),
            handed_over_ms: AtomicU64::new(0),
        }
    }
}

impl BodyProgress {
    /// Body bytes received from the client so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long the upstream has not taken the next frame of the body it was handed: the
    /// time between two successive writes that nginx's `proxy_send_timeout` limits. `None`
    /// when the upstream is waiting for the client, or no frame was taken yet.
    pub(crate) fn upstream_stalled_for(&self) -> Option<Duration> {
        match self.handed_over_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(
                self.elapsed_ms().saturating_sub(at - 1),
            )),
        }
    }
}

/// The client's request body, streamed to the upstream frame by frame, never buffered whole.
///
/// When dropped before a single frame was taken from it (the attempt failed before the body
/// was sent: connect refused, connection reset), it gives the client's body back through
/// `give_back` so that another attempt can send it. A body of which any part was read is never
/// given back, so it can never be replayed.
pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    limit: u64,
    seen: u64,
    progress: Option<Arc<BodyProgress>>,
    consumed: bool,
    give_back: Option<tokio::sync::oneshot::Sender<Incoming>>,
}

impl RequestBody {
    /// `limit` 0 means unlimited; `inner` `None` is an empty body.
    pub(crate) fn new(
        inner: Option<Incoming>,
        limit: u64,
        progress: Option<Arc<BodyProgress>>,
        give_back: Option<tokio::sync::oneshot::Sender<Incoming>>,
    ) -> Self {
        let inner = inner.filter(|body| !body.is_end_stream());
        Self {
            inner,
            limit,
            seen: 0,
            progress,
            consumed: false,
            give_back,
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.consumed {
            return;
        }
        if let (Some(inner), Some(give_back)) = (self.inner.take(), self.give_back.take()) {
            let _ = give_back.send(inner);
        }
    }
}

/// Why a streamed request body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("client body: {0}")]
    Client(#[source] hyper::Error),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let poll = Pin::new(inner).poll_frame(cx);
        if poll.is_ready() {
            this.consumed = true;
        }
        match poll {
            Poll::Pending => {
                if let Some(progress) = &this.progress {
                    progress.handed_over_ms.store(0, Ordering::Relaxed);
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.inner = None;
                if let Some(progress) = &this.progress {
                    progress.finished.notify_one();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(progress) = &this.progress {
                    let now = progress.elapsed_ms().saturating_add(1);
                    progress.handed_over_ms.store(now, Ordering::Relaxed);
                }
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(progress) = &this.progress {
                        progress.received.store(this.seen, Ordering::Relaxed);
                    }
                    if this.limit > 0 && this.seen > this.limit {
                        this.inner = None;
                        if let Some(progress) = &this.progress {
                            progress.too_large.store(true, Ordering::Relaxed);
                        }
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.inner = None;
                if let Some(progress) = &this.progress {
                    progress.client_failed.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Err(BodyError::Client(error))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// True when any error in the chain is an I/O timeout (the connector's connect timeout).
pub(crate) fn is_timeout(error: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// The innermost message of an error chain, for logs.
pub(crate) fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(server_name: &str) -> CompiledTable {
        let json = serde_json::json!({
            "version": 1,
            "backends": {
                "plain": {"endpoints": [{"address": "127.0.0.1", "port": 1}]},
                "grpc": {"endpoints": [{"address": "127.0.0.1", "port": 2}], "protocol": "grpc"},
                "tls-a": {"endpoints": [], "protocol": "https",
                          "tls": {"server_name": server_name}},
                "tls-b": {"endpoints": [], "protocol": "https",
                          "tls": {"server_name": server_name}},
                "tls-h2": {"endpoints": [], "protocol": "grpcs",
                           "tls": {"server_name": server_name}},
            }
        });
        let table = silex_routing::parse_table(json.to_string().as_bytes()).expect("parses");
        CompiledTable::compile(&table).expect("compiles")
    }

    #[tokio::test]
    async fn tls_clients_are_shared_by_settings_and_kept_across_tables() {
        let clients = Clients::new(&ServerConfig::default());
        // Backends are sorted by id: grpc, plain, tls-a, tls-b, tls-h2.
        let first = clients.for_table(&table("a.test")).expect("builds");
        assert!(Arc::ptr_eq(&first[0], &clients.h2c));
        assert!(Arc::ptr_eq(&first[1], &clients.http1));
        assert!(Arc::ptr_eq(&first[2], &first[3]));
        assert!(
            !Arc::ptr_eq(&first[2], &first[4]),
            "ALPN h2 is another client"
        );
        let again = clients.for_table(&table("a.test")).expect("builds");
        assert!(Arc::ptr_eq(&first[2], &again[2]));
        assert!(Arc::ptr_eq(&first[4], &again[4]));
        let changed = clients.for_table(&table("b.test")).expect("builds");
        assert!(!Arc::ptr_eq(&first[2], &changed[2]));
    }

    #[tokio::test]
    async fn bad_tls_material_names_its_json_path() {
        let json = serde_json::json!({
            "version": 1,
            "backends": {"ns/svc:443": {"endpoints": [], "protocol": "https",
                "tls": {"verify": true, "ca_pem": "not pem"}}}
        });
        let table = silex_routing::parse_table(json.to_string().as_bytes()).expect("parses");
        let compiled = CompiledTable::compile(&table).expect("compiles");
        let error = Clients::new(&ServerConfig::default())
            .for_table(&compiled)
            .err()
            .expect("rejected");
        assert_eq!(error.path(), "$.backends[\"ns/svc:443\"].tls.ca_pem");
    }
}
