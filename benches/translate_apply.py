#!/usr/bin/env python3
"""Micro-benchmark: load, translate and apply N Ingresses (issue 8 target: <= 1 s at 10,000).

    .venv/bin/python benches/translate_apply.py --ingresses 1000 --ingresses 10000

Each Ingress has its own host, Service and EndpointSlice. Times (best of --reps, and median):
load (YAML and JSON manifests -> snapshot), translate (snapshot -> table), apply (table ->
the Rust core: serialise, validate, compile, swap), and translate+apply, the target.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from silexbench import configs

from silex.dataplane import DataPlane, ServerConfig
from silex.sources.files import load_snapshot
from silex.translate import translate


def timed(function: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    times, value = [], None
    for _ in range(reps):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return times, value


def summary(times: list[float]) -> dict[str, float]:
    return {"min_s": min(times), "median_s": statistics.median(times), "max_s": max(times)}


def measure(count: int, reps: int, plane: DataPlane) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="silex-translate-") as tmp:
        json_dir = Path(tmp) / "json"
        configs.write_silex(json_dir, count, 9000)
        yaml_dir = Path(tmp) / "yaml"
        yaml_dir.mkdir()
        items = json.loads((json_dir / "hosts.json").read_text())["items"]
        (yaml_dir / "hosts.yaml").write_text("\n---\n".join(json.dumps(i) for i in items))
        load_json, (snapshot, problems) = timed(lambda: load_snapshot(json_dir), reps)
        load_yaml, _ = timed(lambda: load_snapshot(yaml_dir), 1)
    assert not problems, problems[:3]
    translate_t, (table, _) = timed(lambda: translate(snapshot), reps)
    assert len(table.hosts) == count, len(table.hosts)
    apply_t, _ = timed(lambda: plane.apply(table), reps)
    both, _ = timed(lambda: plane.apply(translate(snapshot)[0]), reps)
    return {
        "ingresses": count,
        "load_json": summary(load_json),
        "load_yaml": summary(load_yaml),
        "translate": summary(translate_t),
        "apply": summary(apply_t),
        "translate_apply": summary(both),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="translate+apply time for N Ingresses")
    parser.add_argument("--ingresses", type=int, action="append", help="repeatable")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    plane = DataPlane(ServerConfig(workers=1))
    try:
        results = [measure(n, args.reps, plane) for n in args.ingresses or [1_000, 10_000]]
    finally:
        plane.shutdown(0)
    if args.json:
        print(json.dumps({"reps": args.reps, "results": results}, indent=1))
        return 0
    print(
        f"{'ingresses':>9}  {'load json':>9}  {'load yaml':>9}  {'translate':>9}  "
        f"{'apply':>9}  {'trans+apply':>11}  (median s)"
    )
    for r in results:
        print(
            f"{r['ingresses']:>9}  {r['load_json']['median_s']:>9.3f}  "
            f"{r['load_yaml']['median_s']:>9.3f}  {r['translate']['median_s']:>9.3f}  "
            f"{r['apply']['median_s']:>9.3f}  {r['translate_apply']['median_s']:>11.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
