"""Cluster mode in-process (run_cluster with a recording apply instead of the core): first table
after the initial lists, status from --publish-status-address / --publish-service, status
cleared when the class changes, Warning Events for a malformed Ingress, de-duplicated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from kube_builders import endpoint_slice, ingress, ingress_class, lb_of, service, until

from fake_apiserver import FakeApiServer
from silex.cluster import ClusterSettings, run_cluster
from silex.controller import Controller
from silex.events import REASON_WARNING, EventRecorder
from silex.leader import ElectionSettings
from silex.problems import Problem
from silex.sources.kube import KubeClient, WatchSettings
from silex.status import StatusSource, parse_addresses
from silex.store import Snapshot
from silex.table import RoutingTable

pytestmark = pytest.mark.anyio

NET = "networking.k8s.io/v1"


class Recorder:
    def __init__(self) -> None:
        self.tables: list[RoutingTable] = []

    def __call__(self, table: RoutingTable) -> int:
        self.tables.append(table)
        return len(self.tables)

    def hosts(self) -> set[str]:
        return {host.name for host in self.tables[-1].hosts} if self.tables else set()


def cluster_settings(
    api: FakeApiServer, status: StatusSource | None, identity: str = "a"
) -> ClusterSettings:
    return ClusterSettings(
        kubeconfig=str(api.kubeconfig_path),
        watch=WatchSettings(watch_timeout_s=5, backoff_base_s=0.01, backoff_cap_s=0.1),
        election=ElectionSettings(
            identity=identity, lease_duration_s=1.0, renew_deadline_s=0.6, retry_period_s=0.05
        ),
        status=status,
        resync_s=0.5,
    )


@asynccontextmanager
async def running(
    api: FakeApiServer, status: StatusSource | None, identity: str = "a"
) -> AsyncIterator[tuple[Controller, Recorder]]:
    recorder = Recorder()
    controller = Controller(recorder, debounce_s=0.01)
    async with anyio.create_task_group() as group:
        with anyio.fail_after(10):
            await group.start(run_cluster, controller, cluster_settings(api, status, identity))
        try:
            yield controller, recorder
        finally:
            group.cancel_scope.cancel()


def seed(api: FakeApiServer) -> None:
    api.create(ingress_class())
    api.create(service())
    api.create(endpoint_slice())
    api.create(ingress("shop"))
    api.create(ingress("theirs", class_name="other"))


def status_of(api: FakeApiServer, name: str) -> list[dict[str, str]]:
    return lb_of(api.get(NET, "Ingress", name, "default"))


async def test_first_table_then_changes_and_status(api: FakeApiServer) -> None:
    seed(api)
    async with running(api, StatusSource(addresses=parse_addresses("127.0.0.1,lb.example"))) as (
        _,
        recorder,
    ):
        assert len(recorder.tables) == 1  # the first table: everything listed
        assert recorder.hosts() == {"shop.example"}
        expected = [{"ip": "127.0.0.1"}, {"hostname": "lb.example"}]
        await until(lambda: sorted(map(str, status_of(api, "shop"))) == sorted(map(str, expected)))
        assert status_of(api, "theirs") == []  # another class: never touched

        api.create(ingress("blog"))
        await until(lambda: recorder.hosts() == {"shop.example", "blog.example"})
        await until(lambda: status_of(api, "blog") != [])
        tables = len(recorder.tables)
        # A change that does not change the table (status writes, an unrelated Secret) is
        # not re-applied.
        api.patch(NET, "Ingress", "blog", {"metadata": {"labels": {"x": "y"}}}, "default")
        await until(lambda: api.get(NET, "Ingress", "blog", "default")["metadata"].get("labels"))
        await anyio.sleep(0.1)
        assert len(recorder.tables) == tables

        api.patch(NET, "Ingress", "blog", {"spec": {"ingressClassName": "other"}}, "default")
        await until(lambda: recorder.hosts() == {"shop.example"})
        await until(lambda: status_of(api, "blog") == [], what="status cleared")
        assert status_of(api, "shop") != []
        assert status_of(api, "theirs") == []


async def test_status_from_publish_service(api: FakeApiServer) -> None:
    seed(api)
    published = service("silex", "kube-system")
    api.create(published)
    async with running(api, StatusSource(service=("kube-system", "silex"))):
        await until(lambda: status_of(api, "shop") == [{"ip": "10.96.0.10"}], what="ClusterIP")
        api.patch(
            "v1",
            "Service",
            "silex",
            {"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}},
            "kube-system",
            status=True,
        )
        await until(
            lambda: status_of(api, "shop") == [{"hostname": "lb.example"}], what="LB address"
        )


async def test_a_follower_writes_no_status(api: FakeApiServer) -> None:
    seed(api)
    api.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "silex-leader", "namespace": "default"},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600},
        }
    )
    async with running(api, StatusSource(addresses=parse_addresses("127.0.0.1"))) as (_, recorder):
        assert recorder.hosts() == {"shop.example"}  # followers serve like the leader
        await anyio.sleep(0.3)
        assert status_of(api, "shop") == []
        assert api.events() == []


def warnings_on(api: FakeApiServer, name: str) -> list[dict[str, Any]]:
    return [
        event
        for event in api.events()
        if (event.get("regarding") or event.get("involvedObject") or {}).get("name") == name
    ]


async def test_events_for_a_malformed_ingress_deduplicated(api: FakeApiServer) -> None:
    seed(api)
    api.create(ingress("broken", port="nope"))  # the Service has no port named "nope"
    async with running(api, StatusSource(addresses=parse_addresses("127.0.0.1"))) as (_, recorder):
        assert "shop.example" in recorder.hosts()  # the neighbour serves
        events = await until(lambda: warnings_on(api, "broken"), what="an Event")
        event = events[0]
        assert event["type"] == "Warning"
        assert event["reason"] == REASON_WARNING  # served (503), so a warning
        assert "nope" in event["note"]
        regarding = event["regarding"]
        stored = api.get(NET, "Ingress", "broken", "default")
        assert stored is not None
        assert regarding["kind"] == "Ingress"
        assert regarding["uid"] == stored["metadata"]["uid"]
        # More changes elsewhere, same problem: no second Event.
        api.create(ingress("blog"))
        await until(lambda: "blog.example" in recorder.hosts())
        await anyio.sleep(0.3)
        assert len(warnings_on(api, "broken")) == 1


async def test_recorder_dedups_and_rate_limits(api: FakeApiServer, kube: KubeClient) -> None:
    recorder = EventRecorder(
        kube,
        controller_name="silex.dev/ingress-controller",
        instance="a",
        is_leader=lambda: True,
        rate=1000,
        burst=5,
    )
    problem = Problem(
        severity="error", kind="Ingress", namespace="default", name="x", field="spec", message="bad"
    )
    snapshot = Snapshot()
    async with anyio.create_task_group() as group:
        group.start_soon(recorder.run)
        recorder.observe([problem], snapshot)
        await until(lambda: recorder.created == 1)
        recorder.observe([problem], snapshot)  # still there: nothing new
        recorder.observe([], snapshot)  # gone ...
        recorder.observe([problem], snapshot)  # ... and back: the same Event, count 2
        await until(lambda: recorder.updated == 1)
        events = warnings_on(api, "x")
        assert len(events) == 1
        assert events[0]["series"]["count"] == 2
        many = [
            Problem(
                severity="warning", kind="Ingress", namespace="default", name=f"n{i}", message="m"
            )
            for i in range(20)
        ]
        recorder.observe(many, snapshot)
        await until(lambda: recorder.created == 21, what="all written, paced by the bucket")
        group.cancel_scope.cancel()
