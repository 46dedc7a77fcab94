"""Manifest files as a source of objects: one file or a folder of multi-document YAML/JSON.

- A folder is read recursively: every ``*.yaml``, ``*.yml`` and ``*.json``, in sorted order.
- Each document is one Kubernetes object of kind Ingress, IngressClass, Service,
  EndpointSlice or Secret, or a ``kind: List`` whose ``items`` are such objects.
- Problems, never exceptions: a YAML syntax error is an error naming the file and line (that
  file is skipped, the others load); a document without ``kind`` or ``metadata.name`` is an
  error naming the file and document; an unknown kind is a warning and is skipped; a field of
  the wrong type is an error naming the object and the field path.
- Namespaced objects without a namespace get ``default``.
- :class:`Loader` can keep serving the last good version of a file that became broken.

:func:`load` reads once; :func:`watch` yields whenever files under the path change;
:func:`load_snapshot` and :func:`watch_snapshots` give ready store snapshots.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
import watchfiles
import yaml

from silex import problems
from silex.objects import CLUSTER_SCOPED_KINDS, MODELS, KubeObject, convert
from silex.problems import Problem
from silex.store import Snapshot, Store

MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
# libyaml's safe loader when PyYAML was built with it: ~20x faster on 10,000 Ingresses.
_SAFE_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_NAMESPACE: Final = "default"
IGNORED_KINDS: Final[frozenset[str]] = frozenset()
"""Kinds skipped without a warning (none yet)."""


class LoadedObject(msgspec.Struct, frozen=True):
    """One object read from a manifest file."""

    object: KubeObject
    source: str
    """The file it came from, as given (relative paths stay relative)."""


def manifest_files(path: Path) -> list[Path]:
    """The manifest files under ``path`` (itself, if it is a file), sorted."""
    if path.is_dir():
        return sorted(
            candidate
            for candidate in path.rglob("*")
            if candidate.suffix.lower() in MANIFEST_SUFFIXES and candidate.is_file()
        )
    return [path]


def load(path: Path) -> tuple[list[LoadedObject], list[Problem]]:
    """Every object under ``path`` and every Problem found reading it (see :class:`Loader`)."""
    return Loader(keep_last_good=False).load(path)


class Loader:
    """Loads manifests repeatedly, optionally keeping each broken file's last good version.

    With ``keep_last_good`` (what ``silex serve`` uses), a file that has an error — a syntax
    error, an unreadable file, a bad object — contributes the objects of its last version
    that had none, so one bad save never takes routes down; its Problems are still reported.
    """

    def __init__(self, *, keep_last_good: bool = True) -> None:
        self.keep_last_good = keep_last_good
        self._last_good: dict[str, list[LoadedObject]] = {}
        # Each file's last parse, by its stat stamp: a change to one file of many re-reads only
        # that file (a 10,000-Ingress List took ~1 s to parse on every change of another file).
        self._parsed: dict[str, tuple[FileStamp, list[LoadedObject], list[Problem]]] = {}

    def load(self, path: Path) -> tuple[list[LoadedObject], list[Problem]]:
        """Every object under ``path`` and every Problem found reading it.

        A later definition of the same object (kind, namespace, name) replaces an earlier one,
        with a warning. A ``path`` that does not exist is an error Problem.
        """
        if not path.exists():
            return [], [problems.error(f"{path}: no such file or directory")]
        files: list[tuple[list[LoadedObject], list[Problem]]] = []
        parsed: dict[str, tuple[FileStamp, list[LoadedObject], list[Problem]]] = {}
        for file in manifest_files(path):
            stamp = file_stamp(file)
            cached = self._parsed.get(str(file))
            if stamp is not None and cached is not None and cached[0] == stamp:
                objects, file_problems = cached[1], cached[2]
            else:
                objects, file_problems = load_file(file)
            if stamp is not None:
                parsed[str(file)] = (stamp, objects, file_problems)
            if self.keep_last_good:
                objects, file_problems = self._last_good_if_broken(
                    str(file), objects, file_problems
                )
            files.append((objects, file_problems))
        self._parsed = parsed
        return _merge(files)

    def _last_good_if_broken(
        self, source: str, objects: list[LoadedObject], file_problems: list[Problem]
    ) -> tuple[list[LoadedObject], list[Problem]]:
        if not problems.has_errors(file_problems):
            self._last_good[source] = objects
            return objects, file_problems
        if source not in self._last_good:
            return objects, file_problems
        note = problems.warning("this file has errors: its last good version keeps serving")
        return self._last_good[source], [*file_problems, note.with_source(source)]


def _merge(
    files: list[tuple[list[LoadedObject], list[Problem]]],
) -> tuple[list[LoadedObject], list[Problem]]:
    loaded: dict[tuple[str, str, str], LoadedObject] = {}
    found: list[Problem] = []
    for objects, file_problems in files:
        found.extend(file_problems)
        for item in objects:
            obj = item.object
            key = (obj.KIND, *obj.key)
            previous = loaded.get(key)
            if previous is not None:
                found.append(
                    problems.warning(
                        f"defined again; this definition replaces the one in {previous.source}",
                        kind=obj.KIND,
                        namespace=obj.metadata.namespace,
                        name=obj.metadata.name,
                    ).with_source(item.source)
                )
            loaded[key] = item
    return list(loaded.values()), found


FileStamp = tuple[int, int, int, int]
"""A file's inode, size, and modification and change times in ns: any write changes it."""


