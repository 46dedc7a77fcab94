"""Load-balancing policies and active health checks, against real echo backends on 127.0.0.1."""

from __future__ import annotations

import collections
import contextlib
import http.server
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from silex_test_support import LOCALHOST, build_table, read_request_head, route, wait_for

from silex.dataplane import ServerConfig
from silex.echo import start_echo_server

NO_EJECTION = ServerConfig(outlier_consecutive_failures=0, upstream_max_idle_per_endpoint=0)


def table_with(
    endpoints: list[dict[str, Any]],
    balance: dict[str, Any] | None = None,
    health_check: dict[str, Any] | None = None,
    path: str = "/",
) -> dict[str, Any]:
    table = build_table({"*": [route(path, "b")]}, {"b": endpoints})
    if balance is not None:
        table["backends"]["b"]["balance"] = balance
    if health_check is not None:
        table["backends"]["b"]["health_check"] = health_check
    return table


def services(client: httpx.Client, count: int, **kwargs: Any) -> list[str]:
    answers = []
    for _ in range(count):
        response = client.get("/", **kwargs)
        assert response.status_code == 200
        answers.append(response.json()["service"])
    return answers


def test_round_robin_is_exact_and_weighted(proxy, echoes):
    alpha, beta, gamma = echoes["alpha"], echoes["beta"], echoes["gamma"]
    proxy.apply(table_with([alpha.endpoint, beta.endpoint, gamma.endpoint]))
    with proxy.client() as client:
        seen = services(client, 30)
    assert collections.Counter(seen) == {"alpha": 10, "beta": 10, "gamma": 10}
    # A strict rotation: every window of three has each endpoint once.
    assert all(len(set(seen[i : i + 3])) == 3 for i in range(0, 30, 3))
    proxy.apply(table_with([{**alpha.endpoint, "weight": 2}, beta.endpoint, gamma.endpoint]))
    with proxy.client() as client:
        weighted = services(client, 40)
    assert collections.Counter(weighted) == {"alpha": 20, "beta": 10, "gamma": 10}


def test_hash_on_a_header_is_stable_per_key_and_across_swaps(proxy, echoes):
    endpoints = [echo.endpoint for echo in echoes.values()]
    table = table_with(
        endpoints, {"policy": "hash", "hash_by": {"source": "header", "name": "x-user"}}
    )
    proxy.apply(table)
    owners: dict[str, str] = {}
    with proxy.client() as client:
        for user in range(30):
            seen = set(services(client, 4, headers={"X-User": f"user-{user}"}))
            assert len(seen) == 1, (user, seen)
            owners[f"user-{user}"] = seen.pop()
        # Keys spread over every endpoint.
        assert set(owners.values()) == {"alpha", "beta", "gamma"}
        # A new table with the same endpoints maps every key to the same endpoint.
        proxy.apply(table)
        for user, owner in owners.items():
            assert services(client, 1, headers={"X-User": user}) == [owner]
        # Without the header: round robin.
        assert set(services(client, 6)) == {"alpha", "beta", "gamma"}


@pytest.mark.parametrize(
    ("hash_by", "request_kwargs"),
    [
        ({"source": "cookie", "name": "sid"}, {"headers": {"Cookie": "a=1; sid=abc"}}),
        ({"source": "request_uri"}, {"params": {"q": "1"}}),
        ({"source": "remote_addr"}, {}),
    ],
)
def test_hash_sources_pin_a_key_to_one_endpoint(proxy, echoes, hash_by, request_kwargs):
    endpoints = [echo.endpoint for echo in echoes.values()]
    proxy.apply(table_with(endpoints, {"policy": "hash", "hash_by": hash_by}))
    with proxy.client() as client:
        assert len(set(services(client, 9, **request_kwargs))) == 1


