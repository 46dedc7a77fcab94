//! Validation of a [`RoutingTable`] and its compiled, immutable matcher ([`CompiledTable`]).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

/// The maps a request lookup goes through: foldhash is several times faster than SipHash on
/// short keys and still seeded per process, so request-chosen keys cannot aim at collisions.
type LookupMap<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;
use std::time::Duration;

use crate::error::{quote, TableError};
use crate::host::normalize_host;
use crate::table::{
    BackendProtocol, Balance, BalancePolicy, Endpoint, HashSource, HealthCheck, ListenerSettings,
    PathMatch, Route, RouteDefaults, RouteOptions, RoutingTable, UpstreamTls, VirtualHost,
    TABLE_VERSION,
};

/// Index of a backend in [`CompiledTable::backends`] (backends are sorted by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendIdx(pub usize);

/// One backend of a compiled table.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledBackend {
    /// The backend id, the key in [`RoutingTable::backends`].
    pub id: String,
    /// The Service it serves, `namespace/name`, when the table says.
    pub service: Option<String>,
    /// Its endpoints, validated (port not 0, weight at least 1); empty means 503.
    pub endpoints: Vec<Endpoint>,
    /// The protocol spoken to the endpoints.
    pub protocol: BackendProtocol,
    /// TLS settings; `Some` exactly when `protocol` is a TLS one (defaults filled in).
    pub tls: Option<UpstreamTls>,
    /// Its load-balancing policy, validated (a `hash` policy has a key, a `cookie` policy a
    /// cookie).
    pub balance: Balance,
    /// Its active health checks, validated (path starts with `/`, times and thresholds above 0).
    pub health_check: Option<HealthCheck>,
}

fn validate_balance(balance: &Balance, at: &str) -> Result<(), TableError> {
    let error =
        |field: &str, message: &str| TableError::new(format!("{at}.balance.{field}"), message);
    let wants_hash = balance.policy == BalancePolicy::Hash;
    match (&balance.hash_by, wants_hash) {
        (None, true) => return Err(error("hash_by", "the hash policy needs hash_by")),
        (Some(_), false) => return Err(error("hash_by", "only the hash policy takes hash_by")),
        (Some(by), true) => {
            let named = matches!(by.source, HashSource::Header | HashSource::Cookie);
            let name_ok = by.name.as_deref().is_some_and(|n| {
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b';' && b != b'=' && b != b',')
            });
            if named && !name_ok {
                return Err(error(
                    "hash_by.name",
                    "header and cookie sources need a name (a token)",
                ));
            }
            if !named && by.name.is_some() {
                return Err(error(
                    "hash_by.name",
                    "only header and cookie sources take a name",
                ));
            }
        }
        (None, false) => {}
    }
    let wants_cookie = balance.policy == BalancePolicy::Cookie;
    match (&balance.cookie, wants_cookie) {
        (None, true) => Err(error("cookie", "the cookie policy needs cookie")),
        (Some(_), false) => Err(error("cookie", "only the cookie policy takes cookie")),
        (Some(cookie), true) => {
            let token = |v: &str| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            };
            if !token(&cookie.name) {
                return Err(error(
                    "cookie.name",
                    "must be a cookie name (an HTTP token)",
                ));
            }
            if let Some(path) = &cookie.path {
                if !path.starts_with('/') || path.bytes().any(|b| b == b';' || b.is_ascii_control())
                {
                    return Err(error(
                        "cookie.path",
                        "must start with / and contain no ; or controls",
                    ));
                }
            }
            Ok(())
        }
        (None, false) => Ok(()),
    }
}

fn validate_health_check(check: &HealthCheck, at: &str) -> Result<(), TableError> {
    let error =
        |field: &str, message: &str| TableError::new(format!("{at}.health_check.{field}"), message);
    if !check.path.starts_with('/')
        || check
            .path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(error(
            "path",
            "must start with / and contain no spaces or controls",
        ));
    }
    if check.interval_ms == 0 {
        return Err(error("interval_ms", "must be above 0"));
    }
    if check.timeout_ms == 0 {
        return Err(error("timeout_ms", "must be above 0"));
    }
    if check.healthy_threshold == 0 {
        return Err(error("healthy_threshold", "must be at least 1"));
    }
    if check.unhealthy_threshold == 0 {
        return Err(error("unhealthy_threshold", "must be at least 1"));
    }
    if let Some(host) = &check.host {
        if http_host_invalid(host) {
            return Err(error("host", "must be a host name, optionally with a port"));
        }
    }
    Ok(())
}

fn http_host_invalid(host: &str) -> bool {
    host.is_empty()
        || host
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
}

/// The options in force for one route: its own [`RouteOptions`] over the table's
/// [`RouteDefaults`], merged at compile time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveOptions {
    /// Largest request body accepted, in bytes; `0` means no limit.
    pub max_request_body_bytes: u64,
    /// Time allowed for the upstream to start its response; also the idle timeout of an
    /// upgraded (WebSocket) connection.
    pub upstream_read_timeout: Duration,
    /// Time allowed to connect to an endpoint; `None`: the server-wide setting.
    pub upstream_connect_timeout: Option<Duration>,
    /// Time allowed between two writes of the request body; `None`: the server-wide setting.
    pub upstream_send_timeout: Option<Duration>,
    /// Most attempts per request, the first included (at least 1).
    pub next_upstream_tries: u32,
    /// No retry starts later than this after the first attempt; `None`: no limit.
    pub next_upstream_timeout: Option<Duration>,
}

/// Attempts per request when a route does not say (ingress-nginx's default).
pub const DEFAULT_NEXT_UPSTREAM_TRIES: u32 = 3;

impl EffectiveOptions {
    fn from_defaults(defaults: &RouteDefaults) -> Self {
        Self {
            max_request_body_bytes: defaults.max_request_body_bytes,
            upstream_read_timeout: Duration::from_millis(defaults.upstream_read_timeout_ms),
            upstream_connect_timeout: None,
            upstream_send_timeout: None,
            next_upstream_tries: DEFAULT_NEXT_UPSTREAM_TRIES,
            next_upstream_timeout: None,
        }
    }

    fn merged(&self, options: &RouteOptions) -> Self {
        Self {
            max_request_body_bytes: options
                .max_request_body_bytes
                .unwrap_or(self.max_request_body_bytes),
            upstream_read_timeout: options
                .upstream_read_timeout_ms
                .map_or(self.upstream_read_timeout, Duration::from_millis),
            upstream_connect_timeout: options
                .upstream_connect_timeout_ms
                .map(Duration::from_millis)
                .or(self.upstream_connect_timeout),
            upstream_send_timeout: options
                .upstream_send_timeout_ms
                .map(Duration::from_millis)
                .or(self.upstream_send_timeout),
            next_upstream_tries: options
                .next_upstream_tries
                .unwrap_or(self.next_upstream_tries),
            next_upstream_timeout: match options.next_upstream_timeout_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => self.next_upstream_timeout,
            },
        }
    }
}

