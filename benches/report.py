#!/usr/bin/env python3
# ruff: noqa: RUF001, RUF002 (the report is typeset: en dashes and multiplication signs)
"""docs/benchmarks.md (and PNG charts beside it) from one results JSON of benches/run.py.

    benches/.venv/bin/python benches/report.py benches/results/<time>.json

Charts need matplotlib (pinned in benches/.venv by run.py); without it only the text is written.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROXIES = ("silex", "nginx", "haproxy", "direct")
Key = tuple[str, int, str, int]  # scenario, hosts, mode, connections


def spread(values: Iterable[float | None], digits: int = 2) -> str:
    """``median (min–max)``, or ``–`` with no values."""
    clean = [v for v in values if v is not None]
    if not clean:
        return "–"
    med = statistics.median(clean)
    if len(clean) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(clean):.{digits}f}–{max(clean):.{digits}f})"


def median(values: Iterable[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return statistics.median(clean) if clean else None


def group_runs(runs: list[dict[str, Any]]) -> dict[Key, dict[str, list[dict[str, Any]]]]:
    groups: dict[Key, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        key = (run["scenario"], run["hosts"], run["mode"], run["connections"])
        groups[key][run["proxy"]].append(run)
    for by_proxy in groups.values():
        for reps in by_proxy.values():
            reps.sort(key=lambda r: r["rep"])
    return groups


def per_rep_ratio(
    a: list[dict[str, Any]], b: list[dict[str, Any]], field: str
) -> list[float | None]:
    """a/b for each repetition present in both (the runs of one repetition are back to back)."""
    by_rep = {r["rep"]: r for r in b}
    ratios: list[float | None] = []
    for run in a:
        other = by_rep.get(run["rep"])
        if other and run.get(field) is not None and other.get(field) is not None and other[field]:
            ratios.append(run[field] / other[field])
    return ratios


def label(key: Key) -> str:
    scenario, hosts, mode, conns = key
    return f"{scenario} · {hosts} host{'s' if hosts > 1 else ''} · {mode} · c{conns}"


def results_table(groups: dict[Key, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = [
        "| scenario | proxy | req/s | p50 ms | p99 ms | max ms | errors | CPU µs/req "
        "| mem idle MiB | mem load MiB | disturbed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        for proxy in PROXIES:
            reps = groups[key].get(proxy)
            if not reps:
                continue

            def mib(field: str, runs: list[dict[str, Any]] = reps) -> list[float | None]:
                return [r[field] / 1024 if r.get(field) else None for r in runs]

            p50 = spread(r.get("p50_ms") for r in reps)
            p99 = spread(r.get("p99_ms") for r in reps)
            worst = spread((r.get("max_ms") for r in reps), 1)
            lines.append(
                f"| {label(key)} | {proxy} | {spread((r['rps'] for r in reps), 0)} "
                f"| {p50} | {p99} | {worst} | {sum(r['errors'] for r in reps)} "
                f"| {spread((r['cpu_us_per_req'] for r in reps), 1)} "
                f"| {spread(mib('pss_idle_kib'), 1)} | {spread(mib('pss_load_kib'), 1)} "
                f"| {sum(r['disturbed'] for r in reps)}/{len(reps)} |"
            )
    return lines


def ratio_table(groups: dict[Key, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = [
        "| scenario | req/s Silex/nginx | req/s Silex/haproxy | p99 Silex/nginx "
        "| p99 Silex/haproxy | CPU/req Silex/nginx | CPU/req Silex/haproxy | Silex/direct req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        g = groups[key]
        silex = g.get("silex", [])
        if not silex:
            continue
        cells = []
        for field in ("rps", "p99_ms", "cpu_us_per_req"):
            for other in ("nginx", "haproxy"):
                cells.append(spread(per_rep_ratio(silex, g.get(other, []), field)))
        order = [0, 1, 2, 3, 4, 5]
        direct = spread(per_rep_ratio(silex, g.get("direct", []), "rps"))
        lines.append(f"| {label(key)} | " + " | ".join(cells[i] for i in order) + f" | {direct} |")
    return lines


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def targets(doc: dict[str, Any], groups: dict[Key, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = ["| target | measured (median, min–max over repetitions) | verdict |", "|---|---|---|"]
    hosts = sorted({k[1] for k in groups})
    small = hosts[0] if hosts else 1
    for key in sorted(groups):
        scenario, h, mode, conns = key
        if scenario != "http1-1k" or h != small:
            continue
        g = groups[key]
        cpu = per_rep_ratio(g.get("silex", []), g.get("nginx", []), "cpu_us_per_req")
        p99 = per_rep_ratio(g.get("silex", []), g.get("nginx", []), "p99_ms")
        med_cpu, med_p99 = median(cpu), median(p99)
        lines.append(
            f"| HTTP/1.1 keep-alive 1 KiB ({mode}, c{conns}): CPU/req ≤ 0.7× nginx "
            f"| {spread(cpu)}× | {verdict(None if med_cpu is None else med_cpu <= 0.7)} |"
        )
        lines.append(
            f"| HTTP/1.1 keep-alive 1 KiB ({mode}, c{conns}): p99 ≤ nginx "
            f"| {spread(p99)}× | {verdict(None if med_p99 is None else med_p99 <= 1.0)} |"
        )
    if len(hosts) > 1:
        big = hosts[-1]
        for mode in sorted({k[2] for k in groups}):
            for conns in sorted({k[3] for k in groups}):
                one = groups.get(("http1-1k", small, mode, conns), {})
                many = groups.get(("http1-1k", big, mode, conns), {})
                cells = []
                cpu_ratio: dict[str, float] = {}
                for proxy in ("silex", "nginx", "haproxy"):
                    a = median(r["rps"] for r in many.get(proxy, []))
                    b = median(r["rps"] for r in one.get(proxy, []))
                    ca = median(r["cpu_us_per_req"] for r in many.get(proxy, []))
                    cb = median(r["cpu_us_per_req"] for r in one.get(proxy, []))
                    if a and b and ca and cb:
                        cells.append(f"{proxy}: CPU/req {ca / cb:.2f}×, req/s {a / b:.2f}×")
                        cpu_ratio[proxy] = ca / cb
                if "silex" not in cpu_ratio:
                    continue
                # Judged on CPU/request (req/s follows the load generator's share of the
                # machine). The 1-host and 10,000-host runs are minutes apart: when nginx's or
                # haproxy's own ratio (their lookup is flat too) moves more than 5 %, the
                # difference is noise and the verdict is withheld.
                noisy = any(abs(v - 1) > 0.05 for k, v in cpu_ratio.items() if k != "silex")
                silex_ok = abs(cpu_ratio["silex"] - 1) <= 0.05
                shown = "inconclusive (noise)" if noisy and not silex_ok else verdict(silex_ok)
                lines.append(
                    f"| {big:,} hosts: CPU/req within 5 % of 1 host ({mode}, c{conns}) "
                    f"| {'; '.join(cells)} | {shown} |"
                )
    https = [s for s in doc.get("skipped", []) if s.startswith("https")]
    if https:
        lines.append(
            f"| HTTPS keep-alive, handshake rate, HTTP/2 ≥ nginx | not run: {https[0]} | – |"
        )
    idle: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for protocol, name in (("http1", "HTTP/1.1"), ("https", "TLS")):
        by_proxy: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in doc.get("idle", []):
            # Only measurements on a fresh process (older results: the first repetition).
            fresh = record.get("fresh") or record["rep"] == 1
            if record.get("protocol", "http1") == protocol and fresh:
                by_proxy[record["proxy"]].append(record)
        if protocol == "http1":
            idle = by_proxy
        if not (by_proxy.get("silex") and by_proxy.get("nginx")):
            continue
        ratios = [
            s["bytes_per_conn_rss"] / max(1.0, n["bytes_per_conn_rss"])
            for s, n in zip(by_proxy["silex"], by_proxy["nginx"], strict=False)
        ]
        med = median(ratios)
        silex_b = spread((r["bytes_per_conn_rss"] for r in by_proxy["silex"]), 0)
        nginx_b = spread((r["bytes_per_conn_rss"] for r in by_proxy["nginx"]), 0)
        lines.append(
            f"| idle memory per {name} connection ≤ 2× nginx (fresh process) | Silex {silex_b} B,"
            f" nginx {nginx_b} B: {spread(ratios)}× "
            f"| {verdict(None if med is None else med <= 2)} |"
        )
    idle_rss = [
        r["rss_idle_kib"] / 1024
        for r in doc.get("runs", [])
        if r["proxy"] == "silex" and r.get("rss_idle_kib")
    ]
    first_rss = [s["rss_before_kib"] / 1024 for s in idle.get("silex", [])]
    startup_all = [s for s in doc.get("startup_rss", []) if s["proxy"] == "silex"]
    fewest = min((s["hosts"] for s in startup_all), default=0)
    startup = [s for s in startup_all if s["hosts"] == fewest]
    most = [s for s in startup_all if s["hosts"] != fewest]
    if idle_rss or startup:
        fresh = spread((s["rss_kib"] / 1024 for s in startup), 1) if startup else "–"
        if most:
            fresh += f" ({most[-1]['hosts']:,} hosts: {most[-1]['rss_kib'] / 1024:.0f} MiB)"
        ok = max(s["rss_kib"] for s in startup) / 1024 <= 60 if startup else None
        lines.append(
            f"| idle process RSS ≤ 60 MiB (Python operator included) | fresh after start, "
            f"{fewest:,} host(s): {fresh} MiB; idle between load runs: {spread(idle_rss, 1)} MiB"
            f"{'; before the idle test: ' + spread(first_rss, 1) + ' MiB' if first_rss else ''}"
            f" | {verdict(ok)} |"
        )
    reload = defaultdict(list)
    for record in doc.get("reload", []):
        reload[(record["proxy"], record["hosts"])].append(record)
    for (proxy, hosts_n), records in sorted(reload.items()):
        failed = sum(r["errors"] or 0 for r in records)
        total = sum(r["requests"] or 0 for r in records)
        times = [t for r in records for t in r["apply_ms"]]
        late = sum(r["not_served_in_time"] for r in records)
        changes = sum(r["changes"] for r in records)
        ok = failed == 0 and late == 0 and bool(times) and max(times) <= 100
        lines.append(
            f"| config change under load, {proxy}, {hosts_n:,} hosts: 0 failed, served ≤ 100 ms "
            f"| {failed} failed of {total:,}; change served in median "
            f"{spread([median(times)], 0)} ms, max {max(times) if times else 0:.0f} ms; "
            f"{late} of {changes} not served in 3 s | "
            f"{verdict(ok) if proxy == 'silex' else '(reference)'} |"
        )
    micro = doc.get("translate_apply")
    if micro:
        for result in micro["results"]:
            if result["ingresses"] >= 10_000:
                s = result["translate_apply"]
                lines.append(
                    f"| translate+apply of {result['ingresses']:,} Ingresses ≤ 1 s "
                    f"| {s['median_s']:.3f} s ({s['min_s']:.3f}–{s['max_s']:.3f}) "
                    f"| {verdict(s['median_s'] <= 1.0)} |"
                )
    return lines


def charts(groups: dict[Key, dict[str, list[dict[str, Any]]]], out_dir: Path) -> list[str]:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 (optional)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    keys = sorted(groups)
    for field, title, name in (
        ("rps", "Requests per second (median, min–max)", "throughput.png"),
        ("p99_ms", "p99 latency, ms (median, min–max)", "p99.png"),
        ("cpu_us_per_req", "Proxy CPU µs per request (median, min–max)", "cpu.png"),
    ):
        fig, ax = plt.subplots(figsize=(12, 0.5 + 0.55 * len(keys)))
        height = 0.8 / len(PROXIES)
        for index, proxy in enumerate(PROXIES):
            ys, meds, lows, highs = [], [], [], []
            for row, key in enumerate(keys):
                values = [r[field] for r in groups[key].get(proxy, []) if r.get(field)]
                if not values:
                    continue
                med = statistics.median(values)
                ys.append(row + index * height)
                meds.append(med)
                lows.append(med - min(values))
                highs.append(max(values) - med)
            if meds:
                ax.barh(ys, meds, height, xerr=[lows, highs], label=proxy, capsize=2)
        ax.set_yticks([row + 0.4 - height / 2 for row in range(len(keys))])
        ax.set_yticklabels([label(k) for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=90)
        plt.close(fig)
        written.append(name)
    return written


def core_lines(doc: dict[str, Any]) -> list[str]:
    core = doc.get("silex_core")
    if not core:
        return []
    line = f"- silex._core built {core['built']} (sha256 {core['sha256_16']}…)"
    if doc.get("silex_core_changed_during_run"):
        line += " — **rebuilt during the run**: later runs measured a newer core"
    return [line]


def machine_lines(doc: dict[str, Any]) -> list[str]:
    m = doc["machine"]
    versions = ", ".join(f"{k}: {v}" for k, v in m["versions"].items() if v)
    return [
        f"- CPU: {m['cpu_model']}, {m['cpus']} CPUs; {m['memory_gib']} GiB RAM; "
        f"{m['os']}, kernel {m['kernel']}; Python {m['python']}",
        f"- {versions}",
        f"- Silex at `{doc.get('git')}`; backend: {doc.get('backend', 'nginx')}",
        *core_lines(doc),
        f"- run started {doc['started']}, took {doc['elapsed_s'] / 60:.1f} min",
    ]


def micro_lines(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    micro = doc.get("translate_apply")
    if micro:
        lines += [
            f"`benches/translate_apply.py` (median of {micro['reps']}, min–max, seconds):",
            "",
            "| Ingresses | load (JSON List) | load (YAML) | translate | apply | translate+apply |",
            "|---|---|---|---|---|---|",
        ]
        for r in micro["results"]:
            cells = [
                spread([r[k]["median_s"], r[k]["min_s"], r[k]["max_s"]], 3)
                if r[k]["min_s"] != r[k]["max_s"]
                else f"{r[k]['median_s']:.3f}"
                for k in ("load_json", "load_yaml", "translate", "apply", "translate_apply")
            ]
            lines.append(f"| {r['ingresses']:,} | " + " | ".join(cells) + " |")
        lines.append("")
    crit = doc.get("criterion")
    if crit:
        lines += [
            "`cargo bench -p silex-routing --bench lookup` (criterion, estimate):",
            "",
            "| bench | time |",
            "|---|---|",
        ]
        lines += [f"| {name} | {value} |" for name, value in crit.items()]
        lines.append("")
    return lines


def _run_key(run: dict[str, Any]) -> tuple[str, int, str, int, str]:
    return (run["scenario"], run["hosts"], run["mode"], run["connections"], run["proxy"])


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One document from several runs (e.g. a TLS-only run added to a plain one)."""
    doc = dict(docs[0])
    for other in docs[1:]:
        doc["command"] += f"` and `{other['command']}"
        doc["elapsed_s"] += other["elapsed_s"]
        # A later run replaces an earlier one's figures for the same scenario and proxy.
        newer = {_run_key(r) for r in other.get("runs", [])}
        doc["runs"] = [r for r in doc.get("runs", []) if _run_key(r) not in newer]
        for key in ("runs", "idle", "reload", "startup_s", "startup_rss"):
            doc[key] = doc.get(key, []) + other.get(key, [])
        if other.get("silex_core") != doc.get("silex_core"):
            doc["silex_core_changed_during_run"] = True
        done = {r["scenario"].split("-")[0] for r in doc["runs"]}
        skipped = doc.get("skipped", []) + other.get("skipped", [])
        doc["skipped"] = [
            s for s in dict.fromkeys(skipped) if not s.startswith("https") or "https" not in done
        ]
        doc.setdefault("translate_apply", other.get("translate_apply"))
    return doc


