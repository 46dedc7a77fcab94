"""OperatorMetrics: the families, push-on-change, and what the Controller records into them."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
import trustme
from builders import endpoint, endpoint_slice, ingress, path, rule, service, snapshot
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from silex.controller import Controller
from silex.dataplane import certificate_not_after, check_certificate
from silex.metrics import OperatorMetrics
from silex.objects import Ingress, Secret, convert
from silex.table import RoutingTable
from silex.translate import TranslateOptions

OPERATOR_FAMILIES = {
    "silex_config_last_apply_timestamp_seconds": "gauge",
    "silex_config_apply_duration_seconds": "histogram",
    "silex_translate_problems": "gauge",
    "silex_watch_events": "counter",
    "silex_watch_restarts": "counter",
    "silex_leader": "gauge",
    "silex_ssl_certificate_expiry_timestamp_seconds": "gauge",
}


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered text, keyed by name and sorted labels."""
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_families_have_help_and_type_and_no_generation() -> None:
    text = OperatorMetrics().render().decode()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert {name: families[name].type for name in OPERATOR_FAMILIES} == OPERATOR_FAMILIES
    assert all(families[name].documentation for name in OPERATOR_FAMILIES)
    # The core exports the generation it serves; a second family would break the exposition.
    assert "silex_config_generation" not in families


def test_flush_publishes_only_after_a_change() -> None:
    published: list[bytes] = []
    metrics = OperatorMetrics(published.append)
    assert metrics.flush()  # the first flush publishes the initial state
    assert not metrics.flush()
    metrics.watch_event("Ingress", "ADDED")
    assert metrics.changed
    assert metrics.flush()
    assert not metrics.flush()
    assert len(published) == 2
    assert b'silex_watch_events_total{kind="Ingress",type="ADDED"} 1.0' in published[-1]


def test_unchanged_per_object_families_are_not_rendered_again() -> None:
    published: list[bytes] = []
    metrics = OperatorMetrics(published.append)
    metrics.set_problems(["Ingress"])
    metrics.set_certificate_expiry({("default/tls", "a.example"): 2.0e9})
    assert metrics.flush()
    metrics.set_problems(["Ingress"])  # every reconcile reports; only a change counts
    metrics.set_certificate_expiry({("default/tls", "a.example"): 2.0e9})
    assert not metrics.changed
    metrics.watch_event("Secret", "MODIFIED")
    assert metrics.flush()
    text = published[-1].decode()
    assert text.count("# EOF") == 1
    assert text.endswith("# EOF\n")
    families = {family.name for family in text_string_to_metric_families(text)}
    assert set(OPERATOR_FAMILIES) <= families
    assert 'silex_translate_problems{kind="Ingress"} 1.0' in text


def test_problems_by_kind_fixed_kinds_read_zero() -> None:
    metrics = OperatorMetrics()
    metrics.set_problems(["Ingress", "Ingress", "Secret", ""])
    values = samples(metrics)
    assert values["silex_translate_problems", (("kind", "Ingress"),)] == 2
    assert values["silex_translate_problems", (("kind", "Secret"),)] == 1
    assert values["silex_translate_problems", (("kind", "none"),)] == 1
    metrics.set_problems(["Service"])
    values = samples(metrics)
    assert values["silex_translate_problems", (("kind", "Ingress"),)] == 0
    assert values["silex_translate_problems", (("kind", "Secret"),)] == 0
    assert values["silex_translate_problems", (("kind", "Service"),)] == 1


def test_watch_leader_and_certificates() -> None:
    metrics = OperatorMetrics()
    metrics.watch_event("Service", "MODIFIED")
    metrics.watch_event("Service", "MODIFIED")
    metrics.watch_restart("Service", "gone")
    metrics.watch_event("Service", "SURPRISE")  # a type the server should not send
    metrics.set_leader(True)
    metrics.set_certificate_expiry({("shop/tls", "a.example"): 1.9e9, ("shop/tls", "b"): 1.9e9})
    metrics.set_certificate_expiry({("shop/tls", "a.example"): 2.0e9})
    values = samples(metrics)
    assert values["silex_watch_events_total", (("kind", "Service"), ("type", "MODIFIED"))] == 2
    assert values["silex_watch_restarts_total", (("kind", "Service"), ("reason", "gone"))] == 1
    assert values["silex_watch_events_total", (("kind", "Service"), ("type", "other"))] == 1
    assert values["silex_leader", ()] == 1
    expiry = "silex_ssl_certificate_expiry_timestamp_seconds"
    assert values[expiry, (("host", "a.example"), ("secret", "shop/tls"))] == 2.0e9
    assert (expiry, (("host", "b"), ("secret", "shop/tls"))) not in values
    metrics.set_leader(False)
    assert samples(metrics)["silex_leader", ()] == 0


