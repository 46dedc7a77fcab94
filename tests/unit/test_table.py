"""table.to_json: canonical bytes, skip rules of table.rs, and the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from silex.table import (
    Backend,
    Endpoint,
    ListenerSettings,
    Route,
    RouteOptions,
    RoutingTable,
    VirtualHost,
    from_json,
    to_json,
)

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "table.schema.json"


def sample_table() -> RoutingTable:
    return RoutingTable(
        listeners={"https": ListenerSettings("https"), "http": ListenerSettings()},
        hosts=[
            VirtualHost(
                "b.com",
                [
                    Route("/z", "prefix", "ns/s:80"),
                    Route(
                        "/a",
                        "prefix",
                        "ns/s:80",
                        ingress="ns/i",
                        options=RouteOptions(upstream_read_timeout_ms=5),
                    ),
                    Route("/a", "exact", "ns/s:80", options=RouteOptions()),
                ],
            ),
            VirtualHost("a.com", [], default_backend="ns/s:80"),
        ],
        backends={
            "ns/t:80": Backend(endpoints=[]),
            "ns/s:80": Backend(
                service="ns/s",
                endpoints=[
                    Endpoint("fd00::1", 80),
                    Endpoint("10.0.0.10", 80),
                    Endpoint("10.0.0.9", 81, weight=3),
                ],
            ),
        },
        default_backend=None,
    )


def test_canonical_order_and_omissions() -> None:
    data = json.loads(to_json(sample_table()))
    assert list(data) == [
        "version",
        "listeners",
        "defaults",
        "hosts",
        "backends",
        "default_backend",
        "certificates",
        "default_certificate",
    ]
    assert list(data["listeners"]) == ["http", "https"]
    assert [host["name"] for host in data["hosts"]] == ["a.com", "b.com"]
    assert data["hosts"][0] == {"name": "a.com", "routes": [], "default_backend": "ns/s:80"}
    assert data["hosts"][1]["routes"] == [
        {"path": "/a", "match": "exact", "backend": "ns/s:80"},
        {
            "path": "/a",
            "match": "prefix",
            "backend": "ns/s:80",
            "ingress": "ns/i",
            "options": {"upstream_read_timeout_ms": 5},
        },
        {"path": "/z", "match": "prefix", "backend": "ns/s:80"},
    ]
    assert list(data["backends"]) == ["ns/s:80", "ns/t:80"]
    assert data["backends"]["ns/t:80"] == {"endpoints": []}
    assert [e["address"] for e in data["backends"]["ns/s:80"]["endpoints"]] == [
        "10.0.0.9",
        "10.0.0.10",
        "fd00::1",
    ]
    assert data["default_backend"] is None
    assert data["defaults"] == {
        "max_request_body_bytes": 1048576,
        "upstream_read_timeout_ms": 60000,
    }


def test_backend_fields_in_rust_order() -> None:
    text = to_json(RoutingTable(backends={"x": Backend(service="a/b", endpoints=[])}))
    assert b'{"service":"a/b","endpoints":[]}' in text


def test_to_json_is_stable_and_round_trips() -> None:
    table = sample_table()
    assert to_json(table) == to_json(table)
    assert to_json(from_json(to_json(table))) == to_json(table)


def test_empty_table() -> None:
    assert json.loads(to_json(RoutingTable())) == {
        "version": 1,
        "listeners": {},
        "defaults": {"max_request_body_bytes": 1048576, "upstream_read_timeout_ms": 60000},
        "hosts": [],
        "backends": {},
        "default_backend": None,
        "certificates": {},
        "default_certificate": None,
    }


def test_from_json_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError, match="surprise"):
        from_json(b'{"version": 1, "surprise": true}')


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"{SCHEMA} not generated yet (make schema)")
@pytest.mark.parametrize("table", [sample_table(), RoutingTable()], ids=["sample", "empty"])
def test_to_json_matches_the_schema(table: RoutingTable) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(json.loads(to_json(table)), schema)


@pytest.mark.skipif(not SCHEMA.exists(), reason=f"{SCHEMA} not generated yet (make schema)")
def test_schema_rejects_what_the_core_rejects() -> None:
    schema = json.loads(SCHEMA.read_text())
    data = json.loads(to_json(RoutingTable()))
    data["defaults"]["upstream_connect_timeout_ms"] = 5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
