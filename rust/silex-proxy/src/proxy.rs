//! The request path: route, pick an endpoint, stream the request and response.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use silex_routing::RouteMatch;

use crate::access_log::UpstreamFacts;
use crate::connection::{ConnInfo, InFlight};
use crate::error::{ProxyBody, ProxyError};
use crate::exchange::{Exchange, Outcome};
use crate::headers;
use crate::health::AttemptGuard;
use crate::request_id;
use crate::state::{BackendState, Generation, Shared};
use crate::tunnel;
use crate::upstream::{self, BodyProgress, RequestBody, UpstreamBody};
use crate::websocket_h2;
use hyper::upgrade::OnUpgrade;

static SERVER: HeaderValue = HeaderValue::from_static("silex");

/// The response body sent to clients: the upstream's, streamed, or one the proxy made. It
/// counts the bytes sent and holds the request's record and in-flight mark until hyper has
/// finished writing it (the record is completed first).
pub struct ResponseBody {
    inner: ProxyBody,
    exchange: Option<Exchange>,
    _in_flight: Option<InFlight>,
}

impl ResponseBody {
    fn new(inner: ProxyBody, exchange: Option<Exchange>, in_flight: Option<InFlight>) -> Self {
        Self {
            inner,
            exchange,
            _in_flight: in_flight,
        }
    }

