"""``FakeApiServer``: an in-process aiohttp application speaking enough of the Kubernetes API
(discovery, CRUD, status subresource, list, watch with bookmarks) for kubernetes-asyncio to
run against it unmodified, with fault injection for tests.

Start it with ``async with FakeApiServer() as api:`` inside an event loop, or with
``with FakeApiServer().running_in_thread() as api:`` from synchronous code (for example when
the code under test runs in a subprocess). It writes a kubeconfig (``api.kubeconfig_path``)
pointing at itself over plain http with bearer-token auth.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web

from . import _resources
from ._errors import ApiError, status_body
from ._patch import MERGE
from ._resources import RESOURCES, ResourceType
from ._selectors import make_matcher
from ._store import Obj, Store, WatchAction, Watcher

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_MAX_WATCH_ITEMS = 1_000_000
_TRUE = ("true", "1")
_FAILURE_REASONS = {
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class RequestRecord:
    """One request the fake server received (the request log)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    body: bytes = b""
    status: int | None = None
    time: float = field(default_factory=time.monotonic)

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "").lower() in _TRUE


@dataclass
class _Failure:
    remaining: int
    status: int
    path_contains: str | None
    method: str | None


def _strip_type(obj: Obj) -> Obj:
    """List items carry no kind/apiVersion on the real server."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body).encode(), content_type="application/json"
    )


class FakeApiServer:
    """A fake kube-apiserver on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "fake-token",
        require_token: bool = True,
        bookmark_interval: float = 1.0,
        history_limit: int = 10_000,
        max_watch_seconds: float = 300.0,
        expired_watch_start: Literal["http", "event"] = "http",
        kubeconfig_path: str | Path | None = None,
        namespaces: tuple[str, ...] = DEFAULT_NAMESPACES,
        request_log_size: int = 10_000,
    ) -> None:
        """``expired_watch_start``: how a watch that starts at a compacted resourceVersion is
        answered: "http" is an HTTP 410 Status body, "event" is HTTP 200 with a single
        ``ERROR`` event (what a real kube-apiserver's watch cache sends)."""
        self.host = host
        self.port = port
        self.token = token
        self.require_token = require_token
        self.bookmark_interval = bookmark_interval
        self.max_watch_seconds = max_watch_seconds
        self.expired_watch_start = expired_watch_start
        self.store = Store(history_limit=history_limit)
        self._kubeconfig_arg = Path(kubeconfig_path) if kubeconfig_path else None
        self._tmpdir: str | None = None
        self.kubeconfig_path: Path | None = None
        self._lock = threading.Lock()
        self._requests: collections.deque[RequestRecord] = collections.deque(
            maxlen=request_log_size
        )
        self._failures: list[_Failure] = []
        self._delay = 0.0
        self._delay_path: str | None = None
        self._away = False
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._return_task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        for namespace in namespaces:
            self.create(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace},
                    "status": {"phase": "Active"},
                }
            )

    # ================================================================ lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_listening(self) -> bool:
        return self._site is not None and not self._away

    async def start(self) -> FakeApiServer:
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that goes away ends its watch handler (and its watcher).
        self._runner = web.AppRunner(
            app, shutdown_timeout=1.0, access_log=None, handler_cancellation=True
        )
        await self._runner.setup()
        await self._listen()
        self._write_kubeconfig()
        return self

    async def stop(self) -> None:
        self.store.drop_watches()
        if self._return_task is not None:
            self._return_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._return_task
            self._return_task = None
        await asyncio.sleep(0)  # let watch handlers see their close item
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def __aenter__(self) -> FakeApiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self._site = site
        if self.port == 0:
            self.port = int(self._runner.addresses[-1][1])

    def _write_kubeconfig(self) -> None:
        if self._kubeconfig_arg is not None:
            path = self._kubeconfig_arg
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="fake-apiserver-")
            path = Path(self._tmpdir) / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": "default"},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        self.kubeconfig_path = path

    # ---------------------------------------------------------------- thread mode

    def start_in_thread(self, timeout: float = 10.0) -> FakeApiServer:
        """Run the server on its own event loop in a daemon thread (for sync tests)."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name="fake-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("fake apiserver did not start in time")
        if errors:
            raise errors[0]
        return self

    def run_threadsafe(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine (e.g. ``api.go_away(1)``) on the server's loop from another thread."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("fake apiserver is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop_thread(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            self.run_threadsafe(self.stop(), timeout)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None

    @contextlib.contextmanager
    def running_in_thread(self, timeout: float = 10.0) -> Iterator[FakeApiServer]:
        self.start_in_thread(timeout)
        try:
            yield self
        finally:
            self.stop_thread(timeout)

    # ================================================================ fault injection

    def drop_watches(self, *, abort: bool = False) -> int:
        """End every open watch now: cleanly (end of the chunked stream, as on a server-side
        timeout) or, with ``abort``, by closing the connection mid-stream. Returns how many."""
        with self.store.lock:
            watchers = list(self.store.watchers)
            for watcher in watchers:
                watcher.push(("close", abort))
            return len(watchers)

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        path_contains: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (whose path+query contains ``path_contains`` and
        whose method is ``method``, when given) with ``status`` and an error Status body."""
        with self._lock:
            self._failures.append(_Failure(count, status, path_contains, method))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def set_delay(self, seconds: float, *, path_contains: str | None = None) -> None:
        """Delay every response (or those whose path+query contains ``path_contains``)."""
        with self._lock:
            self._delay = seconds
            self._delay_path = path_contains

    def compact(
        self, resource_version: int | None = None, *, watches: WatchAction = "error"
    ) -> int:
        """Compact the history up to ``resource_version`` (default: the current one); older
        resourceVersions then get 410. ``watches``: "error" (in-stream ERROR 410 Expired event
        to every open watch), "close" (end them) or "keep". Returns the compacted revision."""
        return self.store.compact(resource_version, watches)

    async def go_away(self, seconds: float) -> None:
        """Refuse connections for ``seconds``: drop watches, close the listener and every open
        connection, then listen again on the same port. Returns once the listener is closed."""
        self._away = True
        self.drop_watches(abort=True)
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for connection in self._runner.server.connections:
                connection.force_close()
        if self._return_task is not None:
            self._return_task.cancel()
        self._return_task = asyncio.create_task(self._come_back(seconds))

    async def _come_back(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        for _ in range(100):  # bounded: ~10 s of bind retries
            try:
                self._away = False
                await self._listen()
                return
            except OSError:
                self._away = True
                await asyncio.sleep(0.1)

    async def wait_listening(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until the server listens again after ``go_away``."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 2):
            if self.is_listening or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        return self.is_listening

    # ================================================================ request log

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def open_watches(self) -> int:
        with self.store.lock:
            return len(self.store.watchers)

    @property
    def resource_version(self) -> int:
        with self.store.lock:
            return self.store.rv

    # ================================================================ direct object access

    @staticmethod
    def resource_for(api_version: str, kind: str) -> ResourceType:
        resource = _resources.find_kind(api_version, kind)
        if resource is None:
            raise ValueError(f"the fake apiserver does not serve {api_version} {kind}")
        return resource

    def _of(self, obj: Mapping[str, Any]) -> ResourceType:
        return self.resource_for(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))

    def create(self, obj: Mapping[str, Any]) -> Obj:
        """Create server-side (an ADDED event); .status is kept as given."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        return self.store.create(self._of(obj), namespace, obj, reset_status=False)

    def update(self, obj: Mapping[str, Any]) -> Obj:
        """Replace server-side (status included); a metadata.resourceVersion is checked."""
        meta = obj.get("metadata") or {}
        return self.store.update(
            self._of(obj), meta.get("namespace"), meta["name"], obj, keep_status=False
        )

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Create, or replace when it exists."""
        meta = obj.get("metadata") or {}
        resource = self._of(obj)
        with self.store.lock:
            if self.get(resource.api_version, resource.kind, meta["name"], meta.get("namespace")):
                return self.update(obj)
            return self.create(obj)

    def patch(
        self,
        api_version: str,
        kind: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        content_type: str = MERGE,
        status: bool = False,
    ) -> Obj:
        return self.store.patch(
            self.resource_for(api_version, kind),
            namespace,
            name,
            content_type,
            patch,
            status=status,
        )

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        """Delete server-side (finalizers honoured like the real server)."""
        obj, _ = self.store.delete(self.resource_for(api_version, kind), namespace, name)
        return obj

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> Obj | None:
        try:
            return self.store.get(self.resource_for(api_version, kind), namespace, name)
        except ApiError:
            return None

    def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        resource = self.resource_for(api_version, kind)
        matcher = make_matcher(label_selector, field_selector, resource.fields)
        items, _ = self.store.list_objects(resource, namespace, matcher)
        return items

    def events(self, namespace: str | None = None) -> list[Obj]:
        """Every Event, core/v1 then events.k8s.io/v1 (both carry kind and apiVersion)."""
        return self.list_objects("v1", "Event", namespace) + self.list_objects(
            "events.k8s.io/v1", "Event", namespace
        )

    # ================================================================ HTTP

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            content_type=request.headers.get("Content-Type", ""),
            authorization=request.headers.get("Authorization", ""),
            body=body,
        )
        with self._lock:
            self._requests.append(record)
        if self._away:  # a request on a connection that survived go_away(): hang up
            if request.transport is not None:
                request.transport.close()
            record.status = 0
            return web.Response(status=503)
        with self._lock:
            delay = self._delay if self._delay_matches(request) else 0.0
            failure = self._take_failure(request)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if failure is not None:
                raise ApiError(
                    failure,
                    _FAILURE_REASONS.get(failure, "InternalError"),
                    f"fake apiserver: injected failure {failure}",
                )
            if (
                self.require_token
                and request.path not in ("/healthz", "/livez", "/readyz")
                and request.headers.get("Authorization") != f"Bearer {self.token}"
            ):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            response = await handler(request)
        except ApiError as error:
            response = _json(error.status(), error.code)
        except web.HTTPException:
            raise
        except Exception as exc:  # a bug in the fake: answer like the real server would
            response = _json(status_body(500, "InternalError", f"fake apiserver: {exc!r}"), 500)
        record.status = response.status
        return response

    @staticmethod
    def _path_qs(request: web.Request) -> str:
        """What ``path_contains`` is matched against: the raw (percent-encoded) path and query,
        e.g. ``/apis/networking.k8s.io/v1/namespaces/default/ingresses?watch=True``."""
        return request.path_qs

    def _delay_matches(self, request: web.Request) -> bool:
        return self._delay > 0 and (
            self._delay_path is None or self._delay_path in self._path_qs(request)
        )

    def _take_failure(self, request: web.Request) -> int | None:
        for failure in self._failures:
            if failure.remaining <= 0:
                continue
            if failure.path_contains is not None and failure.path_contains not in self._path_qs(
                request
            ):
                continue
            if failure.method is not None and failure.method.upper() != request.method:
                continue
            failure.remaining -= 1
            return failure.status
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(
                {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": "v1.31.0-fake",
                    "gitCommit": "0000000000000000000000000000000000000000",
                    "gitTreeState": "clean",
                    "buildDate": "2024-01-01T00:00:00Z",
                    "goVersion": "go1.22.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        segments = [s for s in path.split("/") if s]
        gvs = _resources.group_versions()
        if segments == ["api"]:
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            )
        if segments == ["apis"]:
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [self._group(gv.split("/")[0]) for gv in gvs if "/" in gv],
                }
            )
        if len(segments) >= 2 and segments[0] == "api":
            group_version, rest = segments[1], segments[2:]
        elif len(segments) == 2 and segments[0] == "apis":
            if not any(gv.startswith(segments[1] + "/") for gv in gvs):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json({"kind": "APIGroup", "apiVersion": "v1", **self._group(segments[1])})
        elif len(segments) >= 3 and segments[0] == "apis":
            group_version, rest = f"{segments[1]}/{segments[2]}", segments[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if group_version not in gvs:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return _json(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": [
                        entry for resource in gvs[group_version] for entry in resource.discovery()
                    ],
                }
            )
        return await self._resource_request(request, group_version, rest)

    @staticmethod
    def _group(group: str) -> dict[str, Any]:
        versions = [
            {"groupVersion": r.group_version, "version": r.version}
            for r in RESOURCES
            if r.group == group
        ]
        unique = list({v["groupVersion"]: v for v in versions}.values())
        return {"name": group, "versions": unique, "preferredVersion": unique[0]}

    async def _resource_request(
        self, request: web.Request, group_version: str, rest: list[str]
    ) -> web.StreamResponse:
        not_found = ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace: str | None = None
        candidate = _resources.find(group_version, rest[2]) if len(rest) >= 3 else None
        if rest[0] == "namespaces" and candidate is not None and candidate.namespaced:
            namespace, plural, tail = rest[1], rest[2], rest[3:]
        else:
            plural, tail = rest[0], rest[1:]
        resource = _resources.find(group_version, plural)
        if resource is None or len(tail) > 2:
            raise not_found
        if resource.namespaced and namespace is None and tail:
            raise not_found
        name = tail[0] if tail else None
        subresource = tail[1] if len(tail) > 1 else None
        if subresource is not None and (subresource != "status" or not resource.status_subresource):
            raise not_found
        method = request.method
        query = request.query
        if name is None:
            if method == "GET":
                matcher = make_matcher(
                    query.get("labelSelector"), query.get("fieldSelector"), resource.fields
                )
                if query.get("watch", "").lower() in _TRUE:
                    return await self._watch(request, resource, namespace, matcher)
                items, rv = self.store.list_objects(resource, namespace, matcher)
                return self._list_response(resource, items, rv)
            if method == "POST" and (namespace is not None or not resource.namespaced):
                body = await self._body(request)
                return _json(self.store.create(resource, namespace, body), 201)
            if method == "DELETE":
                matcher = make_matcher(
                    query.get("labelSelector"), query.get("fieldSelector"), resource.fields
                )
                items, _ = self.store.list_objects(resource, namespace, matcher)
                deleted = []
                for item in items:
                    meta = item["metadata"]
                    with contextlib.suppress(ApiError):
                        obj, _ = self.store.delete(resource, meta.get("namespace"), meta["name"])
                        deleted.append(obj)
                return self._list_response(resource, deleted, self.resource_version)
            raise self._method_not_allowed(method)
        status = subresource == "status"
        if method == "GET":
            return _json(self.store.get(resource, namespace, name))
        if method == "PUT":
            body = await self._body(request)
            return _json(self.store.update(resource, namespace, name, body, status=status))
        if method == "PATCH":
            body = await self._body(request)
            content_type = request.headers.get("Content-Type", "")
            return _json(
                self.store.patch(resource, namespace, name, content_type, body, status=status)
            )
        if method == "DELETE" and not status:
            options = await self._body(request, required=False)
            preconditions = options.get("preconditions") or {}
            obj, gone = self.store.delete(
                resource,
                namespace,
                name,
                uid=preconditions.get("uid"),
                resource_version=preconditions.get("resourceVersion"),
            )
            if not gone:
                return _json(obj)
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": resource.group,
                        "kind": resource.plural,
                        "uid": obj["metadata"].get("uid"),
                    },
                }
            )
        raise self._method_not_allowed(method)

    @staticmethod
    def _method_not_allowed(method: str) -> ApiError:
        return ApiError(
            405, "MethodNotAllowed", f"the server does not allow this method ({method})"
        )

    @staticmethod
    async def _body(request: web.Request, *, required: bool = True) -> Any:
        raw = await request.read()
        if not raw.strip():
            if required:
                raise ApiError(400, "BadRequest", "the request body is empty")
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body is not valid JSON: {exc}") from None

    @staticmethod
    def _list_response(resource: ResourceType, items: list[Obj], rv: int) -> web.Response:
        return _json(
            {
                "kind": resource.list_kind,
                "apiVersion": resource.api_version,
                "metadata": {"resourceVersion": str(rv)},
                "items": [_strip_type(item) for item in items],
            }
        )

    async def _watch(
        self,
        request: web.Request,
        resource: ResourceType,
        namespace: str | None,
        matcher: Callable[[Mapping[str, Any]], bool],
    ) -> web.StreamResponse:
        query = request.query
        rv_text = query.get("resourceVersion", "")
        try:
            since = None if rv_text in ("", "0") else int(rv_text)
            timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid resourceVersion or timeoutSeconds") from None
        bookmarks = query.get("allowWatchBookmarks", "").lower() in _TRUE
        loop = asyncio.get_running_loop()
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher = self.store.open_watch(resource, namespace, matcher, since, loop)
        except ApiError as error:
            if error.code != 410 or self.expired_watch_start == "http":
                raise
            await response.prepare(request)
            await response.write(self._line({"type": "ERROR", "object": error.status()}))
            await response.write_eof()
            return response
        try:
            await response.prepare(request)
            await self._pump(
                request=request,
                response=response,
                resource=resource,
                watcher=watcher,
                timeout=timeout,
                bookmarks=bookmarks,
            )
        finally:
            self.store.close_watch(watcher)
        return response

    @staticmethod
    def _line(event: Mapping[str, Any]) -> bytes:
        return json.dumps(event).encode() + b"\n"

    async def _pump(
        self,
        *,
        request: web.Request,
        response: web.StreamResponse,
        resource: ResourceType,
        watcher: Watcher,
        timeout: float | None,
        bookmarks: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        limit = self.max_watch_seconds if timeout is None else min(timeout, self.max_watch_seconds)
        deadline = loop.time() + limit
        next_bookmark = loop.time() + self.bookmark_interval
        abort = False
        try:
            for _ in range(_MAX_WATCH_ITEMS):
                now = loop.time()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = max(0.0, min(wait, next_bookmark - now))
                try:
                    kind, payload = await asyncio.wait_for(watcher.queue.get(), timeout=wait)
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark:
                        self.store.bookmark(watcher)
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if kind == "event":
                    await response.write(self._line(payload))
                elif kind == "bookmark":
                    bookmark = {
                        "kind": resource.kind,
                        "apiVersion": resource.api_version,
                        "metadata": {"resourceVersion": str(payload)},
                    }
                    await response.write(self._line({"type": "BOOKMARK", "object": bookmark}))
                elif kind == "error":
                    await response.write(self._line({"type": "ERROR", "object": payload.status()}))
                    break
                else:  # close
                    abort = bool(payload)
                    break
        except (ConnectionResetError, ConnectionError):
            return
        if abort:
            if request.transport is not None:
                request.transport.close()
            return
        with contextlib.suppress(ConnectionResetError, ConnectionError):
            await response.write_eof()
