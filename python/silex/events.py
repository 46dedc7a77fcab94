"""Problems -> Kubernetes Warning Events on the objects they name (leader only).

- **When.** :meth:`EventRecorder.observe` gets every Problem after each reconcile; a Problem
  that was not present last time (or appears while we just became leader) is queued once.
  Problems on no object (a manifest file) are only logged by the controller.
- **De-duplication.** The same object + reason + message seen again within ``window_s`` does
  not create a new Event: the existing one's ``series`` (events.k8s.io) or ``count``
  (core/v1) is bumped.
- **Rate limit.** A token bucket (``rate`` per second, ``burst``) paces the writes; the queue is
  bounded and what does not fit is dropped (and counted), so a storm of Problems never floods
  the API server.
- **API.** events.k8s.io/v1; if the server does not serve it (404), core/v1 Events.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import anyio

from silex.leader import micro_time
from silex.problems import Problem
from silex.sources.kube import RESOURCES, KubeClient, KubeError
from silex.store import Snapshot

log = logging.getLogger("silex")

REASON_ERROR: Final = "InvalidConfiguration"
REASON_WARNING: Final = "ConfigurationWarning"
MAX_NOTE: Final = 1024
CLUSTER_EVENT_NAMESPACE: Final = "default"


def reason_of(problem: Problem) -> str:
    """The Event reason for a Problem."""
    return REASON_ERROR if problem.is_error else REASON_WARNING


def note_of(problem: Problem) -> str:
    """The Event note/message: ``field: message``, at most 1024 characters."""
    text = f"{problem.field}: {problem.message}" if problem.field else problem.message
    return text if len(text) <= MAX_NOTE else text[: MAX_NOTE - 3] + "..."


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self) -> bool:
        """Take a token if one is there."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a token is there."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self.rate)


