"""Memory per idle keep-alive connection: open N connections, one request each, then hold."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable

REQUEST = "GET /1k HTTP/1.1\r\nHost: {host}\r\n\r\n"


async def _open_one(
    port: int, request: bytes, body_size: int, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        writer.write(request)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(body_size)
        return reader, writer
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None


async def _hold(  # noqa: PLR0917 (internal helper, called positionally)
    port: int,
    host: str,
    count: int,
    settle_s: float,
    measure: Callable[[], tuple[int, int]],
    batch: int,
    body_size: int,
    tls: bool,
) -> dict[str, object]:
    request = REQUEST.format(host=host).encode()
    context = None
    if tls:  # self-signed benchmark certificate; HTTP/1.1 only
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["http/1.1"])
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    start = time.monotonic()
    try:
        for first in range(0, count, batch):
            size = min(batch, count - first)
            results = await asyncio.gather(
                *(_open_one(port, request, body_size, context) for _ in range(size))
            )
            opened += [r for r in results if r is not None]
        open_s = time.monotonic() - start
        await asyncio.sleep(settle_s)
        rss, pss = measure()
        # Still open? A proxy that closed them early must not look light.
        alive = sum(1 for reader, _ in opened if not reader.at_eof())
        return {"opened": len(opened), "alive": alive, "open_s": open_s, "rss": rss, "pss": pss}
    finally:
        for _, writer in opened:
            writer.close()
        for _, writer in opened:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def hold_idle(  # noqa: PLR0917 (internal helper, called positionally)
    port: int,
    host: str,
    count: int,
    measure: Callable[[], tuple[int, int]],
    settle_s: float = 2.0,
    batch: int = 500,
    body_size: int = 1024,
    timeout_s: float = 120.0,
    tls: bool = False,
) -> dict[str, object]:
    """Open ``count`` keep-alive connections (each serves one request), measure, close all."""
    return asyncio.run(
        asyncio.wait_for(
            _hold(port, host, count, settle_s, measure, batch, body_size, tls),
            timeout=timeout_s,
        )
    )
