"""Cluster mode (``silex controller``): the Kubernetes API feeds the same Controller as file mode.

:func:`run_cluster` wires the pieces, all on one event loop:

- :class:`~silex.sources.kube.KubeSource` watches every kind into a Store; the first table is
  applied only once every kind is listed, then every change reaches
  :meth:`Controller.run <silex.controller.Controller.run>` (debounced; unchanged tables are not
  re-applied);
- :class:`~silex.leader.LeaderElector` holds the Lease;
- after each reconcile, on leadership changes and every ``resync_s``, the leader brings Ingress
  status in line (:class:`~silex.status.StatusWriter`) and turns new Problems into Warning
  Events (:class:`~silex.events.EventRecorder`). Followers serve traffic exactly the same.

While the API server is unreachable, nothing changes in the data plane: the last table keeps
serving, the watchers back off and reconnect, and the store converges when it is back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
import anyio.abc

from silex.controller import Controller, ReconcileResult
from silex.events import EventRecorder
from silex.leader import ElectionSettings, LeaderElector
from silex.problems import Problem
from silex.sources.kube import KubeClient, KubeError, KubeSource, WatchSettings
from silex.status import StatusSource, StatusWriter
from silex.store import Snapshot

log = logging.getLogger("silex")


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """Everything cluster mode needs besides the Controller."""

    kubeconfig: str | None = None
    watch: WatchSettings = field(default_factory=WatchSettings)
    election: ElectionSettings = field(default_factory=ElectionSettings)
    status: StatusSource | None = None
    """Where status addresses come from; None: status is not written."""
    resync_s: float = 30.0
    """Status and Events are re-checked at least this often."""
    event_rate: float = 10.0
    event_burst: int = 50


class ClusterFailed(Exception):
    """Cluster mode cannot start (e.g. no usable kubeconfig)."""


class Reporter:
    """Status and Events after each reconcile and on leadership changes (leader only)."""

    def __init__(
        self,
        kube: KubeClient,
        controller: Controller,
        settings: ClusterSettings,
        elector: LeaderElector,
    ) -> None:
        self.elector = elector
        self.resync_s = settings.resync_s
        self.status = (
            StatusWriter(kube, controller.options, settings.status, lambda: elector.is_leader)
            if settings.status is not None
            else None
        )
        self.events = EventRecorder(
            kube,
            controller_name=controller.options.controller_name,
            instance=elector.identity,
            is_leader=lambda: elector.is_leader,
            rate=settings.event_rate,
            burst=settings.event_burst,
        )
        self._last: tuple[Snapshot, list[Problem]] | None = None
        self._wake = anyio.Event()

    def on_reconciled(self, snapshot: Snapshot, result: ReconcileResult) -> None:
        """Controller hook: remember the latest state and wake the loop."""
        self._last = (snapshot, result.problems)
        self._wake.set()

    def on_leader_change(self, _leader: bool) -> None:
        """Elector hook: re-check everything (new leader) or stop (lost)."""
        self._wake.set()

    async def run(self) -> None:
        """React to wake-ups (or every ``resync_s``) until cancelled."""
        async with anyio.create_task_group() as group:
            group.start_soon(self.events.run)
            while True:  # one bounded wait per round
                with anyio.move_on_after(self.resync_s):
                    await self._wake.wait()
                self._wake = anyio.Event()
                if self._last is None:
                    continue
                snapshot, found = self._last
                self.events.observe(found, snapshot)
                if self.status is not None:
                    await self.status.sync(snapshot)


async def run_cluster(
    controller: Controller,
    settings: ClusterSettings,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watch, apply the first table once every kind is listed (then ``task_status.started()``),
    and keep reconciling until cancelled. Raises :class:`ClusterFailed` if it cannot start."""
    try:
        kube = await KubeClient.connect(settings.kubeconfig)
    except KubeError as exc:
        raise ClusterFailed(exc.message) from exc
    try:
        source = KubeSource(kube, settings.watch, metrics=controller.metrics)
        elector = LeaderElector(kube, settings.election, metrics=controller.metrics)
        reporter = Reporter(kube, controller, settings, elector)
        elector.on_change = reporter.on_leader_change
        controller.observe(reporter.on_reconciled)
        scope = ", ".join(settings.watch.namespaces) or "all namespaces"
        log.info("watching the Kubernetes API (%s) at %s", scope, kube.api.configuration.host)
        async with anyio.create_task_group() as group:
            group.start_soon(source.run)
            group.start_soon(elector.run)
            group.start_soon(reporter.run)
            await source.wait_ready()
            controller.reconcile(*source.state())
            task_status.started()
            await controller.run(source.states())
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            await kube.close()
