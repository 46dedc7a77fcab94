"""The object store of the fake API server: objects, one global resourceVersion, the event
history (for watches that resume from a resourceVersion) and the open watchers.

Everything here is synchronous and guarded by one lock, so tests may call it from any thread;
watchers are fed through ``loop.call_soon_threadsafe`` so events reach each watch in commit
order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._errors import ApiError, already_exists, conflict, expired, not_found
from ._patch import apply_patch
from ._resources import ResourceType

Obj = dict[str, Any]
Matcher = Callable[[Mapping[str, Any]], bool]
# What a watcher's queue carries: ("event", {"type", "object"}), ("bookmark", rv),
# ("error", status), ("close", None).
WatchItem = tuple[str, Any]
WatchAction = Literal["error", "close", "keep"]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What "spec changes" means for metadata.generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


@dataclass(frozen=True)
class HistoryEvent:
    rv: int
    type: str  # ADDED, MODIFIED or DELETED
    resource: ResourceType
    obj: Obj
    prev: Obj | None


class Watcher:
    """One open watch: its filter and a queue on the event loop serving it."""

    def __init__(
        self,
        resource: ResourceType,
        namespace: str | None,
        matcher: Matcher,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.matcher = matcher
        self.loop = loop
        self.queue: asyncio.Queue[WatchItem] = asyncio.Queue()
        self.closed = False

    def push(self, item: WatchItem) -> None:
        """Thread-safe, order-preserving enqueue."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
            self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: WatchItem) -> None:
        if not self.closed:
            self.queue.put_nowait(item)

    def translate(self, event: HistoryEvent) -> dict[str, Any] | None:
        """The watch event this watcher sees for a history event (None: not for it).

        As on the real server, a MODIFIED object that starts matching the selectors is seen
        as ADDED, and one that stops matching as DELETED.
        """
        if event.resource is not self.resource:
            return None
        if self.namespace is not None and _meta(event.obj).get("namespace") != self.namespace:
            return None
        new_match = self.matcher(event.obj)
        if event.type in ("ADDED", "DELETED"):
            return {"type": event.type, "object": event.obj} if new_match else None
        old_match = event.prev is not None and self.matcher(event.prev)
        if new_match and old_match:
            return {"type": "MODIFIED", "object": event.obj}
        if new_match:
            return {"type": "ADDED", "object": event.obj}
        if old_match:
            return {"type": "DELETED", "object": event.obj}
        return None


