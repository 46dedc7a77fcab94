"""Controller: apply only on change, problems logged once, core rejections survived."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio
import pytest
from builders import endpoint, endpoint_slice, ingress, path, rule, service, snapshot

from silex import problems
from silex.controller import Controller, RebuildBudget, SourceState
from silex.store import Snapshot
from silex.table import RoutingTable

GOOD = snapshot(
    service("echo"),
    endpoint_slice("echo", endpoint("10.0.0.1")),
    ingress("i", rule("h.com", path("/", "echo"))),
)
WITH_PROBLEM = snapshot(ingress("i", rule("h.com", path("/", "missing"))))


class FakeCore:
    """Records applied tables; can be told to reject the next one (like ConfigError)."""

    def __init__(self) -> None:
        self.applied: list[RoutingTable] = []
        self.reject = False

    def apply(self, table: RoutingTable) -> int:
        if self.reject:
            raise ValueError("$.hosts[0].name: bad")
        self.applied.append(table)
        return len(self.applied)


def test_identical_table_is_not_reapplied() -> None:
    core = FakeCore()
    controller = Controller(core.apply)
    assert controller.reconcile(GOOD).applied
    result = controller.reconcile(
        snapshot(*GOOD.ingresses.values(), *GOOD.services.values(), *GOOD.endpoint_slices.values())
    )
    assert not result.applied
    assert len(core.applied) == 1
    assert controller.reconcile(WITH_PROBLEM).applied
    assert len(core.applied) == 2


def test_problems_logged_once_per_distinct_problem(caplog: pytest.LogCaptureFixture) -> None:
    controller = Controller(FakeCore().apply)
    with caplog.at_level(logging.WARNING, logger="silex"):
        controller.reconcile(WITH_PROBLEM)
        controller.reconcile(WITH_PROBLEM)
    assert sum("missing" in record.message for record in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="silex"):
        controller.reconcile(GOOD)  # the problem goes away...
        controller.reconcile(WITH_PROBLEM)  # ...and comes back: logged again
    assert sum("missing" in record.message for record in caplog.records) == 1


def test_rejected_table_keeps_last_good(caplog: pytest.LogCaptureFixture) -> None:
    core = FakeCore()
    controller = Controller(core.apply)
    controller.reconcile(GOOD)
    good_json = controller.last_applied_json
    core.reject = True
    with caplog.at_level(logging.ERROR, logger="silex"):
        result = controller.reconcile(WITH_PROBLEM)
    assert not result.applied
    assert result.rejection == "$.hosts[0].name: bad"
    assert controller.last_applied_json == good_json
    assert "last good table keeps serving" in caplog.text
    core.reject = False
    assert controller.reconcile(WITH_PROBLEM).applied  # retried once the core accepts it


def test_source_problems_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    controller = Controller(FakeCore().apply)
    with caplog.at_level(logging.ERROR, logger="silex"):
        result = controller.reconcile(GOOD, [problems.error("invalid YAML").with_source("x.yaml")])
    assert "error: invalid YAML (file: x.yaml)" in caplog.text
    assert result.problems[0].source == "x.yaml"


def test_run_coalesces_bursts_and_applies_the_latest() -> None:
    core = FakeCore()
    controller = Controller(core.apply, debounce_s=0.05)

    async def states() -> AsyncIterator[SourceState]:
        yield (WITH_PROBLEM, [])
        yield (Snapshot(), [])
        yield (GOOD, [])

    anyio.run(controller.run, states())
    assert core.applied[-1].hosts[0].routes[0].backend == "default/echo:80"
    assert len(core.applied) <= 2


def test_run_applies_a_lone_change_at_once_and_holds_a_burst() -> None:
    """A change after a quiet period is not delayed by the debounce time; a change right
    after a reconcile waits for the rest of it."""
    core = FakeCore()
    controller = Controller(core.apply, debounce_s=60.0)

    async def lone_change() -> None:
        async def one_change() -> AsyncIterator[SourceState]:
            yield (GOOD, [])

        # Holding the change for the debounce time would take 60 s.
        with anyio.fail_after(30.0):
            await controller.run(one_change())

    anyio.run(lone_change)
    assert len(core.applied) == 1

    async def burst() -> AsyncIterator[SourceState]:
        yield (WITH_PROBLEM, [])
        await anyio.sleep(0.01)
        yield (GOOD, [])

    held = Controller(FakeCore().apply, debounce_s=0.3)
    held.reconcile(Snapshot())  # spends the burst budget
    held.reconcile(Snapshot())
    reconciled: list[RoutingTable] = []
    held.observe(lambda _snapshot, result: reconciled.append(result.table))
    anyio.run(held.run, burst())
    # Both states arrived while the budget was spent: one rebuild, of the latest.
    assert len(reconciled) == 1
    assert reconciled[0].hosts[0].routes[0].backend == "default/echo:80"


def test_rebuild_budget_allows_a_burst_of_two_then_one_per_period() -> None:
    budget = RebuildBudget(0.1)
    assert budget.wait_s(100.0) == 0.0
    budget.spend(100.0)
    assert budget.wait_s(100.0) == 0.0  # an add and its remove: both at once
    budget.spend(100.0)
    assert budget.wait_s(100.0) == pytest.approx(0.1)
    assert budget.wait_s(100.04) == pytest.approx(0.06)
    budget.spend(100.1)
    assert budget.wait_s(100.1) == pytest.approx(0.1)  # a long burst: one per period
    assert budget.wait_s(100.5) == 0.0  # quiet again: refilled (to at most two)
    budget.spend(100.5)
    budget.spend(100.5)
    assert budget.wait_s(100.5) == pytest.approx(0.1)


def test_rebuild_budget_of_zero_never_waits() -> None:
    budget = RebuildBudget(0.0)
    for _ in range(5):
        budget.spend(1.0)
        assert budget.wait_s(1.0) == 0.0
