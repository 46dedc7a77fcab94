"""Patch bodies: JSON merge patch (RFC 7386), strategic merge patch (treated as a merge patch,
plus the ``$patch: delete``/``$patch: replace`` map directives) and JSON patch (RFC 6902).

Strategic merge on lists (merge keys such as ``containers[].name``) is NOT implemented: lists
are replaced whole, as a merge patch does.
"""

from __future__ import annotations

import copy
from typing import Any

from ._errors import ApiError

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 merge of ``patch`` into ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if strategic:
        directive = patch.get("$patch")
        if directive == "delete":
            return None
        if directive == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
            continue
        merged = merge_patch(result.get(key), value, strategic=strategic)
        if merged is None and strategic:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    try:
        index = int(token)
    except ValueError:
        raise ApiError(422, "Invalid", f"invalid array index {token!r}") from None
    limit = len(container) if for_add else len(container) - 1
    if index < 0 or index > limit:
        raise ApiError(422, "Invalid", f"array index {index} out of range")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise ApiError(422, "Invalid", f"path element {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_add=False)]
        else:
            raise ApiError(422, "Invalid", f"cannot traverse into {token!r}")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ApiError(422, "Invalid", f"path element {last!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise ApiError(422, "Invalid", f"cannot read {last!r}")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise ApiError(422, "Invalid", f"cannot add at {last!r}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise ApiError(422, "Invalid", "cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise ApiError(422, "Invalid", f"path element {last!r} does not exist")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, for_add=False))
    raise ApiError(422, "Invalid", f"cannot remove {last!r}")


def json_patch(target: Any, operations: Any) -> Any:
    """Apply RFC 6902 operations (add, remove, replace, move, copy, test) to a copy of target."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json patch body must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise ApiError(400, "BadRequest", f"invalid json patch operation {operation!r}")
        op = operation["op"]
        tokens = _pointer(operation["path"])
        if op == "add":
            doc = _add(doc, tokens, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            doc, _ = _remove(doc, tokens)
        elif op == "replace":
            _get(doc, tokens)
            if tokens:
                doc, _ = _remove(doc, tokens)
            doc = _add(doc, tokens, copy.deepcopy(operation.get("value")))
        elif op in ("move", "copy"):
            source = _pointer(operation.get("from", ""))
            if op == "move":
                doc, value = _remove(doc, source)
            else:
                value = copy.deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif op == "test":
            if _get(doc, tokens) != operation.get("value"):
                raise ApiError(422, "Invalid", f"test operation failed at {operation['path']!r}")
        else:
            raise ApiError(400, "BadRequest", f"unknown json patch op {op!r}")
    return doc


def apply_patch(target: dict[str, Any], content_type: str, body: Any) -> dict[str, Any]:
    """Apply a patch body of the given media type to ``target`` and return the new object."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media == MERGE:
        result = merge_patch(target, body)
    elif media == STRATEGIC:
        result = merge_patch(target, body, strategic=True)
    elif media == JSON_PATCH:
        result = json_patch(target, body)
    else:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE}, {STRATEGIC} (got {media!r})",
        )
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "patch did not produce an object")
    return result
