//! The routing table as it crosses the boundary: versioned, strict serde types.
//!
//! The Python operator builds this JSON (`python/silex/table.py`); the core parses it with
//! [`crate::parse_table`], which rejects unknown fields and names the JSON path of any error.
//! The JSON Schema in `schema/table.schema.json` is generated from these types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only table version this core understands.
pub const TABLE_VERSION: u32 = 1;

/// The whole desired state of the data plane's routing, swapped atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingTable {
    /// Format version; must equal [`TABLE_VERSION`].
    pub version: u32,
    /// Listener settings by listener name (for example `"http"`). A listener the core binds
    /// but that is not named here uses [`ListenerSettings::default`].
    #[serde(default)]
    pub listeners: BTreeMap<String, ListenerSettings>,
    /// Route options used where a route does not set its own.
    #[serde(default)]
    pub defaults: RouteDefaults,
    /// Virtual hosts: exact names, one-label wildcards (`*.example.com`) and the catch-all `*`.
    #[serde(default)]
    pub hosts: Vec<VirtualHost>,
    /// Backends by id; routes refer to them by this id.
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
    /// Backend id used when no host matches, or a host matches but none of its routes and it
    /// has no default of its own. `None` answers 404.
    #[serde(default)]
    pub default_backend: Option<String>,
    /// TLS certificates by id (by convention the Secret, `namespace/name`). Each serves the
    /// server names in its [`Certificate::hosts`] on HTTPS listeners.
    #[serde(default)]
    pub certificates: BTreeMap<String, Certificate>,
    /// Certificate id served when the client's SNI names no host of any certificate (or no
    /// SNI is sent). `None`: the core's own self-signed certificate, generated at start.
    #[serde(default)]
    pub default_certificate: Option<String>,
}

/// A certificate chain and its private key, in PEM, and the server names it serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// PEM `CERTIFICATE` blocks: the end-entity certificate first, then intermediates.
    pub cert_pem: String,
    /// One PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) matching the first certificate.
    pub key_pem: String,
    /// Server names (SNI) this certificate is selected for: exact names and one-label
    /// wildcards (`*.example.com`), lower case. A name appears in at most one certificate.
    /// A name the certificate itself does not cover (by its subject alternative names) gets
    /// the default certificate instead.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// Per-listener settings carried by the table (the socket itself is bound by the core's handle).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    /// Value sent upstream in `X-Forwarded-Proto` for requests on this listener.
    #[serde(default)]
    pub scheme: Scheme,
}

/// The scheme a listener serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS.
    Https,
}

/// Route options with every value set: the table-wide defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteDefaults {
    /// Largest request body accepted, in bytes; larger bodies get 413. `0` means no limit.
    pub max_request_body_bytes: u64,
    /// Time allowed for the upstream to start its response, in milliseconds (504 after it).
    pub upstream_read_timeout_ms: u64,
}

impl Default for RouteDefaults {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 1024 * 1024,
            upstream_read_timeout_ms: 60_000,
        }
    }
}

/// Route options where each value is optional and falls back to [`RouteDefaults`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteOptions {
    /// See [`RouteDefaults::max_request_body_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Option<u64>,
    /// See [`RouteDefaults::upstream_read_timeout_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_read_timeout_ms: Option<u64>,
    /// Time allowed between two successive writes of the request body to the endpoint, in
    /// milliseconds (504 after it); default: the core's server-wide
    /// `upstream_send_timeout_ms` (`proxy-send-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_send_timeout_ms: Option<u64>,
    /// Time allowed to connect to an endpoint, in milliseconds (504 after it); default: the
    /// core's server-wide `upstream_connect_timeout_ms` (`proxy-connect-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_connect_timeout_ms: Option<u64>,
    /// Most attempts a request gets, the first included (retries go to other endpoints);
    /// at least 1. Default 3 (`proxy-next-upstream-tries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream_tries: Option<u32>,
    /// No retry starts later than this many milliseconds after the first attempt; `0` (the
    /// default) means no limit (`proxy-next-upstream-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_upstream_timeout_ms: Option<u64>,
}

/// One virtual host and its routes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    /// `foo.example.com` (exact), `*.example.com` (exactly one extra label) or `*` (any host).
    /// Lower case, no port, no trailing dot.
    pub name: String,
    /// Path routes of this host; order does not matter (precedence is by match rules).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Backend id for requests to this host that match none of its routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<String>,
    /// Requests to this host on a plain-HTTP listener that match none of its routes get a
    /// 308 redirect to HTTPS (routes carry their own [`Route::redirect_https`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub redirect_https: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// How a route's path is compared with the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// Byte-exact, case-sensitive comparison with the raw request path (query excluded).
    Exact,
    /// Element-wise prefix on `/`-separated segments; a trailing `/` in the route is ignored.
    Prefix,
}

/// One path route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The path; must start with `/`.
    pub path: String,
    /// How the path is matched.
    #[serde(rename = "match")]
    pub path_match: PathMatch,
    /// Backend id (a key of [`RoutingTable::backends`]).
    pub backend: String,
    /// The Ingress this route came from, `namespace/name` (for logs and metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// Options overriding [`RoutingTable::defaults`].
    #[serde(default, skip_serializing_if = "is_default_options")]
    pub options: RouteOptions,
    /// Requests matching this route on a plain-HTTP listener get a 308 redirect to HTTPS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub redirect_https: bool,
}

