"""Store readiness, change counting and snapshot immutability."""

from __future__ import annotations

from builders import ingress, service

from silex.objects import KINDS
from silex.store import Snapshot, Store


def test_ready_only_after_every_kind_is_listed() -> None:
    store = Store()
    for kind in KINDS[:-1]:
        store.mark_listed(kind)
        assert not store.ready
    store.mark_listed(KINDS[-1])
    assert store.ready


def test_file_mode_marks_all_listed_at_once() -> None:
    store = Store()
    store.replace_all([(service("s"), "s.yaml")])
    assert store.ready
    assert store.snapshot().source_of("Service", "default", "s") == "s.yaml"


def test_changes_bump_revision_and_snapshots_stay_frozen() -> None:
    store = Store()
    store.mark_all_listed()
    before = store.snapshot()
    revision = store.revision
    store.upsert(ingress("a"))
    assert store.revision > revision
    after = store.snapshot()
    assert before.ingresses == {}
    assert list(after.ingresses) == [("default", "a")]
    assert store.snapshot() is after  # cached until the next change
    store.delete("Ingress", "default", "a")
    assert store.snapshot().ingresses == {}
    assert list(after.ingresses) == [("default", "a")]
    revision = store.revision
    store.delete("Ingress", "default", "missing")
    assert store.revision == revision


def test_replace_kind_is_a_relist() -> None:
    store = Store()
    store.upsert(service("old"))
    store.replace_kind("Service", [service("new")])
    assert list(store.snapshot().services) == [("default", "new")]


def test_snapshot_of() -> None:
    snapshot = Snapshot.of([service("b"), service("a")])
    assert list(snapshot.services) == [("default", "a"), ("default", "b")]
