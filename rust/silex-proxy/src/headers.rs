//! Header rewriting between client and upstream: hop-by-hop removal and `X-Forwarded-*`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use silex_routing::Scheme;

use crate::connection::ConnInfo;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static CLOSE: HeaderName = HeaderName::from_static("close");

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including every header the `Connection`
/// header names. Called before the proxy adds its own headers, so a client cannot use
/// `Connection: X-Forwarded-For` to strip them.
///
/// Most messages have none: one pass over the names (no hashing) finds that out, and only a
/// message that has some pays for the removals.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // `Connection: keep-alive` (or `close`, `upgrade`) names nothing more to remove: no
    // allocation and no header-name parsing for the common case.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| {
            !token.is_empty()
                && !HOP_BY_HOP
                    .iter()
                    .any(|name| token.eq_ignore_ascii_case(name.as_str()))
        })
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() {
        headers.remove(name);
    }
}

/// Removed from every message, whether or not `Connection` names them. `Close` is a
/// reserved field name (RFC 9110 §7.6.1: it must never appear as a field).
static HOP_BY_HOP: [&HeaderName; 8] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &CLOSE,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // A string match (dispatched on length) is cheaper than eight `HeaderName` comparisons;
    // it runs for every header of every message.
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "close"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The client's `TE` lists `trailers` (a gRPC client's does).
pub(crate) fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("trailers"))
}

/// Sets `X-Forwarded-For/-Proto/-Host/-Port` and `X-Real-IP`. From an untrusted peer the
/// client's copies are replaced; from a trusted proxy they are kept (and the peer appended
/// to `X-Forwarded-For`).
pub(crate) fn set_forwarded(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    scheme: Scheme,
    host: Option<&HeaderValue>,
) {
    if conn.trusted {
        let peer_ip = conn.peer_ip.to_str().unwrap_or_default();
        let received_for = joined(headers, &X_FORWARDED_FOR);
        if !headers.contains_key(&X_REAL_IP) {
            match received_for
                .as_deref()
                .and_then(|chain| chain.split(',').next())
            {
                Some(client) => insert(headers, &X_REAL_IP, client.trim()),
                None => {
                    headers.insert(X_REAL_IP.clone(), conn.peer_ip.clone());
                }
            }
        }
        match &received_for {
            Some(chain) => insert(headers, &X_FORWARDED_FOR, &format!("{chain}, {peer_ip}")),
            None => {
                headers.insert(X_FORWARDED_FOR.clone(), conn.peer_ip.clone());
            }
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), scheme_value(scheme));
        }
        if let Some(host) = host {
            if !headers.contains_key(&X_FORWARDED_HOST) {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
        }
        if !headers.contains_key(&X_FORWARDED_PORT) {
            headers.insert(X_FORWARDED_PORT.clone(), conn.local_port.clone());
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), conn.peer_ip.clone());
        headers.insert(X_REAL_IP.clone(), conn.peer_ip.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), scheme_value(scheme));
        match host {
            Some(host) => {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
        headers.insert(X_FORWARDED_PORT.clone(), conn.local_port.clone());
    }
}

fn scheme_value(scheme: Scheme) -> HeaderValue {
    match scheme {
        Scheme::Http => HeaderValue::from_static("http"),
        Scheme::Https => HeaderValue::from_static("https"),
    }
}

/// All values of a header joined with ", " (clients may send several lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_string(), |mut all, v| {
        all.push_str(", ");
        all.push_str(v);
        all
    }))
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret , te"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(
            headers.get("x-kept").map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn the_name_match_and_the_list_agree() {
        assert!(HOP_BY_HOP.iter().all(|name| is_hop_by_hop(name)));
        assert!(!is_hop_by_hop(&header::HOST));
    }

    #[test]
    fn every_hop_by_hop_header_is_removed_without_connection() {
        let mut headers = HeaderMap::new();
        for name in [
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-connection",
        ] {
            headers.append(name, HeaderValue::from_static("x"));
        }
        headers.append("keep-alive", HeaderValue::from_static("1"));
        headers.append("keep-alive", HeaderValue::from_static("2"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn trailers_accepted_from_any_te_token() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_trailers(&headers));
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        assert!(!accepts_trailers(&headers));
        headers.append(header::TE, HeaderValue::from_static("deflate, Trailers"));
        assert!(accepts_trailers(&headers));
    }
}
