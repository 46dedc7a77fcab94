#!/usr/bin/env python3
"""Where a proxy's CPU goes per request: syscalls, context switches and a flat perf profile.

    sudo python3 benches/profile.py [--proxies silex nginx haproxy] [--duration 8]

Pinned as in run.py (proxy on CPU 0 with one worker, wrk and the backend on CPU 1), 1 KiB
keep-alive at 64 connections, 1 host. Needs `perf` (linux-perf). Prints, per proxy:
requests/s, CPU µs, syscalls and context switches per request, and the top symbols.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import find_silex, silex_has_https
from silexbench import configs, load
from silexbench.harness import PROXIES, Bench, Plan, mode_of
from silexbench.procs import CLOCK_TICKS, raise_nofile


def perf_stat(pids: list[int], seconds: float) -> dict[str, int]:
    argv = ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter,context-switches"]
    argv += ["-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    counts: dict[str, int] = {}
    for line in done.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2]] = int(fields[0])
    return counts


def perf_top(pids: list[int], seconds: float, out: Path, top: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    data = out / "perf.data"
    argv = ["perf", "record", "-F", "999", "-o", str(data), "-p", ",".join(map(str, pids))]
    subprocess.run(
        [*argv, "--", "sleep", str(seconds)], capture_output=True, timeout=seconds + 60, check=False
    )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso,symbol", "--percent-limit",
         "0.7"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = [x for x in report.stdout.splitlines() if re.match(r"\s+\d+\.\d+%", x)]
    by_dso = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    dsos = [x for x in by_dso.stdout.splitlines() if re.match(r"\s+\d+\.\d+%", x)]
    return "   by object:\n" + "\n".join(dsos[:6]) + "\n   by symbol:\n" + "\n".join(lines[:top])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--proxies", nargs="+", choices=PROXIES, default=["silex", "nginx"])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    if not shutil.which("perf"):
        print("perf is not installed (apt-get install linux-perf)", file=sys.stderr)
        return 2
    silex = find_silex(None) or "silex"
    plan = Plan("profile", [1], [args.connections], ["pinned"], 1, args.duration, 2.0, [])
    plan.silex, plan.https = silex, False
    bench = Bench(plan, lambda m: print(m, file=sys.stderr, flush=True))
    bench.silex_https = silex_has_https(silex)
    raise_nofile()
    mode = mode_of("pinned")
    try:
        bench.start_backend(mode)
        for name in args.proxies:
            proc = bench.start_proxy(name, 1, mode)
            url = f"http://127.0.0.1:{proc.port}/1k"
            host = configs.target_host(1)
            load.run_wrk(url, host, args.connections, 1, 2.0, bench.lua, mode.load_cpus)
            result: dict[str, object] = {}
            total = args.duration * 2 + 4

            def drive(
                url: str = url,
                host: str = host,
                total: float = total,
                out: dict[str, object] = result,
            ) -> None:
                out.update(
                    load.run_wrk(url, host, args.connections, 1, total, bench.lua, mode.load_cpus)
                )

            thread = threading.Thread(target=drive)
            thread.start()
            cpu0 = proc.cpu_ticks()
            stats = perf_stat(proc.pids(), args.duration)
            cpu = (proc.cpu_ticks() - cpu0) / CLOCK_TICKS
            profile = perf_top(proc.pids(), args.duration, bench.tmp / name, args.top)
            thread.join(timeout=total + 60)
            requests = float(result["rps"]) * args.duration  # type: ignore[arg-type]
            print(f"== {name}: {result['rps']:.0f} req/s, over {args.duration:g} s:")
            print(f"   CPU {cpu * 1e6 / requests:.1f} µs/req")
            for event, count in stats.items():
                print(f"   {event}: {count / requests:.2f} per request")
            print(profile)
            proc.stop()
    finally:
        bench.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
