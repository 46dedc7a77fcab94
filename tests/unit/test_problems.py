"""Problem formatting."""

from __future__ import annotations

import pytest

from silex import problems
from silex.problems import Problem


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        (
            problems.error(
                'service "cart" has no port named "web"',
                kind="Ingress",
                namespace="default",
                name="shop",
                field="spec.rules[0].http.paths[1].backend.service.port",
            ),
            "error: Ingress default/shop: spec.rules[0].http.paths[1].backend.service.port: "
            'service "cart" has no port named "web"',
        ),
        (
            problems.warning("odd", kind="IngressClass", name="silex").with_source("x.yaml"),
            "warning: IngressClass silex: odd (file: x.yaml)",
        ),
        (
            problems.error("invalid YAML at line 3, column 1: oops").with_source("a/b.yaml"),
            "error: invalid YAML at line 3, column 1: oops (file: a/b.yaml)",
        ),
        (
            Problem(
                severity="warning",
                kind="Ingress",
                namespace="ns",
                name="n",
                field="spec",
                message="m",
                source="f.yml",
            ),
            "warning: Ingress ns/n: spec: m (file: f.yml)",
        ),
    ],
)
def test_str(problem: Problem, text: str) -> None:
    assert str(problem) == text


def test_with_source_keeps_existing_source() -> None:
    problem = problems.error("m").with_source("first.yaml")
    assert problem.with_source("second.yaml").source == "first.yaml"
    assert problem.with_source(None) is problem


def test_unique_and_has_errors() -> None:
    a = problems.warning("a")
    b = problems.error("b")
    assert problems.unique([a, b, a, problems.warning("a")]) == [a, b]
    assert problems.has_errors([a, b])
    assert not problems.has_errors([a])
    assert hash(a) == hash(problems.warning("a"))
