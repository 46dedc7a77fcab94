//! `X-Request-ID`: the client's when well-formed, else a new one, on the upstream request, the
//! response and the access log.
//!
//! Well-formed: 1 to 128 characters, each an ASCII letter, digit, `.`, `_`, `:` or `-` (UUIDs,
//! ingress-nginx's 32 hex digits, and the usual trace ids fit). A new id is 32 lower-case hex
//! digits (128 random bits), like ingress-nginx's `$req_id`, from a per-thread wyrand
//! generator seeded once per thread: no system call and no lock per request. The ids identify
//! requests in logs; they are not secrets and must not be used as such.

use std::cell::Cell;
use std::hash::BuildHasher;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

/// The header carrying the id.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// Whether `value` is an id the proxy keeps (see the module documentation).
fn is_well_formed(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_LEN).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request's id: the client's first `X-Request-ID` when well-formed, else a new one. The
/// headers are left with exactly that one `X-Request-ID`, for the upstream.
pub(crate) fn resolve(headers: &mut HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let first = values.next();
    let only_one = values.next().is_none();
    match first {
        Some(value) if is_well_formed(value) => {
            let id = value.clone();
            if !only_one {
                headers.insert(X_REQUEST_ID.clone(), id.clone());
            }
            id
        }
        _ => {
            let id = generate();
            headers.insert(X_REQUEST_ID.clone(), id.clone());
            id
        }
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A per-thread seed: std's `RandomState` draws its keys from the OS once per thread.
fn seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id())
}

/// wyrand: one multiply per 64 bits, good statistical quality, not cryptographic.
fn next_u64() -> u64 {
    STATE.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        #[allow(clippy::cast_possible_truncation)]
        let folded = (t as u64) ^ ((t >> 64) as u64);
        folded
    })
}

/// A new id: 32 lower-case hex digits.
fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    let random = (u128::from(next_u64()) << 64) | u128::from(next_u64());
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[usize::try_from((random >> (124 - 4 * i)) & 0xf).unwrap_or(0)];
    }
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
        assert!(is_well_formed(&a));
    }

    #[test]
    fn well_formed_ids_are_kept_and_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(
            X_REQUEST_ID.clone(),
            HeaderValue::from_static("abc-123_x.y:z"),
        );
        assert_eq!(resolve(&mut headers), "abc-123_x.y:z");
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                headers.insert(X_REQUEST_ID.clone(), value);
            }
            let id = resolve(&mut headers);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert_eq!(headers.get(&X_REQUEST_ID), Some(&id));
        }
        let mut headers = HeaderMap::new();
        headers.append(X_REQUEST_ID.clone(), HeaderValue::from_static("first"));
        headers.append(X_REQUEST_ID.clone(), HeaderValue::from_static("second"));
        assert_eq!(resolve(&mut headers), "first");
        assert_eq!(headers.get_all(&X_REQUEST_ID).iter().count(), 1);
    }
}
