"""One parse_time for every --since/--until (`jobscore ledger`, `jobscore dlq`): they read the same text the same
way on every host — `ledger` read "600" as ten minutes ago and `dlq` as a unix time; a time without a zone was UTC
to one and local time to the other."""

from __future__ import annotations

import pytest

from ops.times import parse_time

NOW = 1_800_000_000.0


def test_a_time_ago_with_or_without_a_minus() -> None:
    assert parse_time("600", NOW) == parse_time("600s", NOW) == parse_time("-600", NOW) == NOW - 600
    assert parse_time("15m", NOW) == parse_time("-15m", NOW) == NOW - 900
    assert parse_time("2h", NOW) == parse_time("-2h", NOW) == NOW - 7200
    assert parse_time("1.5d", NOW) == NOW - 1.5 * 86400


def test_unix_seconds_after_an_at_sign_and_iso_without_zone_as_utc() -> None:
    assert parse_time("@1764140400", NOW) == 1764140400.0
    assert parse_time("2027-01-15T08:00:00Z") == 1_800_000_000.0
    assert parse_time("2027-01-15T08:00:00") == 1_800_000_000.0  # no zone = UTC, on any host
    assert parse_time("2027-01-15T09:00:00+01:00") == 1_800_000_000.0


@pytest.mark.parametrize("bad", ["yesterday", "@soon", "2h ago", ""])
def test_anything_else_is_refused_with_the_accepted_forms(bad: str) -> None:
    with pytest.raises(ValueError, match=r"time ago .* unix time \(@.* ISO 8601"):
        parse_time(bad, NOW)
