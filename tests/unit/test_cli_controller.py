"""``silex controller``: --help documents every flag; bad flags are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from silex.cli import main

FLAGS = (
    "--kubeconfig",
    "--ingress-class",
    "--controller-name",
    "--watch-namespace",
    "--watch-ingress-without-class",
    "--publish-service",
    "--publish-status-address",
    "--election-id",
    "--election-namespace",
    "--pod-name",
    "--http-port",
    "--admin-port",
    "--listen-address",
    "--debounce",
    "--grace-period",
    "--max-body-size",
    "--upstream-connect-timeout",
    "--header-read-timeout",
    "--trusted-proxies",
    "--outlier-consecutive-failures",
    "--outlier-base-ejection",
    "--outlier-max-ejection",
)


def test_controller_help_documents_every_flag() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from silex.cli import main; sys.exit(main())",
            "controller",
            "--help",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert result.returncode == 0, result.stderr
    for flag in FLAGS:
        assert flag in result.stdout, flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--publish-service", "a/b", "--publish-status-address", "1.2.3.4"],
            "either --publish-service or --publish-status-address",
        ),
        (["--publish-service", "nonamespace"], "NAMESPACE/NAME"),
        (["--publish-status-address", "1.2.3.4,,x"], "comma-separated"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "no such file"),
        (["--renew-deadline", "20s"], "shorter than --lease-duration"),
        (["--debounce", "soon"], "--debounce"),
    ],
)
def test_controller_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["controller", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("silex: error:")
    assert message in err
    assert len(err.strip().splitlines()) == 1
