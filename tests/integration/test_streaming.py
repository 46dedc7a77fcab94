"""Large bodies stream through the proxy in both directions without being buffered."""

from __future__ import annotations

import gc
import hashlib
import os

import httpx
from silex_test_support import catch_all_table, vm_rss_bytes

MIB = 1024 * 1024
BIG = os.environ.get("SILEX_TEST_BIG") == "1"
UPLOAD_BYTES = (1024 if BIG else 256) * MIB
DOWNLOAD_BYTES = 256 * MIB
RSS_GROWTH_LIMIT = 64 * MIB


def test_large_streamed_upload(proxy, echoes):
    proxy.apply(catch_all_table([echoes["alpha"].endpoint], options={"max_request_body_bytes": 0}))
    block = hashlib.sha256(b"seed").digest() * (MIB // 32)  # 1 MiB, not all one byte
    assert len(block) == MIB
    expected = hashlib.sha256()
    sent = 0

    def body():
        nonlocal sent
        for index in range(UPLOAD_BYTES // MIB):
            piece = block if index % 2 else block[::-1]
            expected.update(piece)
            sent += len(piece)
            yield piece

    gc.collect()
    rss_before = vm_rss_bytes()
    with proxy.client(timeout=httpx.Timeout(120.0)) as client:
        response = client.post("/upload", content=body(), headers={"Host": "app"})
    rss_after = vm_rss_bytes()
    assert response.status_code == 200, response.text
    seen = response.json()
    assert sent == UPLOAD_BYTES
    assert seen["body_bytes"] == UPLOAD_BYTES
    assert seen["body_sha256"] == expected.hexdigest()
    growth = rss_after - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / MIB:.1f} MiB during the upload"


def test_large_streamed_upload_with_content_length(proxy, echoes):
    """A Content-Length body above the default limit but under a route's raised limit."""
    size = 32 * MIB
    proxy.apply(
        catch_all_table([echoes["alpha"].endpoint], options={"max_request_body_bytes": size})
    )
    block = b"\x00\x01\x02\x03" * (MIB // 4)
    expected = hashlib.sha256()

    def body():
        for _ in range(size // MIB):
            expected.update(block)
            yield block

    with proxy.client(timeout=httpx.Timeout(60.0)) as client:
        response = client.post(
            "/upload", content=body(), headers={"Host": "app", "Content-Length": str(size)}
        )
    assert response.status_code == 200, response.text
    assert response.json()["body_bytes"] == size
    assert response.json()["body_sha256"] == expected.hexdigest()


def _download(proxy, path: str, expected_bytes: int) -> None:
    gc.collect()
    rss_before = vm_rss_bytes()
    received = 0
    with (
        proxy.client(timeout=httpx.Timeout(120.0)) as client,
        client.stream("GET", path, headers={"Host": "app"}) as response,
    ):
        assert response.status_code == 200
        for piece in response.iter_raw(chunk_size=MIB):
            assert set(piece[:16]) <= {ord("x")}
            received += len(piece)
            if received > expected_bytes:
                break
    rss_after = vm_rss_bytes()
    assert received == expected_bytes
    growth = rss_after - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / MIB:.1f} MiB during the download"


def test_large_streamed_download(proxy, echoes):
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    _download(proxy, f"/__silex/bytes/{DOWNLOAD_BYTES}", DOWNLOAD_BYTES)


def test_large_chunked_download(proxy, echoes):
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    size = 64 * MIB
    _download(proxy, f"/__silex/bytes/{size}?chunked=1", size)


def test_download_keeps_content_length(proxy, echoes):
    """The proxy must not turn a Content-Length response into a chunked one."""
    proxy.apply(catch_all_table([echoes["alpha"].endpoint]))
    with (
        proxy.client() as client,
        client.stream("GET", "/__silex/bytes/100000", headers={"Host": "app"}) as response,
    ):
        assert response.headers["content-length"] == "100000"
        assert "transfer-encoding" not in response.headers
        assert len(response.read()) == 100000
