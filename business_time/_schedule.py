"""A business calendar compiled for arithmetic: per-weekday periods, holidays, and the real
(UTC) working intervals of each local day, produced in time order.

Definition used throughout: an instant is business time when its wall-clock reading in the
calendar's zone falls on a date that is not a holiday, within one of that weekday's working
periods ``[start, end)``. Around daylight-saving changes this means:

* spring forward: wall-clock times that are skipped never occur, so they hold no business time.
  In Europe/Berlin (02:00 → 03:00) a 01:00-04:00 period holds two real hours that day, and a period
  lying wholly inside the skipped hour holds none;
* fall back: the repeated wall-clock hour occurs twice and counts twice. In Europe/Berlin
  (03:00 → 02:00) a 01:00-04:00 period holds four real hours; one starting inside the repeated
  hour (02:30-04:00) holds both of its passes through 02:30-03:00.

So a period that spans a change lasts the real time elapsed between its two local ends, and the
rule needs no special cases: it is what stepping a clock minute by minute would count.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from business_time._zone import offset_segments
from contracts.sla import BusinessCalendar

DAY = timedelta(days=1)
# How far a search may run without meeting any working time before the calendar is declared empty.
NO_WORK_LIMIT = timedelta(days=3653)
# zoneinfo offsets are strictly within ±24 h, so the instants of a local date lie within a day of it.
_EARLIEST = datetime(2, 1, 1)
_LATEST = datetime(9998, 1, 1)

Interval = tuple[datetime, datetime]  # naive UTC [start, end)


class NoWorkingTime(ValueError):
    """The calendar holds no working time within the searched span (e.g. every day a holiday)."""


class OutOfRange(ValueError):
    """The arithmetic would leave the range of dates it supports (years 2 to 9997)."""


def _since_midnight(value: time) -> timedelta:
    return timedelta(hours=value.hour, minutes=value.minute, seconds=value.second,
                     microseconds=value.microsecond)


@dataclass(frozen=True)
class Schedule:
    zone: str
    periods: tuple[tuple[tuple[timedelta, timedelta], ...], ...]  # per weekday: (start, end) after midnight
    holidays: frozenset[date]

    def day_intervals(self, day: date) -> list[Interval]:
        """The real (naive UTC) instants whose local reading falls in `day`'s working periods."""
        periods = self.periods[day.weekday()]
        if not periods or day in self.holidays:
            return []
        midnight = datetime.combine(day, time())
        if not _EARLIEST + 2 * DAY <= midnight <= _LATEST - 2 * DAY:
            raise OutOfRange(f"business time is computed for years 2 to 9997, not around {day}")
        intervals: list[Interval] = []
        for segment_start, segment_end, offset in offset_segments(self.zone, midnight - DAY, midnight + 2 * DAY):
            for start, end in periods:
                # The local reading is utc + offset on this segment: solve for the UTC instants.
                low = max(segment_start, midnight + start - offset)
                high = min(segment_end, midnight + end - offset)
                if low < high:
                    intervals.append((low, high))
        intervals.sort()
        return intervals

    def intervals_from(self, instant: datetime, until: datetime | None = None) -> Iterator[Interval]:
        """Working intervals ending after `instant` (naive UTC), in time order, the first clipped to it;
        with `until`, only those starting before it (the last one is not clipped).

        Local dates are visited in order, but at a fall-back across midnight a date's instants can
        come after the next date's first ones; so intervals wait in a heap until no later date can
        precede them: the instants of a date all lie after its midnight, read as UTC, minus a day.
        """
        day = instant.date() - 2 * DAY  # earlier dates' instants all end before `instant`
        last_day = None if until is None else until.date() + 2 * DAY  # later dates' start after `until`
        pending: list[Interval] = []
        last_work = day
        while last_day is None or day <= last_day:
            found = self.day_intervals(day)
            if found:
                last_work = day
            for start, end in found:
                if end > instant and (until is None or start < until):
                    heapq.heappush(pending, (max(start, instant), end))
            horizon = datetime.combine(day, time())  # every later date's instants start after this
            while pending and pending[0][0] <= horizon:
                yield heapq.heappop(pending)
            if last_day is None and day - last_work > NO_WORK_LIMIT:
                raise NoWorkingTime(f"the calendar has no working time between {last_work} and {day}")
            day += DAY
        while pending:
            yield heapq.heappop(pending)


@lru_cache(maxsize=256)
def _compile(zone: str, periods: tuple[tuple[int, time, time], ...], holidays: frozenset[date]) -> Schedule:
    by_weekday: list[list[tuple[timedelta, timedelta]]] = [[] for _ in range(7)]
    for weekday, start, end in periods:
        by_weekday[weekday].append((_since_midnight(start), _since_midnight(end)))
    return Schedule(zone, tuple(tuple(sorted(day)) for day in by_weekday), holidays)


def schedule_of(calendar: BusinessCalendar) -> Schedule:
    """The compiled form of `calendar` (cached: calendars are few and reused for every query)."""
    periods = tuple(sorted((p.weekday, p.start, p.end) for p in calendar.working_periods))
    return _compile(calendar.timezone, periods, frozenset(calendar.holidays))