fn is_default_options(options: &RouteOptions) -> bool {
    *options == RouteOptions::default()
}

/// A set of endpoints serving one Service port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The Service this backend serves, `namespace/name` (for logs and metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Ready endpoints; empty means every request to this backend gets 503.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// How the proxy talks to the endpoints (`backend-protocol`).
    #[serde(default, skip_serializing_if = "is_default_protocol")]
    pub protocol: BackendProtocol,
    /// TLS settings towards the endpoints; only with `https` and `grpcs` (default: no
    /// verification, no SNI, no client certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// How requests are spread over the endpoints (default: weighted round robin).
    #[serde(default, skip_serializing_if = "is_default_balance")]
    pub balance: Balance,
    /// Active health checks of each endpoint; `None`: passive checks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

fn is_default_balance(balance: &Balance) -> bool {
    *balance == Balance::default()
}

/// The load-balancing policy of a backend and its settings. Every policy honours endpoint
/// weights, skips ejected endpoints (failing open when all are) and retries elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    /// The algorithm.
    #[serde(default)]
    pub policy: BalancePolicy,
    /// What a `hash` policy hashes; required by it, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_by: Option<HashBy>,
    /// The affinity cookie of a `cookie` policy; required by it, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<AffinityCookie>,
}

/// Load-balancing algorithms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BalancePolicy {
    /// Smooth weighted round robin (nginx's).
    #[default]
    RoundRobin,
    /// Power of two weighted random choices; the one with fewer requests in flight wins.
    LeastRequest,
    /// Power of two choices over peak-EWMA latency times (requests in flight + 1), divided by
    /// the weight.
    Ewma,
    /// Consistent hashing (a ketama ring) of a request value ([`Balance::hash_by`]).
    Hash,
    /// Sticky sessions: a cookie names the endpoint; round robin for clients without one.
    Cookie,
}

/// The request value a `hash` policy hashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashBy {
    /// Where the value comes from.
    pub source: HashSource,
    /// The header or cookie name (`header` and `cookie` sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Sources of a hash key. A request without the value is balanced round robin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashSource {
    /// The client's IP (`X-Real-IP` as the proxy sets it, so trusted proxies are honoured).
    RemoteAddr,
    /// The request target: path and query.
    RequestUri,
    /// A request header, by name.
    Header,
    /// A request cookie, by name.
    Cookie,
}

/// The cookie of a `cookie` (session affinity) policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AffinityCookie {
    /// Cookie name.
    pub name: String,
    /// `Max-Age` in seconds; `None`: a session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u64>,
    /// `Path`; `None`: the path of the route that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `SameSite` attribute; `None`: not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samesite: Option<SameSite>,
    /// Send the `Secure` attribute.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secure: bool,
}

/// `SameSite` cookie attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=None` (browsers require `Secure` with it).
    None,
}

/// Active health checks: an HTTP GET to each endpoint every interval. `unhealthy_threshold`
/// failures in a row (error, timeout or a status outside 200-399) take the endpoint out of
/// load balancing; `healthy_threshold` successes in a row bring it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Request path (and query), starting with `/`.
    pub path: String,
    /// Time between checks, in milliseconds (above 0).
    pub interval_ms: u64,
    /// Time allowed for the response head, in milliseconds (above 0).
    pub timeout_ms: u64,
    /// Successes in a row that readmit a failed endpoint (at least 1).
    pub healthy_threshold: u32,
    /// Failures in a row that take an endpoint out (at least 1).
    pub unhealthy_threshold: u32,
    /// `Host` header of the check; `None`: the endpoint's `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn is_default_protocol(protocol: &BackendProtocol) -> bool {
    *protocol == BackendProtocol::Http
}

/// The protocol spoken to a backend's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 over plain TCP.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
    /// gRPC: HTTP/2 with prior knowledge over plain TCP (the same wire as `h2c`).
    Grpc,
    /// gRPC over TLS: HTTP/2 negotiated by ALPN `h2`.
    Grpcs,
}

impl BackendProtocol {
    /// The endpoints speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::H2c | Self::Grpc | Self::Grpcs)
    }

    /// The endpoints are reached over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::Grpcs)
    }
}

/// How the proxy connects to a backend over TLS (ingress-nginx's `proxy-ssl-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Verify the endpoint's certificate chain against `ca_pem` and its name against
    /// `server_name` (`proxy-ssl-verify`). Without `ca_pem` nothing verifies: every
    /// handshake fails (fail closed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub verify: bool,
    /// PEM `CERTIFICATE` blocks trusted as roots when verifying (`ca.crt` of
    /// `proxy-ssl-secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Client certificate chain presented to the endpoint (mTLS; `tls.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// Private key of `cert_pem` (`tls.key`); set exactly when `cert_pem` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// Name the endpoint's certificate is verified against and sent as SNI
    /// (`proxy-ssl-name`); a DNS name or an IP address. Empty: the endpoint's IP address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_name: String,
    /// Send `server_name` as SNI (`proxy-ssl-server-name`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sni: bool,
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// IPv4 or IPv6 address.
    pub address: IpAddr,
    /// TCP port, 1-65535.
    pub port: u16,
    /// Relative weight for load balancing, at least 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}
