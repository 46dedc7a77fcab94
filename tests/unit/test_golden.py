"""Golden pairs: tests/fixtures/<case>/manifests.yaml must translate to exactly table.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silex.sources.files import load_snapshot
from silex.table import to_json
from silex.translate import translate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CASES = sorted(
    case.name
    for case in FIXTURES.glob("*")
    if (case / "manifests.yaml").is_file() and (case / "table.json").is_file()
)


@pytest.mark.skipif(not CASES, reason="no golden fixtures yet")
@pytest.mark.parametrize("case", CASES)
def test_golden_table(case: str) -> None:
    snapshot, load_problems = load_snapshot(FIXTURES / case / "manifests.yaml")
    table, problems = translate(snapshot)
    assert [str(p) for p in load_problems + problems if p.is_error] == []
    expected = json.loads((FIXTURES / case / "table.json").read_text())
    assert json.loads(to_json(table)) == expected
