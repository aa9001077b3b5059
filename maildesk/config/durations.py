"""Durations as the config, the rules and the command line write them: `90` (seconds),
`30m`, `4h`, `2d`, `1w`. One parser, with one bound: a duration is subtracted from now
(`--since`, `problems.since`, windows), and past about 2,700 years that is before year 1,
which Python's datetime cannot hold; a desk has no use for more than a century."""
from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
LONGEST = 100 * 365 * 86400      # seconds: 36500d


def parse_duration(value: object) -> float:
    """Seconds in `90`, `30m`, `4h`, `2d` or `1w`; ValueError past a century."""
    if isinstance(value, bool):
        raise ValueError("a duration, not true/false")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ValueError(f"not a duration: {value!r} (a number and s, m, h, d or w: "
                             "90, 30m, 4h, 2d, 1w)")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not 0 <= seconds <= LONGEST:
        raise ValueError(f"{value!r} is {'negative' if seconds < 0 else 'over 100 years'} "
                         "(a duration is 0 to 36500d)")
    return seconds