class Store:
    """Objects keyed by (resource, namespace, name); stored dicts are never mutated."""

    def __init__(self, *, history_limit: int = 10_000, first_resource_version: int = 1000) -> None:
        self.lock = threading.RLock()
        self.rv = first_resource_version
        self.objects: dict[tuple[ResourceType, str, str], Obj] = {}
        self.history: collections.deque[HistoryEvent] = collections.deque()
        self.compacted_rv = first_resource_version
        self.history_limit = history_limit
        self.watchers: set[Watcher] = set()

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _key(
        resource: ResourceType, namespace: str | None, name: str
    ) -> tuple[ResourceType, str, str]:
        return (resource, namespace or "" if resource.namespaced else "", name)

    def _commit(self, kind: str, resource: ResourceType, obj: Obj, prev: Obj | None) -> None:
        event = HistoryEvent(self.rv, kind, resource, obj, prev)
        self.history.append(event)
        while len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv
        for watcher in list(self.watchers):
            seen = watcher.translate(event)
            if seen is not None:
                watcher.push(("event", seen))

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    # ---------------------------------------------------------------- reads

    def get(self, resource: ResourceType, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self.objects.get(self._key(resource, namespace, name))
            if obj is None:
                raise not_found(resource.plural, resource.group, name)
            return copy.deepcopy(obj)

    def list_objects(
        self, resource: ResourceType, namespace: str | None, matcher: Matcher | None = None
    ) -> tuple[list[Obj], int]:
        """Matching objects in key order, and the list's resourceVersion."""
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(
                    self.objects.items(), key=lambda kv: (kv[0][1], kv[0][2])
                )
                if res is resource
                and (namespace is None or ns == namespace)
                and (matcher is None or matcher(obj))
            ]
            return items, self.rv

    # ---------------------------------------------------------------- writes

    def create(
        self,
        resource: ResourceType,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        reset_status: bool = True,
    ) -> Obj:
        obj = copy.deepcopy(dict(body))
        self._check_type(resource, obj)
        meta = dict(_meta(obj))
        obj["metadata"] = meta
        name = meta.get("name") or ""
        with self.lock:
            if not name:
                prefix = meta.get("generateName") or ""
                if not prefix:
                    raise ApiError(
                        422,
                        "Invalid",
                        f'{resource.kind} "" is invalid: metadata.name: Required value: '
                        "name or generateName is required",
                    )
                name = prefix + secrets.token_hex(3)[:5]
                meta["name"] = name
            if resource.namespaced:
                body_ns = meta.get("namespace")
                if namespace and body_ns and body_ns != namespace:
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace "
                        "sent on the request",
                    )
                ns = namespace or body_ns or "default"
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
                ns = ""
            key = self._key(resource, ns, name)
            if key in self.objects:
                raise already_exists(resource.plural, resource.group, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            meta.pop("deletionTimestamp", None)
            meta["resourceVersion"] = self._next_rv()
            obj["apiVersion"] = resource.api_version
            obj["kind"] = resource.kind
            if resource.status_subresource and reset_status:
                obj["status"] = {}
            self.objects[key] = obj
            self._commit("ADDED", resource, obj, None)
            return copy.deepcopy(obj)

    def update(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any],
        *,
        status: bool = False,
        keep_status: bool | None = None,
    ) -> Obj:
        """PUT semantics. ``status``: the /status subresource (only .status changes).
        ``keep_status`` (default: the resource has a status subresource and this is not the
        status subresource) ignores .status changes of the body."""
        new = copy.deepcopy(dict(body))
        self._check_type(resource, new)
        new_meta = dict(_meta(new))
        if new_meta.get("name") and new_meta["name"] != name:
            raise ApiError(
                400,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            )
        with self.lock:
            key = self._key(resource, namespace, name)
            old = self.objects.get(key)
            if old is None:
                raise not_found(resource.plural, resource.group, name)
            old_meta = _meta(old)
            wanted_rv = new_meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old_meta.get("resourceVersion"):
                raise conflict(resource.plural, resource.group, name)
            if status:
                merged = copy.deepcopy(old)
                merged["status"] = new.get("status", {})
                new = merged
                new_meta = dict(_meta(new))
            else:
                if keep_status is None:
                    keep_status = resource.status_subresource
                if keep_status:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
            for server_owned in ("uid", "creationTimestamp", "deletionTimestamp", "namespace"):
                if server_owned in old_meta:
                    new_meta[server_owned] = old_meta[server_owned]
                else:
                    new_meta.pop(server_owned, None)
            new_meta["name"] = name
            new_meta["generation"] = old_meta.get("generation", 1)
            new_meta["resourceVersion"] = old_meta.get("resourceVersion")
            new["metadata"] = new_meta
            new["apiVersion"] = resource.api_version
            new["kind"] = resource.kind
            if new == old:
                return copy.deepcopy(old)  # a no-op update does not bump resourceVersion
            if _content(new) != _content(old):
                new_meta["generation"] = int(old_meta.get("generation", 1)) + 1
            new_meta["resourceVersion"] = self._next_rv()
            if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
                del self.objects[key]
                self._commit("DELETED", resource, new, old)
                return copy.deepcopy(new)
            self.objects[key] = new
            self._commit("MODIFIED", resource, new, old)
            return copy.deepcopy(new)

    def patch(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        body: Any,
        *,
        status: bool = False,
    ) -> Obj:
        with self.lock:
            current = self.get(resource, namespace, name)
            patched = apply_patch(current, content_type, body)
            return self.update(resource, namespace, name, patched, status=status)

    def delete(
        self,
        resource: ResourceType,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> tuple[Obj, bool]:
        """Delete; returns (object, gone). With finalizers the object only gets a
        deletionTimestamp (gone=False) and goes when the last finalizer is removed."""
        with self.lock:
            key = self._key(resource, namespace, name)
            old = self.objects.get(key)
            if old is None:
                raise not_found(resource.plural, resource.group, name)
            old_meta = _meta(old)
            if (uid and uid != old_meta.get("uid")) or (
                resource_version and resource_version != old_meta.get("resourceVersion")
            ):
                raise conflict(resource.plural, resource.group, name)
            new = copy.deepcopy(old)
            meta = new["metadata"]
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return copy.deepcopy(old), False
                meta["deletionTimestamp"] = now_rfc3339()
                meta["resourceVersion"] = self._next_rv()
                self.objects[key] = new
                self._commit("MODIFIED", resource, new, old)
                return copy.deepcopy(new), False
            meta["resourceVersion"] = self._next_rv()
            del self.objects[key]
            self._commit("DELETED", resource, new, old)
            return copy.deepcopy(new), True

    @staticmethod
    def _check_type(resource: ResourceType, obj: Mapping[str, Any]) -> None:
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if (kind and kind != resource.kind) or (
            api_version and api_version != resource.api_version
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) or kind ({kind}) does not match "
                f"the expected API version ({resource.api_version}) and kind ({resource.kind})",
            )
        if not isinstance(obj.get("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")

    # ---------------------------------------------------------------- history and watches

    def compact(self, resource_version: int | None = None, watches: WatchAction = "error") -> int:
        """Forget history up to ``resource_version`` (default: now). ``watches``: "error" sends
        open watches an in-stream ERROR 410 Expired event and ends them, "close" just ends
        them, "keep" leaves them running."""
        with self.lock:
            target = self.rv if resource_version is None else min(resource_version, self.rv)
            self.compacted_rv = max(self.compacted_rv, target)
            while self.history and self.history[0].rv <= self.compacted_rv:
                self.history.popleft()
            for watcher in list(self.watchers):
                if watches == "error":
                    watcher.push(("error", expired(self.compacted_rv, self.compacted_rv + 1)))
                elif watches == "close":
                    watcher.push(("close", None))
            return self.compacted_rv

    def open_watch(
        self,
        resource: ResourceType,
        namespace: str | None,
        matcher: Matcher,
        since: int | None,
        loop: asyncio.AbstractEventLoop,
    ) -> Watcher:
        """Register a watcher and queue its backlog: ADDED for every current object when
        ``since`` is None, else the history after ``since`` (410 Expired when compacted)."""
        watcher = Watcher(resource, namespace, matcher, loop)
        with self.lock:
            if since is None:
                items, _ = self.list_objects(resource, namespace, matcher)
                for obj in items:
                    watcher.queue.put_nowait(("event", {"type": "ADDED", "object": obj}))
            else:
                if since < self.compacted_rv:
                    raise expired(since, self.compacted_rv + 1)
                for event in self.history:
                    if event.rv > since:
                        seen = watcher.translate(event)
                        if seen is not None:
                            watcher.queue.put_nowait(("event", seen))
            self.watchers.add(watcher)
        return watcher

    def bookmark(self, watcher: Watcher) -> None:
        """Queue a BOOKMARK at the current resourceVersion behind every event already queued."""
        with self.lock:
            watcher.push(("bookmark", self.rv))

    def close_watch(self, watcher: Watcher) -> None:
        with self.lock:
            watcher.closed = True
            self.watchers.discard(watcher)

    def drop_watches(self) -> int:
        with self.lock:
            for watcher in list(self.watchers):
                watcher.push(("close", None))
            return len(self.watchers)
