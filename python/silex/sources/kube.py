"""The Kubernetes API as a source of objects: the only module that imports kubernetes_asyncio.

Two parts:

- :class:`KubeClient`: a thin JSON-in/JSON-out client over kubernetes-asyncio's ``ApiClient``
  (auth, TLS and kubeconfig handling come from it). Every failure is a :class:`KubeError`
  (``status`` 0 when the server could not be reached). :mod:`silex.leader`, :mod:`silex.status`
  and :mod:`silex.events` talk to the API only through it.
- :class:`KubeSource`: one explicit list -> watch state machine per kind and namespace, feeding
  a :class:`~silex.store.Store`:

  1. **list** (records the list's resourceVersion; the kind's objects in that scope are
     *replaced*, so an object deleted while we were not watching disappears);
  2. **watch** from that resourceVersion with ``allowWatchBookmarks`` and a server-side
     ``timeoutSeconds``; ADDED/MODIFIED/DELETED update the store, BOOKMARKs advance the
     resourceVersion;
  3. a stream that ends cleanly -> watch again from the last resourceVersion;
  4. **410 Gone** (as the HTTP status of the watch, or as an in-stream ``ERROR`` event) -> back
     to 1 at once;
  5. any other error -> exponential backoff with jitter, then 2 (or 1, if never listed).

  kubernetes-asyncio's ``Watch`` helper is not used: its own retry (once on 410, reconnect
  forever without ``timeout_seconds``) would hide exactly the transitions this loop must see.
  The store is ready only when every kind has finished its first list in every scope.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import anyio
import msgspec
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient, ApiException

from silex import problems
from silex.metrics import OperatorMetrics
from silex.objects import CLUSTER_SCOPED_KINDS, KINDS, MODELS, Kind, KubeObject
from silex.problems import Problem
from silex.store import ObjectKey, Snapshot, Store

log = logging.getLogger("silex")

TLS_SECRET_SELECTOR: Final = "type=kubernetes.io/tls"
MAX_WATCH_LINE_BYTES: Final = 64 * 1024 * 1024
"""A watch event larger than this is a protocol error (the stream is restarted)."""


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    kind: Kind
    group_version: str
    plural: str
    field_selector: str | None = None

    @property
    def namespaced(self) -> bool:
        """False for cluster-scoped kinds (IngressClass)."""
        return self.kind not in CLUSTER_SCOPED_KINDS

    def path(self, namespace: str | None) -> str:
        """The collection URL path, in one namespace or across all (``namespace=None``)."""
        prefix = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        if namespace is not None and self.namespaced:
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"


RESOURCES: Final[Mapping[Kind, Resource]] = {
    "Ingress": Resource("Ingress", "networking.k8s.io/v1", "ingresses"),
    "IngressClass": Resource("IngressClass", "networking.k8s.io/v1", "ingressclasses"),
    "Service": Resource("Service", "v1", "services"),
    "EndpointSlice": Resource("EndpointSlice", "discovery.k8s.io/v1", "endpointslices"),
    "Secret": Resource("Secret", "v1", "secrets", field_selector=TLS_SECRET_SELECTOR),
}


# --- errors and the JSON client -----------------------------------------------------------------


class KubeError(Exception):
    """An API call failed: ``status`` is the HTTP status, 0 when the server was unreachable."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status or 'unreachable'}: {message}" if message else str(status))
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def gone(self) -> bool:
        """410: the resourceVersion is too old (relist)."""
        return self.status == 410

    @property
    def conflict(self) -> bool:
        """409: stale resourceVersion on update, or AlreadyExists on create."""
        return self.status == 409

    @property
    def not_found(self) -> bool:
        """404."""
        return self.status == 404


class _Status(msgspec.Struct, frozen=True):
    code: int = 0
    reason: str = ""
    message: str = ""


def _error_of(status: int, body: bytes) -> KubeError:
    try:
        parsed = msgspec.json.decode(body, type=_Status)
    except (msgspec.ValidationError, msgspec.DecodeError):
        text = body[:200].decode("utf-8", "replace").strip()
        return KubeError(status, text or f"HTTP {status}")
    return KubeError(status, parsed.message or f"HTTP {status}", parsed.reason)


