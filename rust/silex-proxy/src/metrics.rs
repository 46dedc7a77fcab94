//! `/metrics` on the admin listener: the data plane's counters and the operator's metrics in
//! one OpenMetrics exposition.
//!
//! The core never calls into Python. The operator renders its own registry (Python
//! prometheus-client) and pushes the text with [`crate::DataPlane::set_operator_metrics`]; a
//! scrape reads the latest push with one `ArcSwap` load, so neither side ever waits on a lock
//! held by the other or by a request.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::state::Shared;

/// Content type of the exposition (Prometheus negotiates OpenMetrics 1.0.0).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The whole exposition: core metrics, then the operator's last push, then `# EOF`.
pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096);
    render_core(shared, &mut out);
    let operator: Bytes = Bytes::clone(&shared.operator_metrics.load());
    out.push_str(&without_eof(&String::from_utf8_lossy(&operator)));
    out.push_str("# EOF\n");
    out
}

/// The data plane's own families.
fn render_core(shared: &Shared, out: &mut String) {
    let c = shared.stats.snapshot();
    family(
        out,
        "silex_connections",
        "gauge",
        "Client connections by state.",
    );
    let _ = writeln!(
        out,
        "silex_connections{{state=\"open\"}} {}",
        c.connections_open
    );
    let _ = writeln!(
        out,
        "silex_connections{{state=\"tunnel\"}} {}",
        c.tunnels_open
    );
    family(
        out,
        "silex_upstream_errors",
        "counter",
        "Requests that failed because of the upstream (connect, reset, timeout, invalid).",
    );
    let _ = writeln!(out, "silex_upstream_errors_total {}", c.upstream_errors);
    family(
        out,
        "silex_upstream_retries",
        "counter",
        "Attempts retried on another endpoint.",
    );
    let _ = writeln!(out, "silex_upstream_retries_total {}", c.upstream_retries);
    family(
        out,
        "silex_config_generation",
        "gauge",
        "Generation of the routing table the data plane serves (0: none yet).",
    );
    let _ = writeln!(out, "silex_config_generation {}", shared.table.load().id);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `text` without its final `# EOF` line (an exposition carries exactly one, at the end).
fn without_eof(text: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = text.trim_end_matches('\n');
    match trimmed.strip_suffix("# EOF") {
        Some(rest) => std::borrow::Cow::Owned(rest.to_owned()),
        None if text.is_empty() || text.ends_with('\n') => std::borrow::Cow::Borrowed(text),
        None => std::borrow::Cow::Owned(format!("{text}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::without_eof;

    #[test]
    fn eof_is_removed_and_a_final_newline_kept() {
        assert_eq!(without_eof("a 1\n# EOF\n"), "a 1\n");
        assert_eq!(without_eof("a 1\n# EOF"), "a 1\n");
        assert_eq!(without_eof("a 1\n"), "a 1\n");
        assert_eq!(without_eof("a 1"), "a 1\n");
        assert_eq!(without_eof(""), "");
    }
}
