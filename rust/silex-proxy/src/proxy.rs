//! The request path: route, pick an endpoint, stream the request and response.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme as UriScheme};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use silex_routing::RouteMatch;

use crate::connection::{ConnInfo, InFlight};
use crate::error::{ProxyBody, ProxyError};
use crate::headers;
use crate::state::{Generation, Shared};
use crate::upstream::{self, BodyProgress, RequestBody};

static SERVER: HeaderValue = HeaderValue::from_static("silex");

/// The response body sent to clients: the upstream's, streamed, or one the proxy made. It
/// holds the request's in-flight mark until hyper has finished writing it.
pub struct ResponseBody {
    inner: ProxyBody,
    _in_flight: Option<InFlight>,
}

impl ResponseBody {
    fn new(inner: ProxyBody, in_flight: Option<InFlight>) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }

    /// A body made by the proxy itself (admin pages, errors).
    pub(crate) fn local(inner: ProxyBody) -> Self {
        Self::new(inner, None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one request on a proxy listener. Never fails: errors become 4xx/5xx responses.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let in_flight = conn.begin_request();
    shared.stats.request();
    let generation = shared.table.load_full();
    let method = request.method().clone();
    // Cheap: `Uri` shares its bytes; kept only to name the request in error logs.
    let uri = request.uri().clone();
    let mut response = match forward(&shared, &conn, &generation, request).await {
        Ok(response) => response,
        Err((error, route)) => {
            if error.source_side() == crate::error::ErrorSource::Upstream {
                shared.stats.upstream_error();
            }
            log_error(&error, &method, uri.path(), route.as_ref());
            error.response()
        }
    };
    if !response.headers().contains_key(header::SERVER) {
        response
            .headers_mut()
            .insert(header::SERVER, SERVER.clone());
    }
    shared.stats.response(response.status());
    response.map(|body| ResponseBody::new(body, Some(in_flight)))
}

/// What the logs say about the route an error happened on.
struct RouteLog {
    host: String,
    route: Option<String>,
    ingress: Option<String>,
    backend: String,
}

impl RouteLog {
    fn new(generation: &Generation, matched: &RouteMatch<'_>) -> Self {
        let backend = &generation.table.backends()[matched.backend.0];
        Self {
            host: matched.host.to_owned(),
            route: matched.route_path.map(str::to_owned),
            ingress: matched.ingress.map(str::to_owned),
            backend: backend.id.clone(),
        }
    }
}

fn log_error(error: &ProxyError, method: &http::Method, path: &str, route: Option<&RouteLog>) {
    let status = error.status().as_u16();
    match route {
        Some(r) => tracing::warn!(
            status,
            %method,
            path,
            vhost = %r.host,
            route = r.route.as_deref().unwrap_or("(default backend)"),
            ingress = r.ingress.as_deref().unwrap_or("-"),
            backend = %r.backend,
            reason = %error,
            "request failed"
        ),
        None => tracing::info!(status, %method, path, reason = %error, "request not routed"),
    }
}

type Failure = (ProxyError, Option<RouteLog>);

async fn forward(
    shared: &Shared,
    conn: &ConnInfo,
    generation: &Generation,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Failure> {
    let (mut parts, body) = request.into_parts();
    let host_value = request_host(&mut parts).map_err(|e| (e, None))?;
    let host = match &host_value {
        Some(value) => value.to_str().map_err(|_| (ProxyError::BadHost, None))?,
        None => "",
    };
    let matched = generation
        .table
        .route(host, parts.uri.path())
        .ok_or((ProxyError::NoRoute, None))?;
    let route_log = || Some(RouteLog::new(generation, &matched));
    let options = matched.options;

    let limit = options.max_request_body_bytes;
    if limit > 0 && body.size_hint().lower() > limit {
        return Err((ProxyError::BodyTooLarge { limit }, route_log()));
    }
    let backend = &generation.backends[matched.backend.0];
    let Some(authority) = backend.next() else {
        let id = generation.table.backends()[matched.backend.0].id.clone();
        return Err((ProxyError::NoEndpoint { backend: id }, route_log()));
    };

    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme(UriScheme::HTTP)
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| {
            let endpoint = authority.to_string();
            let reason = e.to_string();
            (ProxyError::Upstream { endpoint, reason }, route_log())
        })?;
    parts.version = Version::HTTP_11;
    headers::strip_hop_by_hop(&mut parts.headers);
    // The proxy already answered `100-continue` to the client by reading the body.
    parts.headers.remove(header::EXPECT);
    let scheme = generation.table.listener(&conn.listener).scheme;
    headers::set_forwarded(&mut parts.headers, conn, scheme, host_value.as_ref());
    if !parts.headers.contains_key(header::HOST) {
        if let Some(value) = host_value.clone() {
            parts.headers.insert(header::HOST, value);
        } else if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, value);
        }
    }

    let progress = Arc::new(BodyProgress::default());
    let body = RequestBody::new(body, limit, Arc::clone(&progress));
    let body_pending = !body.is_end_stream();
    let upstream_request = Request::from_parts(parts, body);
    let read_timeout = options.upstream_read_timeout;

    let endpoint = authority.to_string();
    let sent = shared.client.request(upstream_request);
    tokio::pin!(sent);
    // The read timeout counts from the end of the request body, as nginx's does.
    if body_pending {
        tokio::select! {
            biased;
            result = &mut sent => {
                return finish(result, &progress, endpoint, limit).map_err(|e| (e, route_log()));
            }
            () = progress.finished.notified() => {}
        }
    }
    match tokio::time::timeout(read_timeout, sent).await {
        Ok(result) => finish(result, &progress, endpoint, limit).map_err(|e| (e, route_log())),
        Err(_) => Err((
            ProxyError::Timeout {
                endpoint,
                timeout_ms: duration_ms(read_timeout),
            },
            route_log(),
        )),
    }
}

