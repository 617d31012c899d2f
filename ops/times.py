"""One way to read a time on the command line (`jobscore ledger`, `jobscore dlq`: ``--since``/``--until``).

Accepted, in this order:
- a time ago: ``600`` or ``600s``, ``15m``, ``2h``, ``1d``, with or without a leading ``-`` (``-2h`` reads as
  ``2h``: both mean two hours ago);
- a unix time in seconds after ``@`` (``@1764140400``, as `date -d @…` writes it);
- ISO 8601 (``2026-11-26T07:40:00Z``, ``2026-11-26T08:40:00+01:00``); **no zone means UTC**, on every host.
"""

from __future__ import annotations

import datetime as dt
import re
import time

_DURATION = re.compile(r"^-?\s*(\d+(?:\.\d+)?)\s*([smhd]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds for ``text`` (see the module's forms). Raises ValueError saying what it accepts."""
    now = time.time() if now is None else now
    v = text.strip()
    m = _DURATION.match(v)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    if v.startswith("@"):
        try:
            return float(v[1:])
        except ValueError:
            pass
    else:
        try:
            t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    raise ValueError(
        f"{text!r}: give a time ago (600, 15m, 2h, 1d; a leading - is allowed), a unix time (@1764140400) or an "
        "ISO 8601 time (2026-11-26T07:40:00Z; no zone = UTC)"
    )
