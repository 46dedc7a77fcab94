//! The upstream side: one pooled HTTP/1.1 client shared by every table generation (so pools of
//! unchanged endpoints survive a swap), the streamed request body, and error classification.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Notify;

use crate::config::ServerConfig;

/// The pooled client every request uses.
pub(crate) type UpstreamClient = Client<HttpConnector, RequestBody>;

pub(crate) fn client(config: &ServerConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(
        config.upstream_connect_timeout_ms,
    )));
    connector.set_keepalive(Some(Duration::from_secs(60)));
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
}

/// The client's request body, streamed to the upstream frame by frame, never buffered whole.
pub(crate) struct RequestBody {
    inner: Option<Incoming>,
    limit: u64,
    seen: u64,
    progress: Arc<BodyProgress>,
}

impl RequestBody {
    /// `limit` 0 means unlimited.
    pub(crate) fn new(inner: Incoming, limit: u64, progress: Arc<BodyProgress>) -> Self {
        let inner = (!inner.is_end_stream()).then_some(inner);
        Self {
            inner,
            limit,
            seen: 0,
            progress,
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
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.inner = None;
                this.progress.finished.notify_one();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.limit > 0 && this.seen > this.limit {
                        this.inner = None;
                        this.progress.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.inner = None;
                this.progress.client_failed.store(true, Ordering::Relaxed);
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