def file_stamp(file: Path) -> FileStamp | None:
    """``file``'s :data:`FileStamp`, or None when it cannot be read."""
    try:
        st = file.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def load_file(file: Path) -> tuple[list[LoadedObject], list[Problem]]:
    """The objects of one manifest file and the Problems found in it."""
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [], [problems.error(f"cannot read file: {reason}").with_source(source)]
    try:
        documents = _parse_documents(text, is_json=file.suffix.lower() == ".json")
    except ValueError as exc:
        return [], [problems.error(str(exc)).with_source(source)]
    objects: list[LoadedObject] = []
    found: list[Problem] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        where = f"document {index + 1}"
        for obj, problem in _objects_of(document, where):
            if problem is not None:
                found.append(problem.with_source(source))
            if obj is not None:
                objects.append(LoadedObject(object=obj, source=source))
    return objects, found


def _parse_documents(text: str, *, is_json: bool) -> list[Any]:
    """The documents of a file (``None`` for empty ones).

    Raises ValueError naming the line of a syntax error.
    """
    if is_json:
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        return list(yaml.load_all(text, Loader=_SAFE_LOADER))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        what = getattr(exc, "problem", None) or str(exc)
        if mark is not None:
            raise ValueError(
                f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {what}"
            ) from None
        raise ValueError(f"invalid YAML: {what}") from None


def _objects_of(document: Any, where: str) -> Iterator[tuple[KubeObject | None, Problem | None]]:
    """The objects of one document (a ``List`` yields its items), each with its Problem."""
    if not isinstance(document, dict):
        yield None, problems.error(f"{where}: expected a Kubernetes object (a mapping)")
        return
    kind = document.get("kind")
    if kind == "List":
        items = document.get("items")
        if not isinstance(items, list):
            yield None, problems.error(f"{where}: kind List needs a list of items")
            return
        for index, item in enumerate(items):
            yield from _objects_of(item, f"{where}, items[{index}]")
        return
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(kind, str) or not kind:
        yield None, problems.error(f"{where}: missing kind")
        return
    if not isinstance(name, str) or not name:
        yield None, problems.error(f"{where}: {kind} without metadata.name")
        return
    model = MODELS.get(kind)
    namespace = "" if kind in CLUSTER_SCOPED_KINDS else DEFAULT_NAMESPACE
    if isinstance(metadata, dict) and isinstance(metadata.get("namespace"), str):
        namespace = metadata["namespace"] or namespace
    if model is None:
        if kind not in IGNORED_KINDS:
            yield (
                None,
                problems.warning(
                    f"{where}: kind {kind} is not used by Silex; skipped",
                    kind=kind,
                    namespace=namespace,
                    name=name,
                ),
            )
        return
    if kind in CLUSTER_SCOPED_KINDS:
        namespace = ""
    raw = {**document, "metadata": {**metadata, "namespace": namespace}}  # type: ignore[dict-item]
    try:
        yield convert(raw, model), None
    except msgspec.ValidationError as exc:
        field, message = _split_validation_error(str(exc))
        yield (
            None,
            problems.error(
                f"{message}; this {kind} is skipped",
                kind=kind,
                namespace=namespace,
                name=name,
                field=field,
            ),
        )


