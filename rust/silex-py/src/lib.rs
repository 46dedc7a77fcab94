//! `silex._core`: the thin Python handle on the Rust data plane.
//!
//! Every method releases the GIL while it works (`Python::detach`); the data plane runs on its
//! own Tokio threads and never calls back into Python. Rust errors map onto three exceptions.

use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use silex_proxy::{DataPlane, ListenerKind, ServerConfig};

create_exception!(
    _core,
    SilexError,
    PyException,
    "Base of every error the core raises."
);
create_exception!(
    _core,
    ConfigError,
    SilexError,
    "A routing table or server configuration was rejected; the message names the JSON path."
);
create_exception!(
    _core,
    ListenError,
    SilexError,
    "A listener could not be bound; the message names the address."
);

/// The data plane: owns its Tokio runtime, its sockets and the current routing table.
#[pyclass(frozen, module = "silex._core")]
struct Core {
    inner: DataPlane,
}

#[pymethods]
impl Core {
    #[new]
    fn new(py: Python<'_>, config_json: &[u8]) -> PyResult<Self> {
        let config = ServerConfig::from_json(config_json)
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        let inner = py
            .detach(|| DataPlane::new(config))
            .map_err(|e| SilexError::new_err(format!("cannot start the core runtime: {e}")))?;
        Ok(Self { inner })
    }

    /// Bind a listener (kind "proxy", "https" or "admin"); returns the bound (host, port).
    fn listen(
        &self,
        py: Python<'_>,
        name: &str,
        address: &str,
        kind: &str,
    ) -> PyResult<(String, u16)> {
        let kind: ListenerKind = kind.parse().map_err(ConfigError::new_err)?;
        let bound = py
            .detach(|| self.inner.listen(name, address, kind))
            .map_err(|e| ListenError::new_err(e.to_string()))?;
        Ok((bound.ip().to_string(), bound.port()))
    }

    /// Validate, compile and swap in a table; returns its generation number.
    fn apply(&self, py: Python<'_>, table_json: &[u8]) -> PyResult<u64> {
        py.detach(|| self.inner.apply(table_json))
            .map_err(|e| ConfigError::new_err(format!("routing table rejected: {e}")))
    }

    /// Generation of the table now serving (0 before the first apply).
    fn generation(&self) -> u64 {
        self.inner.generation()
    }

    /// A JSON snapshot of counters and listeners.
    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| serde_json::to_string(&self.inner.stats()))
            .map_err(|e| SilexError::new_err(e.to_string()))
    }

    /// Replace the operator's part of /metrics (OpenMetrics text from Python's registry).
    fn set_operator_metrics(&self, py: Python<'_>, text: &[u8]) {
        let text = text.to_vec();
        py.detach(|| self.inner.set_operator_metrics(text));
    }

    /// Replace the operator's part of the status page; raises ConfigError on bad JSON.
    fn set_operator_status(&self, py: Python<'_>, status_json: &[u8]) -> PyResult<()> {
        let json = status_json.to_vec();
        py.detach(|| self.inner.set_operator_status(&json))
            .map_err(|e| ConfigError::new_err(format!("operator status: {e}")))
    }

    /// Stop accepting, drain in-flight requests up to grace_s; True if all finished.
    fn shutdown(&self, py: Python<'_>, grace_s: f64) -> PyResult<bool> {
        let grace = Duration::try_from_secs_f64(grace_s)
            .map_err(|e| ConfigError::new_err(format!("grace_s: {e}")))?;
        Ok(py.detach(|| self.inner.shutdown(grace)))
    }
}

/// Check a PEM certificate chain and private key as the core would load them; returns the
/// names of `hosts` the certificate does not cover. Raises ConfigError saying what is wrong.
#[pyfunction]
fn check_certificate(
    py: Python<'_>,
    cert_pem: &[u8],
    key_pem: &[u8],
    hosts: Vec<String>,
) -> PyResult<Vec<String>> {
    let cert = std::str::from_utf8(cert_pem)
        .map_err(|_| ConfigError::new_err("cert_pem: not valid UTF-8 text"))?;
    let key = std::str::from_utf8(key_pem)
        .map_err(|_| ConfigError::new_err("key_pem: not valid UTF-8 text"))?;
    py.detach(|| silex_proxy::check_certificate(cert, key, &hosts))
        .map_err(ConfigError::new_err)
}

/// Check PEM CA certificates as an upstream TLS client would trust them; returns how many
/// there are. Raises ConfigError saying what is wrong.
#[pyfunction]
fn check_ca_certificates(py: Python<'_>, ca_pem: &[u8]) -> PyResult<usize> {
    let ca = std::str::from_utf8(ca_pem)
        .map_err(|_| ConfigError::new_err("ca_pem: not valid UTF-8 text"))?;
    py.detach(|| silex_proxy::check_ca_certificates(ca))
        .map_err(ConfigError::new_err)
}

/// The notAfter time of the first certificate of a PEM chain, in Unix seconds. Raises
/// ConfigError saying what is wrong.
#[pyfunction]
fn certificate_not_after(py: Python<'_>, cert_pem: &[u8]) -> PyResult<i64> {
    let cert = std::str::from_utf8(cert_pem)
        .map_err(|_| ConfigError::new_err("cert_pem: not valid UTF-8 text"))?;
    py.detach(|| silex_proxy::certificate_not_after(cert))
        .map_err(ConfigError::new_err)
}

/// Installs the log subscriber once: `SILEX_LOG` (tracing filter syntax), default "info";
/// `SILEX_LOG_FORMAT=json` writes one JSON object per line (the operator's `--log-format json`
/// sets it before loading the core, so both halves log in one format).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SILEX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("SILEX_LOG_FORMAT").is_ok_and(|format| format == "json") {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SilexError", m.py().get_type::<SilexError>())?;
    m.add("ConfigError", m.py().get_type::<ConfigError>())?;
    m.add("ListenError", m.py().get_type::<ListenError>())?;
    m.add_class::<Core>()?;
    m.add_function(wrap_pyfunction!(check_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(check_ca_certificates, m)?)?;
    m.add_function(wrap_pyfunction!(certificate_not_after, m)?)?;
    Ok(())
}