def test_affinity_cookie_is_sticky_and_replaced_when_its_endpoint_is_gone(proxy, echoes):
    alpha, beta, gamma = echoes["alpha"], echoes["beta"], echoes["gamma"]
    cookie = {"name": "route", "max_age_s": 60, "samesite": "Lax"}
    proxy.apply(
        table_with(
            [alpha.endpoint, beta.endpoint, gamma.endpoint],
            {"policy": "cookie", "cookie": cookie},
            path="/",
        )
    )
    pinned = []
    for _ in range(3):
        with proxy.client() as client:
            first = client.get("/")
            set_cookie = first.headers["set-cookie"]
            assert set_cookie.startswith("route=")
            assert "Path=/;" in set_cookie
            assert "Max-Age=60" in set_cookie
            assert "SameSite=Lax" in set_cookie
            assert "HttpOnly" in set_cookie
            # The token is opaque: not the endpoint's address.
            assert LOCALHOST not in set_cookie
            assert str(alpha.port) not in set_cookie
            owner = first.json()["service"]
            # The client keeps the cookie: every further request goes to the same endpoint,
            # and no new cookie is set.
            for _ in range(6):
                response = client.get("/")
                assert response.json()["service"] == owner
                assert "set-cookie" not in response.headers
            pinned.append((owner, client.cookies["route"]))
    # New clients are spread round robin.
    assert {owner for owner, _ in pinned} == {"alpha", "beta", "gamma"}
    # The endpoint of a cookie leaves the backend: the client gets another one and a new cookie.
    owner, token = pinned[0]
    remaining = [echo.endpoint for name, echo in echoes.items() if name != owner]
    proxy.apply(table_with(remaining, {"policy": "cookie", "cookie": cookie}))
    with proxy.client(cookies={"route": token}) as client:
        response = client.get("/")
        assert response.status_code == 200
        assert response.json()["service"] != owner
        assert response.headers["set-cookie"].split(";")[0] != f"route={token}"


def test_affinity_cookie_path_defaults_to_the_route_path(proxy, echoes):
    proxy.apply(
        table_with(
            [echoes["alpha"].endpoint],
            {"policy": "cookie", "cookie": {"name": "INGRESSCOOKIE", "secure": True}},
            path="/shop",
        )
    )
    response = proxy.get("/shop/cart")
    assert response.status_code == 200
    set_cookie = response.headers["set-cookie"]
    assert "Path=/shop;" in set_cookie
    assert set_cookie.endswith("; Secure")
    assert "Max-Age" not in set_cookie  # a session cookie


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request like an echo named ``slow``, after a pause."""

    protocol_version = "HTTP/1.1"
    delay_s = 0.25

    def do_GET(self) -> None:
        time.sleep(self.delay_s)
        body = b'{"service": "slow"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_backend() -> Iterator[dict[str, Any]]:
    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield {"address": LOCALHOST, "port": server.server_address[1]}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def concurrent_services(proxy: Any, workers: int, per_worker: int) -> collections.Counter[str]:
    def run() -> list[str]:
        with proxy.client() as client:
            return services(client, per_worker)

    with ThreadPoolExecutor(workers) as pool:
        results = [pool.submit(run) for _ in range(workers)]
        return collections.Counter(name for future in results for name in future.result())


@pytest.mark.parametrize("policy", ["least_request", "ewma"])
def test_load_aware_policies_prefer_the_idle_endpoints_when_one_is_slow(
    proxy, echoes, slow_backend, policy
):
    endpoints = [slow_backend, echoes["alpha"].endpoint, echoes["beta"].endpoint]
    proxy.apply(table_with(endpoints, {"policy": policy}))
    counts = concurrent_services(proxy, workers=6, per_worker=20)
    assert sum(counts.values()) == 120
    # Round robin would give the slow endpoint 40 of 120; it gets far fewer.
    assert counts["slow"] < 20, counts
    assert counts["alpha"] > 2 * counts["slow"], counts
    assert counts["beta"] > 2 * counts["slow"], counts


def test_least_request_honours_weights_when_idle(proxy, echoes):
    alpha, beta, gamma = echoes["alpha"], echoes["beta"], echoes["gamma"]
    weighted = [{**alpha.endpoint, "weight": 4}, beta.endpoint, gamma.endpoint]
    proxy.apply(table_with(weighted, {"policy": "least_request"}))
    with proxy.client() as client:
        counts = collections.Counter(services(client, 300))
    # Sequential requests: nothing in flight, so the weighted random choices decide (4:1:1).
    assert counts["alpha"] > counts["beta"] + counts["gamma"], counts
    assert counts["beta"] > 0, counts
    assert counts["gamma"] > 0, counts


def retries(proxy: Any) -> int:
    return int(proxy.dataplane.stats().upstream_retries)


FAST_CHECK = {
    "path": "/healthz",
    "interval_ms": 50,
    "timeout_ms": 500,
    "healthy_threshold": 2,
    "unhealthy_threshold": 2,
}


def served_by(client: httpx.Client, count: int, pause_s: float) -> list[str]:
    """``count`` GETs spaced by ``pause_s`` (so retries stay within the retry budget)."""
    answers = []
    for _ in range(count):
        answers.extend(services(client, 1))
        time.sleep(pause_s)
    return answers


@pytest.mark.parametrize("balance", [None, {"policy": "least_request"}, {"policy": "ewma"}])
def test_active_checks_eject_a_killed_endpoint_and_readmit_it(proxy_factory, echo_factory, balance):
    alpha, beta = echo_factory("alpha"), echo_factory("beta")
    # Passive ejection off: only the active checks can take beta out and bring it back.
    proxy = proxy_factory(NO_EJECTION)
    table = table_with([alpha.endpoint, beta.endpoint], balance, FAST_CHECK)
    proxy.apply(table)
    with proxy.client() as client:
        assert set(services(client, 20)) == {"alpha", "beta"}
        beta.server.shutdown()
        beta.server.server_close()

        # A bounded loop of GETs while beta is dead: every one succeeds (`services` asserts
        # 200: attempts to beta are refused and retried on alpha) until the checks take beta
        # out, after which no attempt goes to it (no more retries).
        def beta_out() -> bool:
            before = retries(proxy)
            return served_by(client, 10, 0.01) == ["alpha"] * 10 and retries(proxy) == before

        assert wait_for(beta_out, timeout_s=10, interval_s=0.01)
        # The verdict survives table swaps (the checker keeps running, nothing is reset).
        for _ in range(3):
            proxy.apply(table)
        before = retries(proxy)
        assert services(client, 20) == ["alpha"] * 20
        assert retries(proxy) == before
        assert proxy.dataplane.stats().health_checkers == 2
        server = None
        with contextlib.suppress(OSError):
            server, _ = start_echo_server("beta", LOCALHOST, beta.port)
        assert server is not None, "port of the killed backend was taken meanwhile"
        try:

            def beta_answers() -> bool:
                return "beta" in services(client, 4)

            assert wait_for(beta_answers, timeout_s=10, interval_s=0.05)
        finally:
            server.shutdown()
            server.server_close()


class SickHandler(http.server.BaseHTTPRequestHandler):
    """Fails its health checks (503 on ``/healthz``) but serves everything else."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 503 if self.path == "/healthz" else 200
        body = b'{"service": "sick"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sick_backend() -> Iterator[dict[str, Any]]:
    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), SickHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield {"address": LOCALHOST, "port": server.server_address[1]}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_failing_checks_take_an_endpoint_out_and_all_down_fails_open(
    proxy_factory, echoes, sick_backend
):
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(table_with([echoes["alpha"].endpoint, sick_backend], None, FAST_CHECK))
    with proxy.client() as client:
        # The sick endpoint answers requests fine, but its checks fail: it is taken out.
        assert wait_for(lambda: services(client, 10) == ["alpha"] * 10, timeout_s=10)
        # A backend whose every endpoint fails its checks still serves (fail open).
        proxy.apply(table_with([sick_backend], None, FAST_CHECK))
        assert services(client, 5) == ["sick"] * 5


