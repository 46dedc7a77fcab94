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
    if conn.tls.is_some() {
        if let Some(hsts) = &shared.hsts {
            if !response
                .headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
            {
                response
                    .headers_mut()
                    .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
        }
    }
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
    if let Some(tls) = &conn.tls {
        check_certificate_covers(generation, tls, host).map_err(|e| (e, None))?;
    }
    let matched = generation.table.route(host, parts.uri.path());
    if conn.tls.is_none() {
        let redirect = match &matched {
            Some(matched) => matched.redirect_https,
            None => generation.table.host_redirects_https(host),
        };
        if redirect && !forwarded_https(conn, &parts.headers) {
            if let Some(response) = redirect_to_https(shared, &parts, host) {
                return Ok(response);
            }
        }
    }
    let matched = matched.ok_or((ProxyError::NoRoute, None))?;
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
    let scheme = if conn.tls.is_some() {
        silex_routing::Scheme::Https
    } else {
        generation.table.listener(&conn.listener).scheme
    };
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
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

/// 421 unless `host` gets the same certificate as the connection's SNI did: a client may not
/// reach one tenant's host over a connection authenticated with another's certificate.
fn check_certificate_covers(
    generation: &Generation,
    tls: &crate::connection::TlsInfo,
    host: &str,
) -> Result<(), ProxyError> {
    if host.is_empty() {
        return Ok(());
    }
    let normalized = silex_routing::normalize_host(host);
    if normalized.is_some() && normalized.as_deref() == tls.sni.as_deref() {
        return Ok(());
    }
    if generation.tls.select(Some(host)) == tls.certificate {
        Ok(())
    } else {
        Err(ProxyError::Misdirected)
    }
}

/// A trusted proxy in front already terminated TLS (`X-Forwarded-Proto: https`).
fn forwarded_https(conn: &ConnInfo, headers: &http::HeaderMap) -> bool {
    conn.trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// `308 Permanent Redirect` to the same host and target on the HTTPS listener (the port of the
/// first HTTPS listener, omitted when 443). `None` when no HTTPS listener is bound.
fn redirect_to_https(
    shared: &Shared,
    parts: &http::request::Parts,
    host: &str,
) -> Option<Response<ProxyBody>> {
    let port = shared.https_port.load(Ordering::Relaxed);
    if port == 0 {
        return None;
    }
    let authority: http::uri::Authority = host.parse().ok()?;
    let name = authority.host();
    let name = name.strip_suffix('.').unwrap_or(name);
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{name}{target}")
    } else {
        format!("https://{name}:{port}{target}")
    };
    let location = HeaderValue::from_str(&location).ok()?;
    let mut response = crate::error::plain_response(http::StatusCode::PERMANENT_REDIRECT);
    response.headers_mut().insert(header::LOCATION, location);
    Some(response)
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(header::COOKIE, value);
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
