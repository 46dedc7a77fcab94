//! HTTP/2 towards backends (`h2c`, `grpc`, `grpcs`): one multiplexed connection per endpoint.
//!
//! Not hyper-util's pooled client: it takes `:authority` from the URI it also pools and
//! connects by, so a backend would see the endpoint's `ip:port` as `:authority` next to the
//! client's `Host`. Here the endpoint is the pool key and the request keeps the client's host
//! as `:authority` (nginx's `grpc_pass` does the same), with no `Host` field.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::config::ServerConfig;
use crate::upstream::{BoxError, RequestBody, UpstreamError};
use crate::upstream_h1::{connect_within, spawn_connection};

/// HTTP/2 connections to endpoints, one per endpoint, made by `connector`.
pub(crate) struct H2Pool<C> {
    connector: C,
    builder: http2::Builder<TokioExecutor>,
    /// The endpoint must have chosen `h2` by ALPN (TLS connections).
    require_alpn_h2: bool,
    connections: Mutex<HashMap<Authority, SendRequest<RequestBody>>>,
}

impl<C, T> H2Pool<C>
where
    C: Service<Uri, Response = T> + Clone + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    T: Read + Write + Connection + Unpin + Send + 'static,
{
    pub(crate) fn new(connector: C, config: &ServerConfig, require_alpn_h2: bool) -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_stream_window_size(config.h2_stream_window_bytes)
            .initial_connection_window_size(config.h2_connection_window_bytes)
            // gRPC streams may stay quiet for long: dead connections are found by pings.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        Self {
            connector,
            builder,
            require_alpn_h2,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` to `endpoint` on its connection, made first when there is none (or it
    /// closed). A request the old connection refused before sending goes on a new one.
    pub(crate) async fn request(
        &self,
        endpoint: &Authority,
        request: Request<RequestBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let request = match self.open(endpoint) {
            Some(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(request) => request,
                    None => return Err(UpstreamError::Send(error.into_error().into())),
                },
            },
            None => request,
        };
        let mut sender = self.connect(endpoint, connect_timeout).await?;
        sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Send(e.into()))
    }

    /// The endpoint's connection, when it has one still open.
    fn open(&self, endpoint: &Authority) -> Option<SendRequest<RequestBody>> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        match connections.get(endpoint) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                connections.remove(endpoint);
                None
            }
            None => None,
        }
    }

    /// A new connection to `endpoint`, connected (and for TLS, handshaken) within `timeout`.
    async fn connect(
        &self,
        endpoint: &Authority,
        timeout: Duration,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let io = connect_within(self.connector.clone(), endpoint, timeout).await?;
        if self.require_alpn_h2 && !io.connected().is_negotiated_h2() {
            let reason = "the endpoint did not choose HTTP/2 (ALPN h2) in the TLS handshake";
            return Err(UpstreamError::Connect(reason.into()));
        }
        let (sender, connection) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        spawn_connection(connection, endpoint, "HTTP/2");
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.clone(), sender.clone());
        Ok(sender)
    }

    /// Closes (once their streams end) the connections to endpoints not in `keep`.
    pub(crate) fn retain(&self, keep: &HashSet<Authority>) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|endpoint, sender| keep.contains(endpoint) && !sender.is_closed());
    }
}