/// The answer of [`CompiledTable::route`]: who serves a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    /// The backend to send the request to.
    pub backend: BackendIdx,
    /// The virtual host that matched, as the table names it (`foo.com`, `*.foo.com`, `*`), also
    /// when its default or the table's default serves the request; `""` when no host matched
    /// and the table's default backend serves it.
    pub host: &'a str,
    /// The path of the route that matched, as the table spells it; `None` when a default
    /// backend (the host's or the table's) serves the request.
    pub route_path: Option<&'a str>,
    /// How [`Self::route_path`] matched; `None` when a default backend serves the request.
    pub path_match: Option<PathMatch>,
    /// The Ingress (`namespace/name`) of the route that matched, when the table says.
    pub ingress: Option<&'a str>,
    /// The options in force: the route's, or the table defaults for a default backend.
    pub options: &'a EffectiveOptions,
    /// A plain-HTTP request matching this should get a 308 redirect to HTTPS: the route's
    /// flag, or the host's when a default backend serves the request (false without a host).
    pub redirect_https: bool,
    /// What served the request, as an index into [`CompiledTable::targets`].
    pub target: TargetIdx,
}

/// Index of a [`MatchTarget`] in [`CompiledTable::targets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetIdx(pub usize);

/// One distinct outcome of matching: a route, a host's default backend, or the table's default
/// backend reached through a host (or through no host). The set is fixed by the table, so
/// per-target state (metrics label sets) can be resolved once when the table is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchTarget {
    /// The virtual host as the table names it (`""` when no host matched).
    pub host: Box<str>,
    /// The Ingress (`namespace/name`) of the route, when the table says; `None` for defaults.
    pub ingress: Option<Box<str>>,
    /// The backend it sends requests to.
    pub backend: BackendIdx,
}

/// A validated routing table, compiled for lookups. Immutable; cheap to share behind an `Arc`.
///
/// # Matching
///
/// [`CompiledTable::route`] takes the raw `Host` header (or `:authority`) and the raw request
/// path, and answers which backend serves the request:
///
/// 1. **Host.** The header is normalized with [`normalize_host`] (port, one trailing dot and case
///    ignored). An exact virtual host (`foo.example.com`) is looked up first; then a wildcard
///    (`*.example.com`), found by splitting the request host at its first `.` and looking up the
///    rest, so a wildcard covers exactly one extra, non-empty label (`bar.example.com`, neither
///    `example.com` nor `baz.bar.example.com`); then the catch-all host `*`, which also serves
///    requests whose `Host` is empty or not a valid host name. Each step is one hash lookup.
/// 2. **Path.** Within the matched host: an `Exact` route equal to the path, byte for byte,
///    wins; otherwise the deepest `Prefix` route whose segments are a prefix of the path's
///    segments. Paths are split on `/` and compared element-wise: `/foo` matches `/foo`,
///    `/foo/` and `/foo/bar`, never `/foobar`. Empty segments (from `//`, a leading or a
///    trailing `/`) are skipped on both sides, so a Prefix route's trailing `/` is ignored and
///    `//foo` is matched like `/foo`. Nothing is percent-decoded: `/foo%2Fbar` is one segment and
///    an Exact `/caf%C3%A9` matches only that spelling. Everything from the first `?` is ignored
///    and an empty path is `/`. The longest match wins, and an Exact match (always as long as
///    the whole path) beats a Prefix of equal length. The cost is one hash lookup for Exact
///    plus one per path segment for Prefix, whatever the number of routes.
/// 3. **Fallbacks.** A host that matched but none of whose routes match is served by the host's
///    `default_backend`, else by the table's `default_backend`, else nothing matches (404). Such
///    a request does **not** fall through to the routes of a wildcard or of the catch-all `*`
///    host: like an ingress-nginx `server` block, the most specific host owns the request. When
///    no host matches at all, the table's `default_backend` serves it, else nothing (404).
///
/// # Validation
///
/// [`CompiledTable::compile`] checks the whole table and reports the first error in document
/// order (`version`, `defaults`, `hosts`, `backends`, `default_backend`, `certificates`,
/// `default_certificate`) with its JSON path.
#[derive(Debug, Clone)]
pub struct CompiledTable {
    backends: Vec<CompiledBackend>,
    exact_hosts: LookupMap<CompiledHost>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: LookupMap<CompiledHost>,
    catch_all: Option<CompiledHost>,
    default_backend: Option<BackendIdx>,
    defaults: EffectiveOptions,
    listeners: BTreeMap<String, ListenerSettings>,
    targets: Vec<MatchTarget>,
    /// The table's default backend reached without a host.
    default_target: TargetIdx,
}

#[derive(Debug, Clone)]
struct CompiledHost {
    name: Box<str>,
    exact: LookupMap<CompiledRoute>,
    prefix: PrefixNode,
    default_backend: Option<BackendIdx>,
    redirect_https: bool,
    /// Its default backend, or the table's reached through it (unused when neither exists).
    fallback_target: TargetIdx,
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    path: Box<str>,
    path_match: PathMatch,
    backend: BackendIdx,
    ingress: Option<Box<str>>,
    options: EffectiveOptions,
    redirect_https: bool,
    /// Position in the host's `routes`, for duplicate errors.
    index: usize,
    target: TargetIdx,
}

/// A node of the Prefix segment trie; the root stands for `/`.
#[derive(Debug, Clone, Default)]
struct PrefixNode {
    route: Option<CompiledRoute>,
    children: LookupMap<PrefixNode>,
}