_TRANSPORT_ERRORS: Final = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class KubeClient:
    """JSON requests to the API server through kubernetes-asyncio's configured ``ApiClient``."""

    def __init__(self, api: ApiClient, *, request_timeout_s: float = 30.0) -> None:
        self.api = api
        self.request_timeout_s = request_timeout_s

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeClient:
        """In-cluster config when ``KUBERNETES_SERVICE_HOST`` is set and no kubeconfig is given;
        else the kubeconfig (``None``: ``$KUBECONFIG`` or ``~/.kube/config``).

        Raises :class:`KubeError` (status 0) when no configuration can be loaded.
        """
        configuration = client.Configuration()
        try:
            if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
            else:
                await config.load_kube_config(
                    config_file=kubeconfig, client_configuration=configuration
                )
        except Exception as exc:  # any config problem (YAML, missing keys, files)
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise KubeError(
                0, f"cannot load the Kubernetes client configuration: {reason}"
            ) from exc
        return cls(ApiClient(configuration))

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self.api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | float | None = None,
    ) -> Any:
        """Start a request; returns the (unread) aiohttp response."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            return await self.api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout if timeout is not None else self.request_timeout_s,
            )
        except ApiException as exc:  # not raised with _preload_content=False; be safe
            raise KubeError(exc.status or 0, str(exc.reason or "")) from exc
        except _TRANSPORT_ERRORS as exc:
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from exc

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
    ) -> bytes:
        """The response body of a successful request; raises :class:`KubeError` otherwise."""
        response = await self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=timeout_s
        )
        try:
            data: bytes = await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise KubeError(0, f"{type(exc).__name__}: {exc}") from exc
        finally:
            response.release()
        if not 200 <= response.status <= 299:
            raise _error_of(response.status, data)
        return data

    async def json(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Like :meth:`request`, the body parsed as a JSON object."""
        data = await self.request(method, path, query=query, body=body, content_type=content_type)
        try:
            parsed = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise KubeError(0, f"invalid JSON from the API server: {exc}") from exc
        if not isinstance(parsed, dict):
            raise KubeError(0, "expected a JSON object from the API server")
        return parsed

    async def watch_lines(
        self, path: str, query: Sequence[tuple[str, str]], timeout_s: float
    ) -> AsyncIterator[bytes]:
        """The JSON lines of a watch; raises :class:`KubeError` for a non-2xx start."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.request_timeout_s, sock_read=timeout_s + 30.0
        )
        response = await self._send("GET", path, query=query, timeout=timeout)
        try:
            if not 200 <= response.status <= 299:
                try:
                    data = await response.read()
                except _TRANSPORT_ERRORS:
                    data = b""
                raise _error_of(response.status, data)
            buffer = b""
            try:
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    if len(buffer) > MAX_WATCH_LINE_BYTES:
                        raise KubeError(0, "watch event too large")
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield line
            except _TRANSPORT_ERRORS as exc:
                raise KubeError(0, f"watch stream broken: {type(exc).__name__}: {exc}") from exc
            if buffer.strip():
                yield buffer
        finally:
            response.release()


# --- backoff ------------------------------------------------------------------------------------


class Backoff:
    """Exponential backoff with jitter: attempt n waits uniformly in [d/2, d], d = base * 2^n
    capped at ``cap_s``."""

    def __init__(self, base_s: float = 0.2, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count this attempt)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """After a success: the next failure waits ``base_s`` again."""
        self.attempt = 0


# --- the watch state machine --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class WatchSettings:
    """Tunables of :class:`KubeSource` (tests shorten them)."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all."""
    watch_timeout_s: int = 300
    """Server-side ``timeoutSeconds`` of each watch request."""
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0
    list_timeout_s: float = 120.0
    """Client-side timeout of one list request."""


class _ListMeta(msgspec.Struct, frozen=True, rename="camel"):
    resource_version: str = ""


class _List(msgspec.Struct, frozen=True):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[msgspec.Raw] | None = None


class _Event(msgspec.Struct, frozen=True):
    type: str
    object: msgspec.Raw


class _Meta(msgspec.Struct, frozen=True, rename="camel"):
    name: str = ""
    namespace: str = ""
    resource_version: str = ""


class _Bare(msgspec.Struct, frozen=True):
    metadata: _Meta = msgspec.field(default_factory=_Meta)


class _Gone(Exception):
    """The watch's resourceVersion is gone (410): relist."""


