//! Accept loops and per-connection tasks: TLS handshakes, HTTP/1.1 and HTTP/2 serving, header
//! and idle timeouts, drain.
//!
//! Protocols: on a plain listener HTTP/1.1 (and HTTP/2 with prior knowledge, h2c, when
//! `enable_h2c` is set); on an HTTPS listener the TLS handshake (bounded by the header timeout)
//! and then HTTP/2 when ALPN chose `h2`, else HTTP/1.1. HTTP/2 streams count as requests in
//! flight; an HTTP/2 connection has only the idle timeout (a stream's head arrives as one
//! HEADERS block, bounded by hyper/h2), and gets a GOAWAY when it expires or on drain.
//!
//! hyper's own `header_read_timeout` also counts the idle time between keep-alive requests,
//! which would make the idle timeout and the header timeout one setting. Instead each
//! connection tracks its activity (a request in flight, the first byte of the next head) in a
//! few atomics, and the connection task enforces the two limits separately. It does so lazily,
//! as nginx's timers do: one timer per connection that, when it fires, re-reads the activity
//! and either closes the connection or sleeps until the next moment a limit could expire. A
//! request therefore costs no timer update and no wake-up of the connection task.

use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::sync::atomic::AtomicBool;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::observed_io::{ObservedIo, OnRead};
use crate::state::{Counters, Handshake, Shared};
use crate::workers::Workers;
use crate::ListenerKind;

/// What a request handler knows about the connection it arrived on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The client's address (IPv4-mapped IPv6 turned back into IPv4).
    pub peer: SocketAddr,
    /// Name of the listener that accepted it.
    pub listener: Arc<str>,
    /// Whether the peer may set `X-Forwarded-*` headers.
    pub trusted: bool,
    /// Activity tracking for the idle and header timeouts.
    pub activity: Activity,
    /// Set on HTTPS listeners: what the TLS handshake established.
    pub tls: Option<TlsInfo>,
    /// `peer`'s IP as a header value (`X-Forwarded-For`, `X-Real-IP`), made once.
    pub peer_ip: http::HeaderValue,
    /// The port the client connected to, as a header value (`X-Forwarded-Port`), made once.
    pub local_port: http::HeaderValue,
    /// The data plane's counters (connections with a request in flight).
    counters: Arc<Counters>,
}

/// The TLS side of a connection.
#[derive(Debug)]
pub(crate) struct TlsInfo {
    /// The server name the client sent (SNI), normalized.
    pub sni: Option<Arc<str>>,
    /// The negotiated protocol version (`TLSv1.3`, `TLSv1.2`).
    pub version: Option<&'static str>,
    /// The certificate selected for it (`None`: the built-in default certificate).
    pub certificate: crate::tls::Selected,
}

impl ConnInfo {
    /// Marks a request as in flight until the returned guard is dropped (when its response
    /// body has been written or abandoned).
    pub(crate) fn begin_request(self: &Arc<Self>) -> InFlight {
        let activity = &self.activity;
        if activity.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.counters.connection_active(true);
        }
        activity.head_started_ms.store(NONE, Ordering::Relaxed);
        InFlight {
            conn: Arc::clone(self),
        }
    }
}

const NONE: u64 = u64::MAX;

/// Per-connection activity, shared between the IO wrapper, the handler and the connection task.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `origin` when the pending request head started, or `NONE`.
    head_started_ms: AtomicU64,
    /// Milliseconds since `origin` when the last request finished.
    idle_since_ms: AtomicU64,
    /// HTTP/2: reads (frames of other streams, PINGs) never start a header timer.
    multiplexed: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            // A new connection must send its first head within the header timeout.
            head_started_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Called by the IO wrapper for every successful read of at least one byte.
    fn on_bytes_read(&self) {
        if !self.multiplexed.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == NONE
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// Restarts the idle timer (after a GOAWAY: the connection gets one more idle period to
    /// close cleanly before it is dropped).
    fn touch(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Marks the connection as HTTP/2 (see [`Activity::multiplexed`]).
    pub(crate) fn set_multiplexed(&self) {
        if !self.multiplexed.swap(true, Ordering::Relaxed) {
            self.head_started_ms.store(NONE, Ordering::Relaxed);
        }
    }

    fn is_multiplexed(&self) -> bool {
        self.multiplexed.load(Ordering::Relaxed)
    }

    /// When the connection should be closed if nothing changes; `None` while a request runs.
    fn deadline(&self, config: &ServerConfig) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        let (since_ms, limit) = if head == NONE {
            (
                self.idle_since_ms.load(Ordering::Relaxed),
                config.client_idle_timeout(),
            )
        } else {
            (head, config.header_read_timeout())
        };
        Some(self.origin + Duration::from_millis(since_ms) + limit)
    }

    /// When the connection task should look again, or `None` when a limit has expired.
    ///
    /// Looking again no later than `now` plus the shorter limit is what makes the lazy timer
    /// exact: whatever happens after `now` (a request ends, the next head starts) starts a
    /// limit that expires after that look, which then sleeps until the new deadline.
    fn next_check(&self, config: &ServerConfig, now: Instant) -> Option<Instant> {
        let horizon = now
            + config
                .header_read_timeout()
                .min(config.client_idle_timeout());
        match self.deadline(config) {
            None => Some(horizon),
            Some(deadline) if deadline <= now => None,
            Some(deadline) => Some(deadline.min(horizon)),
        }
    }
}

