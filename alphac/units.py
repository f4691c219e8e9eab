"""Units: reading durations, and writing counts and durations, the one way every command does.

``--budget`` of ``alphac optimize``, ``alphac train`` and ``alphac.optimize(budget=...)`` is read by
:func:`parse_duration`; parameters and FLOPs are printed by :func:`format_count` (``140.46k``,
``43.81M``) and elapsed times by :func:`format_duration` (``1m33s``), so a figure reads the same
in the live view, the end-of-run table and ``alphac report``.

Example::

    parse_duration("1h30m")    # 5400.0; also "90", "90s", "5m", "1.5h", "2m30s", "10 min"
    format_count(140458)       # '140.46k'
    format_duration(93)        # '1m33s'
"""

from __future__ import annotations

import math
import re

from alphac.errors import InvalidDurationError

__all__ = ["DURATION_EXAMPLES", "format_count", "format_duration", "parse_duration"]

#: What a readable duration looks like, for messages.
DURATION_EXAMPLES = "90 (seconds), 90s, 5m, 1h, 1h30m, 1.5h or 2m30s"
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_COMPONENT = re.compile(rf"({_NUMBER})\s*([a-z]+)\s*")
_UNIT_SECONDS = {
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
}


def parse_duration(text: str, *, name: str = "--budget") -> float:
    """Seconds in ``text``: a bare number (seconds), or numbers with units, largest first.

    Pre: ``text`` is what the user typed; ``name`` says where (for the message). Post: a positive,
    finite number of seconds; InvalidDurationError naming ``text`` and showing valid examples
    otherwise (also for ``1h30``: each number needs its unit).

    Example: ``"1h30m"`` -> 5400.0, ``"1.5h"`` -> 5400.0, ``"2m30s"`` -> 150.0, ``"90"`` -> 90.0.
    """
    cleaned = str(text).strip().lower()
    seconds = float(cleaned) if re.fullmatch(_NUMBER, cleaned) else _components(cleaned)
    if seconds is None:
        raise InvalidDurationError(f"{name} {text!r} is not a duration",
                                   hint=f"write it like {DURATION_EXAMPLES}")
    if not (0 < seconds < math.inf):
        raise InvalidDurationError(f"{name} {text!r} is not a duration longer than zero",
                                   hint=f"write a positive one like {DURATION_EXAMPLES}")
    return seconds


def _components(cleaned: str) -> float | None:
    """``"1h 30m"`` -> 5400.0; None unless every part is a number with a unit, largest first."""
    total, position, previous = 0.0, 0, math.inf
    while position < len(cleaned):
        match = _COMPONENT.match(cleaned, position)
        scale = _UNIT_SECONDS.get(match.group(2)) if match else None
        if match is None or scale is None or scale >= previous:
            return None
        total += float(match.group(1)) * scale
        position, previous = match.end(), scale
    return total if cleaned else None


def format_count(n: float) -> str:
    """A count (parameters, FLOPs) in three significant-ish digits: 1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def format_duration(seconds: float | None) -> str:
    """Elapsed time: 93 -> '1m33s', 5400 -> '1h30m', 7 -> '7s'; None -> '?'."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
