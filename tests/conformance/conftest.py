"""Conformance suite configuration: the tags of the feature files are pytest markers."""

from __future__ import annotations

import pytest

FEATURE_TAGS = ("sig-network", "conformance", "release-1.19")


def pytest_configure(config: pytest.Config) -> None:
    for tag in FEATURE_TAGS:
        config.addinivalue_line("markers", f"{tag}: tag of the ingress conformance features")
