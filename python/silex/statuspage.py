"""The operator's part of the admin status page (``GET /`` and ``/api/status``).

The core renders the page from its own live state (routes, endpoints and their health,
certificates) and from what the operator last pushed here: where the objects come from, when
the last reconcile ran, whether the core rejected a table, and the problems found.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from silex.controller import ReconcileResult
from silex.problems import Problem
from silex.store import Snapshot

MAX_PROBLEMS = 200
"""Problems shown on the page (errors first); the log has them all."""


class ProblemView(msgspec.Struct, frozen=True):
    """One problem as the page shows it (mirrors the core's ``ProblemView``)."""

    severity: str
    object: str
    field: str
    message: str
    source: str | None = None


class OperatorStatus(msgspec.Struct, frozen=True):
    """Mirrors the core's ``OperatorStatus`` (unknown fields are rejected there)."""

    source: str
    reconciled_at: float | None = None
    rejection: str | None = None
    problems: list[ProblemView] = msgspec.field(default_factory=list)


def operator_status(source: str, result: ReconcileResult, now: float) -> OperatorStatus:
    """The page's view of one reconcile."""
    ordered = sorted(result.problems, key=lambda problem: not problem.is_error)
    return OperatorStatus(
        source=source,
        reconciled_at=now,
        rejection=result.rejection,
        problems=[_view(problem) for problem in ordered[:MAX_PROBLEMS]],
    )


def _view(problem: Problem) -> ProblemView:
    return ProblemView(
        severity=problem.severity,
        object=problem.object_ref,
        field=problem.field,
        message=problem.message,
        source=problem.source,
    )


class StatusPublisher:
    """A controller observer pushing each reconcile's view to the core."""

    def __init__(self, publish: Callable[[bytes], None], source: str) -> None:
        self._publish = publish
        self.source = source

    def on_reconciled(self, _snapshot: Snapshot, result: ReconcileResult) -> None:
        """Controller hook."""
        self._publish(msgspec.json.encode(operator_status(self.source, result, time.time())))
