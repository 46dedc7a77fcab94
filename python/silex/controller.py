"""The reconcile loop: snapshots in, routing tables out to the core.

For every snapshot a source produces (debounced: a burst of changes gives one rebuild), the
:class:`Controller` translates it, logs each distinct Problem once (again only after it went
away and came back), and applies the table unless its JSON is byte-identical to the last one
applied. When the core rejects a table (``ConfigError``), the error is logged and the last good
table keeps serving. Used by ``silex serve`` (files) and, later, by cluster mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import anyio

from silex.metrics import DEFAULT_CERTIFICATE_HOST, OperatorMetrics
from silex.problems import Problem, unique
from silex.store import Snapshot
from silex.table import RoutingTable, to_json
from silex.translate import TranslateOptions, translate

ApplyTable = Callable[[RoutingTable], int]
"""Swaps a table into the core; returns its generation; raises ConfigError if rejected."""

Observer = Callable[[Snapshot, "ReconcileResult"], None]
"""Called after every reconcile with its snapshot and result (the status page; in cluster mode
also Ingress status and Events)."""

CertificateExpiry = Callable[[bytes], float]
"""``cert_pem -> notAfter`` (Unix seconds); raises ValueError for unreadable material."""

SourceState = tuple[Snapshot, list[Problem]]
"""What a source yields: a ready snapshot and the Problems found producing it."""

DEFAULT_DEBOUNCE_S = 0.1

log = logging.getLogger("silex")


@dataclass(frozen=True)
class ReconcileResult:
    """The outcome of one reconcile."""

    table: RoutingTable
    problems: list[Problem]
    applied: bool
    """True if the table was swapped in now (False if unchanged or rejected)."""
    generation: int | None = None
    """The core's generation number for the applied table."""
    rejection: str | None = None
    """The core's error message, when it rejected the table."""


def log_problem(problem: Problem) -> None:
    """One log line for one Problem (error or warning level); structured logs get the object,
    field and file as fields of their own."""
    fields: dict[str, str] = {}
    if problem.kind:
        fields["object"] = problem.object_ref
    if problem.field:
        fields["field"] = problem.field
    if problem.source is not None:
        fields["file"] = problem.source
    log.log(logging.ERROR if problem.is_error else logging.WARNING, "%s", problem, extra=fields)


def table_summary(table: RoutingTable) -> str:
    """``"2 hosts, 5 routes, 3 backends"``."""
    routes = sum(len(host.routes) for host in table.hosts)
    return f"{len(table.hosts)} hosts, {routes} routes, {len(table.backends)} backends"


class RebuildBudget:
    """A token bucket for table rebuilds, like client-go's ``BucketRateLimiter``: it holds
    :data:`BURST` rebuilds and refills one per ``period_s``. A lone change (or an add followed
    by a remove) is rebuilt at once; a longer burst settles at one rebuild per period, each
    taking everything that arrived meanwhile. ``period_s`` 0 never waits."""

    BURST = 2.0

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._tokens = self.BURST
        self._at = -float("inf")

    def _refill(self, now: float) -> None:
        if self.period_s > 0 and now > self._at:
            gained = (now - self._at) / self.period_s
            self._tokens = min(self.BURST, self._tokens + gained)
        self._at = max(self._at, now)

    def wait_s(self, now: float) -> float:
        """Seconds until a rebuild is allowed (0: now)."""
        self._refill(now)
        if self.period_s <= 0 or self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) * self.period_s

    def spend(self, now: float) -> None:
        """Record a rebuild (always allowed: a direct ``reconcile`` is never refused)."""
        self._refill(now)
        self._tokens = max(0.0, self._tokens - 1.0) if self.period_s > 0 else self.BURST