/// Keeps a request counted as in flight; see [`Activity::begin_request`].
#[derive(Debug)]
pub(crate) struct InFlight {
    conn: Arc<ConnInfo>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.conn.activity;
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Relaxed);
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.conn.counters.connection_active(false);
        }
    }
}

/// A stream (TCP, or TLS plaintext) that reports reads to the connection's [`Activity`].
type MeteredIo<S> = ObservedIo<S, Arc<ConnInfo>>;

impl OnRead for Arc<ConnInfo> {
    fn bytes_read(&self) {
        self.activity.on_bytes_read();
    }
}

/// Accepts connections until `drain` is cancelled and hands each to the next worker; the
/// listening socket closes on return. `tls` is set for HTTPS listeners.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    kind: ListenerKind,
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    drain: CancellationToken,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            () = drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted.and_then(|(stream, peer)| {
            // Unregistered here, registered again by the worker that serves it.
            Ok((stream.into_std()?, peer))
        }) {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or a transient error: back off instead of spinning.
                tracing::warn!(listener = %name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (name, shared, drain, tls) = (
            Arc::clone(&name),
            Arc::clone(&shared),
            drain.clone(),
            tls.clone(),
        );
        workers.next().spawn(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(listener = %name, %error, "accepted connection not served");
                    return;
                }
            };
            // Two futures: a task's allocation is the size of its largest state, and a plain
            // connection must not carry the room a TLS session needs.
            match tls {
                None => serve_plain(stream, peer, name, kind, shared, drain).await,
                Some(acceptor) => {
                    Box::pin(serve_tls(stream, peer, name, kind, shared, drain, acceptor)).await;
                }
            }
        });
    }
}

fn conn_info(
    stream: &TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    shared: &Shared,
    tls: Option<TlsInfo>,
) -> ConnInfo {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    let local = stream.local_addr().unwrap_or(peer);
    ConnInfo {
        peer,
        listener,
        trusted: shared.config.is_trusted(peer.ip()),
        activity: Activity::new(),
        tls,
        // An IP address's text is always a valid header value.
        peer_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("")),
        local_port: http::HeaderValue::from(local.port()),
        counters: Arc::clone(&shared.stats),
    }
}

async fn serve_plain(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    kind: ListenerKind,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    let _open = shared.stats.connection_opened();
    let _ = stream.set_nodelay(true);
    let conn = Arc::new(conn_info(&stream, peer, listener, &shared, None));
    let io = TokioIo::new(MeteredIo {
        io: stream,
        observer: Arc::clone(&conn),
    });
    if kind == ListenerKind::Proxy && shared.config.enable_h2c {
        // Boxed (once per connection) so that HTTP/1.1-only listeners' tasks stay smaller.
        Box::pin(serve_auto(io, conn, kind, &shared, drain)).await;
    } else {
        serve_http1(io, conn, kind, &shared, drain).await;
    }
}

async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    kind: ListenerKind,
    shared: Arc<Shared>,
    drain: CancellationToken,
    acceptor: TlsAcceptor,
) {
    let _open = shared.stats.connection_opened();
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    // The handshake has the header timeout, and is abandoned on drain.
    let handshake = tokio::select! {
        () = drain.cancelled() => return,
        result = tokio::time::timeout(shared.config.header_read_timeout(), acceptor.accept(stream)) => result,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => {
            shared.stats.tls_handshake(Handshake::Success);
            stream
        }
        Ok(Err(error)) => {
            shared.stats.tls_handshake(Handshake::Failure);
            tracing::debug!(%peer, ?local, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.stats.tls_handshake(Handshake::Timeout);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (tcp, session) = stream.get_ref();
    let sni: Option<Arc<str>> = session
        .server_name()
        .and_then(silex_routing::normalize_host)
        .map(|name| name.as_ref().into());
    let version = session.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    });
    let h2 = session.alpn_protocol() == Some(crate::tls::ALPN_H2);
    let certificate = shared.table.load().tls.select(sni.as_deref());
    let info = TlsInfo {
        sni,
        version,
        certificate,
    };
    let conn = Arc::new(conn_info(tcp, peer, listener, &shared, Some(info)));
    let io = TokioIo::new(MeteredIo {
        io: stream,
        observer: Arc::clone(&conn),
    });
    if h2 {
        conn.activity.set_multiplexed();
        serve_http2(io, conn, kind, &shared, drain).await;
    } else {
        serve_http1(io, conn, kind, &shared, drain).await;
    }
}

type Io<S> = TokioIo<MeteredIo<S>>;

/// The request handler of a connection.
fn service(
    conn: &Arc<ConnInfo>,
    kind: ListenerKind,
    shared: &Arc<Shared>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::proxy::ResponseBody>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<http::Response<crate::proxy::ResponseBody>, std::convert::Infallible>,
    > + Send,
> + Clone {
    let service_conn = Arc::clone(conn);
    let service_shared = Arc::clone(shared);
    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let conn = Arc::clone(&service_conn);
        let shared = Arc::clone(&service_shared);
        async move {
            if request.version() == http::Version::HTTP_2 {
                conn.activity.set_multiplexed();
            }
            Ok::<_, std::convert::Infallible>(match kind {
                ListenerKind::Proxy | ListenerKind::Https => {
                    crate::proxy::handle(shared, conn, request).await
                }
                ListenerKind::Admin => crate::admin::handle(&shared, &request),
            })
        }
    })
}

