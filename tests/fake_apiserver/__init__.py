"""A fake Kubernetes API server for tests (aiohttp, in-process, 127.0.0.1 only).

See ``server.py`` for the HTTP behaviour and ``README.md`` in this folder for what is and is
not implemented.
"""

from ._errors import ApiError
from ._resources import RESOURCES, ResourceType
from .server import FakeApiServer, RequestRecord

__all__ = ["RESOURCES", "ApiError", "FakeApiServer", "RequestRecord", "ResourceType"]