class Controller:
    """Translate -> report -> apply, keeping the last applied table's JSON."""

    def __init__(
        self,
        apply: ApplyTable,
        options: TranslateOptions | None = None,
        *,
        config_errors: tuple[type[Exception], ...] = (ValueError,),
        debounce_s: float = DEFAULT_DEBOUNCE_S,
        metrics: OperatorMetrics | None = None,
        certificate_expiry: CertificateExpiry | None = None,
    ) -> None:
        """``config_errors``: what ``apply`` raises for a rejected table (the core's
        ``ConfigError`` is a ``ValueError``). ``metrics`` records applies and problems (flushed
        after every reconcile); ``certificate_expiry`` reads the certificates' notAfter for it
        (None: not exported)."""
        self._apply = apply
        self._observers: list[Observer] = []
        self._budget = RebuildBudget(debounce_s)
        self.metrics = metrics or OperatorMetrics()
        self._certificate_expiry = certificate_expiry
        self._not_after: dict[str, float] = {}
        """notAfter by certificate PEM: only new certificates are parsed."""
        self.options = options or TranslateOptions()
        self._config_errors = config_errors
        self.debounce_s = debounce_s
        self._reported: set[Problem] = set()
        self.last_applied_json: bytes | None = None
        self.generation: int | None = None

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` after every reconcile from now on."""
        self._observers.append(observer)

    def report(self, problems: Sequence[Problem]) -> list[Problem]:
        """Log the problems not reported last time; returns those newly logged."""
        new = [problem for problem in unique(list(problems)) if problem not in self._reported]
        for problem in new:
            log_problem(problem)
        self._reported = set(problems)
        return new

    def reconcile(
        self, snapshot: Snapshot, source_problems: Sequence[Problem] = ()
    ) -> ReconcileResult:
        """Translate ``snapshot``, log new Problems, and apply the table if it changed."""
        self._budget.spend(time.monotonic())
        result = self._reconcile(snapshot, source_problems)
        for observer in self._observers:
            observer(snapshot, result)
        self.metrics.flush()
        return result

    def _reconcile(self, snapshot: Snapshot, source_problems: Sequence[Problem]) -> ReconcileResult:
        started = time.perf_counter()
        table, translate_problems = translate(snapshot, self.options)
        attributed = [
            problem.with_source(snapshot.source_of(problem.kind, problem.namespace, problem.name))
            for problem in translate_problems
        ]
        problems = unique([*source_problems, *attributed])
        self.report(problems)
        self.metrics.set_problems(problem.kind for problem in problems)
        table_json = to_json(table)
        if table_json == self.last_applied_json:
            log.debug("routing table unchanged; not applied")
            return ReconcileResult(table, problems, applied=False, generation=self.generation)
        try:
            generation = self._apply(table)
        except self._config_errors as exc:
            log.error(
                "error: the core rejected the routing table: %s; the last good table keeps serving",
                exc,
            )
            return ReconcileResult(table, problems, applied=False, rejection=str(exc))
        self.last_applied_json = table_json
        self.generation = generation
        self.metrics.applied(time.perf_counter() - started)
        if self._certificate_expiry is not None:
            self.metrics.set_certificate_expiry(self._expiry_of(table, self._certificate_expiry))
        log.info("applied routing table generation %d (%s)", generation, table_summary(table))
        return ReconcileResult(table, problems, applied=True, generation=generation)

    def _expiry_of(
        self, table: RoutingTable, read: CertificateExpiry
    ) -> dict[tuple[str, str], float]:
        """``(secret, host) -> notAfter`` of every certificate the table serves."""
        expiry: dict[tuple[str, str], float] = {}
        known: dict[str, float] = {}
        for cert_id, certificate in table.certificates.items():
            not_after = self._not_after.get(certificate.cert_pem)
            if not_after is None:
                try:
                    not_after = read(certificate.cert_pem.encode())
                except ValueError as exc:  # the core accepted it, so this should not happen
                    log.warning(
                        "cannot read the expiry of Secret %s: %s",
                        cert_id,
                        exc,
                        extra={"object": f"Secret {cert_id}"},
                    )
                    continue
            known[certificate.cert_pem] = not_after
            hosts = list(certificate.hosts)
            if cert_id == table.default_certificate:
                hosts.append(DEFAULT_CERTIFICATE_HOST)
            for host in hosts:
                expiry[(cert_id, host)] = not_after
        self._not_after = known  # forget certificates no longer served
        return expiry

    async def run(self, states: AsyncIterator[SourceState]) -> None:
        """Reconcile each state from ``states``, rate-limited by :class:`RebuildBudget`.

        A change after a quiet moment is reconciled at once (served in milliseconds, not after
        a fixed delay); in a burst, the states arriving while the budget is spent are coalesced
        into one rebuild when it refills. Returns when ``states`` is exhausted (after
        reconciling the last state).
        """
        latest: SourceState | None = None
        finished = False
        wake = anyio.Event()

        async def pump() -> None:
            nonlocal latest, finished
            async for state in states:
                latest = state
                wake.set()
            finished = True
            wake.set()

        async with anyio.create_task_group() as group:
            group.start_soon(pump)
            while True:
                await wake.wait()
                wake = anyio.Event()
                hold = self._budget.wait_s(time.monotonic())
                if latest is not None and not finished and hold > 0:
                    await anyio.sleep(hold)
                state, latest = latest, None
                if state is not None:
                    self.reconcile(*state)
                if finished and latest is None:
                    break
