"""Resilience of ``silex controller`` against a misbehaving Kubernetes API server.

Each test runs its own fake API server (tests/fake_apiserver) and controller process(es), with
real echo backends and real requests through the proxy:

- the API server goes away for a while: traffic keeps flowing on the last table, and the
  controller reconnects and converges;
- a 410 Gone relist ends with exactly the server's state (an Ingress deleted while the
  controller could not watch, and whose DELETED event was compacted away, stops being served);
- a malformed Ingress gets a Warning Event (once, not one per reconcile) while its neighbours
  serve;
- two controllers share one Lease: exactly one writes status; SIGKILL it and the other takes
  over.

Every wait is bounded; nothing asserts on timing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from silex_test_support import ServeProcess, wait_for

from e2e.kube_harness import (
    CONVERGE_S,
    INGRESS_API,
    Backends,
    Barrier,
    Cluster,
    host_ingress_spec,
    ingress_obj,
    log_tail,
    proxy_client,
    request,
    running_cluster,
    start_controller,
    stop_controller,
    wait_controller_ready,
    wait_served,
    wait_status_code,
)

OUTAGE_S = 3.0
RECOVERY_S = 40.0
"""Reconnecting waits out the controller's backoff (capped, with jitter) after an outage."""
LEASE_API = "coordination.k8s.io/v1"


@dataclass
class Env:
    """One fake cluster, its echo backends, a barrier and the controllers started on it."""

    cluster: Cluster
    backends: Backends
    barrier: Barrier
    tmp_path: Path
    processes: list[ServeProcess] = field(default_factory=list)

    def start(self, *, pod_name: str | None = None, token: str | None = None) -> ServeProcess:
        kubeconfig = self.cluster.kubeconfig
        if token is not None:
            kubeconfig = self.cluster.kubeconfig_with_token(token, self.tmp_path)
        process = start_controller(kubeconfig, election_id="silex-e2e", pod_name=pod_name)
        self.processes.append(process)
        wait_controller_ready(process)
        return process

    def serve(self, namespace: str, name: str, host: str, service: str | None = None) -> None:
        """An Ingress ``name`` routing ``host`` to an echo Service (default: ``name``)."""
        service = service or name
        self.backends.ensure(namespace, service)
        self.cluster.create(ingress_obj(namespace, name, host_ingress_spec(host, service)))


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    """Factory: ``make_env(**FakeApiServer kwargs)`` -> Env; everything stopped at teardown."""
    stack = contextlib.ExitStack()
    envs: list[Env] = []

    def make(**kwargs: Any) -> Env:
        cluster = stack.enter_context(running_cluster(**kwargs))
        backends = Backends(cluster)
        stack.callback(backends.close)
        env = Env(cluster, backends, Barrier(cluster, backends), tmp_path)
        envs.append(env)
        return env

    try:
        yield make
    finally:
        for env in envs:
            for process in env.processes:
                stop_controller(process, timeout_s=5)
        stack.close()


def _port(process: ServeProcess) -> int:
    return process.listening["http"]


class TrafficLoop:
    """GETs one host through the proxy in a thread until stopped (bounded in count and time);
    records every answer that is not a 200 from the expected service."""

    MAX_REQUESTS = 20_000
    MAX_SECONDS = 90.0

    def __init__(self, port: int, host: str, service: str) -> None:
        self.port, self.host, self.service = port, host, service
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="traffic")

    def __enter__(self) -> TrafficLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        deadline = time.monotonic() + self.MAX_SECONDS
        with proxy_client() as client:
            for _ in range(self.MAX_REQUESTS):
                if self._stop.is_set() or time.monotonic() >= deadline:
                    return
                try:
                    response = request(self.port, "GET", self.host, "/", client=client)
                    service = (
                        response.json().get("service") if response.status_code == 200 else None
                    )
                    if service == self.service:
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:100]!r}")
                except (httpx.HTTPError, ValueError) as exc:
                    self.failures.append(repr(exc))
                self._stop.wait(0.005)


# --------------------------------------------------------------------------------------------
# (a) the API server goes away
# --------------------------------------------------------------------------------------------