impl CompiledTable {
    /// Validates `table` and compiles it. The error is the first problem found, in document
    /// order, with its JSON path (for example `$.hosts[0].routes[2].backend`).
    ///
    /// Checks: `version` is [`TABLE_VERSION`]; default timeouts are above 0; host names are
    /// lower-case DNS names, `*.suffix` or `*`, without port or trailing dot, and unique; route
    /// paths start with `/` and contain no `?`, `#`, space or control character; no two routes
    /// of a host have the same path and match (Prefix paths compared by segments, so `/foo` and
    /// `/foo/` are the same); every backend reference names a backend; route timeouts are
    /// above 0; backend ids are not empty; endpoint ports are not 0 and weights at least 1.
    pub fn compile(table: &RoutingTable) -> Result<CompiledTable, TableError> {
        if table.version != TABLE_VERSION {
            return Err(TableError::new(
                "$.version",
                format!(
                    "unsupported table version {} (this core understands {TABLE_VERSION})",
                    table.version
                ),
            ));
        }
        check_timeout(Some(table.defaults.upstream_read_timeout_ms))
            .map_err(|m| TableError::new("$.defaults.upstream_read_timeout_ms", m))?;
        let defaults = EffectiveOptions::from_defaults(&table.defaults);
        // Backend ids are sorted (BTreeMap), so an id's index is its rank.
        let ids: Vec<&str> = table.backends.keys().map(String::as_str).collect();
        let resolve = |id: &str| -> Result<BackendIdx, String> {
            ids.binary_search(&id)
                .map(BackendIdx)
                .map_err(|_| format!("unknown backend {}", quote(id)))
        };

        let mut compiled = CompiledTable {
            backends: Vec::with_capacity(table.backends.len()),
            exact_hosts: LookupMap::default(),
            wildcard_hosts: LookupMap::default(),
            catch_all: None,
            default_backend: None,
            defaults,
            listeners: table.listeners.clone(),
            targets: Vec::new(),
            default_target: TargetIdx(0),
        };
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(table.hosts.len());
        for (i, host) in table.hosts.iter().enumerate() {
            let kind = host_kind(&host.name)
                .map_err(|m| TableError::new(format!("$.hosts[{i}].name"), m))?;
            if let Some(first) = seen.insert(&host.name, i) {
                return Err(TableError::new(
                    format!("$.hosts[{i}].name"),
                    format!(
                        "duplicate host {} (first at $.hosts[{first}])",
                        quote(&host.name)
                    ),
                ));
            }
            let compiled_host = compile_host(i, host, &defaults, &resolve)?;
            match kind {
                HostKind::Exact => {
                    compiled
                        .exact_hosts
                        .insert(host.name.as_str().into(), compiled_host);
                }
                HostKind::Wildcard(suffix) => {
                    compiled.wildcard_hosts.insert(suffix.into(), compiled_host);
                }
                HostKind::CatchAll => compiled.catch_all = Some(compiled_host),
            }
        }

        for (id, backend) in &table.backends {
            let at = format!("$.backends[{}]", quote(id));
            if id.is_empty() {
                return Err(TableError::new(at, "backend id must not be empty"));
            }
            for (j, endpoint) in backend.endpoints.iter().enumerate() {
                if endpoint.port == 0 {
                    return Err(TableError::new(
                        format!("{at}.endpoints[{j}].port"),
                        "port must be 1-65535",
                    ));
                }
                if endpoint.weight == 0 {
                    return Err(TableError::new(
                        format!("{at}.endpoints[{j}].weight"),
                        "weight must be at least 1",
                    ));
                }
            }
            validate_balance(&backend.balance, &at)?;
            if let Some(check) = &backend.health_check {
                validate_health_check(check, &at)?;
            }
            let tls = check_backend_tls(&at, backend.protocol, backend.tls.as_ref())?;
            compiled.backends.push(CompiledBackend {
                id: id.clone(),
                service: backend.service.clone(),
                endpoints: backend.endpoints.clone(),
                balance: backend.balance.clone(),
                health_check: backend.health_check.clone(),
                protocol: backend.protocol,
                tls,
            });
        }

        if let Some(id) = &table.default_backend {
            let backend = resolve(id).map_err(|m| TableError::new("$.default_backend", m))?;
            compiled.default_backend = Some(backend);
        }
        check_certificates(table)?;
        compiled.assign_targets();
        Ok(compiled)
    }

    /// Numbers every route and default-backend outcome (see [`MatchTarget`]).
    fn assign_targets(&mut self) {
        let table_default = self.default_backend;
        let mut targets = Vec::new();
        let mut push = |host: &str, ingress: Option<&str>, backend: BackendIdx| {
            targets.push(MatchTarget {
                host: host.into(),
                ingress: ingress.map(Into::into),
                backend,
            });
            TargetIdx(targets.len() - 1)
        };
        let hosts = self
            .exact_hosts
            .values_mut()
            .chain(self.wildcard_hosts.values_mut())
            .chain(self.catch_all.as_mut());
        for host in hosts {
            let name = host.name.clone();
            let mut pending = vec![&mut host.prefix];
            for route in host.exact.values_mut() {
                route.target = push(&name, route.ingress.as_deref(), route.backend);
            }
            while let Some(node) = pending.pop() {
                if let Some(route) = &mut node.route {
                    route.target = push(&name, route.ingress.as_deref(), route.backend);
                }
                pending.extend(node.children.values_mut());
            }
            if let Some(backend) = host.default_backend.or(table_default) {
                host.fallback_target = push(&name, None, backend);
            }
        }
        if let Some(backend) = table_default {
            self.default_target = push("", None, backend);
        }
        self.targets = targets;
    }

    /// Every distinct outcome of [`CompiledTable::route`]; [`RouteMatch::target`] indexes it.
    pub fn targets(&self) -> &[MatchTarget] {
        &self.targets
    }

    /// Routes a request: `host` is the raw `Host` header or `:authority` (normalized here with
    /// [`normalize_host`]; pass `""` when there is none) and `path` the raw request path
    /// (anything from `?` is ignored; `""` is `/`). `None` means 404.
    ///
    /// See [`CompiledTable`] for the rules; the cost does not depend on the number of hosts or
    /// routes.
    pub fn route(&self, host: &str, path: &str) -> Option<RouteMatch<'_>> {
        let path = path.split_once('?').map_or(path, |(before, _)| before);
        let path = if path.is_empty() { "/" } else { path };
        let Some(vhost) = self.find_host(host) else {
            return self.default_match("");
        };
        if let Some(route) = vhost.find_route(path) {
            return Some(RouteMatch {
                backend: route.backend,
                host: &vhost.name,
                route_path: Some(&route.path),
                path_match: Some(route.path_match),
                ingress: route.ingress.as_deref(),
                options: &route.options,
                redirect_https: route.redirect_https,
                target: route.target,
            });
        }
        match vhost.default_backend {
            Some(backend) => Some(RouteMatch {
                backend,
                host: &vhost.name,
                route_path: None,
                path_match: None,
                ingress: None,
                options: &self.defaults,
                redirect_https: vhost.redirect_https,
                target: vhost.fallback_target,
            }),
            None => self.default_match(&vhost.name).map(|matched| RouteMatch {
                redirect_https: vhost.redirect_https,
                target: vhost.fallback_target,
                ..matched
            }),
        }
    }

    /// The backends, sorted by id; [`BackendIdx`] indexes this slice.
    pub fn backends(&self) -> &[CompiledBackend] {
        &self.backends
    }

    /// The backend at `idx`, if it is in range.
    pub fn backend(&self, idx: BackendIdx) -> Option<&CompiledBackend> {
        self.backends.get(idx.0)
    }

    /// The index of the backend with id `id` (binary search; not meant for the hot path).
    pub fn backend_index(&self, id: &str) -> Option<BackendIdx> {
        self.backends
            .binary_search_by(|b| b.id.as_str().cmp(id))
            .ok()
            .map(BackendIdx)
    }

    /// The table's default backend, used when no host (or no route and no host default) matches.
    pub fn default_backend(&self) -> Option<BackendIdx> {
        self.default_backend
    }

    /// The table-wide default options (what a default-backend match gets).
    pub fn defaults(&self) -> &EffectiveOptions {
        &self.defaults
    }

    /// Settings of the listener `name`; [`ListenerSettings::default`] when the table has none.
    pub fn listener(&self, name: &str) -> ListenerSettings {
        self.listeners.get(name).cloned().unwrap_or_default()
    }

    fn find_host(&self, raw: &str) -> Option<&CompiledHost> {
        if let Some(name) = normalize_host(raw) {
            let name: &str = &name;
            if let Some(host) = self.exact_hosts.get(name) {
                return Some(host);
            }
            if let Some((first, rest)) = name.split_once('.') {
                if !first.is_empty() {
                    if let Some(host) = self.wildcard_hosts.get(rest) {
                        return Some(host);
                    }
                }
            }
        }
        self.catch_all.as_ref()
    }

    fn default_match<'a>(&'a self, host: &'a str) -> Option<RouteMatch<'a>> {
        self.default_backend.map(|backend| RouteMatch {
            backend,
            host,
            route_path: None,
            path_match: None,
            ingress: None,
            options: &self.defaults,
            redirect_https: false,
            target: self.default_target,
        })
    }

    /// Whether a request for `host` that no route serves should be redirected to HTTPS (the
    /// matched host's flag; used when nothing matches at all, which would otherwise be 404).
    pub fn host_redirects_https(&self, host: &str) -> bool {
        self.find_host(host).is_some_and(|h| h.redirect_https)
    }
}

