"""UTC-offset changes of an IANA zone, found once per zone and year.

`zoneinfo` answers "what is the offset at this instant" but does not list its transitions, and the
business-time arithmetic needs them to turn a local working period into real instants. They are
found by sampling the offset every hour and bisecting each change to the second (tzdata transitions
fall on whole seconds; two changes within one hour do not occur in tzdata), and cached per year.

All instants here are naive datetimes meaning UTC: exact arithmetic with no zone lookups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)

Transition = tuple[datetime, timedelta]  # (first instant with the new offset, the new offset)


def offset_at(zone: ZoneInfo, utc: datetime) -> timedelta:
    """The zone's UTC offset at the naive-UTC instant `utc`."""
    offset = utc.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _first_with(zone: ZoneInfo, before: datetime, after: datetime, offset: timedelta) -> datetime:
    """The first whole second in (before, after] whose offset is `offset` (it holds at `after`)."""
    low, high = 0, int((after - before) / SECOND)
    while high - low > 1:
        middle = (low + high) // 2
        if offset_at(zone, before + middle * SECOND) == offset:
            high = middle
        else:
            low = middle
    return before + high * SECOND


@lru_cache(maxsize=1024)
def _year_transitions(key: str, year: int) -> tuple[Transition, ...]:
    """Transitions in (Jan 1 of `year`, Jan 1 of `year` + 1], UTC."""
    zone = ZoneInfo(key)
    start = datetime(year, 1, 1)
    end = datetime(year + 1, 1, 1) if year < 9999 else datetime(9999, 12, 31, 23)
    found: list[Transition] = []
    previous_at, previous = start, offset_at(zone, start)
    while previous_at < end:
        at = min(previous_at + HOUR, end)
        offset = offset_at(zone, at)
        if offset != previous:
            found.append((_first_with(zone, previous_at, at, offset), offset))
            previous = offset
        previous_at = at
    return tuple(found)


def offset_segments(key: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime, timedelta]]:
    """[start, end) cut into (segment start, segment end, offset) pieces of constant UTC offset."""
    zone = ZoneInfo(key)
    segments: list[tuple[datetime, datetime, timedelta]] = []
    at, offset = start, offset_at(zone, start)
    for year in range(max(1, start.year - 1), end.year + 1):
        for when, new_offset in _year_transitions(key, year):
            if at < when < end:
                segments.append((at, when, offset))
                at, offset = when, new_offset
    segments.append((at, end, offset))
    return segments
