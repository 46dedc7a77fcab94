"""KubeSource against the fake API server: list -> watch, bookmarks, 410 relists, backoff,
outages and namespace scoping. Every wait is bounded; nothing asserts on timings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from kube_builders import (
    endpoint_slice,
    ingress,
    ingress_class,
    opaque_secret,
    service,
    tls_secret,
    until,
)

from fake_apiserver import FakeApiServer
from silex.sources.kube import Backoff, KubeClient, KubeSource, WatchSettings

pytestmark = pytest.mark.anyio

FAST = WatchSettings(watch_timeout_s=5, backoff_base_s=0.01, backoff_cap_s=0.1)


@asynccontextmanager
async def started(kube: KubeClient, settings: WatchSettings = FAST) -> AsyncIterator[KubeSource]:
    source = KubeSource(kube, settings)
    async with anyio.create_task_group() as group:
        group.start_soon(source.run)
        try:
            yield source
        finally:
            group.cancel_scope.cancel()


def seed(api: FakeApiServer) -> None:
    api.create(ingress_class())
    api.create(ingress("shop"))
    api.create(service())
    api.create(endpoint_slice())
    api.create(tls_secret("cert"))
    api.create(opaque_secret("password"))


def ingress_names(source: KubeSource) -> set[str]:
    return {name for _, name in source.store.snapshot().ingresses}


def watch_count(api: FakeApiServer, plural: str) -> int:
    return sum(1 for r in api.requests if r.is_watch and r.path.endswith(plural))


async def test_initial_list_then_ready(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    api.set_delay(0.5, path_contains="/ingresses")  # the Ingress list comes last
    async with started(kube) as source:
        await until(lambda: len(source.resource_versions) >= 4, what="4 kinds listed")
        assert not source.ready  # Ingresses are not listed yet
        with anyio.fail_after(10):
            await source.wait_ready()
        api.set_delay(0)
        snapshot = source.store.snapshot()
        assert set(snapshot.ingresses) == {("default", "shop")}
        assert set(snapshot.ingress_classes) == {("", "silex")}
        assert set(snapshot.services) == {("default", "web")}
        assert set(snapshot.endpoint_slices) == {("default", "web-abc")}
        # Only TLS Secrets are read (fieldSelector type=kubernetes.io/tls).
        assert set(snapshot.secrets) == {("default", "cert")}
        secret_lists = [r for r in api.requests if r.path.endswith("/secrets")]
        assert all(r.query.get("fieldSelector") == "type=kubernetes.io/tls" for r in secret_lists)


async def test_watch_events_update_the_store(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    async with started(kube) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        api.create(ingress("blog"))
        await until(lambda: ingress_names(source) == {"shop", "blog"}, what="blog added")
        api.patch(NET, "Ingress", "blog", {"spec": {"ingressClassName": "other"}}, "default")
        await until(
            lambda: (
                source.store.snapshot().ingresses[("default", "blog")].spec.ingress_class_name
                == "other"
            ),
            what="blog modified",
        )
        api.delete(NET, "Ingress", "shop", "default")
        await until(lambda: ingress_names(source) == {"blog"}, what="shop deleted")
        # A Secret that becomes TLS shows up; one that stops being TLS goes away.
        api.delete("v1", "Secret", "cert", "default")
        await until(lambda: not source.store.snapshot().secrets, what="secret deleted")


async def test_states_follow_changes(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    async with started(kube) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        first, _ = source.state()
        states = source.states()
        api.create(ingress("blog"))
        with anyio.fail_after(10):
            for _ in range(100):
                snapshot, problems = await states.__anext__()
                if ("default", "blog") in snapshot.ingresses:
                    break
        assert snapshot.revision > first.revision
        assert problems == []
        await states.aclose()


async def test_bookmarks_advance_the_resource_version(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    settings = WatchSettings(namespaces=("default",), watch_timeout_s=5, backoff_base_s=0.01)
    async with started(kube, settings) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        start = int(source.resource_versions[("Ingress", "default")])
        for index in range(3):  # invisible to a watch on "default"
            api.create(ingress(f"elsewhere-{index}", "other"))
        target = api.resource_version
        assert target > start
        await until(
            lambda: int(source.resource_versions[("Ingress", "default")]) >= target,
            what="a BOOKMARK carried the resourceVersion forward",
        )
        assert ingress_names(source) == {"shop"}


@pytest.mark.parametrize("expired", ["http", "event"])
async def test_410_at_watch_start_relists(
    expired: str, kube: KubeClient, api: FakeApiServer
) -> None:
    api.expired_watch_start = expired  # type: ignore[assignment]
    seed(api)
    api.create(ingress("blog"))
    async with started(kube) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        assert ingress_names(source) == {"shop", "blog"}
        await api.go_away(0.5)  # the watches break; while away:
        api.delete(NET, "Ingress", "shop", "default")
        api.create(ingress("news"))
        api.compact(watches="keep")  # the watchers' resourceVersions are gone now
        assert await api.wait_listening(10)
        await until(lambda: ingress_names(source) == {"blog", "news"}, what="relisted")
        assert source.relists >= 1
        assert source.ready


async def test_410_in_stream_relists(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    async with started(kube) as source:
        with anyio.fail_after(10):
            await source.wait_ready()

        def ingress_lists() -> int:
            return sum(1 for r in api.requests if r.path.endswith("/ingresses") and not r.is_watch)

        lists_before = ingress_lists()
        await until(lambda: api.open_watches >= 5, what="every kind watching")
        api.compact(watches="error")  # an in-stream ERROR 410 to every open watch
        await until(lambda: source.relists >= 5, what="every kind saw the 410")
        await until(lambda: ingress_lists() > lists_before, what="Ingresses relisted")
        api.create(ingress("blog"))  # and watching goes on after the relist
        await until(lambda: ingress_names(source) == {"shop", "blog"}, what="watching again")


async def test_errors_back_off_then_recover(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    api.fail_next(3, status=500, path_contains="/ingresses")
    async with started(kube) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        failed = [r for r in api.requests if r.path.endswith("/ingresses") and r.status == 500]
        assert len(failed) == 3
        # A watch failing with 500 resumes from the last resourceVersion (no relist).
        relists = source.relists
        api.fail_next(2, status=500, path_contains="watch=true")
        api.drop_watches()
        api.create(ingress("blog"))
        await until(lambda: ingress_names(source) == {"shop", "blog"}, what="recovered")
        assert source.relists == relists


async def test_api_server_gone_then_back_converges(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    async with started(kube) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        await api.go_away(1.0)
        api.create(ingress("blog"))
        api.delete("v1", "Service", "web", "default")
        assert ingress_names(source) == {"shop"}  # the last state stays while it is away
        assert await api.wait_listening(10)
        await until(
            lambda: (
                ingress_names(source) == {"shop", "blog"} and not source.store.snapshot().services
            ),
            what="converged",
        )


async def test_namespace_scoping(api: FakeApiServer, kube: KubeClient) -> None:
    seed(api)
    api.create(ingress("elsewhere", "other"))
    api.create(ingress("mine", "team"))
    settings = WatchSettings(namespaces=("default", "team"), watch_timeout_s=5)
    async with started(kube, settings) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        snapshot = source.store.snapshot()
        assert set(snapshot.ingresses) == {("default", "shop"), ("team", "mine")}
        assert set(snapshot.ingress_classes) == {("", "silex")}  # cluster-scoped: always
        api.create(ingress("late", "other"))
        api.create(ingress("late", "team"))
        await until(lambda: ("team", "late") in source.store.snapshot().ingresses)
        assert ("other", "late") not in source.store.snapshot().ingresses
        paths = {
            r.path for r in api.requests if "ingresses" in r.path and "ingressclasses" not in r.path
        }
        assert paths == {
            "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
            "/apis/networking.k8s.io/v1/namespaces/team/ingresses",
        }


async def test_relist_in_one_namespace_keeps_the_others(
    api: FakeApiServer, kube: KubeClient
) -> None:
    seed(api)
    api.create(ingress("mine", "team"))
    settings = WatchSettings(namespaces=("default", "team"), watch_timeout_s=5, backoff_base_s=0.01)
    async with started(kube, settings) as source:
        with anyio.fail_after(10):
            await source.wait_ready()
        await api.go_away(0.5)
        api.delete(NET, "Ingress", "mine", "team")
        api.compact(watches="keep")
        assert await api.wait_listening(10)
        await until(lambda: ingress_names(source) == {"shop"}, what="team relisted")
        assert set(source.store.snapshot().ingresses) == {("default", "shop")}


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(0.2, 30.0)
    delays = [backoff.next_delay() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.2 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.2


NET = "networking.k8s.io/v1"
