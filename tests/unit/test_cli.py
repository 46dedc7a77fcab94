"""The CLI's check, routes, version and usage errors (in-process and one real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from silex.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart" / "manifests.yaml"

GOOD = """\
kind: Service
metadata: {name: echo}
spec: {ports: [{name: http, port: 80}]}
---
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: silex
  rules:
    - host: a.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
"""


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    file = tmp_path / name
    file.write_text(textwrap.dedent(text))
    return file


def test_check_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--manifests", str(write(tmp_path, GOOD))]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 ingresses, 1 routes"


def test_check_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--manifests", str(QUICKSTART)]) == 0
    assert capsys.readouterr().out.strip() == "ok: 2 ingresses, 2 routes"


def test_check_reports_errors_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, GOOD.replace("path: /,", "path: nope,"), "a.yaml")
    write(tmp_path, "kind: Service\nmetadata: [\n", "b.yaml")
    assert main(["check", "-f", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "error: Ingress default/web: spec.rules[0].http.paths[0].path:" in out
    assert "invalid YAML at line" in out
    assert str(tmp_path / "b.yaml") in out


def test_check_warnings_only_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path, GOOD.replace("name: echo, port", "name: cart, port"))
    assert main(["check", "--manifests", str(file)]) == 0
    out = capsys.readouterr().out
    assert "warning: Ingress default/web:" in out
    assert out.strip().endswith("ok: 1 ingresses, 1 routes")


def test_routes_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "--manifests", str(write(tmp_path, GOOD))]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["hosts"][0]["name"] == "a.com"
    assert table["hosts"][0]["routes"][0]["backend"] == "default/echo:80"


def test_routes_ingress_class_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path, GOOD)
    assert main(["routes", "--manifests", str(file), "--ingress-class", "other"]) == 0
    assert json.loads(capsys.readouterr().out)["hosts"] == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "--manifests", "/does/not/exist"], "no such file or directory"),
        (["check"], "Missing option '--manifests'"),
        (["nonsense"], "No such command"),
        (["serve", "--manifests", ".", "--grace-period", "5x"], "'5x' is not a duration"),
        (["serve", "--manifests", ".", "--max-body-size", "big"], "'big' is not a size"),
        (["serve", "--manifests", ".", "--http-port", "70000"], "--http-port"),
        (["serve", "--manifests", ".", "--trusted-proxies", "nope"], "'nope' is not a CIDR"),
        (["serve", "--manifests", ".", "--log-level", "loud"], "--log-level"),
        (["serve", "--manifests", ".", "--access-log-format", "xml"], "--access-log-format"),
        (["serve", "--manifests", ".", "--access-log", "/does/not/exist/a.log"], "access_log"),
        (["serve", "--manifests", ".", "--log-format", "xml"], "'xml' is not one of text, json"),
        (["serve", "--manifests", ".", "--listen-address", "localhost"], "not an IP address"),
        (["serve", "--manifests", ".", "--upstream-read-timeout", "0s"], "greater than 0"),
        (["serve", "--manifests", ".", "--outlier-base-ejection", "soon"], "not a duration"),
        (
            ["serve", "--manifests", ".", "--outlier-base-ejection", "600s"],
            "--outlier-max-ejection",
        ),
        (["serve", "--manifests", ".", "--outlier-consecutive-failures", "-1"], "--outlier"),
        (["echo", "--port", "-1"], "--port"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("silex: error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("silex ")


def test_subprocess_check_and_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    ok = subprocess.run(
        [sys.executable, "-m", "silex.cli", "check", "--manifests", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok: 1 ingresses, 1 routes")
    bad = subprocess.run(
        [sys.executable, "-m", "silex.cli", "routes", "--manifests", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("silex: error:")
    assert "Traceback" not in bad.stderr
