"""Fixtures of the cluster-mode tests: an in-process fake API server and a KubeClient on it.

kubernetes-asyncio is asyncio-only, so every async test here runs on anyio's asyncio backend.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

PYTHON_SOURCE = Path(__file__).resolve().parents[2] / "python"
if str(PYTHON_SOURCE) not in sys.path:
    sys.path.insert(0, str(PYTHON_SOURCE))

from fake_apiserver import FakeApiServer  # noqa: E402
from silex.sources.kube import KubeClient  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def api() -> AsyncIterator[FakeApiServer]:
    async with FakeApiServer(bookmark_interval=0.1) as server:
        yield server


@pytest.fixture
async def kube(api: FakeApiServer) -> AsyncIterator[KubeClient]:
    client = await KubeClient.connect(str(api.kubeconfig_path))
    try:
        yield client
    finally:
        await client.close()
