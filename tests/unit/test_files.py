"""Manifest files: folders, multi-document YAML, List, and every kind of bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import anyio
import pytest

from silex.objects import Ingress, IngressClass, Service
from silex.sources import files
from silex.sources.files import Loader, load, load_snapshot, watch

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports: [{{name: http, port: 80}}]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_folder_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", SERVICE.format(name="b"))
    write(tmp_path / "sub" / "deeper" / "c.yml", SERVICE.format(name="c"))
    write(tmp_path / "a.json", '{"kind": "Service", "metadata": {"name": "a"}}')
    write(tmp_path / "notes.txt", "kind: nonsense")
    objects, found = load(tmp_path)
    assert found == []
    assert [(item.object.metadata.name, Path(item.source).name) for item in objects] == [
        ("a", "a.json"),
        ("b", "b.yaml"),
        ("c", "c.yml"),
    ]


def test_multi_document_and_defaults(tmp_path: Path) -> None:
    file = write(
        tmp_path / "m.yaml",
        """\
        ---
        kind: IngressClass
        metadata: {name: silex, namespace: ignored}
        spec: {controller: silex.dev/ingress-controller}
        ---
        # an empty document
        ---
        kind: Service
        metadata: {name: s, namespace: shop}
        """,
    )
    objects, found = load(file)
    assert found == []
    kinds = {(type(item.object), item.object.key) for item in objects}
    assert kinds == {(IngressClass, ("", "silex")), (Service, ("shop", "s"))}


def test_namespace_defaults_to_default(tmp_path: Path) -> None:
    objects, _ = load(write(tmp_path / "s.yaml", SERVICE.format(name="s")))
    assert objects[0].object.key == ("default", "s")


def test_list_kind(tmp_path: Path) -> None:
    file = write(
        tmp_path / "list.yaml",
        """\
        apiVersion: v1
        kind: List
        items:
          - {kind: Service, metadata: {name: one}}
          - {kind: Ingress, metadata: {name: two}}
          - {kind: Service}
        """,
    )
    objects, found = load(file)
    assert sorted(type(item.object).__name__ for item in objects) == ["Ingress", "Service"]
    assert [str(p) for p in found] == [
        f"error: document 1, items[2]: Service without metadata.name (file: {file})"
    ]


def test_yaml_syntax_error_names_file_and_line_and_others_load(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", SERVICE.format(name="good"))
    bad = write(tmp_path / "b.yaml", "kind: Service\nmetadata:\n  name: [unclosed\n")
    objects, found = load(tmp_path)
    assert [item.object.metadata.name for item in objects] == ["good"]
    assert len(found) == 1
    assert found[0].severity == "error"
    assert found[0].source == str(bad)
    assert "invalid YAML at line" in found[0].message


def test_json_syntax_error(tmp_path: Path) -> None:
    bad = write(tmp_path / "x.json", '{"kind": "Service",\n "metadata": }')
    _, found = load(bad)
    assert found[0].message.startswith("invalid JSON at line 2, column")


def test_unknown_kind_is_warning_and_skipped(tmp_path: Path) -> None:
    file = write(tmp_path / "d.yaml", "kind: Deployment\nmetadata: {name: web}\n")
    objects, found = load(file)
    assert objects == []
    assert [(p.severity, p.kind, p.name) for p in found] == [("warning", "Deployment", "web")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metadata: {name: x}\n", "document 1: missing kind"),
        ("kind: Service\n", "document 1: Service without metadata.name"),
        ("kind: Service\nmetadata: {}\n", "document 1: Service without metadata.name"),
        ("- just\n- a list\n", "document 1: expected a Kubernetes object (a mapping)"),
        ("kind: List\nitems: 3\n", "document 1: kind List needs a list of items"),
    ],
)
def test_malformed_documents_are_errors_naming_file_and_document(
    tmp_path: Path, text: str, message: str
) -> None:
    file = write(tmp_path / "bad.yaml", text)
    objects, found = load(file)
    assert objects == []
    assert [str(p) for p in found] == [f"error: {message} (file: {file})"]


def test_document_index_counts_empty_documents(tmp_path: Path) -> None:
    file = write(
        tmp_path / "m.yaml", "kind: Service\nmetadata: {name: a}\n---\n---\nkind: Service\n"
    )
    _, found = load(file)
    assert found[0].message.startswith("document 3:")


def test_wrong_field_type_names_the_field(tmp_path: Path) -> None:
    file = write(
        tmp_path / "i.yaml",
        """\
        kind: Ingress
        metadata: {name: shop, namespace: web}
        spec:
          rules:
            - host: 42
        """,
    )
    objects, found = load(file)
    assert objects == []
    assert len(found) == 1
    problem = found[0]
    assert (problem.kind, problem.namespace, problem.name, problem.field) == (
        "Ingress",
        "web",
        "shop",
        "spec.rules[0].host",
    )
    assert problem.source == str(file)


def test_duplicate_definitions_later_wins_with_warning(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "kind: Service\nmetadata: {name: s}\nspec: {type: A}\n")
    write(tmp_path / "b.yaml", "kind: Service\nmetadata: {name: s}\nspec: {type: B}\n")
    objects, found = load(tmp_path)
    assert len(objects) == 1
    assert isinstance(objects[0].object, Service)
    assert objects[0].object.spec.type == "B"
    assert [p.severity for p in found] == ["warning"]


def test_missing_path_is_error(tmp_path: Path) -> None:
    objects, found = load(tmp_path / "nope")
    assert objects == []
    assert found[0].severity == "error"


def test_unreadable_bytes_are_error(tmp_path: Path) -> None:
    file = tmp_path / "bin.yaml"
    file.write_bytes(b"\xff\xfe\x00kind")
    _, found = load(file)
    assert found[0].message.startswith("cannot read file")


def test_loader_keeps_last_good_version_of_broken_file(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", SERVICE.format(name="s"))
    loader = Loader(keep_last_good=True)
    first, _ = loader.load(file)
    file.write_text("kind: Service\nmetadata: [\n")
    again, found = loader.load(file)
    assert again == first
    assert [p.severity for p in found] == ["error", "warning"]
    assert "last good version" in found[1].message
    assert load(file)[0] == []  # the stateless load does not keep anything


def test_loader_rereads_only_the_files_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = write(tmp_path / "a.yaml", SERVICE.format(name="a"))
    other = write(tmp_path / "b.yaml", SERVICE.format(name="b"))
    read: list[str] = []
    real_load_file = files.load_file

    def counting_load_file(file: Path) -> object:
        read.append(file.name)
        return real_load_file(file)

    monkeypatch.setattr(files, "load_file", counting_load_file)
    loader = Loader()
    loader.load(tmp_path)
    assert read == ["a.yaml", "b.yaml"]
    read.clear()
    loader.load(tmp_path)
    assert read == []  # nothing changed, nothing parsed
    other.write_text(SERVICE.format(name="renamed"))
    objects, _ = loader.load(tmp_path)
    assert read == ["b.yaml"]
    assert sorted(o.object.metadata.name for o in objects) == ["a", "renamed"]
    big.unlink()
    objects, _ = loader.load(tmp_path)
    assert [o.object.metadata.name for o in objects] == ["renamed"]


def test_load_snapshot_records_sources(tmp_path: Path) -> None:
    file = write(tmp_path / "i.yaml", "kind: Ingress\nmetadata: {name: i}\n")
    snapshot, found = load_snapshot(file)
    assert found == []
    assert isinstance(snapshot.ingresses[("default", "i")], Ingress)
    assert snapshot.source_of("Ingress", "default", "i") == str(file)


def test_watch_yields_on_change(tmp_path: Path) -> None:
    file = write(tmp_path / "s.yaml", SERVICE.format(name="s"))

    async def main() -> set[Path]:
        changes = watch(tmp_path, debounce_s=0.05)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:

                async def touch() -> None:
                    await anyio.sleep(0.3)
                    file.write_text(SERVICE.format(name="t"))

                # The first yield is the empty "armed" tick, before the edit at 0.3 s.
                armed = await changes.__anext__()
                group.start_soon(touch)
                changed = await changes.__anext__()
        await changes.aclose()  # type: ignore[attr-defined]
        assert armed == set()
        return changed

    assert anyio.run(main) == {file}