    /// A body made by the proxy itself (admin pages, errors).
    pub(crate) fn local(inner: ProxyBody) -> Self {
        Self::new(inner, None, None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(exchange)) = (&poll, &mut this.exchange) {
            if let Some(data) = frame.data_ref() {
                exchange.bytes_out += data.len() as u64;
            }
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

/// Serves one request on a proxy listener. Never fails: errors become 4xx/5xx responses.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut request: Request<Incoming>,
) -> Response<ResponseBody> {
    let in_flight = conn.begin_request();
    shared.stats.request();
    let generation = shared.table.load_full();
    let request_id = request_id::resolve(request.headers_mut());
    let mut exchange = Exchange::begin(shared, &conn, &request, &request_id);
    let method = request.method().clone();
    // Cheap: `Uri` shares its bytes; kept only to name the request in error logs.
    let uri = request.uri().clone();
    let Exchange {
        shared, outcome, ..
    } = &mut exchange;
    let mut response = match forward(shared, &conn, &generation, request, outcome).await {
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
    response
        .headers_mut()
        .insert(request_id::X_REQUEST_ID.clone(), request_id);
    shared.stats.response(response.status());
    exchange.status = response.status().as_u16();
    response.map(|body| ResponseBody::new(body, Some(exchange), Some(in_flight)))
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
    shared: &Arc<Shared>,
    conn: &Arc<ConnInfo>,
    generation: &Generation,
    request: Request<Incoming>,
    outcome: &mut Outcome,
) -> Result<Response<ProxyBody>, Failure> {
    let (mut parts, body) = request.into_parts();
    let handshake = websocket_h2::prepare(&mut parts).map_err(|e| (e, None))?;
    let host_value = request_host(&mut parts).map_err(|e| (e, None))?;
    let host = match &host_value {
        Some(value) => value.to_str().map_err(|_| (ProxyError::BadHost, None))?,
        None => "",
    };
    if let Some(tls) = &conn.tls {
        check_certificate_covers(generation, tls, host).map_err(|e| (e, None))?;
    }
    let matched = generation.table.route(host, parts.uri.path());
    outcome.route = matched
        .as_ref()
        .and_then(|m| generation.route_metrics.get(m.target.0))
        .cloned();
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
    if backend.authorities.is_empty() {
        let id = generation.table.backends()[matched.backend.0].id.clone();
        return Err((ProxyError::NoEndpoint { backend: id }, route_log()));
    }

    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let client_version = parts.version;
    let upgrade = if handshake.is_some() {
        Some(websocket_h2::upgrade_value())
    } else {
        tunnel::requested_protocol(&parts)
    };
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    // gRPC servers require `te: trailers`, the one TE value HTTP/2 allows (RFC 9113 §8.2.2).
    let te_trailers = backend.http2 && headers::accepts_trailers(&parts.headers);
    headers::strip_hop_by_hop(&mut parts.headers);
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // The proxy already answered `100-continue` to the client by reading the body.
    parts.headers.remove(header::EXPECT);
    let scheme = if conn.tls.is_some() {
        silex_routing::Scheme::Https
    } else {
        generation.table.listener(&conn.listener).scheme
    };
    if client_version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    headers::set_forwarded(&mut parts.headers, conn, scheme, host_value.as_ref());
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }

    // Only the hash and cookie policies look at the request (after `set_forwarded`, so the
    // client address honours trusted proxies).
    let key = backend.request_key(&parts);
    // HTTP/2 upstreams get the client's host as `:authority` (and no `Host`, RFC 9113
    // §8.3.1); HTTP/1.1 URIs name the endpoint, which the pool connects to.
    let h2_authority = if backend.http2 {
        let host = parts.headers.remove(header::HOST);
        host.and_then(|value| http::uri::Authority::try_from(value.as_bytes()).ok())
    } else {
        None
    };
    backend.budget.deposit(shared.clock.now_ms());
    let read_timeout = options.upstream_read_timeout;
    let had_body = !body.is_end_stream();
    let mut body = had_body.then_some(body);
    let first_attempt = tokio::time::Instant::now();
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let Some(index) = backend.pick(shared.clock.now_ms(), &tried, key) else {
            let id = generation.table.backends()[matched.backend.0].id.clone();
            return Err((ProxyError::NoEndpoint { backend: id }, route_log()));
        };
        tried.push(index);
        let authority = &backend.authorities[index];
        let endpoint: &str = backend.names.get(index).map_or("", |name| name);
        // HTTP/1.1 sends the origin form; HTTP/2 an absolute URI (its `:authority`).
        let uri = match &h2_authority {
            None if !backend.http2 => Uri::from(path_and_query.clone()),
            _ => Uri::builder()
                .scheme(backend.scheme.clone())
                .authority(h2_authority.as_ref().unwrap_or(authority).clone())
                .path_and_query(path_and_query.clone())
                .build()
                .map_err(|e| {
                    let reason = e.to_string();
                    let endpoint = endpoint.to_owned();
                    (ProxyError::Upstream { endpoint, reason }, route_log())
                })?,
        };
        // No retry can follow this attempt: hand the headers over instead of copying them.
        let last = tried.len() >= backend.authorities.len()
            || tried.len() >= usize::try_from(options.next_upstream_tries).unwrap_or(usize::MAX);
        let mut headers = if last {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        if !backend.http2 && !headers.contains_key(header::HOST) {
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                headers.insert(header::HOST, value);
            }
        }
        let (give_back, returned) = if had_body {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            (Some(sender), Some(receiver))
        } else {
            (None, None)
        };
        // Only a body reports progress; a bodiless request needs no shared state.
        let progress = body.is_some().then(|| Arc::new(BodyProgress::default()));
        outcome.request_body.clone_from(&progress);
        let request_body = RequestBody::new(body.take(), limit, progress.clone(), give_back);
        let mut upstream_request = Request::new(request_body);
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri;
        *upstream_request.version_mut() = if backend.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *upstream_request.headers_mut() = headers;

        let sent_at = tokio::time::Instant::now();
        // In flight until the response body ends: balancers and the status page read it.
        let in_flight = backend.health[index].begin_attempt();
        let answer = attempt(
            shared,
            backend,
            index,
            upstream_request,
            progress.as_deref(),
            limit,
            options,
        )
        .await;
        let health = &backend.health[index];
        let (error, stage) = match answer {
            Ok(response) => {
                outcome.upstream = Some(UpstreamFacts {
                    address: authority.clone(),
                    status: response.status().as_u16(),
                    head_time: sent_at.elapsed(),
                });
                if response.status().is_server_error() {
                    record_failure(shared, health, endpoint);
                } else {
                    health.record_success();
                }
                if backend.policy.tracks_load() {
                    let rtt_ms = sent_at.elapsed().as_secs_f64() * 1000.0;
                    health.record_latency(rtt_ms, shared.clock.now_ms());
                }
                let mut response = respond(
                    shared,
                    conn,
                    response,
                    client_upgrade.map(|io| ClientUpgrade {
                        io,
                        websocket_h2: handshake.as_ref(),
                    }),
                    read_timeout,
                    endpoint,
                    in_flight,
                )
                .map_err(|e| (e, route_log()))?;
                let route_path = matched.route_path.unwrap_or("/");
                if let Some(cookie) = backend.affinity_cookie(index, key, route_path) {
                    if let Ok(value) = HeaderValue::from_str(&cookie) {
                        response.headers_mut().append(header::SET_COOKIE, value);
                    }
                }
                return Ok(response);
            }
            Err(failure) => failure,
        };
        if matches!(stage, Stage::Connect | Stage::Sent) {
            record_failure(shared, health, endpoint);
        }
        if stage == Stage::Connect {
            shared.stats.upstream_connect_error();
        }
        body = returned.and_then(|mut receiver| receiver.try_recv().ok());
        let replayable = !had_body || body.is_some();
        let allowed = match stage {
            // Never reached the backend: any method may go elsewhere.
            Stage::Connect => true,
            // An HTTP/2 WebSocket handshake that reached a backend is not replayed.
            Stage::Sent => handshake.is_none() && is_idempotent(&parts.method),
            Stage::ReadTimeout | Stage::SendTimeout | Stage::Client => false,
        };
        let in_time = options
            .next_upstream_timeout
            .is_none_or(|limit| first_attempt.elapsed() < limit);
        let more = tried.len() < backend.authorities.len()
            && tried.len() < usize::try_from(options.next_upstream_tries).unwrap_or(usize::MAX);
        if allowed && replayable && in_time && more {
            if backend.budget.withdraw() {
                shared.stats.retry();
                tracing::debug!(%endpoint, reason = %error, "retrying on another endpoint");
                continue;
            }
            tracing::debug!(%endpoint, "retry budget exhausted; not retrying");
        }
        return Err((error, route_log()));
    }
}

/// How far an attempt got before it failed (decides whether it may be retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No connection to the endpoint: the request never reached it.
    Connect,
    /// The connection failed or was reset before a response started.
    Sent,
    /// The endpoint did not start its response within the read timeout.
    ReadTimeout,
    /// The endpoint stopped taking the request body (part of it was sent).
    SendTimeout,
    /// The client's side failed (body too large, body read error).
    Client,
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

fn record_failure(shared: &Shared, health: &crate::health::EndpointHealth, endpoint: &str) {
    let now = shared.clock.now_ms();
    if health.record_failure(&shared.outlier, now) {
        let back_off = crate::health::remaining(health, now);
        tracing::warn!(
            endpoint,
            back_off_ms = duration_ms(back_off),
            "endpoint ejected after consecutive failures"
        );
    }
}

/// Sends one attempt and waits for the response head, with the read timeout counted from the
/// end of the request body, as nginx's is. While the body streams, the endpoint must take
/// each next part of it within the send timeout.
async fn attempt(
    shared: &Shared,
    backend: &BackendState,
    index: usize,
    request: Request<RequestBody>,
    progress: Option<&BodyProgress>,
    limit: u64,
    options: &silex_routing::EffectiveOptions,
) -> Result<Response<UpstreamBody>, (ProxyError, Stage)> {
    // `index` comes from `BackendState::pick`.
    let authority = &backend.authorities[index];
    let endpoint: &str = backend.names.get(index).map_or("", |name| name);
    let read_timeout = options.upstream_read_timeout;
    let connect_timeout = options
        .upstream_connect_timeout
        .unwrap_or_else(|| Duration::from_millis(shared.config.upstream_connect_timeout_ms));
    let body_pending = progress.filter(|_| !request.body().is_end_stream());
    let sent = backend.client.request(authority, request, connect_timeout);
    tokio::pin!(sent);
    if let Some(pending) = body_pending {
        let send_timeout = options
            .upstream_send_timeout
            .unwrap_or_else(|| Duration::from_millis(shared.config.upstream_send_timeout_ms));
        loop {
            let stalled = pending.upstream_stalled_for();
            if stalled.is_some_and(|stalled| stalled >= send_timeout) {
                return Err((
                    ProxyError::SendTimeout {
                        endpoint: endpoint.to_owned(),
                        timeout_ms: duration_ms(send_timeout),
                    },
                    Stage::SendTimeout,
                ));
            }
            let check_in = send_timeout.saturating_sub(stalled.unwrap_or_default());
            tokio::select! {
                biased;
                result = &mut sent => {
                    return classify(result, progress, endpoint, limit, connect_timeout);
                }
                () = pending.finished.notified() => break,
                () = tokio::time::sleep(check_in) => {}
            }
        }
    }
    match tokio::time::timeout(read_timeout, sent).await {
        Ok(result) => classify(result, progress, endpoint, limit, connect_timeout),
        Err(_) => Err((
            ProxyError::Timeout {
                endpoint: endpoint.to_owned(),
                timeout_ms: duration_ms(read_timeout),
            },
            Stage::ReadTimeout,
        )),
    }
}

fn classify(
    result: Result<Response<UpstreamBody>, upstream::UpstreamError>,
    progress: Option<&BodyProgress>,
    endpoint: &str,
    limit: u64,
    connect_timeout: Duration,
) -> Result<Response<UpstreamBody>, (ProxyError, Stage)> {
    let error = match result {
        Ok(response) => return Ok(response),
        Err(error) => error,
    };
    let chain = error.chain();
    if let Some(progress) = progress {
        if progress.too_large.load(Ordering::Relaxed) {
            return Err((ProxyError::BodyTooLarge { limit }, Stage::Client));
        }
        if progress.client_failed.load(Ordering::Relaxed) {
            let reason = upstream::root_cause(chain);
            return Err((ProxyError::ClientBody { reason }, Stage::Client));
        }
    }
    let endpoint = endpoint.to_owned();
    let reason = upstream::root_cause(chain);
    if let upstream::UpstreamError::Connect(_) = error {
        if upstream::is_timeout(chain) {
            let timeout_ms = duration_ms(connect_timeout);
            return Err((
                ProxyError::Timeout {
                    endpoint,
                    timeout_ms,
                },
                Stage::Connect,
            ));
        }
        return Err((ProxyError::Connect { endpoint, reason }, Stage::Connect));
    }
    Err((ProxyError::Upstream { endpoint, reason }, Stage::Sent))
}

/// The client's side of an upgrade: its connection (HTTP/1.1) or stream (HTTP/2) once
/// answered, and for an HTTP/2 WebSocket the handshake the backend's 101 must complete.
struct ClientUpgrade<'a> {
    io: OnUpgrade,
    websocket_h2: Option<&'a websocket_h2::Handshake>,
}

