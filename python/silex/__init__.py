"""Silex: a Kubernetes Ingress controller — a Python operator driving a Rust data plane.

Importing ``silex`` never loads the Rust core: ``silex.ConfigError`` is resolved lazily, on first
access, from :mod:`silex.dataplane` (the only module that imports ``silex._core``).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

__all__ = ["ConfigError", "__version__"]


def _package_version() -> str:
    try:
        return metadata.version("silex")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


__version__: str = _package_version()


def __getattr__(name: str) -> Any:
    """Resolve core-backed names on first use, so that ``import silex`` works without the core."""
    if name == "ConfigError":
        from silex.dataplane import ConfigError  # noqa: PLC0415 (lazy: loads the core)

        return ConfigError
    raise AttributeError(f"module 'silex' has no attribute {name!r}")
