"""The release wheel: build it, install it into a fresh venv with no Rust toolchain, run it.

Opt-in (SILEX_TEST_WHEEL=1): it rebuilds the core in release mode (minutes), and installing the
wheel's dependencies needs the package index (or PIP_FIND_LINKS / PIP_INDEX_URL pointing at one).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.environ.get("SILEX_TEST_WHEEL") != "1",
    reason="rebuilds the release core (minutes): set SILEX_TEST_WHEEL=1 to run",
)

WHEEL_NAME = re.compile(
    r"^silex-(?P<version>[^-]+)-cp311-abi3-(?P<platform>manylinux[_0-9a-z]*_x86_64)\.whl$"
)


def _maturin() -> list[str]:
    found = shutil.which("maturin")
    if found:
        return [found]
    return [sys.executable, "-m", "maturin"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # Same command as `make wheel` and the Dockerfile's builder stage. A separate target dir
    # keeps it from contending with a developer's own `cargo` builds.
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target" / "wheel"))
    env = {**os.environ, "CARGO_TARGET_DIR": target}
    subprocess.run(
        [*_maturin(), "build", "--release", "--locked", "--out", str(out)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=1800,
    )
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def rustless_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A fresh venv with only the wheel installed; PATH holds no cargo/rustc."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    bin_dir = home / "bin"
    path = os.pathsep.join([str(bin_dir), "/usr/local/bin", "/usr/bin", "/bin"])
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CARGO", "RUSTUP", "RUST", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(PATH=path, HOME=str(home), PIP_DISABLE_PIP_VERSION_CHECK="1")
    for tool in ("cargo", "rustc", "rustup", "maturin"):
        assert shutil.which(tool, path=path) is None, f"{tool} is on the test PATH"
    subprocess.run(
        [str(bin_dir / "pip"), "install", "--quiet", str(wheel)],
        env=env,
        check=True,
        timeout=600,
    )
    return env


def test_wheel_is_abi3_manylinux_x86_64(wheel: Path) -> None:
    match = WHEEL_NAME.match(wheel.name)
    assert match, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "silex/_core.abi3.so" in names
    assert "silex/cli.py" in names
    # No stray build products of an editable install.
    assert [n for n in names if n.endswith(".so")] == ["silex/_core.abi3.so"]
    metadata = zipfile.ZipFile(wheel).read(f"silex-{match['version']}.dist-info/METADATA")
    text = metadata.decode()
    for field in ("Summary: ", "License", "Requires-Python: >=3.11", "Classifier: "):
        assert field in text, field
    dist_info = f"silex-{match['version']}.dist-info/"
    assert any(n.startswith(dist_info) and n.endswith("/LICENSE") for n in names), names
    entry_points = zipfile.ZipFile(wheel).read(
        f"silex-{match['version']}.dist-info/entry_points.txt"
    )
    assert re.search(rb"^silex\s*=\s*silex\.cli:main$", entry_points, re.M), entry_points


def test_version_matches_core(wheel: Path, rustless_env: dict[str, str]) -> None:
    result = subprocess.run(
        ["silex", "--version"],
        env=rustless_env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    match = re.fullmatch(r"silex (\S+) \(core (\S+)\)\n", result.stdout)
    assert match, result.stdout
    assert match[1] == match[2], result.stdout
    assert wheel.name.startswith(f"silex-{match[1]}-")


def _read_port(proc: subprocess.Popen[str], pattern: str, deadline: float) -> int:
    assert proc.stderr is not None
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return int(found[1])
    raise AssertionError(f"no line matching {pattern!r}; got:\n{''.join(seen)}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_quickstart_serves(
    rustless_env: dict[str, str],
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
) -> None:
    deadline = time.monotonic() + 60
    ports = {}
    for name in ("coffee", "tea"):
        proc = subprocess.Popen(
            ["silex", "echo", "--port", "0", "--name", name],
            env=rustless_env,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(proc)
        ports[name] = _read_port(proc, r"listening on [\d.]+:(\d+)", deadline)
    # The quickstart's manifests, with the echo backends' actual ports.
    manifests = (ROOT / "examples" / "quickstart" / "manifests.yaml").read_text()
    manifests = manifests.replace("9001", str(ports["coffee"])).replace("9002", str(ports["tea"]))
    (tmp_path / "manifests.yaml").write_text(manifests)
    serve = subprocess.Popen(
        [
            "silex",
            "serve",
            "--manifests",
            str(tmp_path / "manifests.yaml"),
            "--listen-address",
            "127.0.0.1",
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--admin-port",
            "0",
        ],
        env=rustless_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    processes.append(serve)
    http_port = _read_port(serve, r"listening http on [\d.]+:(\d+)", deadline)
    response = httpx.get(
        f"http://127.0.0.1:{http_port}/tea",
        headers={"Host": "cafe.example.com"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["service"] == "tea"