SourceState = tuple[Snapshot, list[Problem]]


class KubeSource:
    """Watches every kind Silex reads and keeps :attr:`store` in sync with the API server."""

    def __init__(
        self,
        kube: KubeClient,
        settings: WatchSettings | None = None,
        store: Store | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings or WatchSettings()
        self.store = store or Store()
        self.metrics = metrics or OperatorMetrics()
        """Counts watch events and watch restarts."""
        self._changed = anyio.Event()
        self._ready = anyio.Event()
        self._problems: dict[tuple[str, str, str], Problem] = {}
        scopes: tuple[str | None, ...] = self.settings.namespaces or (None,)
        self._pending: dict[Kind, set[str | None]] = {
            kind: ({None} if kind in CLUSTER_SCOPED_KINDS else set(scopes)) for kind in KINDS
        }
        self.relists = 0
        """How many 410-triggered relists happened (for tests and metrics)."""
        self.resource_versions: dict[tuple[Kind, str | None], str] = {}
        """The last resourceVersion seen per watch (kind, namespace or None)."""

    # -- state out ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once every kind finished its initial list in every scope."""
        return self.store.ready

    async def wait_ready(self) -> None:
        """Return once :attr:`ready`."""
        await self._ready.wait()

    def problems(self) -> list[Problem]:
        """Objects the API returned that could not be read (skipped)."""
        return list(self._problems.values())

    def state(self) -> SourceState:
        """The current snapshot and problems; marks everything so far as consumed."""
        self._changed = anyio.Event()
        return self.store.snapshot(), self.problems()

    async def states(self) -> AsyncIterator[SourceState]:
        """A new state after each change (once ready); never ends by itself."""
        await self.wait_ready()
        while True:
            await self._changed.wait()
            yield self.state()

    def _notify(self) -> None:
        self._changed.set()
        if self.store.ready:
            self._ready.set()

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every watcher until cancelled."""
        async with anyio.create_task_group() as group:
            for kind in KINDS:
                for namespace in self._pending[kind]:
                    group.start_soon(self._watch_forever, RESOURCES[kind], namespace)

    async def _watch_forever(self, resource: Resource, namespace: str | None) -> None:
        where = f"{resource.plural}" + (f" in namespace {namespace}" if namespace else "")
        backoff = Backoff(self.settings.backoff_base_s, self.settings.backoff_cap_s)
        known: set[ObjectKey] = set()
        rv: str | None = None
        failures = 0
        # Bounded per iteration: each step is a request with a client timeout or a backoff sleep;
        # the loop itself runs until the task is cancelled.
        while True:
            try:
                if rv is None:
                    rv = await self._list(resource, namespace, known)
                    self.resource_versions[(resource.kind, namespace)] = rv
                    backoff.reset()
                rv, progressed = await self._watch(resource, namespace, rv, known)
                self.metrics.watch_restart(resource.kind, "timeout")
                if progressed:
                    backoff.reset()
                else:  # ended at once with nothing received: do not spin
                    await anyio.sleep(backoff.next_delay())
                failures = 0
            except _Gone:
                log.info("watch of %s: resourceVersion %s is gone (410); relisting", where, rv)
                self.relists += 1
                self.metrics.watch_restart(resource.kind, "gone")
                rv = None
            except KubeError as exc:
                failures += 1
                self.metrics.watch_restart(resource.kind, "error")
                delay = backoff.next_delay()
                level = logging.WARNING if failures <= 3 or failures % 20 == 0 else logging.DEBUG
                log.log(
                    level,
                    "%s %s failed (%s); retrying in %.1fs",
                    "list of" if rv is None else "watch of",
                    where,
                    exc,
                    delay,
                )
                await anyio.sleep(delay)
            if rv is not None:
                self.resource_versions[(resource.kind, namespace)] = rv

    def _decode(self, resource: Resource, raw: bytes | msgspec.Raw) -> KubeObject | None:
        model = MODELS[resource.kind]
        try:
            obj = msgspec.json.decode(raw, type=model)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            try:
                meta = msgspec.json.decode(raw, type=_Bare).metadata
            except (msgspec.ValidationError, msgspec.DecodeError):
                meta = _Meta()
            problem = problems.error(
                f"cannot read this object ({exc}); it is ignored",
                kind=resource.kind,
                namespace=meta.namespace,
                name=meta.name,
            )
            self._problems[(resource.kind, meta.namespace, meta.name)] = problem
            return None
        self._problems.pop((resource.kind, *obj.key), None)
        return obj

    def _query(self, resource: Resource) -> list[tuple[str, str]]:
        return [("fieldSelector", resource.field_selector)] if resource.field_selector else []

    async def _list(self, resource: Resource, namespace: str | None, known: set[ObjectKey]) -> str:
        data = await self.kube.request(
            "GET",
            resource.path(namespace),
            query=self._query(resource),
            timeout_s=self.settings.list_timeout_s,
        )
        try:
            listed = msgspec.json.decode(data, type=_List)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise KubeError(0, f"invalid list response: {exc}") from exc
        objects = [
            obj for obj in (self._decode(resource, raw) for raw in listed.items or []) if obj
        ]
        kind = resource.kind
        if len(self._pending[kind]) <= 1 and (namespace is None or not resource.namespaced):
            self.store.replace_kind(kind, objects)  # the whole kind, in one change
        else:
            new_keys = {obj.key for obj in objects}
            for key in known - new_keys:
                self.store.delete(kind, *key)
            for obj in objects:
                self.store.upsert(obj)
        known.clear()
        known.update(obj.key for obj in objects)
        pending = self._pending[kind]
        pending.discard(namespace)
        if not pending:
            self.store.mark_listed(kind)
        log.debug(
            "listed %d %s at resourceVersion %s", len(objects), resource.plural, rv_of(listed)
        )
        self._notify()
        return rv_of(listed)

    async def _watch(
        self, resource: Resource, namespace: str | None, rv: str, known: set[ObjectKey]
    ) -> tuple[str, bool]:
        """Watch from ``rv`` until the stream ends; returns the last resourceVersion and whether
        anything arrived. Raises :class:`_Gone` on 410, :class:`KubeError` on other errors."""
        query = [
            *self._query(resource),
            ("watch", "true"),
            ("resourceVersion", rv),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.settings.watch_timeout_s)),
        ]
        progressed = False
        try:
            async for line in self.kube.watch_lines(
                resource.path(namespace), query, self.settings.watch_timeout_s
            ):
                progressed = True
                rv = self._apply_event(resource, line, rv, known)
                self.resource_versions[(resource.kind, namespace)] = rv
        except KubeError as exc:
            if exc.gone:
                raise _Gone from exc
            raise
        return rv, progressed

    def _apply_event(self, resource: Resource, line: bytes, rv: str, known: set[ObjectKey]) -> str:
        try:
            event = msgspec.json.decode(line, type=_Event)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise KubeError(0, f"invalid watch event: {exc}") from exc
        self.metrics.watch_event(resource.kind, event.type)
        if event.type == "ERROR":
            try:
                status = msgspec.json.decode(event.object, type=_Status)
            except (msgspec.ValidationError, msgspec.DecodeError):
                status = _Status(code=0, message="unreadable ERROR event")
            if status.code == 410:
                raise _Gone
            raise KubeError(status.code, status.message or "ERROR event", status.reason)
        try:
            bare = msgspec.json.decode(event.object, type=_Bare)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise KubeError(0, f"invalid watch event object: {exc}") from exc
        new_rv = bare.metadata.resource_version or rv
        if event.type == "BOOKMARK":
            return new_rv
        kind = resource.kind
        namespace = bare.metadata.namespace if resource.namespaced else ""
        key = (namespace, bare.metadata.name)
        if event.type == "DELETED":
            self.store.delete(kind, *key)
            self._problems.pop((kind, *key), None)
            known.discard(key)
        elif event.type in ("ADDED", "MODIFIED"):
            obj = self._decode(resource, event.object)
            if obj is None:
                self.store.delete(kind, *key)
                known.discard(key)
            else:
                self.store.upsert(obj)
                known.add(obj.key)
        else:
            log.debug("ignoring watch event of type %s", event.type)
            return new_rv
        self._notify()
        return new_rv


def rv_of(listed: _List) -> str:
    """The resourceVersion of a list response."""
    return listed.metadata.resource_version or "0"


__all__ = [
    "RESOURCES",
    "Backoff",
    "KubeClient",
    "KubeError",
    "KubeSource",
    "Resource",
    "SourceState",
    "WatchSettings",
]
