"""The operator's Prometheus metrics and how they reach ``/metrics``.

The admin listener (and so ``/metrics``) is served by the Rust core, which never calls into
Python. The operator therefore *pushes*: :class:`OperatorMetrics` keeps its own
``CollectorRegistry``, every recording method marks it changed, and :meth:`OperatorMetrics.flush`
renders the OpenMetrics text and hands it to the publisher (``DataPlane.set_operator_metrics``)
only when something changed. The controller flushes after every reconcile; :func:`push_loop`
flushes on a short period for everything else (watch events, leader changes), so a scrape is at
most one period behind and an idle operator renders nothing.

The families with a series per object (problems by kind, one certificate per Secret and host)
live in a second registry whose text is cached: a busy cluster's stream of watch events
re-renders only the small registry of counters, not a thousand certificate series.

``silex_config_generation`` is not here: the core exports the generation it serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.openmetrics.exposition import generate_latest

Publish = Callable[[bytes], None]
"""Receives the rendered OpenMetrics text (``DataPlane.set_operator_metrics``)."""

NO_KIND = "none"
"""The ``kind`` label of problems that name no object (a whole manifest file, a flag)."""

DEFAULT_CERTIFICATE_HOST = "*"
"""The ``host`` label of the default certificate (served for names no Secret covers)."""

APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Translate-to-swap seconds: a few ms for small tables, up to seconds for very large ones."""

DEFAULT_PUSH_INTERVAL_S = 1.0

WATCH_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


class OperatorMetrics:
    """The operator's metric families in a registry of their own, with a change flag."""

    def __init__(self, publish: Publish | None = None) -> None:
        """``publish``: where :meth:`flush` sends the text (None: nowhere, e.g. in tests)."""
        self.publish = publish
        self.registry = CollectorRegistry(auto_describe=False)
        """Counters and gauges that change often (watch events, applies, leadership)."""
        self.objects_registry = CollectorRegistry(auto_describe=False)
        """Families with a series per object; re-rendered only when they change."""
        self.last_apply = Gauge(
            "silex_config_last_apply_timestamp_seconds",
            "Unix time of the last routing table applied to the data plane.",
            registry=self.registry,
        )
        self.apply_duration = Histogram(
            "silex_config_apply_duration_seconds",
            "Time from a snapshot to its routing table serving (translate, encode, core apply).",
            buckets=APPLY_BUCKETS,
            registry=self.registry,
        )
        self.problems = Gauge(
            "silex_translate_problems",
            "Current problems (errors and warnings) by the kind of object they name.",
            ["kind"],
            registry=self.objects_registry,
        )
        self.watch_events = Counter(
            "silex_watch_events",
            "Watch events received from the Kubernetes API by kind and event type.",
            ["kind", "type"],
            registry=self.registry,
        )
        self.watch_restarts = Counter(
            "silex_watch_restarts",
            "Watches started again: timeout (the stream ended), gone (410, relist), error.",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "silex_leader",
            "1 while this replica holds the leader Lease (writes status and Events), else 0.",
            registry=self.registry,
        )
        self.certificate_expiry = Gauge(
            "silex_ssl_certificate_expiry_timestamp_seconds",
            "Unix time at which the served certificate of a Secret for a host expires.",
            ["secret", "host"],
            registry=self.objects_registry,
        )
        self._problem_kinds: set[str] = set()
        self._problem_counts: dict[str, int] = {}
        self._certificates: dict[tuple[str, str], float] = {}
        self._changed = True
        self._objects_text: bytes | None = None
        """The objects registry's text without ``# EOF``; None when it must be rendered."""

    @property
    def changed(self) -> bool:
        """True when something was recorded since the last :meth:`flush`."""
        return self._changed

    def render(self) -> bytes:
        """Both registries as one OpenMetrics text (ends with ``# EOF``)."""
        if self._objects_text is None:
            self._objects_text = _render(self.objects_registry).removesuffix(b"# EOF\n")
        return self._objects_text + _render(self.registry)

    def flush(self) -> bool:
        """Publish the text if anything changed since the last flush; True if published."""
        if not self._changed or self.publish is None:
            return False
        self._changed = False
        self.publish(self.render())
        return True

    # -- recording ----------------------------------------------------------------------------

    def applied(self, duration_s: float) -> None:
        """A routing table was swapped in ``duration_s`` after its snapshot was taken (now)."""
        self.apply_duration.observe(duration_s)
        self.last_apply.set(time.time())
        self._changed = True

    def set_problems(self, kinds: Iterable[str]) -> None:
        """The current problems, given as the kind of object each names (``""``: none)."""
        counts: dict[str, int] = {}
        for kind in kinds:
            label = kind or NO_KIND
            counts[label] = counts.get(label, 0) + 1
        # A kind whose problems are all fixed reads 0 rather than vanishing from the scrape.
        counts = {kind: counts.get(kind, 0) for kind in self._problem_kinds | counts.keys()}
        if counts == self._problem_counts:
            return
        for kind, count in counts.items():
            self.problems.labels(kind=kind).set(count)
        self._problem_kinds |= counts.keys()
        self._problem_counts = counts
        self._objects_text = None
        self._changed = True

    def watch_event(self, kind: str, event_type: str) -> None:
        """One watch event (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) for ``kind``; any other
        type the server sends counts as ``other`` (bounded series)."""
        label = event_type if event_type in WATCH_EVENT_TYPES else "other"
        self.watch_events.labels(kind=kind, type=label).inc()
        self._changed = True

    def watch_restart(self, kind: str, reason: str) -> None:
        """The watch of ``kind`` starts again: ``timeout``, ``gone`` or ``error``."""
        self.watch_restarts.labels(kind=kind, reason=reason).inc()
        self._changed = True

    def set_leader(self, leader: bool) -> None:
        """Leadership changed."""
        self.leader.set(1 if leader else 0)
        self._changed = True

    def set_certificate_expiry(self, expiry: Mapping[tuple[str, str], float]) -> None:
        """The served certificates: ``(secret, host) -> notAfter`` (Unix seconds). Pairs no
        longer served are removed."""
        if expiry == self._certificates:
            return
        for secret, host in self._certificates.keys() - expiry.keys():
            self.certificate_expiry.remove(secret, host)
        for (secret, host), not_after in expiry.items():
            self.certificate_expiry.labels(secret=secret, host=host).set(not_after)
        self._certificates = dict(expiry)
        self._objects_text = None
        self._changed = True


def _render(registry: CollectorRegistry) -> bytes:
    text: bytes = generate_latest(registry)  # type: ignore[no-untyped-call]
    return text


async def push_loop(metrics: OperatorMetrics, interval_s: float = DEFAULT_PUSH_INTERVAL_S) -> None:
    """Flush ``metrics`` every ``interval_s`` until cancelled (renders only after changes)."""
    while True:
        metrics.flush()
        await anyio.sleep(interval_s)


__all__ = [
    "DEFAULT_CERTIFICATE_HOST",
    "DEFAULT_PUSH_INTERVAL_S",
    "NO_KIND",
    "OperatorMetrics",
    "Publish",
    "push_loop",
]