/// The client's response: the upstream's with hop-by-hop headers removed. A `101 Switching
/// Protocols` answering an upgrade request starts the tunnel between the two connections.
fn respond(
    shared: &Arc<Shared>,
    conn: &Arc<ConnInfo>,
    mut response: Response<UpstreamBody>,
    client_upgrade: Option<ClientUpgrade<'_>>,
    idle_timeout: Duration,
    endpoint: &str,
    in_flight: AttemptGuard,
) -> Result<Response<ProxyBody>, ProxyError> {
    use http_body_util::BodyExt;
    let handshake = client_upgrade.as_ref().and_then(|c| c.websocket_h2);
    if handshake.is_some()
        && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
        && response.status().is_success()
    {
        // A 2xx would open the client's HTTP/2 tunnel to a backend that did not upgrade.
        let reason = format!("{} to a WebSocket handshake", response.status());
        let endpoint = endpoint.to_owned();
        return Err(ProxyError::Upstream { endpoint, reason });
    }
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let body = body.counting(in_flight).boxed();
        return Ok(Response::from_parts(parts, body));
    }
    let Some(client_upgrade) = client_upgrade else {
        let reason = "101 Switching Protocols to a request that asked for no upgrade".to_owned();
        let endpoint = endpoint.to_owned();
        return Err(ProxyError::Upstream { endpoint, reason });
    };
    let upstream_upgrade = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(handshake) = handshake {
        handshake.accept(&mut parts, endpoint)?;
    } else if let Some(protocol) = protocol {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    tokio::spawn(tunnel::run(
        client_upgrade.io,
        upstream_upgrade,
        idle_timeout,
        conn.begin_request(),
        Shared::tunnel_opened(shared),
        endpoint.to_owned(),
    ));
    Ok(Response::from_parts(parts, crate::error::empty()))
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

/// `308 Permanent Redirect` to the same host and target over HTTPS, on the configured
/// `https_redirect_port`, else the port of the first HTTPS listener (omitted when 443).
/// `None` when neither is known.
fn redirect_to_https(
    shared: &Shared,
    parts: &http::request::Parts,
    host: &str,
) -> Option<Response<ProxyBody>> {
    let port = shared
        .config
        .https_redirect_port
        .unwrap_or_else(|| shared.https_port.load(Ordering::Relaxed));
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

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
