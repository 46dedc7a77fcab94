//! Silex data plane: HTTP listeners, the request path, upstream pools, limits and drain.
//!
//! A [`DataPlane`] owns its worker threads, one single-threaded Tokio runtime each
//! ([`workers`]). Its methods are blocking and meant to be called from a foreign thread (the
//! Python operator): `listen` binds sockets, `apply` validates, compiles and atomically swaps a
//! routing table, `shutdown` drains. Requests read the table with one `ArcSwap` load and never
//! lock.
#![forbid(unsafe_code)]

mod access_log;
mod active;
mod admin;
mod balance;
pub mod config;
mod connection;
pub mod error;
mod exchange;
mod headers;
mod health;
mod metrics;
mod observed_io;
mod proxy;
mod request_id;
mod state;
mod status;
pub mod tls;
mod tunnel;
mod upstream;
mod upstream_h1;
mod upstream_h2;
mod upstream_tls;
mod websocket_h2;
mod workers;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use silex_routing::{parse_table, CompiledTable, TableError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, ServerConfig};
pub use state::CountersSnapshot;
pub use status::{OperatorStatus, ProblemView};
pub use tls::{certificate_not_after, check_certificate};
pub use upstream_tls::check_ca_certificates;

use state::{Generation, Shared};
use workers::Workers;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Client traffic over plain HTTP, routed by the table.
    Proxy,
    /// Client traffic over TLS (certificates from the table), routed by the table.
    Https,
    /// `/healthz`, `/readyz`, `/metrics` and the status page (`/`, `/api/status`).
    Admin,
}

impl std::str::FromStr for ListenerKind {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "proxy" => Ok(Self::Proxy),
            "https" => Ok(Self::Https),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown listener kind {other:?} (expected \"proxy\", \"https\" or \"admin\")"
            )),
        }
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address does not parse or resolve.
    #[error("listener {name}: invalid address {address:?}: {reason}")]
    Address {
        /// Listener name.
        name: String,
        /// The address as given.
        address: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The socket could not be bound.
    #[error("listener {name}: cannot listen on {address}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// The address as given.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener of that name already exists, or the data plane is shutting down.
    #[error("listener {name}: {reason}")]
    Rejected {
        /// Listener name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A bound listener, as reported by [`DataPlane::stats`].
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    /// What it serves.
    pub kind: ListenerKind,
    /// The bound address (with the real port when 0 was asked for).
    pub address: String,
}

/// A snapshot of the data plane for the operator and the admin endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Generation of the serving table (0 before the first apply).
    pub generation: u64,
    /// A table is applied and the data plane is not draining.
    pub ready: bool,
    /// `shutdown` has started.
    pub draining: bool,
    /// Counters.
    #[serde(flatten)]
    pub counters: CountersSnapshot,
    /// Bound listeners by name.
    pub listeners: BTreeMap<String, ListenerInfo>,
    /// Active health-check tasks running (one per endpoint address and check settings).
    pub health_checkers: usize,
}

/// The running data plane.
pub struct DataPlane {
    workers: Arc<Workers>,
    shared: Arc<Shared>,
    drain: CancellationToken,
    listeners: Mutex<BTreeMap<String, ListenerInfo>>,
    /// Serializes `apply` so generation numbers follow the order tables are swapped in.
    apply_lock: Mutex<()>,
}

impl DataPlane {
    /// Starts the worker threads. No socket is bound until [`DataPlane::listen`].
    pub fn new(config: ServerConfig) -> std::io::Result<Self> {
        let workers = Workers::start(workers::count(config.workers))?;
        let shared = Shared::new(config).map_err(std::io::Error::other)?;
        Ok(Self {
            workers: Arc::new(workers),
            shared: Arc::new(shared),
            drain: CancellationToken::new(),
            listeners: Mutex::new(BTreeMap::new()),
            apply_lock: Mutex::new(()),
        })
    }

