"""The fake API server, driven by kubernetes-asyncio's real (unmodified) client.

Every wait is bounded (``anyio.fail_after`` or a counted loop); nothing asserts on timings.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client import ApiClient, ApiException, Configuration

from . import FakeApiServer

NS = "default"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # kubernetes-asyncio is asyncio-only


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.2) as server:
        yield server


async def make_client(api: FakeApiServer) -> ApiClient:
    configuration = Configuration()
    await config.load_kube_config(
        config_file=str(api.kubeconfig_path), client_configuration=configuration
    )
    return ApiClient(configuration)


@pytest.fixture
async def kube(api: FakeApiServer) -> AsyncIterator[ApiClient]:
    async with await make_client(api) as api_client:
        yield api_client


def ingress(name: str, namespace: str = NS, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "ingressClassName": "silex",
            "rules": [
                {
                    "host": f"{name}.example",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "svc", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    return body


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded wait for a condition (fails the test if it never holds)."""
    with anyio.fail_after(timeout):
        for _ in range(int(timeout / 0.01) + 10):
            if predicate():
                return
            await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def drain_watch(func: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """All events of a kubernetes-asyncio Watch until its stream ends."""
    events: list[dict[str, Any]] = []
    async with watch.Watch() as stream:
        async for event in stream.stream(func, *args, **kwargs):
            events.append(event)
    return events


def watch_requests(api: FakeApiServer, plural: str = "ingresses") -> int:
    return sum(1 for r in api.requests if r.is_watch and r.path.endswith(plural))


async def bump_elsewhere(net: client.NetworkingV1Api, count: int = 2) -> None:
    """Create ingresses in another namespace: the global resourceVersion moves on while a
    watch on ``default`` sees nothing."""
    for index in range(count):
        await net.create_namespaced_ingress("other", ingress(f"elsewhere-{index}", "other"))


# ==================================================================== discovery


@pytest.mark.anyio
async def test_discovery(kube: ApiClient) -> None:
    version = await client.VersionApi(kube).get_code()
    assert version.major == "1"
    assert version.git_version.startswith("v1.")

    core_versions = await client.CoreApi(kube).get_api_versions()
    assert core_versions.versions == ["v1"]

    groups = await client.ApisApi(kube).get_api_versions()
    names = {group.name for group in groups.groups}
    assert {
        "networking.k8s.io",
        "discovery.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
    } <= names
    networking_group = await client.NetworkingApi(kube).get_api_group()
    assert networking_group.preferred_version.group_version == "networking.k8s.io/v1"

    resources = await client.NetworkingV1Api(kube).get_api_resources()
    by_name = {r.name: r for r in resources.resources}
    assert resources.group_version == "networking.k8s.io/v1"
    assert by_name["ingresses"].namespaced is True
    assert by_name["ingresses"].kind == "Ingress"
    assert "watch" in by_name["ingresses"].verbs
    assert by_name["ingresses/status"].verbs == ["get", "patch", "update"]
    assert by_name["ingressclasses"].namespaced is False

    core = {r.name: r for r in (await client.CoreV1Api(kube).get_api_resources()).resources}
    assert {"services", "secrets", "events", "namespaces"} <= set(core)
    assert core["namespaces"].namespaced is False
    for api_class, expected in (
        (client.DiscoveryV1Api, "endpointslices"),
        (client.CoordinationV1Api, "leases"),
        (client.EventsV1Api, "events"),
    ):
        listed = await api_class(kube).get_api_resources()
        assert expected in {r.name for r in listed.resources}


@pytest.mark.anyio
async def test_unknown_path_is_a_404_status(kube: ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        await client.NetworkingV1Api(kube).read_namespaced_ingress("missing", NS)
    assert caught.value.status == 404
    body = status_of(caught.value)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["reason"] == "NotFound"
    assert body["code"] == 404
    assert body["message"] == 'ingresses.networking.k8s.io "missing" not found'


@pytest.mark.anyio
async def test_token_is_required(api: FakeApiServer) -> None:
    request = urllib.request.Request(f"{api.url}/api/v1/namespaces")
    with pytest.raises(urllib.error.HTTPError) as caught:
        await asyncio.to_thread(urllib.request.urlopen, request, None, 5)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["reason"] == "Unauthorized"


# ==================================================================== list


@pytest.mark.anyio
async def test_list_namespaced_and_all_namespaces(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    first = await net.create_namespaced_ingress(NS, ingress("b"))
    await net.create_namespaced_ingress(NS, ingress("a"))
    await net.create_namespaced_ingress("other", ingress("c", "other"))

    assert first.metadata.uid
    assert first.metadata.generation == 1
    assert first.metadata.creation_timestamp is not None
    assert first.metadata.creation_timestamp.tzinfo is not None

    listed = await net.list_namespaced_ingress(NS)
    assert [i.metadata.name for i in listed.items] == ["a", "b"]
    assert listed.metadata.resource_version == str(api.resource_version)
    everything = await net.list_ingress_for_all_namespaces()
    assert {(i.metadata.namespace, i.metadata.name) for i in everything.items} == {
        (NS, "a"),
        (NS, "b"),
        ("other", "c"),
    }
    # resourceVersions are strings of one global counter, increasing with every write.
    versions = [int(i.metadata.resource_version) for i in everything.items]
    assert len(set(versions)) == 3
    assert max(versions) == int(everything.metadata.resource_version)

    namespaces = await client.CoreV1Api(kube).list_namespace()
    assert "default" in {n.metadata.name for n in namespaces.items}


@pytest.mark.anyio
async def test_label_and_field_selectors(api: FakeApiServer, kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    for name, labels, kind in (
        ("web-tls", {"app": "web", "tier": "front"}, "kubernetes.io/tls"),
        ("web-opaque", {"app": "web"}, "Opaque"),
        ("db", {"app": "db"}, "Opaque"),
        ("bare", {}, "Opaque"),
    ):
        await core.create_namespaced_secret(
            NS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "labels": labels},
                "type": kind,
                "data": {},
            },
        )

    async def names(**kwargs: str) -> list[str]:
        listed = await core.list_namespaced_secret(NS, **kwargs)
        return sorted(s.metadata.name for s in listed.items)

    assert await names(label_selector="app=web") == ["web-opaque", "web-tls"]
    assert await names(label_selector="app==db") == ["db"]
    assert await names(label_selector="app!=web") == ["bare", "db"]
    assert await names(label_selector="app in (web, db)") == ["db", "web-opaque", "web-tls"]
    assert await names(label_selector="app notin (web)") == ["bare", "db"]
    assert await names(label_selector="tier") == ["web-tls"]
    assert await names(label_selector="!tier,app") == ["db", "web-opaque"]
    assert await names(label_selector="app=web,tier=front") == ["web-tls"]
    assert await names(field_selector="metadata.name=db") == ["db"]
    assert await names(field_selector="type=kubernetes.io/tls") == ["web-tls"]
    assert await names(field_selector="type!=kubernetes.io/tls,metadata.namespace=default") == [
        "bare",
        "db",
        "web-opaque",
    ]
    assert await names(label_selector="app=web", field_selector="type=Opaque") == ["web-opaque"]
    # The same selectors server-side, without HTTP.
    assert [
        s["metadata"]["name"] for s in api.list_objects("v1", "Secret", label_selector="tier")
    ] == ["web-tls"]

    with pytest.raises(ApiException) as caught:
        await core.list_namespaced_secret(NS, field_selector="data.x=1")
    assert caught.value.status == 400
    assert status_of(caught.value)["message"] == "field label not supported: data.x"


# ==================================================================== watch


@pytest.mark.anyio
async def test_watch_live_events_in_order_with_bookmarks(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    start_rv = (await net.list_namespaced_ingress(NS)).metadata.resource_version
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                net.list_namespaced_ingress,
                NS,
                resource_version=start_rv,
                allow_watch_bookmarks=True,
                timeout_seconds=20,
            ):
                events.append(event)
                deleted = any(e["type"] == "DELETED" for e in events)
                if deleted and event["type"] == "BOOKMARK":
                    break

    with anyio.fail_after(15):
        task = asyncio.create_task(consume())
        await until(lambda: api.open_watches == 1)
        await net.create_namespaced_ingress(NS, ingress("live"))
        await net.patch_namespaced_ingress("live", NS, {"metadata": {"labels": {"x": "1"}}})
        await net.delete_namespaced_ingress("live", NS)
        await task
        await until(lambda: api.open_watches == 0)  # the client hung up: the watch is gone

    changes = [(e["type"], e["object"].metadata.name) for e in events if e["type"] != "BOOKMARK"]
    assert changes == [("ADDED", "live"), ("MODIFIED", "live"), ("DELETED", "live")]
    assert isinstance(events[0]["object"], client.V1Ingress)
    assert events[1]["object"].metadata.labels == {"x": "1"}
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    bookmark = events[-1]
    assert bookmark["type"] == "BOOKMARK"
    assert set(bookmark["raw_object"]) == {"kind", "apiVersion", "metadata"}
    assert rvs == sorted(rvs)  # bookmarks never go backwards
    assert int(bookmark["raw_object"]["metadata"]["resourceVersion"]) >= rvs[2]


@pytest.mark.anyio
async def test_watch_resumes_from_resource_version_history(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    start_rv = api.resource_version
    await net.create_namespaced_ingress(NS, ingress("h"))
    await net.patch_namespaced_ingress("h", NS, {"spec": {"ingressClassName": "other"}})
    await net.delete_namespaced_ingress("h", NS)
    seen: list[tuple[str, str, int]] = []
    with anyio.fail_after(10):
        async with watch.Watch() as stream:
            async for event in stream.stream(
                net.list_namespaced_ingress, NS, resource_version=str(start_rv), timeout_seconds=1
            ):
                obj = event["object"]
                seen.append((event["type"], obj.metadata.name, obj.metadata.generation))
    assert seen == [("ADDED", "h", 1), ("MODIFIED", "h", 2), ("DELETED", "h", 2)]


@pytest.mark.anyio
async def test_watch_without_resource_version_lists_current_objects_first(
    api: FakeApiServer, kube: ApiClient
) -> None:
    api.create(ingress("one"))
    api.create(ingress("two"))
    api.create(ingress("elsewhere", "other"))
    net = client.NetworkingV1Api(kube)
    seen: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        async with watch.Watch() as stream:
            async for event in stream.stream(net.list_namespaced_ingress, NS, timeout_seconds=1):
                seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "one"), ("ADDED", "two")]


@pytest.mark.anyio
async def test_watch_cluster_scoped_and_all_namespaces(api: FakeApiServer, kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    with anyio.fail_after(10):
        namespaces = await drain_watch(core.list_namespace, timeout_seconds=1)
    assert [e["object"].metadata.name for e in namespaces] == [
        "default",
        "kube-node-lease",
        "kube-public",
        "kube-system",
    ]
    net = client.NetworkingV1Api(kube)
    start_rv = str(api.resource_version)
    api.create(ingress("a"))
    api.create(ingress("b", "other"))
    with anyio.fail_after(10):
        everywhere = await drain_watch(
            net.list_ingress_for_all_namespaces, resource_version=start_rv, timeout_seconds=1
        )
    assert [(e["type"], e["object"].metadata.namespace) for e in everywhere] == [
        ("ADDED", NS),
        ("ADDED", "other"),
    ]


@pytest.mark.anyio
async def test_watch_timeout_seconds_ends_the_stream(api: FakeApiServer, kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    count = 0
    with anyio.fail_after(10):
        async with watch.Watch() as stream:
            async for _ in stream.stream(
                core.list_namespaced_service, NS, resource_version="1000", timeout_seconds=1
            ):
                count += 1
    assert count == 0
    assert watch_requests(api, "services") == 1
    assert api.open_watches == 0


@pytest.mark.anyio
async def test_watch_label_selector_sees_objects_leave_and_enter(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    api.create(ingress("sel", app="web"))
    start_rv = str(api.resource_version)
    api.patch("networking.k8s.io/v1", "Ingress", "sel", {"metadata": {"labels": {"app": "x"}}}, NS)
    api.patch(
        "networking.k8s.io/v1", "Ingress", "sel", {"metadata": {"labels": {"app": "web"}}}, NS
    )
    api.create(ingress("other", app="db"))
    seen: list[tuple[str, str]] = []
    with anyio.fail_after(10):
        async with watch.Watch() as stream:
            async for event in stream.stream(
                net.list_namespaced_ingress,
                NS,
                label_selector="app=web",
                resource_version=start_rv,
                timeout_seconds=1,
            ):
                seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("DELETED", "sel"), ("ADDED", "sel")]


@pytest.mark.anyio
async def test_watch_410_when_starting_at_a_compacted_resource_version(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    old_rv = str(api.resource_version)
    await bump_elsewhere(net)
    api.compact()

    # On the wire: HTTP 410 with a Status body.
    raw = await net.list_namespaced_ingress(
        NS, watch=True, resource_version=old_rv, _preload_content=False
    )
    assert raw.status == 410
    body = json.loads(await raw.read())
    assert (body["kind"], body["code"], body["reason"]) == ("Status", 410, "Expired")
    raw.release()

    # kubernetes-asyncio does not raise on the HTTP status of a watch (it streams with
    # _preload_content=False); Watch reads the Status line and raises ApiException(410).
    # With timeout_seconds given it does not retry: one request.
    api.clear_requests()
    with anyio.fail_after(10), pytest.raises(ApiException) as caught:
        await drain_watch(
            net.list_namespaced_ingress, NS, resource_version=old_rv, timeout_seconds=5
        )
    assert caught.value.status == 410
    assert str(caught.value.reason).startswith("Expired: too old resource version")
    assert caught.value.body is None  # built from the Status line, not from the HTTP response
    assert watch_requests(api) == 1

    # Without timeout_seconds ("watch forever") it retries a 410 once, from the same stale
    # resourceVersion, then raises: two requests.
    api.clear_requests()
    with anyio.fail_after(10), pytest.raises(ApiException) as caught:
        await drain_watch(net.list_namespaced_ingress, NS, resource_version=old_rv)
    assert caught.value.status == 410
    assert watch_requests(api) == 2


@pytest.mark.anyio
async def test_watch_410_as_an_error_event_at_start() -> None:
    """expired_watch_start="event": HTTP 200 and an ERROR event, like a real watch cache."""
    async with (
        FakeApiServer(expired_watch_start="event") as api,
        await make_client(api) as api_client,
    ):
        net = client.NetworkingV1Api(api_client)
        old_rv = str(api.resource_version)
        await bump_elsewhere(net)
        api.compact()
        raw = await net.list_namespaced_ingress(
            NS, watch=True, resource_version=old_rv, _preload_content=False
        )
        assert raw.status == 200
        event = json.loads(await raw.content.readline())
        raw.release()
        assert event["type"] == "ERROR"
        assert event["object"]["code"] == 410
        with anyio.fail_after(10), pytest.raises(ApiException) as caught:
            await drain_watch(
                net.list_namespaced_ingress, NS, resource_version=old_rv, timeout_seconds=5
            )
        assert caught.value.status == 410


@pytest.mark.anyio
async def test_watch_410_in_stream_retried_once_then_raised(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    start_rv = str(api.resource_version)
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                net.list_namespaced_ingress, NS, resource_version=start_rv
            ):
                events.append(event)

    with anyio.fail_after(15):
        task = asyncio.create_task(consume())
        await until(lambda: api.open_watches == 1)
        # The watch saw nothing, so its last resourceVersion is start_rv; compacting past it
        # makes the watch's one reconnection fail with an HTTP 410 too.
        await bump_elsewhere(net)
        api.compact(watches="error")
        with pytest.raises(ApiException) as caught:
            await task
    assert caught.value.status == 410
    assert str(caught.value.reason).startswith("Expired:")
    assert events == []
    assert watch_requests(api) == 2
    assert [r.status for r in api.requests if r.is_watch] == [200, 410]


@pytest.mark.anyio
async def test_watch_410_in_stream_whose_retry_succeeds(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                net.list_namespaced_ingress, NS, resource_version=str(api.resource_version)
            ):
                events.append(event)
                if event["object"].metadata.name == "after":
                    break

    with anyio.fail_after(15):
        task = asyncio.create_task(consume())
        await until(lambda: api.open_watches == 1)
        api.create(ingress("before"))
        await until(lambda: len(events) == 1)
        api.compact(watches="error")  # the watch is up to date: resuming from its RV is fine
        await until(lambda: watch_requests(api) == 2 and api.open_watches == 1)
        api.create(ingress("after"))
        await task
    assert [e["object"].metadata.name for e in events] == ["before", "after"]


@pytest.mark.anyio
async def test_timeout_with_compaction_raises_without_retry(
    api: FakeApiServer, kube: ApiClient
) -> None:
    net = client.NetworkingV1Api(kube)
    start_rv = str(api.resource_version)

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for _ in stream.stream(
                net.list_namespaced_ingress, NS, resource_version=start_rv, timeout_seconds=30
            ):
                pass

    with anyio.fail_after(15):
        task = asyncio.create_task(consume())
        await until(lambda: api.open_watches == 1)
        api.compact(watches="error")
        with pytest.raises(ApiException) as caught:
            await task
    assert caught.value.status == 410
    assert watch_requests(api) == 1


@pytest.mark.anyio
async def test_dropped_watch_is_resumed_by_the_client(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    names: list[str] = []

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for event in stream.stream(
                net.list_namespaced_ingress, NS, resource_version=str(api.resource_version)
            ):
                names.append(event["object"].metadata.name)
                if len(names) == 2:
                    break

    with anyio.fail_after(15):
        task = asyncio.create_task(consume())
        await until(lambda: api.open_watches == 1)
        api.create(ingress("first"))
        await until(lambda: names == ["first"])
        assert api.drop_watches() == 1
        await until(lambda: watch_requests(api) == 2 and api.open_watches == 1)
        resumed = [r for r in api.requests if r.is_watch][-1]
        assert resumed.query["resourceVersion"] == str(api.resource_version)
        api.create(ingress("second"))
        await task
    assert names == ["first", "second"]


# ==================================================================== writes


@pytest.mark.anyio
async def test_create_get_update_conflicts(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    created = await net.create_namespaced_ingress(NS, ingress("web"))
    with pytest.raises(ApiException) as caught:
        await net.create_namespaced_ingress(NS, ingress("web"))
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "AlreadyExists"

    got = await net.read_namespaced_ingress("web", NS)
    assert got.metadata.uid == created.metadata.uid

    # A label change does not bump generation; a spec change does.
    got.metadata.labels = {"team": "a"}
    relabelled = await net.replace_namespaced_ingress("web", NS, got)
    assert relabelled.metadata.generation == 1
    assert int(relabelled.metadata.resource_version) > int(created.metadata.resource_version)
    relabelled.spec.ingress_class_name = "other"
    respecced = await net.replace_namespaced_ingress("web", NS, relabelled)
    assert respecced.metadata.generation == 2

    # Replacing with the stale object is a 409 Conflict.
    with pytest.raises(ApiException) as caught:
        await net.replace_namespaced_ingress("web", NS, relabelled)
    assert caught.value.status == 409
    conflict = status_of(caught.value)
    assert conflict["reason"] == "Conflict"
    assert "the object has been modified" in conflict["message"]

    # A no-op update keeps the resourceVersion.
    same = await net.replace_namespaced_ingress("web", NS, respecced)
    assert same.metadata.resource_version == respecced.metadata.resource_version

    deleted = await net.delete_namespaced_ingress("web", NS)
    assert deleted.status == "Success"
    assert deleted.details.name == "web"
    assert api.get("networking.k8s.io/v1", "Ingress", "web", NS) is None
    with pytest.raises(ApiException) as caught:
        await net.delete_namespaced_ingress("web", NS)
    assert caught.value.status == 404


@pytest.mark.anyio
async def test_ingress_status_subresource(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    body = ingress("web")
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "10.9.9.9"}]}}
    created = await net.create_namespaced_ingress(NS, body)
    assert not created.status.load_balancer  # status is not set on create

    patched = await net.patch_namespaced_ingress_status(
        "web",
        NS,
        {
            "spec": {"ingressClassName": "ignored"},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
        },
    )
    assert patched.status.load_balancer.ingress[0].ip == "127.0.0.1"
    assert patched.spec.ingress_class_name == "silex"  # spec changes are ignored on /status
    assert patched.metadata.generation == 1
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    # The main resource ignores status changes.
    patched.status.load_balancer.ingress[0].ip = "192.0.2.1"
    patched.spec.ingress_class_name = "next"
    replaced = await net.replace_namespaced_ingress("web", NS, patched)
    assert replaced.status.load_balancer.ingress[0].ip == "127.0.0.1"
    assert replaced.spec.ingress_class_name == "next"
    assert replaced.metadata.generation == 2

    # PUT on /status with the current object.
    replaced.status.load_balancer.ingress[0].hostname = "lb.example"
    status_put = await net.replace_namespaced_ingress_status("web", NS, replaced)
    assert status_put.status.load_balancer.ingress[0].hostname == "lb.example"
    read_back = await net.read_namespaced_ingress_status("web", NS)
    assert read_back.status.load_balancer.ingress[0].hostname == "lb.example"
    stored = api.get("networking.k8s.io/v1", "Ingress", "web", NS)
    assert stored is not None
    assert stored["status"]["loadBalancer"]["ingress"][0]["ip"] == "127.0.0.1"


@pytest.mark.anyio
async def test_patch_content_types(kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_service(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "svc", "labels": {"a": "1", "b": "2"}},
            "spec": {"ports": [{"port": 80, "name": "http"}]},
        },
    )
    # Default for a dict body: application/strategic-merge-patch+json (merge semantics).
    strategic = await core.patch_namespaced_service(
        "svc", NS, {"metadata": {"labels": {"a": None, "c": "3"}}}
    )
    assert strategic.metadata.labels == {"b": "2", "c": "3"}
    merged = await core.patch_namespaced_service(
        "svc",
        NS,
        {"spec": {"ports": [{"port": 8080, "name": "alt"}]}},
        _content_type="application/merge-patch+json",
    )
    assert [p.port for p in merged.spec.ports] == [8080]
    # A list body: application/json-patch+json.
    patched = await core.patch_namespaced_service(
        "svc",
        NS,
        [
            {"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}},
            {"op": "replace", "path": "/spec/ports/0/port", "value": 9090},
            {"op": "remove", "path": "/metadata/labels/b"},
            {"op": "test", "path": "/metadata/labels/c", "value": "3"},
        ],
    )
    assert patched.metadata.annotations == {"k": "v"}
    assert patched.metadata.labels == {"c": "3"}
    assert patched.spec.ports[0].port == 9090
    with pytest.raises(ApiException) as caught:
        await core.patch_namespaced_service(
            "svc", NS, [{"op": "test", "path": "/metadata/labels/c", "value": "4"}]
        )
    assert caught.value.status == 422
    # A patch carrying a stale resourceVersion is a conflict.
    with pytest.raises(ApiException) as caught:
        await core.patch_namespaced_service("svc", NS, {"metadata": {"resourceVersion": "1"}})
    assert caught.value.status == 409


@pytest.mark.anyio
async def test_finalizers_delay_deletion(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    body = ingress("fin")
    body["metadata"]["finalizers"] = ["silex.example/cleanup"]
    await net.create_namespaced_ingress(NS, body)
    await net.delete_namespaced_ingress("fin", NS)
    pending = await net.read_namespaced_ingress("fin", NS)
    assert pending.metadata.deletion_timestamp is not None
    await net.patch_namespaced_ingress("fin", NS, {"metadata": {"finalizers": None}})
    assert api.get("networking.k8s.io/v1", "Ingress", "fin", NS) is None


@pytest.mark.anyio
async def test_cluster_scoped_ingress_classes_and_endpoint_slices(kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    await net.create_ingress_class(
        {"metadata": {"name": "silex"}, "spec": {"controller": "example.com/silex"}}
    )
    classes = await net.list_ingress_class()
    assert [c.spec.controller for c in classes.items] == ["example.com/silex"]
    assert classes.items[0].metadata.namespace is None

    discovery = client.DiscoveryV1Api(kube)
    await discovery.create_namespaced_endpoint_slice(
        NS,
        {
            "metadata": {"name": "svc-abc", "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        },
    )
    slices = await discovery.list_endpoint_slice_for_all_namespaces(
        label_selector="kubernetes.io/service-name=svc"
    )
    assert slices.items[0].endpoints[0].addresses == ["127.0.0.1"]


@pytest.mark.anyio
async def test_leases(kube: ApiClient) -> None:
    coordination = client.CoordinationV1Api(kube)
    lease = await coordination.create_namespaced_lease(
        NS,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name="silex-leader"),
            spec=client.V1LeaseSpec(holder_identity="pod-a", lease_duration_seconds=15),
        ),
    )
    mine = await coordination.read_namespaced_lease("silex-leader", NS)
    theirs = await coordination.read_namespaced_lease("silex-leader", NS)

    mine.spec.holder_identity = "pod-b"
    mine.spec.renew_time = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    won = await coordination.replace_namespaced_lease("silex-leader", NS, mine)
    assert won.spec.holder_identity == "pod-b"
    assert int(won.metadata.resource_version) > int(lease.metadata.resource_version)

    theirs.spec.holder_identity = "pod-c"
    with pytest.raises(ApiException) as caught:
        await coordination.replace_namespaced_lease("silex-leader", NS, theirs)
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "Conflict"
    current = await coordination.read_namespaced_lease("silex-leader", NS)
    assert current.spec.holder_identity == "pod-b"
    assert current.spec.renew_time is not None


@pytest.mark.anyio
async def test_events_core_and_events_k8s_io(api: FakeApiServer, kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_event(
        NS,
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name="web."),
            involved_object=client.V1ObjectReference(
                kind="Ingress", name="web", namespace=NS, api_version="networking.k8s.io/v1"
            ),
            reason="Sync",
            message="synced",
            type="Normal",
            source=client.V1EventSource(component="silex"),
        ),
    )
    events_api = client.EventsV1Api(kube)
    created = await events_api.create_namespaced_event(
        NS,
        client.EventsV1Event(
            metadata=client.V1ObjectMeta(name="web.2"),
            event_time=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
            regarding=client.V1ObjectReference(kind="Ingress", name="web", namespace=NS),
            reason="Invalid",
            note="bad backend",
            type="Warning",
            action="Validate",
            reporting_controller="example.com/silex",
            reporting_instance="silex-0",
        ),
    )
    assert created.note == "bad backend"

    core_events = await core.list_namespaced_event(NS, field_selector="involvedObject.name=web")
    assert len(core_events.items) == 1
    assert core_events.items[0].metadata.name.startswith("web.")
    assert core_events.items[0].reason == "Sync"
    listed = await events_api.list_namespaced_event(NS, field_selector="regarding.name=web")
    assert [e.reason for e in listed.items] == ["Invalid"]

    everything = api.events(NS)
    assert [(e["apiVersion"], e["reason"]) for e in everything] == [
        ("v1", "Sync"),
        ("events.k8s.io/v1", "Invalid"),
    ]


# ==================================================================== faults


@pytest.mark.anyio
async def test_injected_500s(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    core = client.CoreV1Api(kube)
    api.fail_next(2, path_contains="/ingresses")
    await core.list_namespaced_service(NS)  # does not match: not failed
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            await net.list_namespaced_ingress(NS)
        assert caught.value.status == 500
        assert status_of(caught.value)["reason"] == "InternalError"
    await net.list_namespaced_ingress(NS)
    assert [r.status for r in api.requests if r.path.endswith("/ingresses")] == [500, 500, 200]

    # A failed watch start reaches Watch as a Status line: ApiException(500), no retry.
    api.fail_next(1, path_contains="watch=")
    with anyio.fail_after(10), pytest.raises(ApiException) as caught:
        await drain_watch(net.list_namespaced_ingress, NS)
    assert caught.value.status == 500
    assert watch_requests(api) == 1


@pytest.mark.anyio
async def test_delay(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)
    api.set_delay(3.0, path_contains="/ingresses")
    with anyio.fail_after(10), pytest.raises(asyncio.TimeoutError):
        await net.list_namespaced_ingress(NS, _request_timeout=0.2)
    api.set_delay(0.0)
    assert (await net.list_namespaced_ingress(NS)).items == []


@pytest.mark.anyio
async def test_go_away_then_reconnect(api: FakeApiServer, kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.list_namespace()
    port = api.port
    await api.go_away(0.5)
    assert not api.is_listening
    with pytest.raises(aiohttp.ClientConnectionError):
        await core.list_namespace()
    assert await api.wait_listening(10)
    assert api.port == port
    result: Any = None
    with anyio.fail_after(10):
        for _ in range(50):  # bounded: tolerate a pooled connection closing under us
            try:
                result = await core.list_namespace()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    assert result is not None
    assert "default" in {n.metadata.name for n in result.items}


@pytest.mark.anyio
async def test_go_away_breaks_open_watches(api: FakeApiServer, kube: ApiClient) -> None:
    net = client.NetworkingV1Api(kube)

    async def consume() -> None:
        async with watch.Watch() as stream:
            async for _ in stream.stream(net.list_namespaced_ingress, NS, timeout_seconds=30):
                pass

    with anyio.fail_after(15):
        task = asyncio.create_task(consume())
        await until(lambda: api.open_watches == 1)
        await api.go_away(0.3)
        with pytest.raises(aiohttp.ClientError):
            await task
        assert await api.wait_listening(10)


# ==================================================================== direct helpers and threads


def test_server_side_helpers_and_thread_mode() -> None:
    with FakeApiServer().running_in_thread() as api:
        created = api.create(ingress("x"))
        assert created["metadata"]["resourceVersion"] == str(api.resource_version)
        api.patch("networking.k8s.io/v1", "Ingress", "x", {"status": {"loadBalancer": {}}}, NS)
        api.apply({**ingress("x"), "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
        got = api.get("networking.k8s.io/v1", "Ingress", "x", NS)
        assert got is not None
        assert got["status"]["loadBalancer"]["ingress"][0]["ip"] == "1.2.3.4"

        def fetch(path: str) -> Any:
            request = urllib.request.Request(
                api.url + path, headers={"Authorization": f"Bearer {api.token}"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())

        listed = fetch("/apis/networking.k8s.io/v1/ingresses")
        assert listed["kind"] == "IngressList"
        assert [i["metadata"]["name"] for i in listed["items"]] == ["x"]
        assert "kind" not in listed["items"][0]

        api.run_threadsafe(api.go_away(0.3))
        with pytest.raises(urllib.error.URLError):
            fetch("/version")
        assert api.run_threadsafe(api.wait_listening(10), timeout=15)
        assert fetch("/version")["major"] == "1"

        async def with_client() -> list[str]:
            async with await make_client(api) as api_client:
                result = await client.NetworkingV1Api(api_client).list_ingress_for_all_namespaces()
                return [i.metadata.name for i in result.items]

        assert asyncio.run(with_client()) == ["x"]
        api.delete("networking.k8s.io/v1", "Ingress", "x", NS)
        assert api.list_objects("networking.k8s.io/v1", "Ingress") == []
        kubeconfig = api.kubeconfig_path
        assert kubeconfig is not None
        assert kubeconfig.exists()
    assert not kubeconfig.exists()