// hyper's HTTP/1 and HTTP/2 builders and hyper-util's auto builder (h2c next to HTTP/1.1)
// are different types with the same setters; these macros keep one list of settings for all.

/// HTTP/1.1 settings shared by every server builder (the head size limit is set by each:
/// hyper-util's auto builder only has `max_buf_size`).
macro_rules! http1_settings {
    ($builder:expr, $config:expr) => {
        $builder
            .timer(TokioTimer::new())
            // Enforced by this task instead; see the module documentation.
            .header_read_timeout(None)
            .max_headers($config.max_headers)
            .keep_alive(true)
    };
}

/// HTTP/2 settings (see `docs/tls.md`): hyper/h2's rapid-reset protections (pending-accept and
/// local-error reset limits) stay at their defaults.
macro_rules! http2_settings {
    ($builder:expr, $config:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams($config.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from($config.max_header_bytes).unwrap_or(u32::MAX))
            .initial_stream_window_size($config.h2_stream_window_bytes)
            .initial_connection_window_size($config.h2_connection_window_bytes)
            .adaptive_window(false)
            // RFC 8441: WebSockets over HTTP/2 (`proxy::forward` refuses other protocols).
            .enable_connect_protocol()
    };
}

fn http1_builder(config: &ServerConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    http1_settings!(builder, config).max_header_size(config.max_header_bytes);
    builder
}

fn http2_builder(config: &ServerConfig) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    http2_settings!(builder, config);
    builder
}

async fn serve_http1<S>(
    io: Io<S>,
    conn: Arc<ConnInfo>,
    kind: ListenerKind,
    shared: &Arc<Shared>,
    drain: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http1_builder(&shared.config);
    let service = service(&conn, kind, shared);
    let connection = pin!(builder.serve_connection(io, service).with_upgrades());
    drive(connection, |c| c.graceful_shutdown(), &conn, shared, &drain).await;
}

async fn serve_http2<S>(
    io: Io<S>,
    conn: Arc<ConnInfo>,
    kind: ListenerKind,
    shared: &Arc<Shared>,
    drain: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http2_builder(&shared.config);
    let service = service(&conn, kind, shared);
    let connection = pin!(builder.serve_connection(io, service));
    drive(connection, |c| c.graceful_shutdown(), &conn, shared, &drain).await;
}

/// HTTP/1.1 or, when the client starts with the HTTP/2 preface, h2c.
async fn serve_auto<S>(
    io: Io<S>,
    conn: Arc<ConnInfo>,
    kind: ListenerKind,
    shared: &Arc<Shared>,
    drain: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http1_settings!(builder.http1(), config).max_buf_size(config.max_header_bytes);
    http2_settings!(builder.http2(), config);
    let service = service(&conn, kind, shared);
    let connection = pin!(builder.serve_connection_with_upgrades(io, service));
    drive(connection, |c| c.graceful_shutdown(), &conn, shared, &drain).await;
}

/// Runs a connection to its end, enforcing the header and idle timeouts and the drain.
async fn drive<F, E>(
    mut connection: Pin<&mut F>,
    graceful_shutdown: fn(Pin<&mut F>),
    conn: &ConnInfo,
    shared: &Shared,
    drain: &CancellationToken,
) where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut draining = false;
    let mut drained = pin!(drain.cancelled());
    let first_check = conn
        .activity
        .next_check(&shared.config, Instant::now())
        .unwrap_or_else(Instant::now);
    let mut check = pin!(tokio::time::sleep_until(first_check));
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %conn.peer, %error, "connection ended with an error");
                }
                break;
            }
            () = drained.as_mut(), if !draining => {
                graceful_shutdown(connection.as_mut());
                draining = true;
            }
            () = check.as_mut() => {
                let now = Instant::now();
                if let Some(next) = conn.activity.next_check(&shared.config, now) {
                    check.as_mut().reset(next);
                    continue;
                }
                if conn.activity.is_multiplexed() && !draining {
                    // HTTP/2: a GOAWAY tells the client not to start new streams here.
                    tracing::debug!(peer = %conn.peer, "idle HTTP/2 connection: GOAWAY");
                    graceful_shutdown(connection.as_mut());
                    draining = true;
                    conn.activity.touch();
                    let next = conn.activity.next_check(&shared.config, now);
                    check.as_mut().reset(next.unwrap_or(now));
                    continue;
                }
                tracing::debug!(peer = %conn.peer, "closing idle or slow connection");
                break;
            }
        }
    }
}