def _split_validation_error(text: str) -> tuple[str, str]:
    """``("spec.rules[0].host", "Expected `str`, got `int`")`` from a msgspec error message."""
    message, separator, location = text.rpartition(" - at `$")
    if not separator:
        return "", text
    return location.rstrip("`").removeprefix("."), message


WATCH_STEP_MS = 20
"""A burst of file events is reported once no new event came for this long (the watcher's
poll step; the controller then rate-limits rebuilds). Short, so an edit is served within tens
of milliseconds. A file read mid-write that does not parse keeps its last good content (see
:class:`Loader`); one that parses but is incomplete is served as read until the next event, so
tools should replace files atomically (write, then rename), as editors and kubectl do."""

ARMED_CHECK_MS = 250
"""How long the watcher waits for changes before reporting that it is armed."""


async def watch(
    path: Path, debounce_s: float = 0.1, stop_event: anyio.Event | None = None
) -> AsyncIterator[set[Path]]:
    """Yield the changed manifest files under ``path`` after each (debounced) burst of changes.

    A single file is watched through its folder, so editors that save by renaming work.
    Setting ``stop_event`` ends the iteration promptly (cancelling alone waits for the
    watcher thread's next timeout, up to seconds).
    """
    path = path.absolute()
    watched = path if path.is_dir() else path.parent

    def relevant(_change: watchfiles.Change, changed: str) -> bool:
        changed_path = Path(changed)
        if path.is_dir() or not path.exists():
            return changed_path.suffix.lower() in MANIFEST_SUFFIXES or changed_path == path
        return changed_path == path

    # The watcher is armed a moment after this generator starts; an edit made between the
    # caller's initial load and that moment would go unseen. The first timeout tick proves the
    # watcher is armed, so it yields an empty change set once: the caller reloads and catches
    # such an edit (an unchanged table is not re-applied).
    armed = False
    async for changes in watchfiles.awatch(
        watched,
        watch_filter=relevant,
        stop_event=stop_event,
        debounce=max(1, round(debounce_s * 1000)),
        step=WATCH_STEP_MS,
        rust_timeout=ARMED_CHECK_MS,
        yield_on_timeout=True,
    ):
        if changes:
            armed = True
            yield {Path(changed) for _, changed in changes}
        elif not armed:
            armed = True
            yield set()


def load_snapshot(path: Path, loader: Loader | None = None) -> tuple[Snapshot, list[Problem]]:
    """A ready snapshot of everything under ``path`` (every kind listed at once), and Problems."""
    loaded, found = (loader or Loader(keep_last_good=False)).load(path)
    store = Store()
    store.replace_all((item.object, item.source) for item in loaded)
    return store.snapshot(), found


async def watch_snapshots(
    path: Path,
    debounce_s: float = 0.1,
    loader: Loader | None = None,
    stop_event: anyio.Event | None = None,
) -> AsyncIterator[tuple[Snapshot, list[Problem]]]:
    """A fresh :func:`load_snapshot` (through ``loader``) after each burst of changes."""
    loader = loader or Loader()
    async for _changed in watch(path, debounce_s, stop_event):
        yield load_snapshot(path, loader)