impl CompiledHost {
    fn find_route(&self, path: &str) -> Option<&CompiledRoute> {
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        let mut node = &self.prefix;
        let mut best = node.route.as_ref();
        for segment in segments(path) {
            match node.children.get(segment) {
                Some(child) => {
                    node = child;
                    if child.route.is_some() {
                        best = child.route.as_ref();
                    }
                }
                None => break,
            }
        }
        best
    }
}

/// The non-empty `/`-separated segments of a path.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Certificate ids are not empty; their server names are exact or one-label wildcard host
/// names, each in at most one certificate; `default_certificate` names a certificate. (The PEM
/// itself is checked by the data plane, which owns the TLS library.)
fn check_certificates(table: &RoutingTable) -> Result<(), TableError> {
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for (id, certificate) in &table.certificates {
        let at = format!("$.certificates[{}]", quote(id));
        if id.is_empty() {
            return Err(TableError::new(at, "certificate id must not be empty"));
        }
        for (k, name) in certificate.hosts.iter().enumerate() {
            let error = |m: String| TableError::new(format!("{at}.hosts[{k}]"), m);
            match host_kind(name).map_err(error)? {
                HostKind::CatchAll => {
                    return Err(error(
                        "\"*\" is not a server name (the default certificate serves unknown names)"
                            .to_owned(),
                    ))
                }
                HostKind::Exact | HostKind::Wildcard(_) => {}
            }
            if let Some(first) = owners.insert(name, id) {
                return Err(error(format!(
                    "server name {} is already served by certificate {}",
                    quote(name),
                    quote(first)
                )));
            }
        }
    }
    if let Some(id) = &table.default_certificate {
        if !table.certificates.contains_key(id) {
            return Err(TableError::new(
                "$.default_certificate",
                format!("unknown certificate {}", quote(id)),
            ));
        }
    }
    Ok(())
}

/// Compiles `$.hosts[i]`. Error paths are only formatted when there is an error.
fn compile_host(
    i: usize,
    host: &VirtualHost,
    defaults: &EffectiveOptions,
    resolve: &impl Fn(&str) -> Result<BackendIdx, String>,
) -> Result<CompiledHost, TableError> {
    let default_backend = match &host.default_backend {
        Some(id) => Some(
            resolve(id).map_err(|m| TableError::new(format!("$.hosts[{i}].default_backend"), m))?,
        ),
        None => None,
    };
    let mut compiled = CompiledHost {
        name: host.name.as_str().into(),
        exact: LookupMap::default(),
        prefix: PrefixNode::default(),
        default_backend,
        redirect_https: host.redirect_https,
        fallback_target: TargetIdx(0),
    };
    for (j, route) in host.routes.iter().enumerate() {
        let error = |field: &str, message: String| {
            TableError::new(format!("$.hosts[{i}].routes[{j}].{field}"), message)
        };
        check_path(&route.path).map_err(|m| error("path", m))?;
        let backend = resolve(&route.backend).map_err(|m| error("backend", m))?;
        let options = &route.options;
        check_timeout(options.upstream_read_timeout_ms)
            .map_err(|m| error("options.upstream_read_timeout_ms", m))?;
        check_timeout(options.upstream_connect_timeout_ms)
            .map_err(|m| error("options.upstream_connect_timeout_ms", m))?;
        check_timeout(options.upstream_send_timeout_ms)
            .map_err(|m| error("options.upstream_send_timeout_ms", m))?;
        if options.next_upstream_tries == Some(0) {
            return Err(error(
                "options.next_upstream_tries",
                "must be at least 1".to_owned(),
            ));
        }
        let compiled_route = CompiledRoute {
            path: route.path.as_str().into(),
            path_match: route.path_match,
            backend,
            ingress: route.ingress.as_deref().map(Into::into),
            options: defaults.merged(options),
            redirect_https: route.redirect_https,
            index: j,
            target: TargetIdx(0),
        };
        let first = match route.path_match {
            PathMatch::Exact => match compiled.exact.entry(route.path.as_str().into()) {
                Entry::Occupied(first) => first.get().index,
                Entry::Vacant(slot) => {
                    slot.insert(compiled_route);
                    continue;
                }
            },
            PathMatch::Prefix => {
                let mut node = &mut compiled.prefix;
                for segment in segments(&route.path) {
                    node = node.children.entry(segment.into()).or_default();
                }
                match &node.route {
                    Some(first) => first.index,
                    None => {
                        node.route = Some(compiled_route);
                        continue;
                    }
                }
            }
        };
        return Err(error("path", duplicate(i, host, route, first)));
    }
    Ok(compiled)
}

/// The message for route `route` of `$.hosts[i]` duplicating route `first` of the same host.
fn duplicate(i: usize, host: &VirtualHost, route: &Route, first: usize) -> String {
    let (how, why) = match route.path_match {
        PathMatch::Exact => ("Exact", ""),
        PathMatch::Prefix => (
            "Prefix",
            "; a Prefix path is compared by segments, its trailing '/' ignored",
        ),
    };
    let first_path = host.routes.get(first).map_or("", |r| r.path.as_str());
    format!(
        "duplicate {how} route {} in host {} (same as $.hosts[{i}].routes[{first}], {}{why})",
        quote(&route.path),
        quote(&host.name),
        quote(first_path),
    )
}

