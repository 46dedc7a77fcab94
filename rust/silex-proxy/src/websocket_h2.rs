//! WebSockets over HTTP/2 (RFC 8441 extended CONNECT) to HTTP/1.1 backends: the client's
//! `CONNECT` with `:protocol: websocket` becomes an HTTP/1.1 `GET` with `Upgrade: websocket`,
//! and the backend's `101 Switching Protocols` becomes the client's `200`. HTTP/2 carries no
//! `Sec-WebSocket-Key` (RFC 8441 §5), so the proxy makes one and checks the backend's answer.

use base64::Engine;
use http::header::{self, HeaderName, HeaderValue};
use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::ProxyError;

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
static SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// RFC 6455 §1.3: the GUID appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const WEBSOCKET: &str = "websocket";

/// The `Sec-WebSocket-Accept` the backend must answer with.
pub(crate) struct Handshake {
    accept: HeaderValue,
}

/// Turns an extended CONNECT into the backend's upgrade `GET`. `Ok(None)` for every other
/// request (a plain CONNECT included); an error for a `:protocol` other than `websocket`.
pub(crate) fn prepare(parts: &mut http::request::Parts) -> Result<Option<Handshake>, ProxyError> {
    // Hot path: one comparison for every request that is not a CONNECT.
    if parts.method != http::Method::CONNECT {
        return Ok(None);
    }
    let Some(protocol) = parts.extensions.remove::<hyper::ext::Protocol>() else {
        return Ok(None);
    };
    if !protocol.as_str().eq_ignore_ascii_case(WEBSOCKET) {
        let protocol = protocol.as_str().to_owned();
        return Err(ProxyError::UnsupportedProtocol { protocol });
    }
    let mut nonce = [0_u8; 16];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| ProxyError::Internal {
            reason: "no random bytes for a Sec-WebSocket-Key".to_owned(),
        })?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let accept = accept_for(key.as_bytes());
    parts.method = http::Method::GET;
    parts.headers.insert(
        SEC_WEBSOCKET_KEY.clone(),
        HeaderValue::try_from(key).map_err(|_| ProxyError::Internal {
            reason: "invalid Sec-WebSocket-Key".to_owned(),
        })?,
    );
    Ok(Some(Handshake { accept }))
}

/// The `Upgrade` value the backend's request carries.
pub(crate) fn upgrade_value() -> HeaderValue {
    HeaderValue::from_static(WEBSOCKET)
}

impl Handshake {
    /// Turns the backend's `101` into the client's `200`, once its `Sec-WebSocket-Accept`
    /// proves it answered this handshake.
    pub(crate) fn accept(
        &self,
        parts: &mut http::response::Parts,
        endpoint: &str,
    ) -> Result<(), ProxyError> {
        if parts.headers.get(&SEC_WEBSOCKET_ACCEPT) != Some(&self.accept) {
            return Err(ProxyError::Upstream {
                endpoint: endpoint.to_owned(),
                reason: "WebSocket handshake answered with a wrong Sec-WebSocket-Accept".to_owned(),
            });
        }
        parts.headers.remove(&SEC_WEBSOCKET_ACCEPT);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.status = http::StatusCode::OK;
        parts.version = http::Version::HTTP_2;
        Ok(())
    }
}

/// RFC 6455 §4.2.2: base64(SHA-1(key + GUID)).
fn accept_for(key: &[u8]) -> HeaderValue {
    let mut input = Vec::with_capacity(key.len() + ACCEPT_GUID.len());
    input.extend_from_slice(key);
    input.extend_from_slice(ACCEPT_GUID);
    let hash = digest(&SHA1_FOR_LEGACY_USE_ONLY, &input);
    let encoded = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
    HeaderValue::try_from(encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_6455_example() {
        // RFC 6455 §1.3's worked example.
        let accept = accept_for(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
