"""Retries, the retry budget and passive outlier ejection, against real backends on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import httpx
from silex_test_support import (
    LOCALHOST,
    build_table,
    catch_all_table,
    read_request_head,
    route,
    wait_for,
)

from silex.dataplane import ServerConfig
from silex.echo import start_echo_server

NO_EJECTION = ServerConfig(outlier_consecutive_failures=0)


def reset_after_request(conn: socket.socket, _server: Any) -> None:
    """Read the whole request (head and a Content-Length body), then close without answering."""
    data = read_request_head(conn)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    conn.settimeout(5)
    for _ in range(1000):
        if len(body) >= length:
            break
        piece = conn.recv(65536)
        if not piece:
            break
        body += piece
    conn.close()


def retries(proxy: Any) -> int:
    return int(proxy.dataplane.stats().upstream_retries)


def test_get_is_retried_after_connect_refused(proxy_factory, echoes, refused_endpoint):
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(catch_all_table([refused_endpoint, echoes["alpha"].endpoint]))
    with proxy.client() as client:
        statuses = [client.get("/").status_code for _ in range(10)]
    assert statuses == [200] * 10
    # Round robin sends every other first attempt to the refused endpoint.
    assert retries(proxy) >= 4


def test_post_is_retried_when_the_connection_was_refused(proxy_factory, echoes, refused_endpoint):
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(catch_all_table([refused_endpoint, echoes["alpha"].endpoint]))
    payload = b"x" * 50_000
    with proxy.client() as client:
        responses = [client.post("/upload", content=payload) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 6
    assert {r.json()["body_bytes"] for r in responses} == {len(payload)}
    assert retries(proxy) >= 2


def test_post_whose_body_was_sent_is_never_replayed(proxy_factory, raw_server):
    first, second = raw_server(reset_after_request), raw_server(reset_after_request)
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(catch_all_table([first.endpoint, second.endpoint]))
    with proxy.client() as client:
        response = client.post("/once", content=b"y" * 1000)
    assert response.status_code == 502
    assert wait_for(lambda: first.accepted + second.accepted >= 1)
    assert first.accepted + second.accepted == 1
    assert retries(proxy) == 0


def test_get_reset_before_response_is_retried_within_tries(proxy_factory, raw_server):
    servers = [raw_server(reset_after_request) for _ in range(4)]
    proxy = proxy_factory(NO_EJECTION)
    table = catch_all_table([s.endpoint for s in servers])
    proxy.apply(table)
    with proxy.client() as client:
        assert client.get("/").status_code == 502
    # Default: 3 attempts, each on another endpoint.
    assert wait_for(lambda: sum(s.accepted for s in servers) >= 3)
    assert sum(s.accepted for s in servers) == 3
    assert retries(proxy) == 2

    proxy.apply(catch_all_table([s.endpoint for s in servers], options={"next_upstream_tries": 2}))
    with proxy.client() as client:
        assert client.get("/").status_code == 502
    assert wait_for(lambda: sum(s.accepted for s in servers) >= 5)
    assert sum(s.accepted for s in servers) == 5
    assert retries(proxy) == 3


def test_retry_budget_bounds_retries_during_an_outage(proxy_factory, raw_server):
    servers = [raw_server(reset_after_request) for _ in range(3)]
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(catch_all_table([s.endpoint for s in servers]))
    requests = 100
    with proxy.client() as client:
        for _ in range(requests):
            assert client.get("/").status_code == 502
    # Without a budget every request would make 3 attempts (200 retries).
    assert retries(proxy) <= requests // 5 + 10
    assert wait_for(lambda: sum(s.accepted for s in servers) >= requests)
    assert sum(s.accepted for s in servers) <= requests + requests // 5 + 10


def test_failing_endpoint_is_ejected_and_ejection_survives_table_swaps(
    proxy_factory, echoes, refused_endpoint
):
    config = ServerConfig(outlier_consecutive_failures=2, outlier_base_ejection_ms=600_000)
    proxy = proxy_factory(config)
    table = catch_all_table([refused_endpoint, echoes["alpha"].endpoint])
    proxy.apply(table)
    with proxy.client() as client:
        assert [client.get("/").status_code for _ in range(10)] == [200] * 10
        # Two consecutive connect failures ejected it: no more attempts go there.
        assert retries(proxy) == 2
        for _ in range(5):
            proxy.apply(table)
            assert [client.get("/").status_code for _ in range(4)] == [200] * 4
        assert retries(proxy) == 2
        # A table that drops the endpoint forgets it; bringing it back starts afresh.
        proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
        proxy.apply(table)
        assert [client.get("/").status_code for _ in range(6)] == [200] * 6
        assert retries(proxy) == 4


def test_last_endpoint_is_never_ejected_into_an_empty_set(proxy_factory, raw_server):
    server = raw_server(reset_after_request)
    config = ServerConfig(outlier_consecutive_failures=1, outlier_base_ejection_ms=600_000)
    proxy = proxy_factory(config)
    proxy.apply(catch_all_table([server.endpoint]))
    with proxy.client() as client:
        statuses = [client.get("/").status_code for _ in range(4)]
    # Still tried (502 from the reset), never 503 for an empty set.
    assert statuses == [502] * 4
    assert wait_for(lambda: server.accepted >= 4)


def test_killed_endpoint_fails_no_request_and_is_readmitted_after_restart(
    proxy_factory, echo_factory
):
    alpha, beta = echo_factory("alpha"), echo_factory("beta")
    # No idle upstream connections: a killed backend cannot keep answering on pooled ones.
    config = ServerConfig(
        outlier_consecutive_failures=1,
        outlier_base_ejection_ms=200,
        upstream_max_idle_per_endpoint=0,
    )
    proxy = proxy_factory(config)
    proxy.apply(build_table({"*": [route("/", "b")]}, {"b": [alpha.endpoint, beta.endpoint]}))
    with proxy.client() as client:
        seen = {client.get("/").json()["service"] for _ in range(4)}
        assert seen == {"alpha", "beta"}
        beta.server.shutdown()
        beta.server.server_close()
        # Every request succeeds: the dead endpoint's refusals are retried, then it is ejected.
        for _ in range(30):
            response = client.get("/")
            assert response.status_code == 200
            assert response.json()["service"] == "alpha"
        server = None
        with contextlib.suppress(OSError):
            server, _ = start_echo_server("beta", LOCALHOST, beta.port)
        assert server is not None, "port of the killed backend was taken meanwhile"
        try:
            # Readmitted after its back-off: beta answers again.
            def beta_answers() -> bool:
                try:
                    return bool(client.get("/").json()["service"] == "beta")
                except httpx.HTTPError:
                    return False

            assert wait_for(beta_answers, timeout_s=10, interval_s=0.05)
        finally:
            server.shutdown()
            server.server_close()


def test_route_connect_timeout_overrides_the_server_wide_one(proxy_factory):
    # A listener whose accept queue is full: the kernel drops further SYNs, so connecting hangs.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind((LOCALHOST, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            filler.connect_ex((LOCALHOST, port))
        # With the server-wide 60 s the client's 15 s timeout would fire first.
        proxy = proxy_factory(ServerConfig(upstream_connect_timeout_ms=60_000))
        endpoint = {"address": LOCALHOST, "port": port}
        proxy.apply(catch_all_table([endpoint], options={"upstream_connect_timeout_ms": 200}))
        with proxy.client() as client:
            assert client.get("/").status_code == 504
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------------------------------
# The HTTP/1.1 connection pool
# --------------------------------------------------------------------------------------------


class KeepAliveBackend:
    """Answers every request on a connection with 200 ``ok`` (keep-alive; ``/slow`` sends
    ``okok`` with a pause in the middle) and records, per
    connection, how many requests it served and whether the proxy closed it. With
    ``close_after_s`` it closes each connection that long after its first response."""

    def __init__(self, close_after_s: float | None = None) -> None:
        self.close_after_s = close_after_s
        self.served: list[int] = []
        self.closed_by_proxy = 0

    def __call__(self, conn: socket.socket, _server: Any) -> None:
        index = len(self.served)
        self.served.append(0)
        for _ in range(1000):
            head = read_request_head(conn, timeout_s=10)
            if not head:
                self.closed_by_proxy += 1
                return
            body_length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    body_length = int(value.strip())
            received = len(head.partition(b"\r\n\r\n")[2])
            while received < body_length:
                received += len(conn.recv(65536))
            if head.startswith(b"GET /slow "):
                # Half the body now, half later: the response is unfinished meanwhile.
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
                time.sleep(0.3)
                conn.sendall(b"ok")
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.served[index] += 1
            if self.close_after_s is not None:
                time.sleep(self.close_after_s)
                conn.close()
                return


def test_sequential_requests_share_one_upstream_connection(proxy, raw_server):
    backend = KeepAliveBackend()
    server = raw_server(backend)
    proxy.apply(catch_all_table([server.endpoint]))
    with proxy.client() as client:
        statuses = [client.get(f"/{i}").status_code for i in range(20)]
    assert statuses == [200] * 20
    assert server.accepted == 1
    assert backend.served == [20]


def test_idle_upstream_connections_are_closed_after_the_idle_timeout(proxy_factory, raw_server):
    backend = KeepAliveBackend()
    server = raw_server(backend)
    proxy = proxy_factory(ServerConfig(upstream_idle_timeout_ms=300))
    proxy.apply(catch_all_table([server.endpoint]))
    with proxy.client() as client:
        assert client.get("/").status_code == 200
        assert wait_for(lambda: backend.closed_by_proxy == 1, timeout_s=5)
        assert client.get("/").status_code == 200
    assert server.accepted == 2


def test_a_connection_the_backend_closed_while_idle_is_not_used(proxy_factory, raw_server):
    backend = KeepAliveBackend(close_after_s=0.05)
    server = raw_server(backend)
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(catch_all_table([server.endpoint]))
    with proxy.client() as client:
        for i in range(4):
            # A POST is never replayed: it must go on a live connection the first time.
            assert client.post(f"/{i}", content=b"data").status_code == 200
            time.sleep(0.3)
    assert server.accepted == 4
    assert retries(proxy) == 0


def test_no_idle_connections_are_kept_when_the_limit_is_zero(proxy_factory, raw_server):
    backend = KeepAliveBackend()
    server = raw_server(backend)
    proxy = proxy_factory(ServerConfig(upstream_max_idle_per_endpoint=0))
    proxy.apply(catch_all_table([server.endpoint]))
    with proxy.client() as client:
        assert [client.get("/").status_code for _ in range(5)] == [200] * 5
    assert server.accepted == 5
    assert wait_for(lambda: backend.closed_by_proxy == 5)


def test_a_connection_is_reused_only_after_its_response_body_ended(proxy, raw_server):
    """A request sent while another response is still streaming gets its own connection;
    afterwards both connections are reused."""
    backend = KeepAliveBackend()
    server = raw_server(backend)
    proxy.apply(catch_all_table([server.endpoint]))
    with proxy.client() as first, proxy.client() as second:
        for _ in range(3):
            with first.stream("GET", "/slow") as streaming:
                assert second.get("/b").status_code == 200
                assert streaming.read() == b"okok"
    assert server.accepted == 2
    assert sorted(backend.served) == [3, 3]


def test_each_worker_keeps_its_own_upstream_connections(proxy_factory, raw_server):
    """Six client connections over three workers, one request at a time: each worker makes one
    upstream connection and reuses it; no worker uses another's."""
    backend = KeepAliveBackend()
    server = raw_server(backend)
    proxy = proxy_factory(ServerConfig(workers=3))
    proxy.apply(catch_all_table([server.endpoint]))
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(proxy.client()) for _ in range(6)]
        statuses = [client.get("/").status_code for _ in range(5) for client in clients]
    assert statuses == [200] * 30
    assert server.accepted == 3
    assert sorted(backend.served) == [10, 10, 10]
