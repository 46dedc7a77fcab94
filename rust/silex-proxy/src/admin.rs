//! The admin listener: liveness and readiness for probes and load balancers, and metrics.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::error::{full, plain_response};
use crate::proxy::ResponseBody;
use crate::state::Shared;

/// `/healthz`: the process serves. `/readyz`: a table is applied and we are not draining.
/// `/metrics`: the Prometheus exposition.
pub(crate) fn handle<B>(shared: &Shared, request: &Request<B>) -> Response<ResponseBody> {
    let page = shared.config.status_page;
    match request.uri().path() {
        "/metrics" => {
            return document(crate::metrics::render(shared), crate::metrics::CONTENT_TYPE)
        }
        "/" if page => return document(crate::status::html(shared), "text/html; charset=utf-8"),
        "/api/status" if page => return document(crate::status::json(shared), "application/json"),
        _ => {}
    }
    let (status, text) = match request.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n"),
        "/readyz" if shared.draining.load(Ordering::Relaxed) => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        "/readyz" if shared.is_ready() => (StatusCode::OK, "ready\n"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no routing table applied yet\n",
        ),
        _ => return plain_response(StatusCode::NOT_FOUND).map(ResponseBody::local),
    };
    let mut response = document(text.to_owned(), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

/// A 200 response with `body`; never cached (the admin pages are live).
fn document(body: String, content_type: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::local(full(Bytes::from(body))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::SERVER, HeaderValue::from_static("silex"));
    response
}
