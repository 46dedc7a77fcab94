"""Label and field selectors, parsed the way kube-apiserver reads ``labelSelector`` and
``fieldSelector`` query parameters.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists) and
``!k`` (does not exist), comma separated (AND). Field selectors: ``f=v``, ``f==v``, ``f!=v``,
comma separated (AND), over a per-resource set of supported field paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ApiError

_LABEL_KEY = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET_TERM = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One label requirement: ``op`` is one of =, !=, in, notin, exists, !exists."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        # != and notin match when the label is absent, like the real server.
        return not present or value not in self.values


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _bad(kind: str, text: str, why: str) -> ApiError:
    return ApiError(400, "BadRequest", f"unable to parse requirement: {kind} {text!r}: {why}")


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key):
        raise _bad("labelSelector", text, f"invalid label key {key!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise _bad("labelSelector", text, f"invalid label value {value!r}")
    return value


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; an empty or missing selector matches everything."""
    if not text:
        return []
    requirements: list[Requirement] = []
    for term in _split_top_level(text):
        set_match = _SET_TERM.match(term)
        if set_match:
            key, op, raw_values = set_match.groups()
            values = tuple(
                _check_value(v.strip(), text) for v in raw_values.split(",") if v.strip()
            )
            if not values:
                raise _bad(
                    "labelSelector", text, "for 'in', 'notin' operators, values set can't be empty"
                )
            requirements.append(Requirement(_check_key(key, text), op, values))
            continue
        for op_text, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if op_text in term:
                key, _, value = term.partition(op_text)
                requirements.append(
                    Requirement(
                        _check_key(key.strip(), text), op, (_check_value(value.strip(), text),)
                    )
                )
                break
        else:
            if term.startswith("!"):
                requirements.append(Requirement(_check_key(term[1:].strip(), text), "!exists"))
            elif " " in term or "(" in term or ")" in term:
                raise _bad("labelSelector", text, f"unexpected term {term!r}")
            else:
                requirements.append(Requirement(_check_key(term, text), "exists"))
    return requirements


def labels_match(requirements: list[Requirement], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(req.matches(labels) for req in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str  # "=" or "!="
    value: str


def parse_field_selector(text: str | None, supported: frozenset[str]) -> list[FieldRequirement]:
    """Parse a field selector; fields outside ``supported`` are a 400 as on the real server."""
    if not text:
        return []
    requirements: list[FieldRequirement] = []
    for term in _split_top_level(text):
        for op_text, op in (("!=", "!="), ("==", "="), ("=", "=")):
            if op_text in term:
                field, _, value = term.partition(op_text)
                field = field.strip()
                if field not in supported:
                    raise ApiError(400, "BadRequest", f"field label not supported: {field}")
                requirements.append(FieldRequirement(field, op, value.strip()))
                break
        else:
            raise ApiError(
                400, "BadRequest", f"invalid selector: '{text}'; can't understand '{term}'"
            )
    return requirements


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string value of a dotted field path, "" when absent (as field selectors see it)."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return ""
        node = node[part]
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def fields_match(requirements: list[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    for req in requirements:
        equal = field_value(obj, req.field) == req.value
        if equal != (req.op == "="):
            return False
    return True


Matcher = Callable[[Mapping[str, Any]], bool]


def make_matcher(
    label_selector: str | None, field_selector: str | None, supported_fields: frozenset[str]
) -> Matcher:
    """A predicate combining a label selector and a field selector (raises ApiError 400)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, supported_fields)

    def matcher(obj: Mapping[str, Any]) -> bool:
        return labels_match(labels, obj) and fields_match(fields, obj)

    return matcher
