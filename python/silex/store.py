"""The operator's view of the cluster: typed objects per kind, and immutable snapshots of it.

Sources (manifest files now, the Kubernetes API later) feed a :class:`Store` through the same
calls: :meth:`Store.upsert` / :meth:`Store.delete` per object, :meth:`Store.mark_listed` when a
kind's initial list is complete (file mode calls :meth:`Store.mark_all_listed` once). The store is
:attr:`Store.ready` only when every kind has been listed, so the first table is never half-built.
:meth:`Store.snapshot` returns a :class:`Snapshot` that later changes do not affect.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from silex.objects import (
    KINDS,
    EndpointSlice,
    Ingress,
    IngressClass,
    Kind,
    KubeObject,
    Secret,
    Service,
)

ObjectKey = tuple[str, str]
"""``(namespace, name)``; namespace ``""`` for cluster-scoped kinds."""


ObjectT = TypeVar("ObjectT", Ingress, IngressClass, Service, EndpointSlice, Secret)


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """An immutable view of every object, per kind, keyed by ``(namespace, name)``."""

    ingresses: Mapping[ObjectKey, Ingress] = field(default_factory=dict)
    ingress_classes: Mapping[ObjectKey, IngressClass] = field(default_factory=dict)
    services: Mapping[ObjectKey, Service] = field(default_factory=dict)
    endpoint_slices: Mapping[ObjectKey, EndpointSlice] = field(default_factory=dict)
    secrets: Mapping[ObjectKey, Secret] = field(default_factory=dict)
    sources: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    """``(kind, namespace, name)`` -> manifest file the object came from (file mode only)."""
    revision: int = 0
    """The store's change counter when this snapshot was taken."""

    @classmethod
    def of(cls, objects: Iterable[KubeObject]) -> Snapshot:
        """A snapshot holding exactly ``objects`` (later duplicates replace earlier ones)."""
        store = Store()
        store.replace_all((obj, None) for obj in objects)
        return store.snapshot()

    def source_of(self, kind: str, namespace: str, name: str) -> str | None:
        """The manifest file an object came from, if known."""
        return self.sources.get((kind, namespace, name))


class Store:
    """Mutable object store with per-kind "initial list done" tracking and a change counter."""

    def __init__(self) -> None:
        self._objects: dict[Kind, dict[ObjectKey, KubeObject]] = {kind: {} for kind in KINDS}
        self._sources: dict[tuple[str, str, str], str] = {}
        self._listed: set[Kind] = set()
        self._revision = 0
        self._snapshot: Snapshot | None = None

    @property
    def revision(self) -> int:
        """Incremented on every change (upsert, delete, replace, listing)."""
        return self._revision

    @property
    def ready(self) -> bool:
        """True once every kind has finished its initial list."""
        return self._listed.issuperset(KINDS)

    def _changed(self) -> None:
        self._revision += 1
        self._snapshot = None

    def upsert(self, obj: KubeObject, *, source: str | None = None) -> None:
        """Add or replace one object (keyed by kind, namespace and name)."""
        self._objects[obj.KIND][obj.key] = obj
        source_key = (obj.KIND, *obj.key)
        if source is None:
            self._sources.pop(source_key, None)
        else:
            self._sources[source_key] = source
        self._changed()

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        """Remove one object; removing an unknown object is not an error."""
        removed = self._objects[kind].pop((namespace, name), None)
        self._sources.pop((kind, namespace, name), None)
        if removed is not None:
            self._changed()

    def replace_kind(self, kind: Kind, objects: Iterable[KubeObject]) -> None:
        """Replace every object of one kind (a re-list) and mark the kind listed."""
        self._objects[kind] = {}
        self._sources = {key: src for key, src in self._sources.items() if key[0] != kind}
        for obj in objects:
            self._objects[kind][obj.key] = obj
        self._listed.add(kind)
        self._changed()

    def replace_all(self, objects: Iterable[tuple[KubeObject, str | None]]) -> None:
        """Replace everything with ``(object, source)`` pairs; every kind counts as listed."""
        self._objects = {kind: {} for kind in KINDS}
        self._sources = {}
        for obj, source in objects:
            self._objects[obj.KIND][obj.key] = obj
            if source is not None:
                self._sources[(obj.KIND, *obj.key)] = source
        self._listed = set(KINDS)
        self._changed()

    def mark_listed(self, kind: Kind) -> None:
        """Record that the initial list of ``kind`` is complete."""
        if kind not in self._listed:
            self._listed.add(kind)
            self._changed()

    def mark_all_listed(self) -> None:
        """Record that every kind is listed (file mode: everything is read at once)."""
        for kind in KINDS:
            self.mark_listed(kind)

    def snapshot(self) -> Snapshot:
        """An immutable snapshot of the current content (cached until the next change)."""
        if self._snapshot is None:
            self._snapshot = Snapshot(
                ingresses=self._frozen("Ingress", Ingress),
                ingress_classes=self._frozen("IngressClass", IngressClass),
                services=self._frozen("Service", Service),
                endpoint_slices=self._frozen("EndpointSlice", EndpointSlice),
                secrets=self._frozen("Secret", Secret),
                sources=MappingProxyType(dict(self._sources)),
                revision=self._revision,
            )
        return self._snapshot

    def _frozen(self, kind: Kind, model: type[ObjectT]) -> Mapping[ObjectKey, ObjectT]:
        items = sorted(self._objects[kind].items())
        return MappingProxyType({key: obj for key, obj in items if isinstance(obj, model)})
