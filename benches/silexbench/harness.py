"""The benchmark run: scenarios, repetitions, disturbance flags, one results JSON."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silexbench import configs, load
from silexbench.idle import hold_idle
from silexbench.procs import (
    CLOCK_TICKS,
    MemorySampler,
    Proc,
    free_port,
    raise_nofile,
    system_ticks,
    wait_status,
)

PROXIES = ("silex", "nginx", "haproxy")
# http1: plain HTTP/1.1 keep-alive; tls: HTTPS keep-alive, handshakes, HTTP/2 (when Silex has
# --https-port); idle: memory per idle connection; reload: configuration change under load.
SCENARIOS = ("http1", "tls", "idle", "reload")
# A run is flagged when processes other than ours used more than this share of one CPU.
FOREIGN_CPU_LIMIT_PCT = 10.0
STEAL_LIMIT_PCT = 2.0
# A change not served within this is counted as not served (and the run goes on).
CHANGE_DEADLINE_S = 3.0


@dataclass
class Plan:
    """What one invocation measures."""

    profile: str
    hosts: list[int]
    connections: list[int]
    modes: list[str]
    reps: int
    duration_s: float
    warmup_s: float
    proxies: list[str]
    bodies: list[str] = field(default_factory=lambda: ["1k", "64k"])
    idle_connections: int = 10_000
    reload_duration_s: float = 10.0
    https: bool = True
    silex: str = "silex"
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    silex_args: list[str] = field(default_factory=list)
    """Extra `silex serve` flags (e.g. ["--debounce", "0.02"]) to try a tuning."""


@dataclass
class Mode:
    name: str
    proxy_cpus: str | None
    load_cpus: str | None
    workers: int
    wrk_threads: int


def mode_of(name: str) -> Mode:
    if name == "pinned":  # the proxy alone on CPU 0; wrk and the backend share CPU 1
        return Mode(name, "0", "1", workers=1, wrk_threads=1)
    return Mode(name, None, None, workers=2, wrk_threads=2)


def rusage_ticks() -> int:
    """CPU of this process and its reaped children (wrk), in clock ticks."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return round(total * CLOCK_TICKS)


class Disturbance:
    """Measures how much CPU went to processes other than ours during a window."""

    def __init__(self, ours: list[Proc | None]) -> None:
        self.ours = [p for p in ours if p is not None]

    def __enter__(self) -> Disturbance:
        self.loadavg = float(Path("/proc/loadavg").read_text().split()[0])
        self.t0 = time.monotonic()
        self.sys0 = system_ticks()
        self.ours0 = sum(p.cpu_ticks() for p in self.ours) + rusage_ticks()
        return self

    def __exit__(self, *_: object) -> None:
        elapsed = time.monotonic() - self.t0
        busy1, steal1, total1 = system_ticks()
        busy0, steal0, total0 = self.sys0
        ours = sum(p.cpu_ticks() for p in self.ours) + rusage_ticks() - self.ours0
        # user+nice+system of the whole machine minus ours; interrupt time is left out
        # (loopback traffic is charged there, to nobody).
        foreign = max(0, busy1 - busy0 - ours)
        self.foreign_cpu_pct = 100.0 * foreign / CLOCK_TICKS / elapsed if elapsed else 0.0
        self.steal_pct = 100.0 * (steal1 - steal0) / max(1, total1 - total0)
        self.disturbed = (
            self.foreign_cpu_pct > FOREIGN_CPU_LIMIT_PCT or self.steal_pct > STEAL_LIMIT_PCT
        )

    def record(self) -> dict[str, Any]:
        return {
            "disturbed": self.disturbed,
            "foreign_cpu_pct": round(self.foreign_cpu_pct, 1),
            "steal_pct": round(self.steal_pct, 2),
            "loadavg_before": self.loadavg,
        }


