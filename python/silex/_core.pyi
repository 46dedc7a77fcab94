"""Typed stub of the Rust core (rust/silex-py). Only silex.dataplane imports this module."""

__version__: str

class SilexError(Exception):
    """Base of every error the core raises."""

class ConfigError(SilexError):
    """A routing table or server configuration was rejected; the message names the JSON path."""

class ListenError(SilexError):
    """A listener could not be bound; the message names the address."""

class Core:
    """The data plane: owns its Tokio runtime, its sockets and the current routing table."""

    def __init__(self, config_json: bytes) -> None: ...
    def listen(self, name: str, address: str, kind: str) -> tuple[str, int]:
        """Bind a listener (kind "proxy", "https" or "admin"); returns the bound (host, port)."""
    def apply(self, table_json: bytes) -> int:
        """Validate, compile and swap in a table; returns its generation number."""
    def generation(self) -> int:
        """Generation of the table now serving (0 before the first apply)."""
    def stats(self) -> str:
        """A JSON snapshot of counters and listeners."""
    def set_operator_metrics(self, text: bytes) -> None:
        """Replace the operator's part of /metrics (OpenMetrics text)."""
    def set_operator_status(self, status_json: bytes) -> None:
        """Replace the operator's part of the status page; raises ConfigError on bad JSON."""
    def shutdown(self, grace_s: float) -> bool:
        """Stop accepting, drain in-flight requests up to grace_s; True if all finished."""

def check_certificate(cert_pem: bytes, key_pem: bytes, hosts: list[str]) -> list[str]:
    """Check a PEM certificate chain and private key as the core would load them; returns the
    names of `hosts` the certificate does not cover. Raises ConfigError saying what is wrong."""

def check_ca_certificates(ca_pem: bytes) -> int:
    """Check PEM CA certificates as an upstream TLS client would trust them; returns how many
    there are. Raises ConfigError saying what is wrong."""

def certificate_not_after(cert_pem: bytes) -> int:
    """The notAfter time of the first certificate of a PEM chain, in Unix seconds. Raises
    ConfigError saying what is wrong."""
