//! Accept loops and per-connection tasks: HTTP/1.1 serving, header and idle timeouts, drain.
//!
//! hyper's own `header_read_timeout` also counts the idle time between keep-alive requests,
//! which would make the idle timeout and the header timeout one setting. Instead each
//! connection tracks its activity (a request in flight, the first byte of the next head) and
//! the connection task enforces the two limits separately.

use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::state::Shared;
use crate::ListenerKind;

/// What a request handler knows about the connection it arrived on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The client's address (IPv4-mapped IPv6 turned back into IPv4).
    pub peer: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// Name of the listener that accepted it.
    pub listener: Arc<str>,
    /// Whether the peer may set `X-Forwarded-*` headers.
    pub trusted: bool,
    /// Activity tracking for the idle and header timeouts.
    pub activity: Activity,
}

impl ConnInfo {
    /// Marks a request as in flight until the returned guard is dropped (when its response
    /// body has been written or abandoned).
    pub(crate) fn begin_request(self: &Arc<Self>) -> InFlight {
        let activity = &self.activity;
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
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
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            // A new connection must send its first head within the header timeout.
            head_started_ms: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Called by the IO wrapper for every successful read of at least one byte.
    fn on_bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == NONE
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
        }
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
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        activity.changed.notify_one();
    }
}

/// A TCP stream that reports reads to the connection's [`Activity`].
struct MeteredIo {
    stream: TcpStream,
    conn: Arc<ConnInfo>,
}

impl AsyncRead for MeteredIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.activity.on_bytes_read();
        }
        poll
    }
}

impl AsyncWrite for MeteredIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts connections until `drain` is cancelled; the listening socket closes on return.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    kind: ListenerKind,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = drain.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let conn = ConnInfo {
                    peer: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
                    local: stream.local_addr().unwrap_or(peer),
                    listener: Arc::clone(&name),
                    trusted: shared.config.is_trusted(peer.ip().to_canonical()),
                    activity: Activity::new(),
                };
                tokio::spawn(serve_connection(
                    stream,
                    Arc::new(conn),
                    kind,
                    Arc::clone(&shared),
                    drain.clone(),
                ));
            }
            Err(error) => {
                // Out of file descriptors or a transient error: back off instead of spinning.
                tracing::warn!(listener = %name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    conn: Arc<ConnInfo>,
    kind: ListenerKind,
    shared: Arc<Shared>,
    drain: CancellationToken,
) {
    let _open = shared.stats.connection_opened();
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(MeteredIo {
        stream,
        conn: Arc::clone(&conn),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Enforced by this task instead; see the module documentation.
        .header_read_timeout(None)
        .max_headers(shared.config.max_headers)
        .max_header_size(shared.config.max_header_bytes)
        .keep_alive(true);
    let service_conn = Arc::clone(&conn);
    let service_shared = Arc::clone(&shared);
    let service = hyper::service::service_fn(move |request| {
        let conn = Arc::clone(&service_conn);
        let shared = Arc::clone(&service_shared);
        async move {
            Ok::<_, std::convert::Infallible>(match kind {
                ListenerKind::Proxy => crate::proxy::handle(shared, conn, request).await,
                ListenerKind::Admin => crate::admin::handle(&shared, &request),
            })
        }
    });
    let mut connection = pin!(builder.serve_connection(io, service).with_upgrades());
    let mut draining = false;
    loop {
        let deadline = conn.activity.deadline(&shared.config);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(peer = %conn.peer, %error, "connection ended with an error");
                }
                break;
            }
            () = drain.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            () = conn.activity.changed.notified() => {}
            () = sleep_until_opt(deadline) => {
                if conn.activity.deadline(&shared.config).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(peer = %conn.peer, "closing idle or slow connection");
                    break;
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
