//! The admin listener: liveness and readiness for probes and load balancers.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};

use crate::error::{full, plain_response};
use crate::proxy::ResponseBody;
use crate::state::Shared;

/// `/healthz`: the process serves. `/readyz`: a table is applied and we are not draining.
pub(crate) fn handle<B>(shared: &Shared, request: &Request<B>) -> Response<ResponseBody> {
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