/// `tls` only with a TLS protocol (which gets the defaults when it has none); a client
/// certificate comes with its key; the server name is a DNS name or an IP address. (The PEM
/// itself is checked by the data plane, which owns the TLS library.)
fn check_backend_tls(
    at: &str,
    protocol: BackendProtocol,
    tls: Option<&UpstreamTls>,
) -> Result<Option<UpstreamTls>, TableError> {
    if !protocol.is_tls() {
        return match tls {
            Some(_) => Err(TableError::new(
                format!("{at}.tls"),
                "tls settings need protocol \"https\" or \"grpcs\"",
            )),
            None => Ok(None),
        };
    }
    let tls = tls.cloned().unwrap_or_default();
    if tls.cert_pem.is_some() != tls.key_pem.is_some() {
        return Err(TableError::new(
            format!("{at}.tls"),
            "cert_pem and key_pem must be set together",
        ));
    }
    let name = tls.server_name.as_str();
    let valid = name.is_empty()
        || name.parse::<std::net::IpAddr>().is_ok()
        || matches!(host_kind(name), Ok(HostKind::Exact));
    if !valid {
        return Err(TableError::new(
            format!("{at}.tls.server_name"),
            format!("{} is not a DNS name or an IP address", quote(name)),
        ));
    }
    Ok(Some(tls))
}

/// A timeout, when set, must be above 0.
fn check_timeout(value: Option<u64>) -> Result<(), String> {
    if value == Some(0) {
        return Err("timeout must be greater than 0".to_owned());
    }
    Ok(())
}

/// A route path: starts with `/`; no `?` or `#` (the query is never matched), no space or
/// control character (none can be in a request path).
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {} must start with '/'", quote(path)));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "path {} must not contain {} (the query is not matched; paths are raw, percent-encode other bytes)",
            quote(path),
            quote(&bad.to_string()),
        ));
    }
    Ok(())
}

/// What kind of virtual host a (valid) name is.
#[derive(Debug, PartialEq, Eq)]
enum HostKind<'a> {
    /// `foo.example.com`.
    Exact,
    /// `*.example.com`, with the suffix `example.com`.
    Wildcard(&'a str),
    /// `*`.
    CatchAll,
}

fn host_kind(name: &str) -> Result<HostKind<'_>, String> {
    if name == "*" {
        return Ok(HostKind::CatchAll);
    }
    if name.is_empty() {
        return Err("host name must not be empty (use \"*\" for any host)".to_owned());
    }
    let q = quote(name);
    if name.contains(':') {
        return Err(format!("host name {q} must not have a port"));
    }
    if name.ends_with('.') {
        return Err(format!("host name {q} must not end with a dot"));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("host name {q} must be lower case"));
    }
    let (kind, dns) = match name.strip_prefix("*.") {
        Some(suffix) => (HostKind::Wildcard(suffix), suffix),
        None => (HostKind::Exact, name),
    };
    if dns.contains('*') {
        return Err(format!(
            "host name {q}: a wildcard must be the whole first label (\"*.example.com\") or the whole name (\"*\")"
        ));
    }
    if !is_dns_name(dns) {
        return Err(format!(
            "host name {q} is not a DNS name (labels of a-z, 0-9 and '-', neither starting nor ending with '-', 1-63 characters each, 253 in all)"
        ));
    }
    Ok(kind)
}

