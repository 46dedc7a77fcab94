//! Why a request did not get the backend's response, and the status the client sees.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};

/// Body type of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Which side of the proxy an error came from; decides its status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we refuse (4xx).
    Downstream,
    /// The backend failed or is unreachable (5xx, 502/503/504).
    Upstream,
    /// A bug or resource problem inside the proxy (500).
    Internal,
}

/// A request that ends with an error response from the proxy itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No host or path rule matched and there is no default backend.
    #[error("no route for this host and path")]
    NoRoute,
    /// The request has no usable host.
    #[error("missing or invalid Host header")]
    BadHost,
    /// On TLS: the request's host would get another certificate than the one the client's
    /// SNI selected (no domain fronting across tenants).
    #[error("host not covered by the certificate selected by SNI")]
    Misdirected,
    /// The request body is larger than the route allows.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The route's limit in bytes.
        limit: u64,
    },
    /// The backend has no ready endpoint.
    #[error("backend {backend} has no ready endpoint")]
    NoEndpoint {
        /// Backend id.
        backend: String,
    },
    /// The upstream refused or could not be reached.
    #[error("upstream {endpoint} connect failed: {reason}")]
    Connect {
        /// `ip:port` of the endpoint.
        endpoint: String,
        /// Underlying error.
        reason: String,
    },
    /// The upstream did not start its response in time.
    #[error("upstream {endpoint} timed out after {timeout_ms} ms")]
    Timeout {
        /// `ip:port` of the endpoint.
        endpoint: String,
        /// The timeout that fired.
        timeout_ms: u64,
    },
    /// The upstream stopped reading the request body for longer than the send timeout.
    #[error("upstream {endpoint} took no request body for {timeout_ms} ms (send timeout)")]
    SendTimeout {
        /// `ip:port` of the endpoint.
        endpoint: String,
        /// The timeout that fired.
        timeout_ms: u64,
    },
    /// The upstream reset the connection or sent an invalid response.
    #[error("upstream {endpoint} failed: {reason}")]
    Upstream {
        /// `ip:port` of the endpoint.
        endpoint: String,
        /// Underlying error.
        reason: String,
    },
    /// An HTTP/2 extended CONNECT (RFC 8441) for a protocol other than `websocket`.
    #[error("extended CONNECT for unsupported protocol {protocol:?} (only websocket)")]
    UnsupportedProtocol {
        /// The request's `:protocol`.
        protocol: String,
    },
    /// The proxy itself failed to make the request.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
    /// The client's request body failed while being forwarded.
    #[error("client request body failed: {reason}")]
    ClientBody {
        /// Underlying error.
        reason: String,
    },
}

impl ProxyError {
    /// Where the error came from.
    pub fn source_side(&self) -> ErrorSource {
        match self {
            Self::NoRoute
            | Self::BadHost
            | Self::Misdirected
            | Self::BodyTooLarge { .. }
            | Self::UnsupportedProtocol { .. }
            | Self::ClientBody { .. } => ErrorSource::Downstream,
            Self::Internal { .. } => ErrorSource::Internal,
            Self::NoEndpoint { .. }
            | Self::Connect { .. }
            | Self::Timeout { .. }
            | Self::SendTimeout { .. }
            | Self::Upstream { .. } => ErrorSource::Upstream,
        }
    }

    /// The status sent to the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::BadHost | Self::ClientBody { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UnsupportedProtocol { .. } => StatusCode::NOT_IMPLEMENTED,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } | Self::SendTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The response sent to the client: a short plain-text body naming the status only
    /// (details go to the log, never to the client).
    pub fn response(&self) -> Response<ProxyBody> {
        plain_response(self.status())
    }
}

/// A small `text/plain` response carrying the status line's reason.
pub fn plain_response(status: StatusCode) -> Response<ProxyBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::new(full(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A complete in-memory body.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}
