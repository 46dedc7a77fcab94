//! The status page of the admin listener: `GET /` (HTML, rendered here, no script) and
//! `GET /api/status` (the same data as JSON).
//!
//! Three sources, none of them locked by a request: a [`RoutesView`] built once per applied
//! table (hosts, paths, backends, certificates with their validity), the live runtime state
//! read at render time (endpoint health, connections), and what the operator last pushed with
//! [`crate::DataPlane::set_operator_status`] (its mode and the problems it reported).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use silex_routing::{PathMatch, RoutingTable};

use crate::state::Shared;

/// What the operator tells the status page, pushed as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorStatus {
    /// How the operator gets its objects, e.g. `"files: examples/quickstart"` or `"cluster"`.
    #[serde(default)]
    pub source: String,
    /// Unix time of the operator's last reconcile.
    #[serde(default)]
    pub reconciled_at: Option<f64>,
    /// The core's message when it rejected the operator's last table.
    #[serde(default)]
    pub rejection: Option<String>,
    /// The problems of the last reconcile (bounded by the operator).
    #[serde(default)]
    pub problems: Vec<ProblemView>,
}

/// One problem the operator reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemView {
    /// `"error"` or `"warning"`.
    pub severity: String,
    /// `Kind namespace/name`, empty for a whole file.
    #[serde(default)]
    pub object: String,
    /// The offending field, e.g. `metadata.annotations[...]`.
    #[serde(default)]
    pub field: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
    /// The manifest file (file mode).
    #[serde(default)]
    pub source: Option<String>,
}

/// The parts of one applied table the page shows (no key material).
#[derive(Debug, Default)]
pub(crate) struct RoutesView {
    applied_at: f64,
    hosts: Vec<HostView>,
    default_backend: Option<String>,
    certificates: Vec<CertificateView>,
}

#[derive(Debug, Clone, Serialize)]
struct HostView {
    name: String,
    routes: Vec<RouteView>,
    default_backend: Option<String>,
    redirect_https: bool,
}

#[derive(Debug, Clone, Serialize)]
struct RouteView {
    path: String,
    #[serde(rename = "match")]
    path_match: &'static str,
    backend: String,
    ingress: Option<String>,
    redirect_https: bool,
}

#[derive(Debug, Clone, Serialize)]
struct CertificateView {
    id: String,
    hosts: Vec<String>,
    default: bool,
    /// Unix time; `None` when the certificate's validity could not be read.
    not_before: Option<i64>,
    not_after: Option<i64>,
}

impl RoutesView {
    pub(crate) fn new(table: &RoutingTable) -> Self {
        let hosts = table
            .hosts
            .iter()
            .map(|host| HostView {
                name: host.name.clone(),
                routes: host
                    .routes
                    .iter()
                    .map(|route| RouteView {
                        path: route.path.clone(),
                        path_match: match route.path_match {
                            PathMatch::Exact => "exact",
                            PathMatch::Prefix => "prefix",
                        },
                        backend: route.backend.clone(),
                        ingress: route.ingress.clone(),
                        redirect_https: route.redirect_https,
                    })
                    .collect(),
                default_backend: host.default_backend.clone(),
                redirect_https: host.redirect_https,
            })
            .collect();
        let certificates = table
            .certificates
            .iter()
            .map(|(id, certificate)| {
                let validity = crate::tls::validity(&certificate.cert_pem).ok();
                CertificateView {
                    id: id.clone(),
                    hosts: certificate.hosts.clone(),
                    default: table.default_certificate.as_deref() == Some(id.as_str()),
                    not_before: validity.map(|(from, _)| from),
                    not_after: validity.map(|(_, to)| to),
                }
            })
            .collect();
        Self {
            applied_at: unix_now(),
            hosts,
            default_backend: table.default_backend.clone(),
            certificates,
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Everything the page shows, as served by `/api/status`.
#[derive(Debug, Serialize)]
struct Status<'a> {
    generation: u64,
    /// Unix time the serving table was applied (`None` before the first).
    applied_at: Option<f64>,
    ready: bool,
    draining: bool,
    connections_open: u64,
    tunnels_open: u64,
    requests_total: u64,
    default_backend: Option<&'a str>,
    hosts: &'a [HostView],
    backends: Vec<BackendView<'a>>,
    certificates: &'a [CertificateView],
    operator: &'a OperatorStatus,
}

#[derive(Debug, Serialize)]
struct BackendView<'a> {
    id: &'a str,
    service: Option<&'a str>,
    endpoints: Vec<EndpointView<'a>>,
}

#[derive(Debug, Serialize)]
struct EndpointView<'a> {
    address: &'a str,
    weight: u32,
    /// False while the endpoint is ejected (it then gets no traffic unless every endpoint of
    /// its backend is ejected).
    healthy: bool,
    /// Seconds until an endpoint ejected after failures is tried again.
    ejected_for_s: Option<f64>,
    /// Out of load balancing because its active health checks fail.
    down_by_checks: bool,
    /// Requests to it now in flight (until their response bodies end).
    active_requests: u32,
    /// Requests per second it got since the previous look at the page (at least 1 s ago).
    requests_per_s: f64,
}

