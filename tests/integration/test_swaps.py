"""Table swaps under load: no failed request, generations in order, in-flight requests finish."""

from __future__ import annotations

import threading
import time

import httpx
from silex_test_support import build_table, read_request_head, route, wait_for

SWAPS = 20
MAX_REQUESTS = 2000
MAX_SECONDS = 20.0
CLIENT_THREADS = 3


def test_swaps_under_load_lose_no_request(proxy, echoes, echo_factory):
    alpha, beta, gamma = echoes["alpha"], echoes["beta"], echoes["gamma"]
    delta = echo_factory("delta")
    # Two tables routing the same path to different backends, with changing endpoint sets.
    tables = [
        build_table(
            {"app": [route("/swap", "one"), route("/stable", "stable")]},
            {
                "one": [alpha.endpoint, beta.endpoint],
                "stable": [gamma.endpoint],
            },
        ),
        build_table(
            {"app": [route("/swap", "two"), route("/stable", "stable")]},
            {
                "two": [gamma.endpoint, delta.endpoint],
                "stable": [gamma.endpoint, delta.endpoint],
            },
        ),
        build_table(
            {"app": [route("/swap", "one"), route("/stable", "stable")]},
            {"one": [beta.endpoint], "stable": [delta.endpoint]},
        ),
    ]
    first = proxy.apply(tables[0])

    stop = threading.Event()
    lock = threading.Lock()
    counts = {"ok": 0, "total": 0}
    failures: list[str] = []
    services: set[str] = set()
    deadline = time.monotonic() + MAX_SECONDS

    def client_loop() -> None:
        with proxy.client(timeout=httpx.Timeout(10.0)) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    if counts["total"] >= MAX_REQUESTS:
                        return
                    counts["total"] += 1
                    path = "/swap" if counts["total"] % 2 else "/stable"
                try:
                    response = client.get(path, headers={"Host": "app"})
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{path}: {exc!r}")
                    continue
                with lock:
                    if response.status_code == 200:
                        counts["ok"] += 1
                        services.add(response.json()["service"])
                    else:
                        failures.append(f"{path}: {response.status_code} {response.text!r}")

    threads = [threading.Thread(target=client_loop) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    generations = [first]
    try:
        # Let the clients get going, then swap at a steady pace while they run.
        wait_for(lambda: counts["total"] >= 20, timeout_s=5)
        for index in range(SWAPS):
            generations.append(proxy.apply(tables[(index + 1) % len(tables)]))
            target = min(MAX_REQUESTS, counts["total"] + 30)
            wait_for(lambda t=target: counts["total"] >= t, timeout_s=0.5, interval_s=0.005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, f"{len(failures)} failed requests, first: {failures[:5]}"
    assert counts["ok"] == counts["total"] > 0
    print(f"{counts['total']} requests across {SWAPS} swaps")
    assert generations == list(range(first, first + SWAPS + 1))
    assert proxy.dataplane.generation == first + SWAPS
    assert services <= {"alpha", "beta", "gamma", "delta"}
    assert len(services) >= 3


def test_in_flight_request_finishes_on_its_table(proxy, echoes):
    alpha = echoes["alpha"]
    with_route = build_table(
        {"app": [route("/__silex/sleep", "b"), route("/other", "b")]}, {"b": [alpha.endpoint]}
    )
    without_route = build_table({"app": [route("/other", "b")]}, {"b": [alpha.endpoint]})
    proxy.apply(with_route)
    before = proxy.dataplane.stats().requests_total
    result: dict[str, object] = {}

    def slow_request() -> None:
        try:
            with proxy.client(timeout=httpx.Timeout(10.0)) as client:
                result["response"] = client.get("/__silex/sleep/1000", headers={"Host": "app"})
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        assert wait_for(lambda: proxy.dataplane.stats().requests_total > before, timeout_s=5)
        generation = proxy.apply(without_route)
        # The new table is serving: the same path is now unrouted for new requests.
        assert proxy.get("/__silex/sleep/0", host="app").status_code == 404
        assert proxy.dataplane.generation == generation
    finally:
        thread.join(timeout=10)
    assert "error" not in result, result.get("error")
    response = result["response"]
    assert isinstance(response, httpx.Response)
    assert response.status_code == 200
    assert response.json()["service"] == "alpha"


def test_keep_alive_connection_follows_the_new_table(proxy, echoes):
    """A keep-alive client connection opened before a swap uses the new table afterwards."""
    proxy.apply(build_table({"app": [route("/", "b")]}, {"b": [echoes["alpha"].endpoint]}))
    with proxy.client() as client:
        assert client.get("/", headers={"Host": "app"}).json()["service"] == "alpha"
        proxy.apply(build_table({"app": [route("/", "b")]}, {"b": [echoes["beta"].endpoint]}))
        assert client.get("/", headers={"Host": "app"}).json()["service"] == "beta"
        proxy.apply(build_table({"app": [route("/x", "b")]}, {"b": [echoes["beta"].endpoint]}))
        assert client.get("/", headers={"Host": "app"}).status_code == 404


def test_upstream_keep_alive_pool_survives_a_swap(proxy, raw_server):
    """The core keeps its upstream pool across tables: an unchanged endpoint is not redialled."""

    def keep_alive(conn, server) -> None:
        for _ in range(1000):
            head = read_request_head(conn)
            if not head:
                return
            server.heads.append(head)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = raw_server(keep_alive)
    proxy.apply(build_table({"app": [route("/", "one")]}, {"one": [backend.endpoint]}))
    with proxy.client() as client:
        for _ in range(10):
            assert client.get("/", headers={"Host": "app"}).text == "ok"
        dialled = backend.accepted
        assert dialled >= 1
        # Same endpoint under another backend id, and the route moved: the pool is per address.
        proxy.apply(build_table({"app": [route("/x", "two")]}, {"two": [backend.endpoint]}))
        for _ in range(10):
            assert client.get("/x", headers={"Host": "app"}).text == "ok"
    assert len(backend.heads) == 20
    assert backend.accepted == dialled, f"{backend.accepted - dialled} new upstream connections"
