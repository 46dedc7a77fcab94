"""Leader election on one Lease in the fake API server (short durations; no timing asserts)."""

from __future__ import annotations

import anyio
import pytest
from kube_builders import until

from fake_apiserver import FakeApiServer
from silex.leader import ElectionSettings, LeaderElector
from silex.sources.kube import KubeClient

pytestmark = pytest.mark.anyio

LEASE = "coordination.k8s.io/v1"


def settings(identity: str, *, release: bool = True) -> ElectionSettings:
    return ElectionSettings(
        name="silex-leader",
        namespace="default",
        identity=identity,
        lease_duration_s=1.0,
        renew_deadline_s=0.6,
        retry_period_s=0.05,
        release_on_stop=release,
    )


def holder(api: FakeApiServer) -> str | None:
    lease = api.get(LEASE, "Lease", "silex-leader", "default")
    return None if lease is None else lease["spec"].get("holderIdentity")


async def test_two_electors_one_leader_then_takeover_after_expiry(
    api: FakeApiServer, kube: KubeClient
) -> None:
    first = LeaderElector(kube, settings("a", release=False))
    second = LeaderElector(kube, settings("b", release=False))
    async with anyio.create_task_group() as group:
        scopes = {}
        for elector in (first, second):
            scope = anyio.CancelScope()
            scopes[elector.identity] = scope

            async def run(
                elector: LeaderElector = elector, scope: anyio.CancelScope = scope
            ) -> None:
                with scope:
                    await elector.run()

            group.start_soon(run)
        leader = await until(
            lambda: next((e for e in (first, second) if e.is_leader), None), what="a leader"
        )
        follower = second if leader is first else first
        for _ in range(30):  # many election rounds: never two leaders
            assert not (first.is_leader and second.is_leader)
            await anyio.sleep(0.02)
        assert leader.is_leader
        assert not follower.is_leader
        assert holder(api) == leader.identity

        scopes[leader.identity].cancel()  # the leader dies without releasing the Lease
        await until(lambda: follower.is_leader, what="takeover after expiry")
        assert not leader.is_leader
        assert holder(api) == follower.identity
        lease = api.get(LEASE, "Lease", "silex-leader", "default")
        assert lease is not None
        assert lease["spec"]["leaseTransitions"] >= 1
        group.cancel_scope.cancel()


async def test_release_on_stop_hands_over(api: FakeApiServer, kube: KubeClient) -> None:
    first = LeaderElector(kube, settings("a"))
    second = LeaderElector(kube, settings("b"))
    changes: list[bool] = []
    first.on_change = changes.append
    async with anyio.create_task_group() as group:
        scope = anyio.CancelScope()

        async def run_first() -> None:
            with scope:
                await first.run()

        group.start_soon(run_first)
        await until(lambda: first.is_leader, what="first leads")
        group.start_soon(second.run)
        scope.cancel()
        await until(lambda: holder(api) in ("", "b"), what="released")
        await until(lambda: second.is_leader, what="second leads")
        assert changes == [True, False]
        group.cancel_scope.cancel()


async def test_losing_the_lease_to_another_holder_stops_at_once(
    api: FakeApiServer, kube: KubeClient
) -> None:
    elector = LeaderElector(kube, settings("a"))
    async with anyio.create_task_group() as group:
        group.start_soon(elector.run)
        await until(lambda: elector.is_leader, what="leader")
        lease = api.get(LEASE, "Lease", "silex-leader", "default")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "intruder"
        lease["spec"]["leaseDurationSeconds"] = 3600
        api.update(lease)
        await until(lambda: not elector.is_leader, what="stepped down")
        group.cancel_scope.cancel()


async def test_api_errors_end_leadership_after_the_renew_deadline(
    api: FakeApiServer, kube: KubeClient
) -> None:
    elector = LeaderElector(kube, settings("a"))
    async with anyio.create_task_group() as group:
        group.start_soon(elector.run)
        await until(lambda: elector.is_leader, what="leader")
        api.fail_next(10_000, status=500, path_contains="/leases")
        await until(lambda: not elector.is_leader, what="stepped down")
        api.clear_failures()
        await until(lambda: elector.is_leader, what="leader again")
        group.cancel_scope.cancel()