class Core:
    """Accepts every table (generation = count)."""

    def __init__(self) -> None:
        self.applied: list[RoutingTable] = []

    def apply(self, table: RoutingTable) -> int:
        self.applied.append(table)
        return len(self.applied)


def test_controller_records_applies_problems_and_is_flushed() -> None:
    published: list[bytes] = []
    metrics = OperatorMetrics(published.append)
    controller = Controller(Core().apply, metrics=metrics)
    good = snapshot(
        service("echo"),
        endpoint_slice("echo", endpoint("10.0.0.1")),
        ingress("i", rule("h.com", path("/", "echo"))),
    )
    before = datetime.datetime.now(datetime.UTC).timestamp()
    controller.reconcile(good)
    values = samples(metrics)
    assert values["silex_config_apply_duration_seconds_count", ()] == 1
    assert values["silex_config_last_apply_timestamp_seconds", ()] >= int(before)
    assert published, "a reconcile flushes the metrics"
    controller.reconcile(good)  # unchanged: not applied, not observed
    assert samples(metrics)["silex_config_apply_duration_seconds_count", ()] == 1

    broken = snapshot(ingress("i", rule("h.com", path("/", "missing"))))
    controller.reconcile(broken)
    assert samples(metrics)["silex_translate_problems", (("kind", "Ingress"),)] == 1
    controller.reconcile(good)
    assert samples(metrics)["silex_translate_problems", (("kind", "Ingress"),)] == 0


def tls_objects(ca: trustme.CA, not_after: datetime.datetime) -> list[Any]:
    issued = ca.issue_cert("a.example", "b.example", not_after=not_after)
    cert = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    secret = convert(
        {
            "metadata": {"name": "tls", "namespace": "default"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(cert).decode(),
                "tls.key": base64.b64encode(issued.private_key_pem.bytes()).decode(),
            },
        },
        Secret,
    )
    web = convert(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "ingressClassName": "silex",
                "tls": [{"hosts": ["a.example", "b.example"], "secretName": "tls"}],
                "rules": [{"host": "a.example"}, {"host": "b.example"}],
            },
        },
        Ingress,
    )
    return [secret, web]


@pytest.mark.parametrize("year", [2031, 2061])  # UTCTime and GeneralizedTime
def test_controller_exports_each_served_certificates_expiry(year: int) -> None:
    not_after = datetime.datetime(year, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
    metrics = OperatorMetrics()
    controller = Controller(
        Core().apply,
        TranslateOptions(
            check_certificate=check_certificate, default_ssl_certificate="default/tls"
        ),
        metrics=metrics,
        certificate_expiry=certificate_not_after,
    )
    controller.reconcile(snapshot(*tls_objects(trustme.CA(), not_after)))
    expiry = {
        labels: value
        for (name, labels), value in samples(metrics).items()
        if name == "silex_ssl_certificate_expiry_timestamp_seconds"
    }
    stamp = not_after.timestamp()
    assert expiry == {
        (("host", "a.example"), ("secret", "default/tls")): stamp,
        (("host", "b.example"), ("secret", "default/tls")): stamp,
        (("host", "*"), ("secret", "default/tls")): stamp,  # also the default certificate
    }
    controller.reconcile(snapshot())  # no longer served: gone from the scrape
    assert not any(
        name == "silex_ssl_certificate_expiry_timestamp_seconds" for name, _ in samples(metrics)
    )


def test_unreadable_certificate_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"^cert_pem: no CERTIFICATE block found"):
        certificate_not_after(b"not a certificate")
    broken = b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError, match=r"^cert_pem: not a valid X\.509 certificate"):
        certificate_not_after(broken)