def test_traffic_flows_through_an_api_server_outage_and_the_controller_converges(make_env):
    env = make_env()
    namespace = env.cluster.new_namespace("outage")
    env.serve(namespace, "before", "before.outage.test")
    process = env.start()
    port = _port(process)
    assert wait_served(port, "before.outage.test", "before"), log_tail(process)

    with TrafficLoop(port, "before.outage.test", "before") as traffic:
        api = env.cluster.api
        api.run_threadsafe(api.go_away(OUTAGE_S))
        # Written while the API server is unreachable: seen only after the reconnect.
        env.serve(namespace, "during", "during.outage.test")
        assert api.run_threadsafe(api.wait_listening(OUTAGE_S + 15), timeout=OUTAGE_S + 20)
        env.serve(namespace, "after", "after.outage.test")
        converged = wait_served(port, "during.outage.test", "during", RECOVERY_S) and wait_served(
            port, "after.outage.test", "after", RECOVERY_S
        )
        assert converged, "the controller did not converge after the outage:\n" + log_tail(process)
        # The new Ingresses get their status once the leader is back in touch.
        assert env.cluster.wait_status(namespace, "during", RECOVERY_S), log_tail(process)
    assert process.proc.poll() is None, "the controller exited during the outage"
    assert traffic.ok > 0
    assert traffic.failures == [], f"{len(traffic.failures)} failed requests during the outage"

    assert stop_controller(process) == 0, "SIGTERM did not end the controller with status 0"


# --------------------------------------------------------------------------------------------
# (b) 410 Gone: relist to exactly the server's state
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expired", ["http", "event"])
def test_a_410_relist_ends_with_exactly_the_servers_state(make_env, expired):
    """The ingress watch is cut and its reconnects fail while one Ingress is deleted and one is
    created, then history is compacted: resuming from the old resourceVersion gets 410 Gone
    (an HTTP status, or an in-stream ERROR event), and only a relist can show the deletion."""
    env = make_env(expired_watch_start=expired)
    api = env.cluster.api
    namespace = env.cluster.new_namespace("relist")
    for name in ("keep-a", "doomed", "keep-c"):
        env.serve(namespace, name, f"{name}.relist.test")
    env.backends.ensure(namespace, "newcomer")
    process = env.start()
    port = _port(process)
    for name in ("keep-a", "doomed", "keep-c"):
        assert wait_served(port, f"{name}.relist.test", name), log_tail(process)

    cut = time.monotonic()
    api.fail_next(10_000, status=500, path_contains="/ingresses", method="GET")
    api.drop_watches()
    api.delete(INGRESS_API, "Ingress", "doomed", namespace)
    env.cluster.create(
        ingress_obj(namespace, "newcomer", host_ingress_spec("newcomer.relist.test", "newcomer"))
    )
    api.compact(watches="close")

    def ingress_requests_after(since: float, status: int) -> list[Any]:
        return [
            r
            for r in api.requests
            if r.time >= since and r.method == "GET" and "/ingresses" in r.path
            if r.status == status
        ]

    # The controller noticed (its reconnects were refused), then the API heals.
    assert wait_for(lambda: ingress_requests_after(cut, 500), timeout_s=CONVERGE_S)
    healed = time.monotonic()
    api.clear_failures()

    assert wait_status_code(port, "doomed.relist.test", 404, timeout_s=RECOVERY_S), (
        "the Ingress deleted during the outage is still served:\n" + log_tail(process)
    )
    assert wait_served(port, "newcomer.relist.test", "newcomer", RECOVERY_S), log_tail(process)
    for name in ("keep-a", "keep-c"):
        assert wait_served(port, f"{name}.relist.test", name), log_tail(process)
    relists = [r for r in ingress_requests_after(healed, 200) if not r.is_watch]
    assert relists, "no Ingress list after the API server healed"
    if expired == "http":  # the resumed watch was answered 410 (in "event" mode: HTTP 200)
        assert [r for r in ingress_requests_after(healed, 410) if r.is_watch]


# --------------------------------------------------------------------------------------------
# (c) a malformed Ingress
# --------------------------------------------------------------------------------------------


