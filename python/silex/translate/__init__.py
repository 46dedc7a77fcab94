"""Translation of a snapshot into a routing table: pure functions, no I/O, no clock.

:func:`translate` is the whole contract: the same snapshot and options always give the same
table (byte-identical through :func:`silex.table.to_json`) and the same Problems. This package
imports neither the sources nor the data plane.

- :mod:`silex.translate.ingress`: classes, hosts, paths, merging, conflicts, default backends.
- :mod:`silex.translate.endpoints`: Service ports and EndpointSlices -> backends.
- :mod:`silex.translate.annotations`: the supported annotations -> route options.
- :mod:`silex.translate.upstream`: backend protocol and upstream TLS annotations.
"""

from __future__ import annotations

from silex.problems import Problem
from silex.store import Snapshot
from silex.table import RoutingTable
from silex.translate.ingress import build_table, owned_ingresses
from silex.translate.options import TranslateOptions

__all__ = ["TranslateOptions", "owned_ingresses", "translate"]


def translate(
    snapshot: Snapshot, options: TranslateOptions | None = None
) -> tuple[RoutingTable, list[Problem]]:
    """The routing table for ``snapshot`` and every Problem found on the way."""
    return build_table(snapshot, options or TranslateOptions())
