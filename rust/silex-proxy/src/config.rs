//! Connection-level settings of the data plane, fixed for the life of a [`crate::DataPlane`].

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Settings that apply to every connection; route-level options travel in the routing table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Tokio worker threads; `None` means one per CPU.
    pub workers: Option<usize>,
    /// A client must send a complete request head within this time of its first byte (or of
    /// accepting the connection); the connection is closed after it.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight is closed after this time.
    pub client_idle_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most request header fields; more gets 431.
    pub max_headers: usize,
    /// Time allowed to establish an upstream TCP connection (502 when refused, 504 after it).
    pub upstream_connect_timeout_ms: u64,
    /// Time allowed between two successive writes of a request body to the upstream (504
    /// after it); routes may set their own (`proxy-send-timeout`).
    pub upstream_send_timeout_ms: u64,
    /// Idle upstream keep-alive connections are closed after this time.
    pub upstream_idle_timeout_ms: u64,
    /// Most idle upstream connections kept per endpoint.
    pub upstream_max_idle_per_endpoint: usize,
    /// Peers in these networks may set `X-Forwarded-*`; their values are kept and extended.
    pub trusted_proxies: Vec<IpNet>,
    /// Serve HTTP/2 with prior knowledge (h2c) on plain-HTTP proxy listeners, next to HTTP/1.1.
    pub enable_h2c: bool,
    /// Port written into HTTP→HTTPS redirects when clients reach HTTPS on another port than
    /// the one bound (a Service mapping 443 to 8443); `None` uses the bound HTTPS port.
    pub https_redirect_port: Option<u16>,
    /// Send `Strict-Transport-Security: max-age=N` on HTTPS responses; `None`: no HSTS.
    pub hsts_max_age_s: Option<u64>,
    /// Add `includeSubDomains` to the HSTS header.
    pub hsts_include_subdomains: bool,
    /// HTTP/2: most concurrent streams per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: initial flow-control window of each stream, in bytes.
    pub h2_stream_window_bytes: u32,
    /// HTTP/2: initial flow-control window of the whole connection, in bytes.
    pub h2_connection_window_bytes: u32,
    /// Passive outlier ejection: consecutive connect failures, resets or 5xx responses that
    /// eject an endpoint from load balancing; 0 turns ejection off.
    pub outlier_consecutive_failures: u32,
    /// First ejection length; it doubles with each ejection in a row (no success between).
    pub outlier_base_ejection_ms: u64,
    /// Longest ejection.
    pub outlier_max_ejection_ms: u64,
    /// Serve the status page (`/` and `/api/status`) on admin listeners.
    pub status_page: bool,
    /// Where the access log goes: `"off"`, `"stdout"` or a file path (appended to).
    pub access_log: String,
    /// How each access-log line is written.
    pub access_log_format: AccessLogFormat,
    /// Lines queued for the access-log writer; when the queue is full, lines are dropped (and
    /// counted) instead of slowing requests down.
    pub access_log_buffer_lines: usize,
}

/// The format of access-log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's `combined` format followed by ingress-nginx's `upstreaminfo` fields.
    Combined,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            workers: None,
            header_read_timeout_ms: 10_000,
            client_idle_timeout_ms: 75_000,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            upstream_connect_timeout_ms: 5_000,
            upstream_send_timeout_ms: 60_000,
            upstream_idle_timeout_ms: 60_000,
            upstream_max_idle_per_endpoint: 320,
            trusted_proxies: Vec::new(),
            enable_h2c: false,
            https_redirect_port: None,
            hsts_max_age_s: None,
            hsts_include_subdomains: false,
            h2_max_concurrent_streams: 128,
            h2_stream_window_bytes: 1024 * 1024,
            h2_connection_window_bytes: 4 * 1024 * 1024,
            outlier_consecutive_failures: 5,
            outlier_base_ejection_ms: 10_000,
            outlier_max_ejection_ms: 300_000,
            status_page: true,
            access_log: "off".to_owned(),
            access_log_format: AccessLogFormat::Json,
            access_log_buffer_lines: 16_384,
        }
    }
}

/// A setting that is out of range.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ServerConfig {
    /// Parses and validates the JSON form (unknown fields rejected).
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_slice(json).map_err(|e| ConfigError {
            field: "server config",
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("client_idle_timeout_ms", self.client_idle_timeout_ms),
            (
                "upstream_connect_timeout_ms",
                self.upstream_connect_timeout_ms,
            ),
            ("upstream_send_timeout_ms", self.upstream_send_timeout_ms),
            ("upstream_idle_timeout_ms", self.upstream_idle_timeout_ms),
            ("outlier_base_ejection_ms", self.outlier_base_ejection_ms),
            ("outlier_max_ejection_ms", self.outlier_max_ejection_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError {
                    field,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if self.workers == Some(0) {
            return Err(ConfigError {
                field: "workers",
                message: "must be at least 1".into(),
            });
        }
        // hyper's HTTP/1 read buffer cannot be smaller than 8 KiB.
        if self.max_header_bytes < 8192 {
            return Err(ConfigError {
                field: "max_header_bytes",
                message: "must be at least 8192".into(),
            });
        }
        if self.h2_max_concurrent_streams == 0 {
            return Err(ConfigError {
                field: "h2_max_concurrent_streams",
                message: "must be at least 1".into(),
            });
        }
        for (field, value) in [
            ("h2_stream_window_bytes", self.h2_stream_window_bytes),
            (
                "h2_connection_window_bytes",
                self.h2_connection_window_bytes,
            ),
        ] {
            // RFC 9113 §6.9.1: at least the initial 65535, at most 2^31-1.
            if !(65_535..=0x7fff_ffff).contains(&value) {
                return Err(ConfigError {
                    field,
                    message: "must be between 65535 and 2147483647".into(),
                });
            }
        }
        if self.access_log_buffer_lines == 0 {
            return Err(ConfigError {
                field: "access_log_buffer_lines",
                message: "must be at least 1".into(),
            });
        }
        if self.access_log.is_empty() {
            return Err(ConfigError {
                field: "access_log",
                message: "must be \"off\", \"stdout\" or a file path".into(),
            });
        }
        if self.max_headers == 0 {
            return Err(ConfigError {
                field: "max_headers",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub(crate) fn client_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.client_idle_timeout_ms)
    }

    /// The `Strict-Transport-Security` value, when HSTS is on.
    pub(crate) fn hsts_value(&self) -> Option<http::HeaderValue> {
        let max_age = self.hsts_max_age_s?;
        let value = if self.hsts_include_subdomains {
            format!("max-age={max_age}; includeSubDomains")
        } else {
            format!("max-age={max_age}")
        };
        http::HeaderValue::from_str(&value).ok()
    }

    pub(crate) fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}
