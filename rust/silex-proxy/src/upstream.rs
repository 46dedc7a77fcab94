//! The upstream side: one pooled HTTP/1.1 client shared by every table generation (so pools of
//! unchanged endpoints survive a swap), the streamed request body, and error classification.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;

use bytes::Bytes;
use http::Uri;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::ServerConfig;

/// The pooled client every request uses.
pub(crate) type UpstreamClient = Client<RouteConnector, RequestBody>;

tokio::task_local! {
    /// The connect timeout of the route the request being sent is for; set around
    /// `client.request` so that [`RouteConnector`] sees it when hyper-util asks it to connect.
    pub(crate) static CONNECT_TIMEOUT: Duration;
}

/// `HttpConnector` with the connect timeout of the route (the [`CONNECT_TIMEOUT`] task-local,
/// else the server-wide one). hyper-util calls the connector from within the request future,
/// so the task-local of the request that caused a new connection is in scope.
#[derive(Clone)]
pub(crate) struct RouteConnector {
    inner: HttpConnector,
    default_timeout: Duration,
}

type ConnectFuture = Pin<
    Box<dyn Future<Output = Result<TokioIo<TcpStream>, Box<dyn StdError + Send + Sync>>> + Send>,
>;

impl tower_service::Service<Uri> for RouteConnector {
    type Response = TokioIo<TcpStream>;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let timeout = CONNECT_TIMEOUT
            .try_with(|timeout| *timeout)
            .unwrap_or(self.default_timeout);
        let connecting = self.inner.call(destination);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {} ms", timeout.as_millis()),
                )) as Box<dyn StdError + Send + Sync>),
            }
        })
    }
}

pub(crate) fn client(config: &ServerConfig) -> UpstreamClient {
    let mut inner = HttpConnector::new();
    inner.set_nodelay(true);
    // Enforced by `RouteConnector`, per route.
    inner.set_connect_timeout(None);
    inner.set_keepalive(Some(Duration::from_secs(60)));
    let connector = RouteConnector {
        inner,
        default_timeout: Duration::from_millis(config.upstream_connect_timeout_ms),
    };
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_millis(config.upstream_idle_timeout_ms))
        .pool_max_idle_per_host(config.upstream_max_idle_per_endpoint)
        // The client's Host header is forwarded as sent; never replace it with `ip:port`.
        .set_host(false)
        .build(connector)
}

/// What the proxy learns about a request body while it streams to the upstream.
#[derive(Debug, Default)]
pub(crate) struct BodyProgress {
    /// The body exceeded the route's size limit (the request then ends with 413).
    pub too_large: AtomicBool,
    /// Reading the client's body failed (the client went away or sent garbage).
    pub client_failed: AtomicBool,
    /// The body has been sent completely; the read timeout starts now.
    pub finished: Notify,
    /// Body bytes received from the client so far.
    received: AtomicU64,
}

impl BodyProgress {
    /// Body bytes received from the client so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
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
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.inner = None;
                if let Some(progress) = &this.progress {
                    progress.finished.notify_one();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
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
