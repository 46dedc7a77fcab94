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
    if request.uri().path() == "/metrics" {
        let body = Bytes::from(crate::metrics::render(shared));
        let mut response = Response::new(ResponseBody::local(full(body)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
        );
        headers.insert(header::SERVER, HeaderValue::from_static("silex"));
        return response;
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
    let mut response = Response::new(ResponseBody::local(full(Bytes::from_static(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::SERVER, HeaderValue::from_static("silex"));
    response
}