@dataclass(frozen=True)
class _Regarding:
    kind: str
    api_version: str
    namespace: str
    name: str
    uid: str
    resource_version: str

    def as_dict(self) -> dict[str, str]:
        ref = {"kind": self.kind, "apiVersion": self.api_version, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        if self.resource_version:
            ref["resourceVersion"] = self.resource_version
        return ref


@dataclass
class _Written:
    name: str
    namespace: str
    count: int
    last_seen: float
    api: str


_DedupKey = tuple[str, str, str, str, str]


def _objects_of(snapshot: Snapshot, kind: str) -> Mapping[tuple[str, str], Any]:
    return {
        "Ingress": snapshot.ingresses,
        "IngressClass": snapshot.ingress_classes,
        "Service": snapshot.services,
        "EndpointSlice": snapshot.endpoint_slices,
        "Secret": snapshot.secrets,
    }.get(kind, {})


class EventRecorder:
    """Turns Problems into Events; see the module docstring."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        controller_name: str,
        instance: str,
        is_leader: Callable[[], bool],
        rate: float = 10.0,
        burst: int = 50,
        window_s: float = 600.0,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.controller_name = controller_name
        self.instance = instance
        self.is_leader = is_leader
        self.window_s = window_s
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock)
        self._queue: collections.deque[tuple[Problem, _Regarding]] = collections.deque()
        self._queue_size = queue_size
        self._wake = anyio.Event()
        self._active: set[Problem] = set()
        self._written: dict[_DedupKey, _Written] = {}
        self._api = "events.k8s.io/v1"
        self.created = 0
        self.updated = 0
        self.dropped = 0

    def observe(self, problems: Sequence[Problem], snapshot: Snapshot) -> None:
        """Queue an Event for each Problem that newly appeared (leader only)."""
        if not self.is_leader():
            self._active = set()  # on becoming leader, everything current is reported
            return
        current = {problem for problem in problems if problem.kind and problem.name}
        new = [problem for problem in problems if problem in current - self._active]
        self._active = current
        for problem in dict.fromkeys(new):
            regarding = self._regarding(problem, snapshot)
            if len(self._queue) >= self._queue_size:
                self.dropped += 1
                continue
            self._queue.append((problem, regarding))
        if new:
            self._wake.set()

    def _regarding(self, problem: Problem, snapshot: Snapshot) -> _Regarding:
        obj = _objects_of(snapshot, problem.kind).get((problem.namespace, problem.name))
        resource = RESOURCES.get(problem.kind)  # type: ignore[call-overload]
        api_version = resource.group_version if resource is not None else "v1"
        uid = obj.metadata.uid if obj is not None else ""
        rv = obj.metadata.resource_version if obj is not None else ""
        return _Regarding(problem.kind, api_version, problem.namespace, problem.name, uid, rv)

    async def run(self) -> None:
        """Write queued Events at the bucket's pace until cancelled."""
        while True:  # each round waits for work or for a token
            if not self._queue:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            if not self._bucket.try_take():
                await anyio.sleep(self._bucket.wait_s())
                continue
            problem, regarding = self._queue.popleft()
            if not self.is_leader():
                continue
            await self._write(problem, regarding)

    async def _write(self, problem: Problem, regarding: _Regarding) -> None:
        reason, note = reason_of(problem), note_of(problem)
        key = (problem.kind, problem.namespace, problem.name, reason, note)
        now = self._clock()
        previous = self._written.get(key)
        try:
            if previous is not None and now - previous.last_seen < self.window_s:
                previous.count += 1
                previous.last_seen = now
                await self._bump(previous)
                self.updated += 1
                return
            written = await self._create(regarding, reason, note)
        except KubeError as exc:
            log.warning(
                "cannot write a Warning Event on %s: %s",
                problem.object_ref,
                exc,
                extra={"object": problem.object_ref},
            )
            return
        self._written[key] = written
        self.created += 1
        if len(self._written) > 10_000:  # forget the oldest
            for stale in sorted(self._written, key=lambda k: self._written[k].last_seen)[:1000]:
                del self._written[stale]

    async def _create(self, regarding: _Regarding, reason: str, note: str) -> _Written:
        namespace = regarding.namespace or CLUSTER_EVENT_NAMESPACE
        name = f"{regarding.name}.{secrets.token_hex(8)}"
        stamp = micro_time()
        if self._api == "events.k8s.io/v1":
            body: dict[str, Any] = {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "eventTime": stamp,
                "reportingController": self.controller_name,
                "reportingInstance": self.instance,
                "action": "Translate",
                "reason": reason,
                "type": "Warning",
                "note": note,
                "regarding": regarding.as_dict(),
            }
            try:
                await self.kube.request(
                    "POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", body=body
                )
                return _Written(name, namespace, 1, self._clock(), self._api)
            except KubeError as exc:
                if not exc.not_found:
                    raise
                log.info("events.k8s.io/v1 is not served; writing core/v1 Events")
                self._api = "v1"
        seconds = stamp[:19] + "Z"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": regarding.as_dict(),
            "reason": reason,
            "message": note,
            "type": "Warning",
            "count": 1,
            "firstTimestamp": seconds,
            "lastTimestamp": seconds,
            "source": {"component": self.controller_name},
            "reportingComponent": self.controller_name,
            "reportingInstance": self.instance,
        }
        await self.kube.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        return _Written(name, namespace, 1, self._clock(), "v1")

    async def _bump(self, written: _Written) -> None:
        stamp = micro_time()
        if written.api == "events.k8s.io/v1":
            path = f"/apis/events.k8s.io/v1/namespaces/{written.namespace}/events/{written.name}"
            body: dict[str, Any] = {"series": {"count": written.count, "lastObservedTime": stamp}}
        else:
            path = f"/api/v1/namespaces/{written.namespace}/events/{written.name}"
            body = {"count": written.count, "lastTimestamp": stamp[:19] + "Z"}
        await self.kube.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )
