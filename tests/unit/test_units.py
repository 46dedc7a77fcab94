"""Durations and nginx sizes."""

from __future__ import annotations

import pytest

from silex.units import parse_duration_ms, parse_duration_s, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m", 60.0),
        ("2h", 7200.0),
        ("30", 30.0),
        ("0.1", 0.1),
        (" 7s ", 7.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


def test_duration_ms_rounds() -> None:
    assert parse_duration_ms("0.1s") == 100
    assert parse_duration_ms("1500ms") == 1500


@pytest.mark.parametrize("text", ["", "s", "5x", "-1s", "1.5.2", "5 seconds"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration_s(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1024", 1024),
        ("8k", 8192),
        ("8K", 8192),
        ("1m", 1048576),
        ("8M", 8388608),
        ("1g", 1073741824),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "8mb", "-1", "1.5m", "1t", "m"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)
