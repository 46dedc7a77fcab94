"""Parsing of the human-friendly quantities used by flags and annotations.

- Durations: ``"5s"``, ``"250ms"``, ``"1m"``, ``"1h"``, or a plain number of seconds (``"2.5"``).
- Sizes, nginx syntax: ``"1024"`` (bytes), ``"8k"``, ``"8m"``, ``"1g"`` (binary multiples,
  case-insensitive); ``"0"`` means "no limit" wherever a size is a limit.

Both raise :class:`ValueError` with a message that shows the accepted forms.
"""

from __future__ import annotations

import re

_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)\s*$", re.IGNORECASE)


def parse_duration_s(text: str) -> float:
    """Seconds in a duration such as ``"5s"``, ``"250ms"``, ``"1m"`` or ``"30"``."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(
            f"{text!r} is not a duration (use for example 5s, 250ms, 1m or a number of seconds)"
        )
    return float(found.group(1)) * _DURATION_UNITS_S[found.group(2) or "s"]


def parse_duration_ms(text: str) -> int:
    """Whole milliseconds in a duration (see :func:`parse_duration_s`), rounded."""
    return round(parse_duration_s(text) * 1000)


def parse_size(text: str) -> int:
    """Bytes in an nginx-style size such as ``"8m"``, ``"1g"``, ``"512k"`` or ``"1024"``."""
    found = _SIZE.match(text)
    if found is None:
        raise ValueError(f"{text!r} is not a size (use for example 1024, 512k, 8m, 1g or 0)")
    return int(found.group(1)) * _SIZE_UNITS[found.group(2).lower()]
