//! Upgraded connections (WebSocket over HTTP/1.1 `Upgrade`): bytes are copied both ways only
//! after the backend answered `101 Switching Protocols`, until either side closes or no byte
//! moved in either direction for the route's read timeout.
//!
//! The tunnel task owns both upgraded sockets and a reference to nothing of the routing
//! table, so table swaps never touch it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::connection::InFlight;
use crate::observed_io::{ObservedIo, OnRead};
use crate::state::OpenTunnel;

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade` plus
/// `Upgrade: <protocol>`), except `h2c`, which is between the client and this proxy only.
pub(crate) fn requested_protocol(parts: &http::request::Parts) -> Option<HeaderValue> {
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let protocol = parts.headers.get(header::UPGRADE)?;
    let is_h2c = protocol
        .to_str()
        .is_ok_and(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (!is_h2c).then(|| protocol.clone())
}

/// Copies bytes between the client and the upstream once both upgrades completed. The
/// guards keep the client connection counted as busy (no idle cut) and open (drain waits).
pub(crate) async fn run(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    _in_flight: InFlight,
    _open: OpenTunnel,
    endpoint: String,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%endpoint, %error, "upgrade failed");
            return;
        }
    };
    let origin = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = ObservedIo {
        io: TokioIo::new(client),
        observer: LastRead {
            origin,
            last: Arc::clone(&last),
        },
    };
    let mut upstream = ObservedIo {
        io: TokioIo::new(upstream),
        observer: LastRead {
            origin,
            last: Arc::clone(&last),
        },
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let deadline = origin + Duration::from_millis(last.load(Ordering::Relaxed)) + idle_timeout;
        tokio::select! {
            result = &mut copy => {
                if let Err(error) = result {
                    tracing::debug!(%endpoint, %error, "tunnel ended with an error");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                let last_ms = last.load(Ordering::Relaxed);
                if origin + Duration::from_millis(last_ms) + idle_timeout <= Instant::now() {
                    tracing::debug!(%endpoint, "closing idle tunnel");
                    return;
                }
            }
        }
    }
}

/// Records, for both sockets of a tunnel, when either last read a byte (milliseconds since
/// `origin`).
struct LastRead {
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl OnRead for LastRead {
    fn bytes_read(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}