/// The host a request is for, validated as RFC 9112 §3.2 requires: an HTTP/1.1 request
/// carries exactly one valid `Host`; an absolute-form target's authority overrides it (and
/// replaces it upstream, so routing and backend see the same host). HTTP/1.0 may omit it.
fn request_host(parts: &mut http::request::Parts) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let header_host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(ProxyError::BadHost);
    }
    let host = match parts.uri.authority() {
        Some(authority) => {
            let value =
                HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::BadHost)?;
            parts.headers.insert(header::HOST, value.clone());
            Some(value)
        }
        None => header_host,
    };
    match &host {
        Some(value) => {
            let valid = value
                .to_str()
                .ok()
                .and_then(silex_routing::normalize_host)
                .is_some();
            if !valid {
                return Err(ProxyError::BadHost);
            }
        }
        None if parts.version >= Version::HTTP_11 => return Err(ProxyError::BadHost),
        None => {}
    }
    Ok(host)
}

fn finish(
    result: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    progress: &BodyProgress,
    endpoint: String,
    limit: u64,
) -> Result<Response<ProxyBody>, ProxyError> {
    use http_body_util::BodyExt;
    match result {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(error) => {
            if progress.too_large.load(Ordering::Relaxed) {
                return Err(ProxyError::BodyTooLarge { limit });
            }
            if progress.client_failed.load(Ordering::Relaxed) {
                return Err(ProxyError::ClientBody {
                    reason: upstream::root_cause(&error),
                });
            }
            let reason = upstream::root_cause(&error);
            if error.is_connect() {
                if upstream::is_timeout(&error) {
                    return Err(ProxyError::Timeout {
                        endpoint,
                        timeout_ms: 0,
                    });
                }
                return Err(ProxyError::Connect { endpoint, reason });
            }
            Err(ProxyError::Upstream { endpoint, reason })
        }
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