def test_checkers_are_reconciled_not_duplicated_across_swaps(proxy, echoes):
    endpoints = [echoes["alpha"].endpoint, echoes["beta"].endpoint]
    check = {**FAST_CHECK, "interval_ms": 10_000}
    for weight in range(1, 11):
        table = table_with([{**endpoints[0], "weight": weight}, endpoints[1]], None, check)
        proxy.apply(table)
        assert proxy.dataplane.stats().health_checkers == 2
    # New settings: the old checkers stop, new ones start.
    proxy.apply(table_with(endpoints, None, {**check, "path": "/ready"}))
    assert proxy.dataplane.stats().health_checkers == 2
    # One endpoint removed: its checker stops.
    proxy.apply(table_with(endpoints[:1], None, check))
    assert proxy.dataplane.stats().health_checkers == 1
    proxy.apply(table_with(endpoints, None, None))
    assert proxy.dataplane.stats().health_checkers == 0


def test_checks_use_the_configured_path_and_host(proxy_factory, raw_server):
    seen: list[bytes] = []

    def handler(conn: Any, _server: Any) -> None:
        head = read_request_head(conn)
        seen.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    server = raw_server(handler)
    proxy = proxy_factory(NO_EJECTION)
    proxy.apply(
        table_with([server.endpoint], None, {**FAST_CHECK, "path": "/ready?x=1", "host": "svc.ns"})
    )
    assert wait_for(lambda: len(seen) >= 2, timeout_s=10)
    head = seen[0].decode()
    assert head.startswith("GET /ready?x=1 HTTP/1.1\r\n")
    assert "host: svc.ns\r\n" in head.lower()