fn render<T>(shared: &Shared, with: impl FnOnce(&Status<'_>) -> T) -> T {
    let generation = shared.table.load();
    let view = shared.routes_view.load();
    let operator = shared.operator_status.load();
    let counters = shared.stats.snapshot();
    let now_ms = shared.clock.now_ms();
    let backends = generation
        .table
        .backends()
        .iter()
        .zip(&generation.backends)
        .map(|(compiled, state)| BackendView {
            id: &compiled.id,
            service: compiled.service.as_deref(),
            endpoints: state
                .names
                .iter()
                .zip(&state.health)
                .zip(&compiled.endpoints)
                .map(|((name, health), endpoint)| {
                    let healthy = health.is_healthy(now_ms);
                    let down_by_checks = health.is_actively_down();
                    let ejected_for = crate::health::remaining(health, now_ms);
                    EndpointView {
                        address: name,
                        weight: endpoint.weight,
                        healthy,
                        ejected_for_s: (!ejected_for.is_zero())
                            .then_some(ejected_for.as_secs_f64()),
                        down_by_checks,
                        active_requests: health.in_flight(),
                        requests_per_s: health.attempt_rate(now_ms),
                    }
                })
                .collect(),
        })
        .collect();
    let status = Status {
        generation: generation.id,
        applied_at: (generation.id > 0).then_some(view.applied_at),
        ready: shared.is_ready(),
        draining: shared.draining.load(Ordering::Relaxed),
        connections_open: counters.connections_open,
        tunnels_open: counters.tunnels_open,
        requests_total: counters.requests_total,
        default_backend: view.default_backend.as_deref(),
        hosts: &view.hosts,
        backends,
        certificates: &view.certificates,
        operator: &operator,
    };
    with(&status)
}

/// `/api/status`.
pub(crate) fn json(shared: &Shared) -> String {
    render(shared, |status| {
        serde_json::to_string_pretty(status).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// `/`.
pub(crate) fn html(shared: &Shared) -> String {
    render(shared, |status| page(status, unix_now()))
}

fn page(s: &Status<'_>, now: f64) -> String {
    let mut out = String::with_capacity(8192);
    out.push_str(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Silex status</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin-bottom:1.5em}\
         th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
         th{background:#f3f3f3}.bad{color:#b00020;font-weight:bold}.ok{color:#1b7a1b}\
         code{font-size:.95em}</style></head><body>\n<h1>Silex</h1>\n",
    );
    let applied = match s.applied_at {
        Some(at) => format!("applied {} ago", age(now - at)),
        None => "no table applied yet".to_owned(),
    };
    let state = if s.draining {
        "<span class=\"bad\">draining</span>"
    } else if s.ready {
        "<span class=\"ok\">ready</span>"
    } else {
        "<span class=\"bad\">not ready</span>"
    };
    let _ = writeln!(
        out,
        "<p id=\"summary\">Generation <b id=\"generation\">{}</b>, {}; {state}. \
         {} open connections ({} tunnels), {} requests served. Source: {}.</p>",
        s.generation,
        escape(&applied),
        s.connections_open,
        s.tunnels_open,
        s.requests_total,
        escape(if s.operator.source.is_empty() {
            "not reported"
        } else {
            &s.operator.source
        }),
    );
    routes_section(&mut out, s);
    certificates_section(&mut out, s, now);
    problems_section(&mut out, s);
    out.push_str(
        "<p><a href=\"/api/status\">/api/status</a> · <a href=\"/metrics\">/metrics</a></p>\
         \n</body></html>\n",
    );
    out
}

fn routes_section(out: &mut String, s: &Status<'_>) {
    out.push_str(
        "<h2>Routes</h2>\n<table id=\"routes\"><tr><th>Host</th><th>Path</th><th>Match</th>\
         <th>Ingress</th><th>Backend</th><th>Endpoints</th></tr>\n",
    );
    // Each backend's endpoints are rendered once, however many routes share it.
    let cells: HashMap<&str, String> = s
        .backends
        .iter()
        .map(|b| (b.id, endpoints_cell(b)))
        .collect();
    for host in s.hosts {
        for route in &host.routes {
            route_row(
                out,
                &cells,
                &host.name,
                &route.path,
                route.path_match,
                route.ingress.as_deref(),
                &route.backend,
            );
        }
        if let Some(backend) = &host.default_backend {
            route_row(
                out,
                &cells,
                &host.name,
                "(any other path)",
                "",
                None,
                backend,
            );
        }
    }
    if let Some(backend) = s.default_backend {
        route_row(out, &cells, "(any other host)", "", "", None, backend);
    }
    out.push_str("</table>\n");
}

/// The endpoints of a backend with their health, load and request rate.
fn endpoints_cell(b: &BackendView<'_>) -> String {
    if b.endpoints.is_empty() {
        return "<span class=\"bad\">no ready endpoints (503)</span>".to_owned();
    }
    b.endpoints
        .iter()
        .map(|e| {
            let state = match (e.healthy, e.down_by_checks, e.ejected_for_s) {
                (true, _, _) => "<span class=\"ok\">healthy</span>".to_owned(),
                (false, true, _) => "<span class=\"bad\">down (health checks)</span>".to_owned(),
                (false, false, left) => format!(
                    "<span class=\"bad\">ejected, {:.0} s left</span>",
                    left.unwrap_or(0.0)
                ),
            };
            format!(
                "<code>{}</code> weight {} {state}, {} active, {:.1} req/s",
                escape(e.address),
                e.weight,
                e.active_requests,
                e.requests_per_s
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

fn route_row(
    out: &mut String,
    cells: &HashMap<&str, String>,
    host: &str,
    path: &str,
    path_match: &str,
    ingress: Option<&str>,
    backend: &str,
) {
    let endpoints = cells
        .get(backend)
        .map_or("<span class=\"bad\">unknown backend</span>", String::as_str);
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{endpoints}</td></tr>",
        escape(host),
        escape(path),
        path_match,
        escape(ingress.unwrap_or("")),
        escape(backend),
    );
}

fn certificates_section(out: &mut String, s: &Status<'_>, now: f64) {
    out.push_str(
        "<h2>Certificates</h2>\n<table id=\"certificates\"><tr><th>Secret</th><th>Hosts</th>\
         <th>Expires</th></tr>\n",
    );
    if s.certificates.is_empty() {
        out.push_str("<tr><td colspan=\"3\">none (HTTPS uses the built-in self-signed certificate)</td></tr>\n");
    }
    for certificate in s.certificates {
        #[allow(clippy::cast_precision_loss)] // Unix seconds fit an f64 exactly.
        let expires = match certificate.not_after {
            Some(at) if (at as f64) < now => {
                format!(
                    "<span class=\"bad\">expired {} ago</span>",
                    age(now - at as f64)
                )
            }
            Some(at) => {
                let left = at as f64 - now;
                let class = if left < 14.0 * 86_400.0 { "bad" } else { "ok" };
                format!(
                    "<span class=\"{class}\">in {} ({})</span>",
                    age(left),
                    httpdate::fmt_http_date(
                        UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(at).unwrap_or(0))
                    )
                )
            }
            None => "unknown".to_owned(),
        };
        let default = if certificate.default {
            " (default)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<tr><td>{}{default}</td><td>{}</td><td>{expires}</td></tr>",
            escape(&certificate.id),
            escape(&certificate.hosts.join(", ")),
        );
    }
    out.push_str("</table>\n");
}

fn problems_section(out: &mut String, s: &Status<'_>) {
    out.push_str("<h2>Problems</h2>\n");
    if let Some(rejection) = &s.operator.rejection {
        let _ = writeln!(
            out,
            "<p class=\"bad\">The core rejected the last table: {}; the previous one keeps serving.</p>",
            escape(rejection)
        );
    }
    if s.operator.problems.is_empty() {
        out.push_str("<p id=\"problems\">None reported.</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"problems\"><tr><th>Severity</th><th>Object</th><th>Field</th>\
         <th>Problem</th></tr>\n",
    );
    for problem in &s.operator.problems {
        let object = match &problem.source {
            Some(file) => format!("{} (file: {file})", problem.object),
            None => problem.object.clone(),
        };
        let class = if problem.severity == "error" {
            "bad"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"{class}\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&problem.severity),
            escape(&object),
            escape(&problem.field),
            escape(&problem.message),
        );
    }
    out.push_str("</table>\n");
}

/// `"3 d 4 h"`, `"12 min"`, `"40 s"`.
fn age(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// HTML text and attribute escaping.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{age, escape};

    #[test]
    fn escapes_markup_from_object_names_and_messages() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn ages_read_in_the_largest_sensible_unit() {
        assert_eq!(age(-3.0), "0 s");
        assert_eq!(age(40.0), "40 s");
        assert_eq!(age(600.0), "10 min");
        assert_eq!(age(3.0 * 3600.0), "3 h");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3 d 4 h");
    }
}
