"""Scan Silex's HTTPS listener with sslyze and check the protocol and cipher policy.

    python3 benches/tls_scan.py            # prints a summary, writes benches/results/tls_scan.json

sslyze pins versions that conflict with the project's test tools, so it lives in its own venv
(``benches/.venv-sslyze``, created on first use). Silex runs from the project venv on the bundled
quickstart manifests: with no ``spec.tls`` every name gets the self-signed default certificate,
which is all a protocol/cipher scan needs. Traffic stays on 127.0.0.1.

Exit status 1 when the policy is violated: any SSLv2/SSLv3/TLS 1.0/TLS 1.1 suite accepted, a
TLS 1.2 suite without forward secrecy (ECDHE/DHE) or without AEAD (GCM/ChaCha20-Poly1305),
compression enabled, or Heartbleed/ROBOT reported.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SILEX = ROOT / ".venv" / "bin" / "silex"
SCAN_VENV = ROOT / "benches" / ".venv-sslyze"
SSLYZE_PIN = "sslyze==6.3.1"
RESULTS = ROOT / "benches" / "results" / "tls_scan.json"
LEGACY = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")
LISTENING = re.compile(r"listening https on (\S+):(\d+)")


def sslyze() -> Path:
    """The sslyze executable, installing it into its own venv on first use."""
    executable = SCAN_VENV / "bin" / "sslyze"
    if not executable.exists():
        venv.create(SCAN_VENV, with_pip=True)
        subprocess.run(
            [str(SCAN_VENV / "bin" / "pip"), "install", "--quiet", SSLYZE_PIN], check=True
        )
    return executable


def start_silex() -> tuple[subprocess.Popen[str], int]:
    """``silex serve`` on free loopback ports; returns the process and its HTTPS port."""
    process = subprocess.Popen(
        [
            str(SILEX),
            "serve",
            "--manifests",
            str(ROOT / "examples" / "quickstart"),
            "--listen-address",
            "127.0.0.1",
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--admin-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    found: list[int] = []
    done = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            match = LISTENING.search(line)
            if match and not found:
                found.append(int(match.group(2)))
                done.set()
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(60) or not found:
        process.kill()
        sys.exit("silex did not start an HTTPS listener within 60 s")
    return process, found[0]


def accepted(result: dict[str, Any], protocol: str) -> list[str]:
    """Names of the cipher suites sslyze saw accepted for ``protocol`` (e.g. ``tls_1_2``)."""
    attempt = result.get(f"{protocol}_cipher_suites") or {}
    suites = (attempt.get("result") or {}).get("accepted_cipher_suites") or []
    return [suite["cipher_suite"]["name"] for suite in suites]


def violations(result: dict[str, Any]) -> list[str]:
    """Every way the scan result breaks the policy in the module docstring."""
    found = [f"{p} accepts {s}" for p in LEGACY for s in accepted(result, p)]
    for suite in accepted(result, "tls_1_2"):
        forward_secret = "_ECDHE_" in suite or "_DHE_" in suite
        aead = "_GCM_" in suite or "CHACHA20_POLY1305" in suite
        if not (forward_secret and aead):
            found.append(f"tls_1_2 accepts {suite} (not forward-secret AEAD)")
    compression = ((result.get("tls_compression") or {}).get("result")) or {}
    if compression.get("supports_compression"):
        found.append("TLS compression enabled")
    heartbleed = ((result.get("heartbleed") or {}).get("result")) or {}
    if heartbleed.get("is_vulnerable_to_heartbleed"):
        found.append("vulnerable to Heartbleed")
    robot = ((result.get("robot") or {}).get("result")) or {}
    if "VULNERABLE" in str(robot.get("robot_result", "")) and "NOT_VULNERABLE" not in str(
        robot.get("robot_result", "")
    ):
        found.append(f"ROBOT: {robot.get('robot_result')}")
    return found


def main() -> int:
    """Scan, print the accepted suites per protocol, write the JSON, return the exit status."""
    scanner = sslyze()
    process, port = start_silex()
    try:
        scan = subprocess.run(
            [
                str(scanner),
                "--json_out=-",
                "--sslv2",
                "--sslv3",
                "--tlsv1",
                "--tlsv1_1",
                "--tlsv1_2",
                "--tlsv1_3",
                "--elliptic_curves",
                "--compression",
                "--heartbleed",
                "--robot",
                "--fallback",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        process.terminate()
        process.wait(timeout=40)
    start = scan.stdout.find("{")
    if start < 0:
        print(scan.stdout, scan.stderr, file=sys.stderr)
        return 2
    report = json.loads(scan.stdout[start:])
    server = report["server_scan_results"][0]
    result = server.get("scan_result") or {}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1))
    for protocol in (*LEGACY, "tls_1_2", "tls_1_3"):
        suites = accepted(result, protocol)
        print(f"{protocol:8} {', '.join(suites) if suites else 'rejected'}")
    curves = ((result.get("elliptic_curves") or {}).get("result")) or {}
    names = [c["name"] for c in curves.get("supported_curves") or []]
    print(f"curves   {', '.join(names) or '-'}")
    problems = violations(result)
    for problem in problems:
        print(f"VIOLATION: {problem}")
    print(f"scanned at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; JSON: {RESULTS}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
