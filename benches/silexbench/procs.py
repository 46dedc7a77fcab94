"""Processes under test: start, wait until serving, read CPU and memory from /proc, stop."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile(limit: int = 200_000) -> int:
    """Raise RLIMIT_NOFILE for this process and its children; returns the soft limit in force."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (limit, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (nginx/haproxy workers)."""
    tree = children_map()
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, []))
    return pids


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime of ``pids`` (all threads), in clock ticks."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB. PSS does not count shared pages twice across workers."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def system_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) ticks over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def http_status(port: int, host: str, path: str = "/1k", timeout: float = 1.0) -> int | None:
    """Status code of one HTTP/1.1 request on a new connection, or None on any socket error."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            head = sock.recv(64)
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_status(
    port: int, host: str, want: int, deadline_s: float, step_s: float = 0.002
) -> float | None:
    """Poll until a request for ``host`` answers ``want``; seconds taken, None if never."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if http_status(port, host, timeout=0.5) == want:
            return time.monotonic() - start
        time.sleep(step_s)
    return None


@dataclass
class Proc:
    """One proxy (or the backend) under test."""

    name: str
    argv: list[str]
    port: int
    log: Path
    ready_host: str = "localhost"
    ready_status: int = 200
    popen: subprocess.Popen[bytes] | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def start(self, timeout_s: float = 120.0) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while wait_status(self.port, self.ready_host, self.ready_status, 0.5, 0.05) is None:
            if self.popen.poll() is None and time.monotonic() < deadline:
                continue
            self.stop()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} did not serve within {timeout_s:.0f}s:\n{tail}")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def pids(self) -> list[int]:
        return tree_pids(self.pid)

    def cpu_ticks(self) -> int:
        return cpu_ticks(self.pids())

    def memory_kib(self) -> tuple[int, int]:
        return memory_kib(self.pids())

    def signal(self, signum: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        pids = self.pids()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)
        for pid in pids[1:]:  # workers left behind by a killed master
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class MemorySampler:
    """Samples a process tree's memory every ``interval_s`` while running; keeps the maximum."""

    def __init__(self, proc: Proc | None, interval_s: float = 0.5) -> None:
        self.proc = proc
        self.interval_s = interval_s
        self.max_rss = self.max_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while self.proc is not None and not self._stop.wait(self.interval_s):
            rss, pss = self.proc.memory_kib()
            self.max_rss, self.max_pss = max(self.max_rss, rss), max(self.max_pss, pss)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
