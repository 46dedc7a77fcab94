#!/usr/bin/env python3
"""Silex vs nginx vs haproxy, side by side on this machine (issue 8).

    sudo python3 benches/run.py --quick      # ~25 min: 1 and 10,000 hosts, 3 reps, 8 s runs
    sudo python3 benches/run.py              # full: 1, 100, 10,000 hosts, 5 reps, 20 s runs
    python3 benches/run.py --smoke           # seconds: Silex + direct only, nothing installed

Installs nginx, haproxy, wrk and h2load with apt-get when missing (root), writes
benches/results/<time>.json and regenerates docs/benchmarks.md (+ PNG charts) from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from silexbench.harness import PROXIES, SCENARIOS, Bench, Plan, machine  # noqa: E402

APT_PACKAGES = {
    "nginx": "nginx-light",
    "haproxy": "haproxy",
    "wrk": "wrk",
    "h2load": "nghttp2-client",
}
MATPLOTLIB = "matplotlib==3.11.2"
BENCH_VENV = ROOT / "benches" / ".venv"

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "hosts": [1],
        "connections": [8],
        "modes": ["unpinned"],
        "reps": 1,
        "duration_s": 1.0,
        "warmup_s": 1.0,
        "proxies": ["silex"],
        "bodies": ["1k"],
        "idle_connections": 100,
        "reload_duration_s": 3.0,
        "https": False,
    },
    "quick": {
        "hosts": [1, 10_000],
        "connections": [64, 256],
        "modes": ["pinned", "unpinned"],
        "reps": 3,
        "duration_s": 8.0,
        "warmup_s": 2.0,
        "proxies": list(PROXIES),
        "reload_duration_s": 8.0,
    },
    "full": {
        "hosts": [1, 100, 10_000],
        "connections": [64, 256],
        "modes": ["pinned", "unpinned"],
        "reps": 5,
        "duration_s": 20.0,
        "warmup_s": 5.0,
        "proxies": list(PROXIES),
        "reload_duration_s": 15.0,
    },
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_tools(install: bool) -> list[str]:
    """apt-get install what is missing (once, as root); returns the tools still missing."""
    missing = [tool for tool in APT_PACKAGES if not shutil.which(tool)]
    if missing and install:
        if os.geteuid() != 0:
            log(f"not root: cannot install {missing}; those scenarios are skipped")
        else:
            packages = [APT_PACKAGES[tool] for tool in missing]
            log(f"installing {' '.join(packages)} (apt-get)")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, timeout=900
            )
    return [tool for tool in APT_PACKAGES if not shutil.which(tool)]


def find_silex(given: str | None) -> str | None:
    candidates = [given] if given else [str(ROOT / ".venv" / "bin" / "silex"), "silex"]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    return None


def silex_has_https(silex: str) -> bool:
    done = subprocess.run(
        [silex, "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--https-port" in done.stdout


def core_identity(silex: str) -> dict[str, str] | None:
    """Which silex._core build is measured (others may rebuild it during a long run)."""
    python = Path(silex).parent / "python"
    code = "import silex._core as c; print(c.__file__)"
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    path = Path(done.stdout.strip())
    if done.returncode != 0 or not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    built = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))
    return {"file": str(path), "sha256_16": digest, "built": built}


def git_commit() -> str | None:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def translate_apply(silex: str, sizes: list[int]) -> dict[str, Any] | None:
    """benches/translate_apply.py with the Python that runs silex (it imports silex)."""
    python = Path(silex).parent / "python"
    if not python.exists():
        return None
    script = ROOT / "benches" / "translate_apply.py"
    argv = [str(python), str(script), "--json", *(f"--ingresses={n}" for n in sizes)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        log(f"translate_apply failed: {done.stderr[-1000:]}")
        return None
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def write_report(results_file: Path, out: Path) -> None:
    """docs/benchmarks.md and charts, drawn in benches/.venv (matplotlib pinned there)."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {BENCH_VENV} with {MATPLOTLIB}")
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True, timeout=300)
    check = subprocess.run(
        [str(python), "-c", "import matplotlib"], capture_output=True, check=False
    )
    if check.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", MATPLOTLIB], check=False, timeout=900
        )
    report = ROOT / "benches" / "report.py"
    subprocess.run(
        [str(python), str(report), str(results_file), "--out", str(out)], check=True, timeout=300
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--smoke", action="store_const", const="smoke", dest="profile")
    profile.add_argument("--quick", action="store_const", const="quick", dest="profile")
    profile.add_argument("--full", action="store_const", const="full", dest="profile")
    parser.add_argument("--hosts", type=int, nargs="+", help="virtual host counts")
    parser.add_argument("--connections", type=int, nargs="+", help="wrk connection counts")
    parser.add_argument("--modes", nargs="+", choices=["pinned", "unpinned"])
    parser.add_argument("--reps", type=int, help="repetitions (>= 3 for a real run)")
    parser.add_argument("--duration", type=float, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each run")
    parser.add_argument("--proxies", nargs="+", choices=PROXIES)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, help="default: all")
    parser.add_argument("--idle-connections", type=int)
    parser.add_argument("--reload-duration", type=float, help="0 skips the reload test")
    parser.add_argument("--silex", help="the silex executable (default: .venv/bin/silex)")
    parser.add_argument(
        "--silex-args", default="", help='extra `silex serve` flags, e.g. "--debounce 0.02"'
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--no-micro", action="store_true", help="skip translate+apply")
    parser.add_argument("--results", type=Path, help="results JSON path")
    parser.add_argument(
        "--report", type=Path, help="markdown to regenerate (default docs/benchmarks.md)"
    )
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    args.profile = args.profile or "full"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    smoke = args.profile == "smoke"
    settings = dict(PROFILES[args.profile])
    for key, value in (
        ("hosts", args.hosts),
        ("connections", args.connections),
        ("modes", args.modes),
        ("reps", args.reps),
        ("duration_s", args.duration),
        ("warmup_s", args.warmup),
        ("proxies", args.proxies),
        ("idle_connections", args.idle_connections),
        ("reload_duration_s", args.reload_duration),
        ("scenarios", args.scenarios),
    ):
        if value is not None:
            settings[key] = value
    missing = ensure_tools(install=not (smoke or args.no_install))
    skipped: list[str] = []
    if "wrk" in missing:
        log("wrk is not installed: nothing can be measured (apt-get install wrk)")
        return 2
    silex = find_silex(args.silex)
    if silex is None:
        log("silex not found: run `make install` (or pass --silex PATH)")
        return 2
    proxies = []
    for name in settings["proxies"]:
        tool = "silex" if name == "silex" else name
        if tool in missing:
            skipped.append(f"{name}: not installed")
        else:
            proxies.append(name)
    settings["proxies"] = proxies
    if os.cpu_count() == 1 and "pinned" in settings["modes"]:
        settings["modes"] = [m for m in settings["modes"] if m != "pinned"]
        skipped.append("pinned mode: needs 2 CPUs")
    has_https = silex_has_https(silex)
    if not has_https:
        settings["https"] = False
        skipped.append(
            "https, https-handshake, http2: `silex serve` has no --https-port in this build"
        )
    elif "h2load" in missing:
        skipped.append("http2: h2load (nghttp2-client) not installed")
    plan = Plan(
        profile=args.profile, silex=silex, silex_args=shlex.split(args.silex_args), **settings
    )

    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    results_file = args.results or ROOT / "benches" / "results" / f"{stamp}.json"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    command = "python3 benches/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log(f"silexbench {args.profile}: {plan}")
    for reason in skipped:
        log(f"skipped: {reason}")
    core_before = core_identity(silex)
    bench = Bench(plan, log)
    bench.silex_https = has_https
    # SIGTERM unwinds like Ctrl-C, so every proxy and backend started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = bench.run()
    results["skipped"] += skipped
    if not args.no_micro:
        micro = translate_apply(silex, [100] if smoke else [1_000, 10_000])
        if micro is not None:
            results["translate_apply"] = micro
    document = {
        "schema": 1,
        "command": command.strip(),
        "profile": args.profile,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "git": git_commit(),
        "silex_core": core_before,
        "silex_core_changed_during_run": core_before != core_identity(silex),
        "machine": machine(),
        "plan": {k: v for k, v in vars(plan).items() if k != "silex"},
        **results,
    }
    results_file.write_text(json.dumps(document, indent=1) + "\n")
    log(f"results: {results_file}")
    if not (smoke or args.no_report) or args.report:
        out = args.report or ROOT / "docs" / "benchmarks.md"
        write_report(results_file, out)
        log(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