def render(doc: dict[str, Any], out: Path) -> str:
    groups = group_runs(doc.get("runs", []))
    images = charts(groups, out.parent / "benchmarks")
    runs = doc.get("runs", [])
    disturbed = sum(r["disturbed"] for r in runs)
    plan = doc["plan"]
    text = [
        "# Benchmarks",
        "",
        "<!-- Generated by benches/report.py from benches/results/*.json; do not edit by hand."
        " The prose around the tables lives in benches/report_text.md. -->",
        "",
        "Silex side by side with nginx (configured as ingress-nginx does: one `upstream` with "
        "keepalive per Service) and haproxy (a Host map to one backend per Service), on the same "
        "machine, the same cores and the same backend. See benches/README section below for how "
        "to run it and what each figure means.",
        "",
        "## This run",
        "",
        *machine_lines(doc),
        f"- command: `{doc['command']}` (profile {doc['profile']}: hosts {plan['hosts']}, "
        f"connections {plan['connections']}, modes {plan['modes']}, {plan['reps']} repetitions "
        f"of {plan['duration_s']:g} s after {plan['warmup_s']:g} s warm-up)",
        f"- **{disturbed} of {len(runs)} load runs were disturbed** (other processes used more "
        "than 10 % of a CPU during the run, or steal > 2 %): on a shared machine ratios "
        "between proxies measured back to back are more trustworthy than absolute figures.",
    ]
    for reason in doc.get("skipped", []):
        lines_of = reason.splitlines() or [""]
        tail = f" … {lines_of[-1][:200]}" if len(lines_of) > 1 else ""
        text.append(f"- skipped: {lines_of[0][:300]}{tail}")
    text += ["", "## Targets (issue 8)", "", *targets(doc, groups), ""]
    notes = ROOT / "benches" / "report_text.md"
    if notes.exists():
        text += [notes.read_text().strip(), ""]
    text += [
        "## Ratios per scenario",
        "",
        "Per repetition Silex's figure divided by the other's (the proxies run back to back "
        "within a repetition), then median (min–max). For req/s higher is better for Silex; "
        "for p99 and CPU/request lower is better.",
        "",
        *ratio_table(groups),
        "",
        "## Results",
        "",
        "Median (min–max) over repetitions. mem = PSS summed over the proxy's processes "
        "(equals RSS for one process; nginx's and haproxy's shared pages counted once), idle "
        "just before the run, maximum under load. CPU µs/req = the proxy's utime+stime from "
        "/proc over the run divided by the requests wrk completed (for Silex, the Python "
        "process hosting the Rust core's threads). direct = wrk straight at the backend: the "
        "ceiling.",
        "",
        *results_table(groups),
        "",
    ]
    if images:
        text += ["## Charts", ""]
        text += [f"![{name}](benchmarks/{name})" for name in images]
        text.append("")
    idle = doc.get("idle", [])
    if idle:
        text += [
            "## Idle connections",
            "",
            "| proxy | rep | open / alive | RSS before MiB | RSS with them MiB | B/conn (RSS) "
            "| B/conn (PSS) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in idle:
            text.append(
                f"| {r['proxy']} | {r['rep']} | {r['opened']} / {r['alive']} "
                f"| {r['rss_before_kib'] / 1024:.1f} | {r['rss'] / 1024:.1f} "
                f"| {r['bytes_per_conn_rss']:.0f} | {r['bytes_per_conn_pss']:.0f} |"
            )
        text.append("")
    reload = doc.get("reload", [])
    if reload:
        text += [
            "## Configuration change under load",
            "",
            "wrk (64 connections, 2 threads) on the target host while, once a second, a host "
            "is added and then removed (Silex: a manifest file written then deleted; nginx: "
            "server block + `nginx -s reload`; haproxy: config + map rewritten, SIGUSR2 to the "
            "master). Time to served = from the change to the first answer reflecting it "
            "(200 after adding, 404 after removing), polled on new connections every 2 ms.",
            "",
            "| proxy | hosts | rep | changes | not served in 3 s | served in ms (median / max) "
            "| failed requests / total |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in reload:
            med = r["apply_ms_median"]
            mx = r["apply_ms_max"]
            text.append(
                f"| {r['proxy']} | {r['hosts']:,} | {r['rep']} | {r['changes']} "
                f"| {r['not_served_in_time']} "
                f"| {'–' if med is None else f'{med:.0f}'} / {'–' if mx is None else f'{mx:.0f}'} "
                f"| {r['errors']} / {r['requests']} |"
            )
        text.append("")
    micro = micro_lines(doc)
    if micro:
        text += ["## Micro-benchmarks", "", *micro]
    howto = ROOT / "benches" / "README.md"
    if howto.exists():
        text += [howto.read_text().replace("# ", "## ", 1).strip(), ""]
    return "\n".join(text)


def main() -> int:
    parser = argparse.ArgumentParser(description="docs/benchmarks.md from a results JSON")
    parser.add_argument("results", type=Path, nargs="+", help="merged: the first one leads")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    doc = merge([json.loads(path.read_text()) for path in args.results])
    args.out.write_text(render(doc, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