def test_a_malformed_ingress_gets_a_warning_event_while_its_neighbours_serve(make_env):
    env = make_env()
    cluster = env.cluster
    namespace = cluster.new_namespace("malformed")
    env.serve(namespace, "good", "good.malformed.test")
    # A Service port name the Service does not have.
    bad_port = host_ingress_spec("bad-port.malformed.test", "good")
    bad_port["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"name": "nope"}
    cluster.create(ingress_obj(namespace, "bad-port", bad_port))
    # A path that is not absolute.
    bad_path = host_ingress_spec("bad-path.malformed.test", "good", path="no-leading-slash")
    cluster.create(ingress_obj(namespace, "bad-path", bad_path))
    env.serve(namespace, "neighbour", "neighbour.malformed.test")

    process = env.start()
    port = _port(process)
    assert wait_served(port, "good.malformed.test", "good"), log_tail(process)
    assert wait_served(port, "neighbour.malformed.test", "neighbour"), log_tail(process)
    for name in ("bad-port", "bad-path"):
        events = wait_for(
            lambda name=name: cluster.warning_events_for(namespace, name), timeout_s=CONVERGE_S
        )
        assert events, f"no Warning Event about Ingress {name}:\n{log_tail(process)}"
    # An unknown Service port: that path answers 503, the rest of the table serves.
    assert wait_status_code(port, "bad-port.malformed.test", 503), log_tail(process)

    # More reconciles (other changes) do not repeat the Events as new objects.
    before = {
        name: len(cluster.warning_events_for(namespace, name)) for name in ("bad-port", "bad-path")
    }
    for _ in range(3):
        env.barrier.sync(port, with_status=True)
    after = {
        name: len(cluster.warning_events_for(namespace, name)) for name in ("bad-port", "bad-path")
    }
    assert after == before
    assert wait_served(port, "good.malformed.test", "good")


# --------------------------------------------------------------------------------------------
# (d) two controllers, one Lease
# --------------------------------------------------------------------------------------------


def _lease_holder(cluster: Cluster) -> str | None:
    for lease in cluster.api.list_objects(LEASE_API, "Lease"):
        if lease["metadata"]["name"] == "silex-e2e":
            return (lease.get("spec") or {}).get("holderIdentity") or None
    return None


def _writers(cluster: Cluster, namespace: str, name: str | None = None) -> set[str]:
    """The bearer tokens (= pod names here) that wrote Ingress status in ``namespace``."""
    return {
        record.authorization.removeprefix("Bearer ")
        for record in cluster.status_writes(namespace)
        if name is None or f"/ingresses/{name}/" in record.path
    }


def test_two_controllers_one_lease_exactly_one_writes_status_and_the_other_takes_over(make_env):
    # Each controller gets its own bearer token (= its pod name): the request log then tells
    # which one wrote what.
    env = make_env(require_token=False)
    cluster = env.cluster
    namespace = cluster.new_namespace("lease")
    env.serve(namespace, "first", "first.lease.test")
    processes = {pod: env.start(pod_name=pod, token=pod) for pod in ("pod-a", "pod-b")}

    leader = wait_for(lambda: _lease_holder(cluster), timeout_s=CONVERGE_S)
    assert leader in processes, f"Lease holder {leader!r}"
    follower = next(pod for pod in processes if pod != leader)
    assert cluster.wait_status(namespace, "first"), log_tail(processes[leader])
    # Both serve traffic, leader or not.
    for process in processes.values():
        assert wait_served(_port(process), "first.lease.test", "first")
    # A few more changes, so a misbehaving follower would have had its chances to write.
    for _ in range(3):
        env.barrier.sync(_port(processes[follower]), with_status=True)
    assert _writers(cluster, namespace) == {leader}
    assert _writers(cluster, env.barrier.namespace) == {leader}
    assert _lease_holder(cluster) == leader

    # The leader dies without releasing the Lease; the other one takes over when it expires.
    processes[leader].proc.send_signal(signal.SIGKILL)
    processes[leader].proc.wait(timeout=10)
    env.serve(namespace, "second", "second.lease.test")
    assert wait_served(_port(processes[follower]), "second.lease.test", "second")
    assert cluster.wait_status(namespace, "second", RECOVERY_S), (
        "no status on a new Ingress after the leader was killed:\n" + log_tail(processes[follower])
    )
    assert _writers(cluster, namespace, "second") == {follower}
    assert _lease_holder(cluster) == follower
    assert stop_controller(processes[follower]) == 0
