"""Problems: what is wrong with which object, where, in words a user can act on.

A Problem becomes a log line (and, in a cluster, a Warning Event on the object). Its string form
reads ``error: Ingress default/shop: spec.rules[0].http.paths[1].backend.service.port: service
"cart" has no port named "web"`` with `` (file: shop.yaml)`` appended in file mode.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["error", "warning"]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One problem with one object (or one manifest file, when ``kind`` is empty)."""

    severity: Severity
    """``"error"``: something the user wrote is not served as written; ``"warning"``: served,
    but probably not as intended (or served with a fallback)."""
    kind: str = ""
    """Kubernetes kind of the object, ``""`` for a problem with a whole file."""
    namespace: str = ""
    name: str = ""
    field: str = ""
    """Path of the offending field, e.g. ``spec.rules[0].host``; ``""`` for the whole object."""
    message: str
    source: str | None = None
    """The manifest file the object came from (file mode only)."""

    @property
    def is_error(self) -> bool:
        """True for ``severity == "error"``."""
        return self.severity == "error"

    @property
    def object_ref(self) -> str:
        """``Kind namespace/name`` (or ``Kind name`` for cluster-scoped objects)."""
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {name}".strip()

    def with_source(self, source: str | None) -> Problem:
        """The same problem attributed to a manifest file (unchanged if it already has one)."""
        if source is None or self.source is not None:
            return self
        return msgspec.structs.replace(self, source=source)

    def __str__(self) -> str:
        parts = [f"{self.severity}:"]
        if self.kind:
            parts.append(f"{self.object_ref}:")
        if self.field:
            parts.append(f"{self.field}:")
        parts.append(self.message)
        text = " ".join(parts)
        if self.source is not None:
            text += f" (file: {self.source})"
        return text


def error(
    message: str, *, kind: str = "", namespace: str = "", name: str = "", field: str = ""
) -> Problem:
    """An error Problem."""
    return Problem(
        severity="error", kind=kind, namespace=namespace, name=name, field=field, message=message
    )


def warning(
    message: str, *, kind: str = "", namespace: str = "", name: str = "", field: str = ""
) -> Problem:
    """A warning Problem."""
    return Problem(
        severity="warning", kind=kind, namespace=namespace, name=name, field=field, message=message
    )


def unique(problems: list[Problem]) -> list[Problem]:
    """The problems in their first-seen order, each once."""
    return list(dict.fromkeys(problems))


def has_errors(problems: list[Problem]) -> bool:
    """True if any problem is an error."""
    return any(problem.is_error for problem in problems)
