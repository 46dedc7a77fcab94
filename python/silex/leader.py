"""Leader election through a coordination.k8s.io/v1 Lease (the client-go algorithm, simplified).

Every replica serves traffic; only the leader writes Ingress status and Events. The
:class:`LeaderElector` loop, every ``retry_period_s``:

- reads the Lease (creates it, holding it, when it does not exist);
- if another identity holds it and it has not expired — its record (holder, renewTime) has not
  changed for ``lease_duration_s`` by *our* monotonic clock, so clocks need not agree — we are
  a follower;
- otherwise writes itself as holder with a fresh ``renewTime``, using the Lease's
  resourceVersion (optimistic concurrency: a 409 means someone else wrote first; re-read next
  round).

Leadership is lost at once when the Lease shows another holder, and when renewing has failed
for ``renew_deadline_s`` (shorter than the lease duration, so a partitioned leader stops writing
before anyone else may start). On a clean stop the Lease is released (empty holder) so another
replica takes over without waiting for expiry.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import anyio

from silex.metrics import OperatorMetrics
from silex.sources.kube import KubeClient, KubeError
from silex.translate.options import DEFAULT_ELECTION_ID

log = logging.getLogger("silex")

LEASE_API: Final = "/apis/coordination.k8s.io/v1"


def default_identity() -> str:
    """``$POD_NAME``, else ``<hostname>_<pid>``."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    """``$POD_NAMESPACE``, else ``default``."""
    return os.environ.get("POD_NAMESPACE") or "default"


def micro_time(when: datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds, UTC)."""
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, kw_only=True)
class ElectionSettings:
    """Which Lease, who we are, and the timing (client-go's defaults)."""

    name: str = DEFAULT_ELECTION_ID
    namespace: str = "default"
    identity: str = ""
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    release_on_stop: bool = True


class LeaderElector:
    """Runs the election loop; :attr:`is_leader` is what writers check before each write."""

    def __init__(
        self,
        kube: KubeClient,
        settings: ElectionSettings,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.metrics = metrics or OperatorMetrics()
        """Exports :attr:`is_leader` as ``silex_leader``."""
        self.settings = settings
        self.identity = settings.identity or default_identity()
        self.on_change = on_change
        """Called with the new state whenever leadership changes."""
        self._clock = clock
        self._leader = False
        self._observed: tuple[str, str] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self.transitions = 0
        """How often this elector became leader."""

    @property
    def is_leader(self) -> bool:
        """True while we hold the Lease (and have renewed it within the renew deadline)."""
        return self._leader

    @property
    def _path(self) -> str:
        return f"{LEASE_API}/namespaces/{self.settings.namespace}/leases"

    @property
    def _lease_ref(self) -> str:
        return f"Lease {self.settings.namespace}/{self.settings.name}"

    def _set_leader(self, leader: bool) -> None:
        if leader == self._leader:
            return
        self._leader = leader
        self.metrics.set_leader(leader)
        lease = f"{self.settings.namespace}/{self.settings.name}"
        about = {"object": self._lease_ref}
        if leader:
            self.transitions += 1
            log.info(
                "leader election: %s is now the leader (Lease %s)",
                self.identity,
                lease,
                extra=about,
            )
        else:
            log.info(
                "leader election: %s is no longer the leader (Lease %s)",
                self.identity,
                lease,
                extra=about,
            )
        if self.on_change is not None:
            self.on_change(leader)

    async def run(self) -> None:
        """Elect until cancelled; releases the Lease on the way out if we hold it."""
        try:
            while True:  # one bounded attempt (request timeouts) and one sleep per round
                acquired = await self._attempt()
                now = self._clock()
                if acquired:
                    self._last_renew = now
                    self._set_leader(True)
                elif self._leader and now - self._last_renew >= self.settings.renew_deadline_s:
                    log.warning(
                        "leader election: could not renew the Lease in time",
                        extra={"object": self._lease_ref},
                    )
                    self._set_leader(False)
                await anyio.sleep(self.settings.retry_period_s)
        finally:
            was_leader = self._leader
            self._set_leader(False)
            if was_leader and self.settings.release_on_stop:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                    await self._release()

    def _spec(self, previous: dict[str, Any], now: str) -> dict[str, Any]:
        holder = previous.get("holderIdentity") or ""
        transitions = int(previous.get("leaseTransitions") or 0)
        same = holder == self.identity
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration_s)),
            "acquireTime": previous.get("acquireTime") if same else now,
            "renewTime": now,
            "leaseTransitions": transitions if same or not holder else transitions + 1,
        }

    async def _attempt(self) -> bool:
        """One round: True if we hold the Lease afterwards."""
        name = self.settings.name
        try:
            lease = await self.kube.json("GET", f"{self._path}/{name}")
        except KubeError as exc:
            if not exc.not_found:
                log.debug(
                    "leader election: cannot read the Lease: %s",
                    exc,
                    extra={"object": self._lease_ref},
                )
                return False
            return await self._create()
        spec: dict[str, Any] = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        now = self._clock()
        if record != self._observed:
            self._observed = record
            self._observed_at = now
        duration = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration_s)
        if holder and holder != self.identity and now < self._observed_at + duration:
            if self._leader:
                log.warning(
                    "leader election: the Lease is held by %s",
                    holder,
                    extra={"object": self._lease_ref},
                )
                self._set_leader(False)
            return False
        stamp = micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {**(lease.get("metadata") or {}), "name": name},
            "spec": self._spec(spec, stamp),
        }
        try:
            await self.kube.json("PUT", f"{self._path}/{name}", body=body)
        except KubeError as exc:
            if not exc.conflict:
                log.debug(
                    "leader election: cannot update the Lease: %s",
                    exc,
                    extra={"object": self._lease_ref},
                )
            return False
        self._observed = (self.identity, stamp)
        self._observed_at = self._clock()
        return True

    async def _create(self) -> bool:
        stamp = micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
            "spec": self._spec({}, stamp),
        }
        try:
            await self.kube.json("POST", self._path, body=body)
        except KubeError as exc:
            if not exc.conflict:
                log.debug(
                    "leader election: cannot create the Lease: %s",
                    exc,
                    extra={"object": self._lease_ref},
                )
            return False
        self._observed = (self.identity, stamp)
        self._observed_at = self._clock()
        return True

    async def _release(self) -> None:
        name = self.settings.name
        try:
            lease = await self.kube.json("GET", f"{self._path}/{name}")
            spec: dict[str, Any] = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            stamp = micro_time()
            released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1}
            released["renewTime"] = stamp
            body = {**lease, "spec": released}
            await self.kube.json("PUT", f"{self._path}/{name}", body=body)
            log.info("leader election: released the Lease", extra={"object": self._lease_ref})
        except KubeError as exc:
            log.debug(
                "leader election: cannot release the Lease: %s",
                exc,
                extra={"object": self._lease_ref},
            )