class Bench:
    """One invocation: owns the temp dir, the processes and the results."""

    def __init__(self, plan: Plan, log: Any) -> None:
        self.plan = plan
        self.log = log
        self.tmp = Path(tempfile.mkdtemp(prefix="silexbench-"))
        self.tmp.chmod(0o755)  # nginx workers run as an unprivileged user
        self.lua = load.write_lua(self.tmp)
        self.results: dict[str, Any] = {"runs": [], "idle": [], "reload": [], "skipped": []}
        self.running: list[Proc] = []
        self.backend: Proc | None = None
        self.backend_port = 0
        self.silex_https = False  # `silex serve` has --https-port (set by run.py)
        self.h2load = shutil.which("h2load") is not None
        self.cert_dir: Path | None = None

    # --- processes ---------------------------------------------------------------------------

    def _start(self, proc: Proc) -> Proc:
        self.log(f"  starting {proc.name} on :{proc.port}")
        proc.start()
        self.running.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.running):
            proc.stop()
        self.running.clear()
        self.backend = None

    def start_backend(self, mode: Mode) -> None:
        directory = self.tmp / f"backend-{mode.name}"
        directory.mkdir(exist_ok=True)
        self.backend_port = free_port()
        if shutil.which("nginx"):
            conf = configs.write_backend(directory, self.backend_port, mode.workers)
            argv = [*load.taskset(mode.load_cpus), "nginx", "-c", str(conf), "-e", "stderr"]
            kind = "nginx"
        else:  # smoke mode without nginx: a Python server with the same files
            configs.write_www(directory / "www")
            argv = [
                *load.taskset(mode.load_cpus),
                "python3",
                str(Path(__file__).with_name("pybackend.py")),
                str(self.backend_port),
                str(directory / "www"),
            ]
            kind = "python"
        self.results.setdefault("backend", kind)
        self.backend = self._start(
            Proc("backend", argv, self.backend_port, directory / "backend.log")
        )

    def start_proxy(self, name: str, hosts: int, mode: Mode) -> Proc:
        directory = self.tmp / f"{name}-{hosts}-{mode.name}"
        directory.mkdir(exist_ok=True)
        port = free_port()
        tls_port = free_port() if self.cert_dir else None
        cert_dir = self.cert_dir
        tls = (cert_dir / "cert.pem", cert_dir / "key.pem") if cert_dir else None
        target = configs.target_host(hosts)
        pin = load.taskset(mode.proxy_cpus)
        if name == "silex":
            manifests = directory / "manifests"
            configs.write_silex(manifests, hosts, self.backend_port, tls)
            argv = [
                *pin,
                self.plan.silex,
                "serve",
                "--manifests",
                str(manifests),
                "--http-port",
                str(port),
                "--https-port",
                "0",
                "--admin-port",
                str(free_port()),
                "--listen-address",
                "127.0.0.1",
                "--workers",
                str(mode.workers),
                "--log-level",
                "warning",
                # The nginx and haproxy configurations log no requests either.
                "--access-log",
                "off",
            ]
            argv += self.plan.silex_args
            if self.silex_https:  # always: its default (8443) may be taken
                argv += ["--https-port", str(tls_port or free_port())]
            if tls_port:
                argv += ["--default-ssl-certificate", configs.TLS_SECRET]
            proc = Proc(name, argv, port, directory / "silex.log", ready_host=target)
            proc.extra["manifests"] = manifests
        elif name == "nginx":
            conf = configs.write_nginx_proxy(
                directory, hosts, port, self.backend_port, mode.workers, tls_port, cert_dir
            )
            argv = [*pin, "nginx", "-c", str(conf), "-e", "stderr"]
            proc = Proc(name, argv, port, directory / "nginx.log", ready_host=target)
            proc.extra["conf"] = conf
        else:
            conf = configs.write_haproxy(
                directory,
                hosts,
                port,
                self.backend_port,
                mode.workers,
                tls_port=tls_port,
                cert_dir=cert_dir,
            )
            argv = [*pin, "haproxy", "-W", "-db", "-f", str(conf)]
            proc = Proc(name, argv, port, directory / "haproxy.log", ready_host=target)
            proc.extra.update(conf=conf, directory=directory)
        proc.extra.update(hosts=hosts, tls_port=tls_port, workers=mode.workers)
        return self._start(proc)

    # --- one measured load run ---------------------------------------------------------------

    def measure(  # noqa: PLR0917 (internal helper, called positionally)
        self,
        proxy: Proc | None,
        label: str,
        hosts: int,
        mode: Mode,
        conns: int,
        body: str,
        rep: int,
        scenario: str = "http1",
    ) -> dict[str, Any]:
        """One warm-up + measured run. scenario: http1, https, https-handshake or h2."""
        port = proxy.port if proxy else self.backend_port
        scheme = "http"
        if scenario != "http1":
            assert proxy is not None
            port, scheme = int(proxy.extra["tls_port"]), "https"  # type: ignore[call-overload]
        host = configs.target_host(hosts) if proxy else "localhost"
        url = f"{scheme}://127.0.0.1:{port}/{body}"
        threads = max(1, min(mode.wrk_threads, conns))
        headers = ("Connection: close",) if scenario == "https-handshake" else ()

        def run(seconds: float) -> dict[str, Any]:
            if scenario == "h2":
                return load.run_h2load(url, host, conns, threads, seconds, mode.load_cpus)
            return load.run_wrk(
                url, host, conns, threads, seconds, self.lua, mode.load_cpus, headers
            )

        run(self.plan.warmup_s)
        idle_rss, idle_pss = proxy.memory_kib() if proxy else (0, 0)
        cpu0 = proxy.cpu_ticks() if proxy else 0
        with Disturbance([proxy, self.backend]) as dist, MemorySampler(proxy) as mem:
            result = run(self.plan.duration_s)
        cpu_ticks = (proxy.cpu_ticks() - cpu0) if proxy else 0
        cpu_us = cpu_ticks * 1e6 / CLOCK_TICKS
        record: dict[str, Any] = {
            "scenario": f"{scenario}-{body}",
            "proxy": label,
            "hosts": hosts,
            "mode": mode.name,
            "connections": conns,
            "body": body,
            "rep": rep,
            **result,
            "proxy_cpu_s": round(cpu_us / 1e6, 3),
            "cpu_us_per_req": cpu_us / result["requests"] if proxy and result["requests"] else None,
            "rss_idle_kib": idle_rss if proxy else None,
            "pss_idle_kib": idle_pss if proxy else None,
            "rss_load_kib": mem.max_rss if proxy else None,
            "pss_load_kib": mem.max_pss if proxy else None,
            **dist.record(),
        }
        flag = " DISTURBED" if dist.disturbed else ""
        cpu = f"{record['cpu_us_per_req']:.1f}us/req" if record["cpu_us_per_req"] else "-"
        self.log(
            f"    {label:8} {body:3} h={hosts:<5} {mode.name:8} c={conns:<3} rep{rep}: "
            f"{result['rps']:9.0f} req/s p99 {result.get('p99_ms', -1):7.2f} ms "
            f"err {result['errors']} {scenario}"
            f" cpu {cpu} foreign {dist.foreign_cpu_pct:.0f}%{flag}"
        )
        self.results["runs"].append(record)
        return record

    # --- idle connections --------------------------------------------------------------------

    def idle_test(self, proxy: Proc, hosts: int, rep: int, tls: bool = False) -> None:
        # A fresh process each time: memory kept by the allocator after earlier connections
        # (both Silex and nginx keep some) would otherwise hide the cost of new ones.
        proxy.stop()
        proxy.start()
        time.sleep(1.0)
        base_rss, base_pss = proxy.memory_kib()
        count = self.plan.idle_connections
        port = int(proxy.extra["tls_port"]) if tls else proxy.port  # type: ignore[call-overload]
        held = hold_idle(port, configs.target_host(hosts), count, proxy.memory_kib, tls=tls)
        opened = int(held["opened"])  # type: ignore[call-overload]
        record = {
            "proxy": proxy.name,
            "protocol": "https" if tls else "http1",
            "fresh": True,
            "hosts": hosts,
            "rep": rep,
            "connections": count,
            **held,
            "rss_before_kib": base_rss,
            "pss_before_kib": base_pss,
            "bytes_per_conn_rss": (int(held["rss"]) - base_rss) * 1024 / max(1, opened),  # type: ignore[call-overload]
            "bytes_per_conn_pss": (int(held["pss"]) - base_pss) * 1024 / max(1, opened),  # type: ignore[call-overload]
        }
        self.log(
            f"    idle {proxy.name:8} {record['protocol']} rep{rep}: {opened}/{count} open, "
            f"{held['alive']} alive, "
            f"{record['bytes_per_conn_rss']:.0f} B/conn (RSS), base RSS {base_rss / 1024:.1f} MiB"
        )
        self.results["idle"].append(record)

    # --- configuration change under load ------------------------------------------------------

    def _change(self, proxy: Proc, add: bool) -> None:
        port = proxy.port
        if proxy.name == "silex":
            manifests: Path = proxy.extra["manifests"]  # type: ignore[assignment]
            target = manifests / "churn.yaml"
            if add:
                tmp = manifests / ".churn.tmp"
                tmp.write_text(configs.silex_churn_yaml(self.backend_port))
                os.replace(tmp, target)
            else:
                target.unlink(missing_ok=True)
        elif proxy.name == "nginx":
            conf: Path = proxy.extra["conf"]  # type: ignore[assignment]
            churn = conf.parent / "servers" / "churn.conf"
            if add:
                churn.write_text(configs.nginx_churn_conf(port, self.backend_port))
            else:
                churn.unlink(missing_ok=True)
            subprocess.run(
                ["nginx", "-c", str(conf), "-e", "stderr", "-s", "reload"],
                check=True,
                timeout=30,
                capture_output=True,
            )
        else:
            directory: Path = proxy.extra["directory"]  # type: ignore[assignment]
            hosts = int(proxy.extra["hosts"])  # type: ignore[call-overload]
            configs.write_haproxy(
                directory,
                hosts,
                port,
                self.backend_port,
                int(proxy.extra["workers"]),  # type: ignore[call-overload]
                churn=add,
                tls_port=proxy.extra["tls_port"],  # type: ignore[arg-type]
                cert_dir=self.cert_dir,
            )
            proxy.signal(signal.SIGUSR2)

    def reload_test(self, proxy: Proc, hosts: int, mode: Mode, rep: int) -> None:
        duration = self.plan.reload_duration_s
        url = f"http://127.0.0.1:{proxy.port}/1k"
        target = configs.target_host(hosts)
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome.update(load.run_wrk(url, target, 64, 2, duration, self.lua, None))
            except Exception as exc:  # reported, not raised, from this thread
                outcome["failure"] = str(exc)

        thread = threading.Thread(target=run)
        thread.start()
        start = time.monotonic()
        added: list[float | None] = []
        removed: list[float | None] = []
        changes = max(1, int(duration) - 2)  # bounded: one add+remove per second
        for second in range(changes):  # bounded: count, per-change deadline and wrk's time
            wake = start + 1.0 + second
            if time.monotonic() > start + duration - 1.0:
                break  # a slow reload (nginx at 10,000 hosts) ends the churn with wrk
            time.sleep(max(0.0, wake - time.monotonic()))
            self._change(proxy, add=True)
            served = wait_status(proxy.port, configs.CHURN_HOST, 200, CHANGE_DEADLINE_S)
            added.append(served)
            self._change(proxy, add=False)
            gone = wait_status(proxy.port, configs.CHURN_HOST, 404, CHANGE_DEADLINE_S)
            removed.append(gone if served is not None else None)
        thread.join(timeout=duration + 90)
        times = [t * 1000 for t in added + removed if t is not None]
        record = {
            "proxy": proxy.name,
            "hosts": hosts,
            "mode": mode.name,
            "rep": rep,
            "changes": len(added) + len(removed),
            "not_served_in_time": sum(t is None for t in added + removed),
            "apply_ms": times,
            "apply_ms_median": sorted(times)[len(times) // 2] if times else None,
            "apply_ms_max": max(times) if times else None,
            "requests": outcome.get("requests"),
            "errors": outcome.get("errors"),
            "error_detail": outcome.get("error_detail"),
            "rps": outcome.get("rps"),
            "failure": outcome.get("failure"),
        }
        self.log(
            f"    reload {proxy.name:8} h={hosts} rep{rep}: {record['errors']} failed of "
            f"{record['requests']}, change served in median {record['apply_ms_median']} ms, "
            f"max {record['apply_ms_max']} ms, {record['not_served_in_time']} late"
        )
        self.results["reload"].append(record)

    # --- the whole plan ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        plan = self.plan
        raise_nofile()
        if plan.https and self.silex_https:
            self.cert_dir = self.tmp / "tls"
            configs.write_certificate(self.cert_dir)
        try:
            for hosts in plan.hosts:
                for mode_name in plan.modes:
                    try:
                        self._run_group(hosts, mode_of(mode_name))
                    except Exception as exc:  # keep the other groups' results
                        self.log(f"  FAILED: {hosts} hosts, {mode_name}: {exc}")
                        self.results["skipped"].append(f"{hosts} hosts, {mode_name}: {exc}")
        finally:
            self.stop_all()
        return self.results

    def _run_group(self, hosts: int, mode: Mode) -> None:
        plan = self.plan
        first_hosts = hosts == plan.hosts[0]
        self.log(f"== {hosts} host(s), {mode.name} ({mode.workers} proxy worker(s))")
        self.start_backend(mode)
        proxies: dict[str, Proc] = {}
        try:
            for name in plan.proxies:
                started = time.monotonic()
                proxies[name] = self.start_proxy(name, hosts, mode)
                took = round(time.monotonic() - started, 2)
                self.results.setdefault("startup_s", []).append(
                    {"proxy": name, "hosts": hosts, "mode": mode.name, "s": took}
                )
            time.sleep(1.0)
            for name, proc in proxies.items():
                rss, pss = proc.memory_kib()
                self.results.setdefault("startup_rss", []).append(
                    {
                        "proxy": name,
                        "hosts": hosts,
                        "mode": mode.name,
                        "rss_kib": rss,
                        "pss_kib": pss,
                    }
                )
            time.sleep(1.0)
            bodies = [b for b in plan.bodies if b == "1k" or first_hosts]
            targets: list[tuple[str, Proc | None]] = [(n, p) for n, p in proxies.items()]
            if first_hosts:
                targets.append(("direct", None))
            for rep in range(1, plan.reps + 1):
                for body in bodies if "http1" in plan.scenarios else []:
                    for conns in plan.connections:
                        if body != "1k" and conns != plan.connections[0]:
                            continue
                        for label, target in targets:
                            self.measure(target, label, hosts, mode, conns, body, rep)
                if self.cert_dir is not None and first_hosts and "tls" in plan.scenarios:
                    for scenario in ("https", "https-handshake", "h2"):
                        if scenario == "h2" and not self.h2load:
                            continue
                        for name, running in proxies.items():
                            conns = plan.connections[0]
                            self.measure(running, name, hosts, mode, conns, "1k", rep, scenario)
            if mode.name == plan.modes[-1]:
                for rep in range(1, plan.reps + 1):
                    if first_hosts and plan.idle_connections and "idle" in plan.scenarios:
                        for proc in proxies.values():
                            if proc.name != "haproxy":  # the target compares Silex, nginx
                                self.idle_test(proc, hosts, rep)
                                if self.cert_dir is not None:
                                    self.idle_test(proc, hosts, rep, tls=True)
                    if plan.reload_duration_s and "reload" in plan.scenarios:
                        for proc in proxies.values():
                            self.reload_test(proc, hosts, mode, rep)
        finally:
            self.stop_all()


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def version(argv: list[str]) -> str | None:
        if not shutil.which(argv[0]):
            return None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            text = (done.stdout + done.stderr).strip()
            return text.splitlines()[0] if text else None
        return None

    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "")
        if hasattr(platform, "freedesktop_os_release")
        else "",
        "python": platform.python_version(),
        "versions": {
            "nginx": version(["nginx", "-v"]),
            "haproxy": version(["haproxy", "-v"]),
            "wrk": version(["wrk", "-v"]),
            "h2load": version(["h2load", "--version"]),
        },
    }
