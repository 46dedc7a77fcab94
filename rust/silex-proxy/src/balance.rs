//! Load-balancing policies besides round robin: least request and peak EWMA (power of two
//! choices), consistent hashing (a ketama ring) and cookie affinity.
//!
//! The per-endpoint inputs (requests in flight, latency EWMA) live in
//! [`crate::health::EndpointHealth`], kept across table swaps; what is built from a table (the
//! ring, the affinity tokens, the weights) lives in [`crate::state::BackendState`].

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use silex_routing::{AffinityCookie, HashBy, HashSource, SameSite};

/// Decay time of the latency EWMA (ingress-nginx's `DECAY_TIME`, 10 s).
const EWMA_DECAY_MS: f64 = 10_000.0;

/// Ring points per unit of weight (nginx's ketama uses 160).
const POINTS_PER_WEIGHT: u64 = 160;
/// Most points in one ring; larger weight sums are scaled down.
const MAX_POINTS: u64 = 160 * 4096;

/// A stable 64-bit hash (FNV-1a, then splitmix64's finalizer for avalanche): the same on
/// every replica, version and restart, so rings and affinity cookies agree across proxies.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    mix(hash)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(
        std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
    );
}

/// A fast per-thread pseudo-random number (xorshift64*); not for secrets.
pub(crate) fn random() -> u64 {
    RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The latency EWMA `ewma` (last updated at `stamp_ms`) decayed to `now_ms` towards `sample`,
/// as ingress-nginx's `decay_ewma` computes it: weight `exp(-elapsed / 10 s)`.
pub(crate) fn decay_ewma(ewma: f64, stamp_ms: u64, sample: f64, now_ms: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // milliseconds since start: far below 2^52
    let elapsed = now_ms.saturating_sub(stamp_ms) as f64;
    let weight = (-elapsed / EWMA_DECAY_MS).exp();
    ewma * weight + sample * (1.0 - weight)
}

/// The peak EWMA after a response took `rtt_ms`: a slower sample than the average replaces it
/// at once (Finagle's "peak"), a faster one is blended in with the decay.
pub(crate) fn peak_ewma(ewma: f64, stamp_ms: u64, rtt_ms: f64, now_ms: u64) -> f64 {
    if rtt_ms > ewma {
        rtt_ms
    } else {
        decay_ewma(ewma, stamp_ms, rtt_ms, now_ms)
    }
}

/// A ketama consistent-hash ring: each endpoint owns `weight * 160` points derived from its
/// `ip:port` only, so a table swap that keeps an endpoint keeps its keys, and adding or removing
/// one endpoint moves only the keys of its own points.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub(crate) fn new(names: &[Box<str>], weights: &[u64]) -> Self {
        let total: u64 = weights.iter().sum::<u64>().max(1) * POINTS_PER_WEIGHT;
        let mut points = Vec::new();
        let mut label = String::new();
        for (index, (name, weight)) in names.iter().zip(weights).enumerate() {
            let mut count = weight * POINTS_PER_WEIGHT;
            if total > MAX_POINTS {
                count = (count * MAX_POINTS / total).max(1);
            }
            let Ok(index) = u32::try_from(index) else {
                break;
            };
            for point in 0..count {
                use std::fmt::Write;
                label.clear();
                let _ = write!(label, "{name}-{point}");
                points.push((stable_hash(label.as_bytes()), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Endpoint indexes met walking the ring clockwise from `key` (each point once).
    pub(crate) fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(point, _)| point < key);
        self.points[start..]
            .iter()
            .chain(&self.points[..start])
            .map(|&(_, index)| index as usize)
    }
}

/// The opaque affinity-cookie value naming an endpoint: a keyed hash of its `ip:port`, so the
/// cookie does not reveal the address and every replica computes the same value.
pub(crate) fn affinity_token(endpoint: &str) -> u64 {
    let mut keyed = Vec::with_capacity(endpoint.len() + 16);
    keyed.extend_from_slice(b"silex-affinity/");
    keyed.extend_from_slice(endpoint.as_bytes());
    stable_hash(&keyed)
}

/// Parses a cookie value made by [`set_cookie_value`].
pub(crate) fn parse_token(value: &[u8]) -> Option<u64> {
    if value.len() != 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

/// The `Set-Cookie` value pinning a client to the endpoint with `token`.
pub(crate) fn set_cookie_value(cookie: &AffinityCookie, token: u64, route_path: &str) -> String {
    let path = cookie.path.as_deref().unwrap_or(route_path);
    let mut value = format!("{}={token:016x}; Path={path}; HttpOnly", cookie.name);
    if let Some(max_age) = cookie.max_age_s {
        let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(max_age);
        value.push_str(&format!(
            "; Max-Age={max_age}; Expires={}",
            httpdate::fmt_http_date(expires)
        ));
    }
    if let Some(samesite) = cookie.samesite {
        value.push_str(match samesite {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
    }
    if cookie.secure {
        value.push_str("; Secure");
    }
    value
}

/// The value of cookie `name` in the request's `Cookie` header(s).
pub(crate) fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let rest = pair.strip_prefix(name.as_bytes())?;
            rest.strip_prefix(b"=")
        })
}

/// The hash of the request value `by` names; `None` when the request has none.
pub(crate) fn request_key(by: &HashBy, parts: &http::request::Parts) -> Option<u64> {
    let name = by.name.as_deref().unwrap_or_default();
    let value: &[u8] = match by.source {
        HashSource::RemoteAddr => parts.headers.get("x-real-ip")?.as_bytes(),
        HashSource::RequestUri => parts.uri.path_and_query()?.as_str().as_bytes(),
        HashSource::Header => parts.headers.get(name)?.as_bytes(),
        HashSource::Cookie => cookie(&parts.headers, name)?,
    };
    Some(stable_hash(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Box<str>> {
        (0..n)
            .map(|i| format!("10.0.0.{i}:8080").into_boxed_str())
            .collect()
    }

    fn owner(ring: &Ring, key: u64) -> usize {
        ring.walk(key).next().unwrap_or(usize::MAX)
    }

    #[test]
    fn ring_spreads_keys_by_weight() {
        let ring = Ring::new(&names(3), &[1, 1, 2]);
        let mut counts = [0u32; 3];
        for key in 0..40_000u64 {
            counts[owner(&ring, stable_hash(&key.to_le_bytes()))] += 1;
        }
        // Expected 10k, 10k, 20k; ketama with 160 points per weight stays within ~10 %.
        assert!((8_500..11_500).contains(&counts[0]), "{counts:?}");
        assert!((8_500..11_500).contains(&counts[1]), "{counts:?}");
        assert!((17_000..23_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn ring_moves_only_the_keys_of_a_removed_endpoint() {
        let all = names(4);
        let before = Ring::new(&all, &[1, 1, 1, 1]);
        // Endpoint 3 removed; indexes 0-2 keep their names.
        let after = Ring::new(&all[..3], &[1, 1, 1]);
        for key in 0..10_000u64 {
            let key = stable_hash(&key.to_le_bytes());
            let was = owner(&before, key);
            if was != 3 {
                assert_eq!(owner(&after, key), was);
            }
        }
        // The same table twice gives the same ring.
        let again = Ring::new(&all, &[1, 1, 1, 1]);
        assert_eq!(before.points, again.points);
    }

    #[test]
    fn ring_walk_visits_every_endpoint() {
        let ring = Ring::new(&names(3), &[1, 1, 1]);
        let mut seen: Vec<usize> = ring.walk(42).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2]);
    }

    #[test]
    fn ewma_decays_with_ingress_nginx_weights() {
        // No time passed: the old value stands.
        assert!((decay_ewma(100.0, 0, 0.0, 0) - 100.0).abs() < 1e-9);
        // One decay time: weight e^-1.
        let decayed = decay_ewma(100.0, 0, 0.0, 10_000);
        assert!((decayed - 100.0 * (-1.0f64).exp()).abs() < 1e-9);
        // Long after, the sample dominates.
        assert!((decay_ewma(100.0, 0, 20.0, 1_000_000) - 20.0).abs() < 1e-6);
        // Peak: a slower sample replaces the average at once; a faster one is blended.
        assert!((peak_ewma(10.0, 0, 50.0, 1) - 50.0).abs() < 1e-9);
        let blended = peak_ewma(50.0, 0, 10.0, 5_000);
        assert!(blended < 50.0 && blended > 10.0, "{blended}");
    }

    #[test]
    fn cookies_and_tokens() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("a=1; route=00000000000000ff; b=2"),
        );
        assert_eq!(cookie(&headers, "route"), Some(&b"00000000000000ff"[..]));
        assert_eq!(cookie(&headers, "rout"), None);
        assert_eq!(parse_token(b"00000000000000ff"), Some(255));
        assert_eq!(parse_token(b"ff"), None);
        let token = affinity_token("10.0.0.1:80");
        assert_ne!(token, affinity_token("10.0.0.2:80"));
        let settings = AffinityCookie {
            name: "route".into(),
            max_age_s: None,
            path: None,
            samesite: Some(SameSite::Lax),
            secure: true,
        };
        let value = set_cookie_value(&settings, 255, "/app");
        assert_eq!(
            value,
            "route=00000000000000ff; Path=/app; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn random_is_spread() {
        let mut buckets = [0u32; 4];
        for _ in 0..4_000 {
            buckets[(random() % 4) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }
}