    /// Binds `address` (`host:port`, port 0 picks one) and starts accepting on it.
    pub fn listen(
        &self,
        name: &str,
        address: &str,
        kind: ListenerKind,
    ) -> Result<SocketAddr, ListenError> {
        let rejected = |reason: &str| ListenError::Rejected {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if self.drain.is_cancelled() {
            return Err(rejected("the data plane is shutting down"));
        }
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if listeners.contains_key(name) {
            return Err(rejected("a listener with this name already exists"));
        }
        let invalid = |reason: String| ListenError::Address {
            name: name.to_owned(),
            address: address.to_owned(),
            reason,
        };
        let socket_addr = address
            .to_socket_addrs()
            .map_err(|e| invalid(e.to_string()))?
            .next()
            .ok_or_else(|| invalid("resolves to no address".into()))?;
        let bind_error = |source| ListenError::Bind {
            name: name.to_owned(),
            address: address.to_owned(),
            source,
        };
        let std_listener = bind(socket_addr).map_err(bind_error)?;
        let bound = std_listener.local_addr().map_err(bind_error)?;
        let tls = match kind {
            ListenerKind::Https => {
                let config = tls::server_config(Arc::clone(&self.shared)).map_err(|reason| {
                    ListenError::Rejected {
                        name: name.to_owned(),
                        reason,
                    }
                })?;
                // The first HTTPS listener's port is where HTTP requests are redirected.
                let _ = self.shared.https_port.compare_exchange(
                    0,
                    bound.port(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                Some(tokio_rustls::TlsAcceptor::from(config))
            }
            ListenerKind::Proxy | ListenerKind::Admin => None,
        };
        let accepting = self.workers.first();
        let listener = {
            let _entered = accepting.enter();
            TcpListener::from_std(std_listener).map_err(bind_error)?
        };
        accepting.spawn(connection::accept_loop(
            listener,
            Arc::from(name),
            kind,
            Arc::clone(&self.shared),
            Arc::clone(&self.workers),
            self.drain.clone(),
            tls,
        ));
        listeners.insert(
            name.to_owned(),
            ListenerInfo {
                kind,
                address: bound.to_string(),
            },
        );
        tracing::info!(listener = name, kind = ?kind, address = %bound, "listening");
        Ok(bound)
    }

    /// Validates and compiles `table_json`, then swaps it in; returns its generation.
    /// On error the previous table keeps serving.
    pub fn apply(&self, table_json: &[u8]) -> Result<u64, TableError> {
        let table = parse_table(table_json)?;
        let compiled = CompiledTable::compile(&table)?;
        let tls = tls::TlsTable::build(&table)?;
        let _serialized = self.apply_lock.lock().unwrap_or_else(|e| e.into_inner());
        let clients = self.shared.clients.for_table(&compiled)?;
        let id = self.shared.table.load().id + 1;
        let handles = self.shared.registry.for_table(&compiled);
        let view = status::RoutesView::new(&table);
        let route_metrics = self.shared.metrics.for_table(&compiled);
        let generation = Arc::new(Generation::new(
            id,
            compiled,
            tls,
            &handles,
            route_metrics,
            clients,
        ));
        self.shared
            .checkers
            .reconcile(&generation, self.workers.first());
        self.shared.table.store(generation);
        self.shared.routes_view.store(Arc::new(view));
        tracing::info!(
            generation = id,
            hosts = table.hosts.len(),
            certificates = table.certificates.len(),
            "routing table applied"
        );
        Ok(id)
    }

    /// Replaces the operator's part of `/metrics` (OpenMetrics text; a final `# EOF` is
    /// dropped, the core writes its own).
    pub fn set_operator_metrics(&self, text: Vec<u8>) {
        self.shared
            .operator_metrics
            .store(Arc::new(bytes::Bytes::from(text)));
    }

    /// Replaces the operator's part of the status page (JSON of [`OperatorStatus`]).
    pub fn set_operator_status(&self, json: &[u8]) -> Result<(), serde_json::Error> {
        let status: OperatorStatus = serde_json::from_slice(json)?;
        self.shared.operator_status.store(Arc::new(status));
        Ok(())
    }

    /// Generation of the serving table.
    pub fn generation(&self) -> u64 {
        self.shared.table.load().id
    }

    /// Counters and listeners.
    pub fn stats(&self) -> Stats {
        Stats {
            generation: self.generation(),
            ready: self.shared.is_ready(),
            draining: self.shared.draining.load(Ordering::Relaxed),
            counters: self.shared.stats.snapshot(),
            listeners: self
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            health_checkers: self.shared.checkers.count(),
        }
    }

    /// Readiness goes false, listeners stop accepting, open connections finish their
    /// in-flight requests (keep-alive connections close after them) for up to `grace`.
    /// Returns true when every connection finished in time.
    pub fn shutdown(&self, grace: Duration) -> bool {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.drain.cancel();
        self.shared.checkers.stop_all();
        let deadline = Instant::now() + grace;
        loop {
            if self.shared.stats.open_connections() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    open = self.shared.stats.open_connections(),
                    "grace period over; closing remaining connections"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.drain.cancel();
        self.workers.stop();
    }
}

fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // Restarting next to connections in TIME_WAIT must not fail to bind.
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