/// A lower-case DNS-1123 subdomain.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= 63
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes.first() != Some(&b'-')
                && bytes.last() != Some(&b'-')
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::{json, Value};

    /// Backends `a` .. `f`, each with a service `svc/<id>`.
    fn table(hosts: Value, default_backend: Value) -> RoutingTable {
        let backends: serde_json::Map<String, Value> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|id| {
                (
                    (*id).to_owned(),
                    json!({"service": format!("svc/{id}"), "endpoints": [{"address": "127.0.0.1", "port": 8080}]}),
                )
            })
            .collect();
        serde_json::from_value(json!({
            "version": 1,
            "hosts": hosts,
            "backends": backends,
            "default_backend": default_backend,
        }))
        .unwrap()
    }

    fn compile(hosts: Value, default_backend: Value) -> CompiledTable {
        CompiledTable::compile(&table(hosts, default_backend)).unwrap()
    }

    fn host(name: &str, routes: &[(&str, &str, &str)]) -> Value {
        let routes: Vec<Value> = routes
            .iter()
            .map(|(path, how, backend)| json!({"path": path, "match": how, "backend": backend}))
            .collect();
        json!({"name": name, "routes": routes})
    }

    /// The backend id serving `host` + `path`, or `None` for 404.
    fn served<'a>(table: &'a CompiledTable, host: &str, path: &str) -> Option<&'a str> {
        let m = table.route(host, path)?;
        Some(table.backend(m.backend).unwrap().id.as_str())
    }

    fn error(table: &RoutingTable) -> TableError {
        CompiledTable::compile(table).unwrap_err()
    }

    #[test]
    fn every_match_names_its_target() {
        let t = compile(
            json!([
                host("foo.com", &[("/", "prefix", "a"), ("/x", "exact", "b")]),
                {"name": "*.bar.com", "routes": [], "default_backend": "c"},
                host("baz.com", &[("/only", "exact", "d")]),
            ]),
            json!("e"),
        );
        // Two routes, foo.com and baz.com through the table default, *.bar.com's own default,
        // and the table default without a host.
        assert_eq!(t.targets().len(), 7);
        let target = |host: &str, path: &str| {
            let m = t.route(host, path).unwrap();
            let target = &t.targets()[m.target.0];
            assert_eq!(target.backend, m.backend);
            (
                target.host.to_string(),
                t.backend(target.backend).unwrap().id.clone(),
            )
        };
        assert_eq!(target("foo.com", "/y"), ("foo.com".into(), "a".into()));
        assert_eq!(target("foo.com", "/x"), ("foo.com".into(), "b".into()));
        assert_eq!(target("q.bar.com", "/"), ("*.bar.com".into(), "c".into()));
        assert_eq!(target("baz.com", "/only"), ("baz.com".into(), "d".into()));
        assert_eq!(target("baz.com", "/other"), ("baz.com".into(), "e".into()));
        assert_eq!(target("nowhere.com", "/"), (String::new(), "e".into()));
    }

    #[test]
    fn host_port_case_and_trailing_dot_are_ignored() {
        let t = compile(
            json!([host("foo.com", &[("/", "prefix", "a")])]),
            json!(null),
        );
        for raw in [
            "foo.com",
            "foo.com:8080",
            "FOO.Com",
            "foo.com.",
            "Foo.COM.:443",
        ] {
            assert_eq!(served(&t, raw, "/x"), Some("a"), "{raw}");
        }
        assert_eq!(served(&t, "foo.com..", "/x"), None);
        assert_eq!(served(&t, "bar.com", "/x"), None);
        assert_eq!(t.route("FOO.com:80", "/").unwrap().host, "foo.com");
    }

    #[test]
    fn ipv6_literal_hosts_reach_the_catch_all_or_the_default() {
        let t = compile(json!([host("*", &[("/", "prefix", "b")])]), json!("a"));
        assert_eq!(served(&t, "[::1]:8080", "/"), Some("b"));
        let t = compile(
            json!([host("foo.com", &[("/", "prefix", "b")])]),
            json!("a"),
        );
        let m = t.route("[::1]:8080", "/").unwrap();
        assert_eq!((t.backends()[m.backend.0].id.as_str(), m.host), ("a", ""));
    }

    #[test]
    fn empty_path_is_root() {
        let t = compile(
            json!([
                host("p.com", &[("/", "prefix", "a")]),
                host("e.com", &[("/", "exact", "b")])
            ]),
            json!(null),
        );
        assert_eq!(served(&t, "p.com", ""), Some("a"));
        assert_eq!(served(&t, "e.com", ""), Some("b"));
        assert_eq!(served(&t, "e.com", "?q=1"), Some("b"));
        assert_eq!(served(&t, "e.com", "/x"), None);
    }

    #[test]
    fn percent_encoded_bytes_are_never_decoded() {
        let t = compile(
            json!([host(
                "h",
                &[
                    ("/foo", "prefix", "a"),
                    ("/caf%C3%A9", "exact", "b"),
                    ("/x%2Fy", "prefix", "c")
                ]
            )]),
            json!(null),
        );
        // `%2F` is not a separator: `/foo%2Fbar` is one segment, not under `/foo`.
        assert_eq!(served(&t, "h", "/foo%2Fbar"), None);
        assert_eq!(served(&t, "h", "/foo/bar"), Some("a"));
        assert_eq!(served(&t, "h", "/caf%C3%A9"), Some("b"));
        assert_eq!(served(&t, "h", "/caf%c3%a9"), None);
        assert_eq!(served(&t, "h", "/café"), None);
        assert_eq!(served(&t, "h", "/x%2Fy/z"), Some("c"));
        assert_eq!(served(&t, "h", "/x/y"), None);
    }

    #[test]
    fn query_is_ignored() {
        let t = compile(
            json!([host(
                "h",
                &[("/foo", "exact", "a"), ("/bar", "prefix", "b")]
            )]),
            json!(null),
        );
        assert_eq!(served(&t, "h", "/foo?x=1"), Some("a"));
        assert_eq!(served(&t, "h", "/foo?"), Some("a"));
        assert_eq!(served(&t, "h", "/bar?/foo"), Some("b"));
        assert_eq!(served(&t, "h", "/baz?/bar"), None);
    }

    #[test]
    fn empty_segments_are_skipped_on_both_sides() {
        let t = compile(
            json!([host(
                "h",
                &[
                    ("/foo", "prefix", "a"),
                    ("/foo//bar/", "prefix", "b"),
                    ("/exact", "exact", "c")
                ]
            )]),
            json!(null),
        );
        assert_eq!(served(&t, "h", "//foo"), Some("a"));
        assert_eq!(served(&t, "h", "/foo//"), Some("a"));
        assert_eq!(served(&t, "h", "/foo/bar"), Some("b"));
        assert_eq!(served(&t, "h", "/foo//bar//baz"), Some("b"));
        // Exact stays byte-exact.
        assert_eq!(served(&t, "h", "/exact"), Some("c"));
        assert_eq!(served(&t, "h", "//exact"), None);
        assert_eq!(served(&t, "h", "/exact/"), None);
    }

    #[test]
    fn exact_beats_prefix_of_equal_length() {
        let t = compile(
            json!([host(
                "h",
                &[("/foo", "prefix", "a"), ("/foo", "exact", "b")]
            )]),
            json!(null),
        );
        let m = t.route("h", "/foo").unwrap();
        assert_eq!(served(&t, "h", "/foo"), Some("b"));
        assert_eq!(
            (m.route_path, m.path_match),
            (Some("/foo"), Some(PathMatch::Exact))
        );
        assert_eq!(served(&t, "h", "/foo/"), Some("a"));
        assert_eq!(
            t.route("h", "/foo/x").unwrap().path_match,
            Some(PathMatch::Prefix)
        );
    }

    #[test]
    fn longest_prefix_wins_across_three_levels() {
        let t = compile(
            json!([host(
                "h",
                &[
                    ("/a/b/c", "prefix", "c"),
                    ("/a", "prefix", "a"),
                    ("/", "prefix", "d"),
                    ("/a/b", "prefix", "b")
                ]
            )]),
            json!(null),
        );
        for (path, want) in [
            ("/", "d"),
            ("/x", "d"),
            ("/ab", "d"),
            ("/a", "a"),
            ("/a/", "a"),
            ("/a/x", "a"),
            ("/a/bc", "a"),
            ("/a/b", "b"),
            ("/a/b/x/c", "b"),
            ("/a/b/c", "c"),
            ("/a/b/c/d/e", "c"),
        ] {
            assert_eq!(served(&t, "h", path), Some(want), "{path}");
        }
        // A deeper trie node without a route does not hide a shallower route.
        let t = compile(
            json!([host(
                "h",
                &[("/a", "prefix", "a"), ("/a/b/c", "prefix", "c")]
            )]),
            json!(null),
        );
        assert_eq!(served(&t, "h", "/a/b"), Some("a"));
        assert_eq!(served(&t, "h", "/a/b/x"), Some("a"));
    }

    #[test]
    fn wildcard_covers_exactly_one_label_and_exact_beats_it() {
        let t = compile(
            json!([
                host("*.foo.com", &[("/", "prefix", "a")]),
                host("bar.foo.com", &[("/", "prefix", "b")]),
                host("*.bar.foo.com", &[("/", "prefix", "c")])
            ]),
            json!(null),
        );
        assert_eq!(served(&t, "baz.foo.com", "/"), Some("a"));
        assert_eq!(t.route("baz.foo.com", "/").unwrap().host, "*.foo.com");
        assert_eq!(served(&t, "bar.foo.com", "/"), Some("b"));
        assert_eq!(served(&t, "x.bar.foo.com", "/"), Some("c"));
        assert_eq!(served(&t, "y.x.bar.foo.com", "/"), None);
        assert_eq!(served(&t, "foo.com", "/"), None);
        assert_eq!(served(&t, ".foo.com", "/"), None);
    }

    #[test]
    fn catch_all_serves_hosts_that_match_nothing_else() {
        let t = compile(
            json!([
                host("*", &[("/", "prefix", "a")]),
                host("foo.com", &[("/api", "prefix", "b")]),
                host("*.foo.com", &[("/api", "prefix", "c")])
            ]),
            json!("d"),
        );
        assert_eq!(served(&t, "other.org", "/x"), Some("a"));
        assert_eq!(t.route("other.org", "/x").unwrap().host, "*");
        assert_eq!(served(&t, "", "/x"), Some("a"));
        assert_eq!(served(&t, "not a host", "/x"), Some("a"));
        // A matched host never falls through to the catch-all's routes.
        assert_eq!(served(&t, "foo.com", "/api"), Some("b"));
        assert_eq!(served(&t, "foo.com", "/x"), Some("d"));
        assert_eq!(served(&t, "x.foo.com", "/x"), Some("d"));
    }

    #[test]
    fn host_default_backend_beats_table_default() {
        let mut hosts = json!([
            host("foo.com", &[("/api", "prefix", "a")]),
            host("bar.com", &[("/api", "prefix", "a")])
        ]);
        hosts[0]["default_backend"] = json!("b");
        let t = compile(hosts, json!("c"));
        let m = t.route("foo.com", "/other").unwrap();
        assert_eq!(t.backends()[m.backend.0].id, "b");
        assert_eq!(
            (m.host, m.route_path, m.path_match, m.ingress),
            ("foo.com", None, None, None)
        );
        let m = t.route("bar.com", "/other").unwrap();
        assert_eq!(
            (t.backends()[m.backend.0].id.as_str(), m.host),
            ("c", "bar.com")
        );
        let m = t.route("baz.com", "/api").unwrap();
        assert_eq!((t.backends()[m.backend.0].id.as_str(), m.host), ("c", ""));
        let t = compile(
            json!([host("foo.com", &[("/api", "prefix", "a")])]),
            json!(null),
        );
        assert!(t.route("foo.com", "/other").is_none());
        assert!(t.route("baz.com", "/api").is_none());
    }

    #[test]
    fn route_options_merge_over_defaults() {
        let mut t = table(
            json!([{"name": "h", "routes": [
                {"path": "/big", "match": "prefix", "backend": "a", "ingress": "ns/ing",
                 "options": {"max_request_body_bytes": 0}},
                {"path": "/slow", "match": "prefix", "backend": "a",
                 "options": {"upstream_read_timeout_ms": 1500, "next_upstream_tries": 1,
                             "upstream_connect_timeout_ms": 250,
                             "upstream_send_timeout_ms": 750,
                             "next_upstream_timeout_ms": 2000}},
            ]}]),
            json!("b"),
        );
        t.defaults.upstream_read_timeout_ms = 30_000;
        let t = CompiledTable::compile(&t).unwrap();
        let big = t.route("h", "/big").unwrap();
        assert_eq!(big.ingress, Some("ns/ing"));
        assert_eq!(
            *big.options,
            EffectiveOptions {
                max_request_body_bytes: 0,
                upstream_read_timeout: Duration::from_secs(30),
                upstream_connect_timeout: None,
                upstream_send_timeout: None,
                next_upstream_tries: DEFAULT_NEXT_UPSTREAM_TRIES,
                next_upstream_timeout: None,
            }
        );
        let slow = t.route("h", "/slow").unwrap();
        assert_eq!(
            *slow.options,
            EffectiveOptions {
                max_request_body_bytes: 1024 * 1024,
                upstream_read_timeout: Duration::from_millis(1500),
                upstream_connect_timeout: Some(Duration::from_millis(250)),
                upstream_send_timeout: Some(Duration::from_millis(750)),
                next_upstream_tries: 1,
                next_upstream_timeout: Some(Duration::from_secs(2)),
            }
        );
        assert_eq!(t.route("h", "/").unwrap().options, t.defaults());
    }

    #[test]
    fn backends_listeners_and_indices() {
        let mut raw = table(json!([]), json!("c"));
        raw.listeners.insert(
            "https".to_owned(),
            ListenerSettings {
                scheme: crate::Scheme::Https,
            },
        );
        let t = CompiledTable::compile(&raw).unwrap();
        assert_eq!(t.backends().len(), 6);
        assert_eq!(t.backend_index("c"), Some(BackendIdx(2)));
        assert_eq!(t.backend_index("zz"), None);
        assert_eq!(t.default_backend(), Some(BackendIdx(2)));
        assert_eq!(
            t.backend(BackendIdx(2)).unwrap().service.as_deref(),
            Some("svc/c")
        );
        assert_eq!(t.backend(BackendIdx(6)), None);
        assert_eq!(t.listener("https").scheme, crate::Scheme::Https);
        assert_eq!(t.listener("http"), ListenerSettings::default());
    }

    fn assert_error(table: &RoutingTable, path: &str, message_part: &str) {
        let e = error(table);
        assert_eq!(e.path(), path, "{e}");
        assert!(e.message().contains(message_part), "{e}");
        assert_eq!(e.to_string(), format!("{}: {}", e.path(), e.message()));
    }

    #[test]
    fn version_must_be_supported() {
        let mut t = table(json!([]), json!(null));
        t.version = 2;
        assert_error(&t, "$.version", "unsupported table version 2");
    }

    #[test]
    fn default_timeout_must_be_positive() {
        let mut t = table(json!([]), json!(null));
        t.defaults.upstream_read_timeout_ms = 0;
        assert_error(&t, "$.defaults.upstream_read_timeout_ms", "greater than 0");
    }

    #[test]
    fn host_names_are_validated() {
        for (name, message) in [
            ("", "must not be empty"),
            ("Foo.com", "lower case"),
            ("foo.com:80", "port"),
            ("foo.com.", "end with a dot"),
            ("*.*.foo.com", "wildcard"),
            ("foo.*.com", "wildcard"),
            ("**.foo.com", "wildcard"),
            ("*foo.com", "wildcard"),
            ("*.", "end with a dot"),
            ("-foo.com", "not a DNS name"),
            ("foo-.com", "not a DNS name"),
            ("foo..com", "not a DNS name"),
            ("foo_bar.com", "not a DNS name"),
            ("fóo.com", "not a DNS name"),
        ] {
            let t = table(
                json!([host("ok.com", &[]), host(name, &[("/", "prefix", "a")])]),
                json!(null),
            );
            assert_error(&t, "$.hosts[1].name", message);
        }
        let long = format!("{}.com", "a".repeat(64));
        assert_error(
            &table(json!([host(&long, &[])]), json!(null)),
            "$.hosts[0].name",
            "not a DNS name",
        );
        for ok in ["*", "*.com", "*.foo.com", "a", "1.2.3.4", "x-1.y"] {
            CompiledTable::compile(&table(json!([host(ok, &[])]), json!(null))).unwrap();
        }
    }

    #[test]
    fn duplicate_hosts_are_rejected() {
        let t = table(
            json!([host("a.com", &[]), host("*.a.com", &[]), host("a.com", &[])]),
            json!(null),
        );
        assert_error(
            &t,
            "$.hosts[2].name",
            "duplicate host \"a.com\" (first at $.hosts[0])",
        );
    }

    #[test]
    fn route_paths_are_validated() {
        for (path, message) in [
            ("", "must start with '/'"),
            ("foo", "must start with '/'"),
            ("/foo?x", "must not contain \"?\""),
            ("/foo#x", "must not contain \"#\""),
            ("/foo bar", "must not contain \" \""),
        ] {
            let t = table(
                json!([host("h", &[("/ok", "exact", "a"), (path, "prefix", "a")])]),
                json!(null),
            );
            assert_error(&t, "$.hosts[0].routes[1].path", message);
        }
    }

    #[test]
    fn backend_references_must_exist() {
        let t = table(
            json!([host("h", &[("/", "prefix", "a"), ("/x", "exact", "nope")])]),
            json!(null),
        );
        assert_error(
            &t,
            "$.hosts[0].routes[1].backend",
            "unknown backend \"nope\"",
        );
        let mut hosts = json!([host("h", &[])]);
        hosts[0]["default_backend"] = json!("nope");
        assert_error(
            &table(hosts, json!(null)),
            "$.hosts[0].default_backend",
            "unknown backend \"nope\"",
        );
        assert_error(
            &table(json!([]), json!("nope")),
            "$.default_backend",
            "unknown backend \"nope\"",
        );
    }

    #[test]
    fn duplicate_routes_are_rejected() {
        let t = table(
            json!([host(
                "h",
                &[
                    ("/foo", "exact", "a"),
                    ("/foo", "prefix", "a"),
                    ("/foo", "exact", "b")
                ]
            )]),
            json!(null),
        );
        assert_error(
            &t,
            "$.hosts[0].routes[2].path",
            "duplicate Exact route \"/foo\"",
        );
        // Exact is byte-exact, so `/foo/` is another route.
        let t = table(
            json!([host(
                "h",
                &[("/foo", "exact", "a"), ("/foo/", "exact", "b")]
            )]),
            json!(null),
        );
        CompiledTable::compile(&t).unwrap();
        // A Prefix route's trailing `/` (and empty segments) are ignored.
        for other in ["/foo/", "//foo", "/foo//"] {
            let t = table(
                json!([host(
                    "h",
                    &[
                        ("/foo", "prefix", "a"),
                        ("/bar", "prefix", "a"),
                        (other, "prefix", "b")
                    ]
                )]),
                json!(null),
            );
            assert_error(&t, "$.hosts[0].routes[2].path", "duplicate Prefix route");
            assert!(
                error(&t).message().contains("routes[0], \"/foo\""),
                "{}",
                error(&t)
            );
        }
        // The same path in two hosts is fine.
        let t = table(
            json!([
                host("h", &[("/foo", "prefix", "a")]),
                host("i", &[("/foo", "prefix", "a")])
            ]),
            json!(null),
        );
        CompiledTable::compile(&t).unwrap();
    }

    #[test]
    fn route_timeouts_must_be_positive() {
        let t = table(
            json!([{"name": "h", "routes": [
                {"path": "/", "match": "prefix", "backend": "a", "options": {"max_request_body_bytes": 0}},
                {"path": "/x", "match": "prefix", "backend": "a", "options": {"upstream_read_timeout_ms": 0}},
            ]}]),
            json!(null),
        );
        assert_error(
            &t,
            "$.hosts[0].routes[1].options.upstream_read_timeout_ms",
            "greater than 0",
        );
        let t = table(
            json!([{"name": "h", "routes": [
                {"path": "/", "match": "prefix", "backend": "a", "options": {"next_upstream_tries": 0}},
            ]}]),
            json!(null),
        );
        assert_error(
            &t,
            "$.hosts[0].routes[0].options.next_upstream_tries",
            "at least 1",
        );
    }

    #[test]
    fn endpoints_are_validated() {
        let mut t = table(json!([]), json!(null));
        let endpoints = &mut t.backends.get_mut("b").unwrap().endpoints;
        endpoints.push(endpoints[0].clone());
        endpoints[1].port = 0;
        assert_error(
            &t,
            "$.backends[\"b\"].endpoints[1].port",
            "port must be 1-65535",
        );
        let mut t = table(json!([]), json!(null));
        t.backends.insert(
            "ns/svc:80".to_owned(),
            serde_json::from_value(
                json!({"endpoints": [{"address": "::1", "port": 80, "weight": 0}]}),
            )
            .unwrap(),
        );
        assert_error(
            &t,
            "$.backends[\"ns/svc:80\"].endpoints[0].weight",
            "weight must be at least 1",
        );
        let mut t = table(json!([]), json!(null));
        t.backends.insert(
            String::new(),
            crate::Backend {
                service: None,
                endpoints: vec![],
                balance: Default::default(),
                health_check: None,
                protocol: BackendProtocol::Http,
                tls: None,
            },
        );
        assert_error(&t, "$.backends[\"\"]", "must not be empty");
    }

    #[test]
    fn backend_protocols_and_tls_settings() {
        let mut t = table(json!([]), json!(null));
        let backend = t.backends.get_mut("a").unwrap();
        backend.protocol = BackendProtocol::Grpcs;
        let compiled = CompiledTable::compile(&t).unwrap();
        let a = &compiled.backends()[0];
        // A TLS protocol without settings gets the defaults: no verification, no SNI.
        assert_eq!(a.tls, Some(UpstreamTls::default()));
        assert!(a.protocol.is_http2() && a.protocol.is_tls());

        let backend = t.backends.get_mut("a").unwrap();
        backend.protocol = BackendProtocol::Grpc;
        backend.tls = Some(UpstreamTls::default());
        assert_error(&t, "$.backends[\"a\"].tls", "need protocol");

        let backend = t.backends.get_mut("a").unwrap();
        backend.protocol = BackendProtocol::Https;
        backend.tls = Some(UpstreamTls {
            cert_pem: Some("x".into()),
            ..UpstreamTls::default()
        });
        assert_error(&t, "$.backends[\"a\"].tls", "set together");

        let backend = t.backends.get_mut("a").unwrap();
        backend.tls = Some(UpstreamTls {
            server_name: "Not A Name".into(),
            ..UpstreamTls::default()
        });
        assert_error(&t, "$.backends[\"a\"].tls.server_name", "not a DNS name");
        for name in ["svc.ns.svc", "10.0.0.1", "::1"] {
            let backend = t.backends.get_mut("a").unwrap();
            backend.tls = Some(UpstreamTls {
                server_name: name.into(),
                verify: true,
                ..UpstreamTls::default()
            });
            assert!(CompiledTable::compile(&t).is_ok(), "{name}");
        }
    }

    #[test]
    fn first_error_in_document_order_wins() {
        let mut t = table(
            json!([host("h", &[("nope", "prefix", "a")])]),
            json!("missing"),
        );
        t.backends.get_mut("a").unwrap().endpoints[0].port = 0;
        assert_eq!(error(&t).path(), "$.hosts[0].routes[0].path");
        t.hosts.clear();
        assert_eq!(error(&t).path(), "$.backends[\"a\"].endpoints[0].port");
        t.backends.get_mut("a").unwrap().endpoints[0].port = 1;
        assert_eq!(error(&t).path(), "$.default_backend");
    }
}
