"""Log formats: JSON lines in the core's key names, the object named, text unchanged."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest

from silex import problems
from silex.controller import log_problem
from silex.logs import CORE_FORMAT_VARIABLE, announce, setup_logging

log = logging.getLogger("silex")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    handlers, level, propagate = log.handlers[:], log.level, log.propagate
    variable = os.environ.get(CORE_FORMAT_VARIABLE)
    yield
    log.handlers[:], log.propagate = handlers, propagate
    log.setLevel(level)
    if variable is None:
        os.environ.pop(CORE_FORMAT_VARIABLE, None)
    else:
        os.environ[CORE_FORMAT_VARIABLE] = variable


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_object_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    assert os.environ[CORE_FORMAT_VARIABLE] == "json"  # read by the core when it loads
    problem = problems.error(
        'service "cart" not found',
        kind="Ingress",
        namespace="default",
        name="web",
        field="spec.rules[0].http.paths[0].backend",
    )
    log_problem(problem.with_source("web.yaml"))
    log.debug("not shown at info")
    announce("listening http on 127.0.0.1:8080", listener="http", address="127.0.0.1:8080")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "ERROR"
    assert first["target"] == "silex"
    assert first["object"] == "Ingress default/web"
    assert first["field"] == "spec.rules[0].http.paths[0].backend"
    assert first["file"] == "web.yaml"
    assert first["message"] == str(problem.with_source("web.yaml"))
    assert first["timestamp"].endswith("Z")
    assert second == {
        "timestamp": second["timestamp"],
        "level": "INFO",
        "target": "silex",
        "message": "listening http on 127.0.0.1:8080",
        "listener": "http",
        "address": "127.0.0.1:8080",
    }


@pytest.mark.usefixtures("restore_logging")
def test_warning_level_uses_the_cores_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning", "json")
    log.warning("careful", extra={"object": "Lease default/silex-leader"})
    line = json.loads(capsys.readouterr().err)
    assert (line["level"], line["object"]) == ("WARN", "Lease default/silex-leader")


@pytest.mark.usefixtures("restore_logging")
def test_text_format_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("error", "text")
    assert os.environ[CORE_FORMAT_VARIABLE] == "text"
    log.error("error: Ingress default/web: broken", extra={"object": "Ingress default/web"})
    announce("listening admin on 127.0.0.1:10254", listener="admin", address="127.0.0.1:10254")
    assert capsys.readouterr().err.splitlines() == [
        "silex: error: Ingress default/web: broken",
        "silex: listening admin on 127.0.0.1:10254",
    ]
