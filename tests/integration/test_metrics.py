"""/metrics on the admin listener: the core's families and the operator's pushed text, merged."""

from __future__ import annotations

import httpx
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from silex_test_support import Proxy


def scrape(proxy: Proxy) -> tuple[str, str]:
    with httpx.Client(base_url=proxy.admin_url, trust_env=False, timeout=5) as admin:
        response = admin.get("/metrics")
    assert response.status_code == 200
    return response.headers["content-type"], response.text


def test_metrics_merge_the_core_and_the_operator_into_one_exposition(proxy: Proxy) -> None:
    content_type, text = scrape(proxy)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["silex_config_generation"].samples[0].value == 0
    assert "silex_connections" in families

    operator = (
        b"# HELP silex_leader Whether this replica holds the leader lease.\n"
        b"# TYPE silex_leader gauge\n"
        b"silex_leader 1.0\n"
        b"# EOF\n"
    )
    proxy.dataplane.set_operator_metrics(operator)
    _, text = scrape(proxy)
    # One exposition: the parser rejects a second or a missing # EOF.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["silex_leader"].samples[0].value == 1.0
    assert text.count("# EOF") == 1
    assert text.endswith("# EOF\n")
