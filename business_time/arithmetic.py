"""Business-time arithmetic on a `contracts.sla.BusinessCalendar`.

Every function takes and returns timezone-aware datetimes in any zone (a naive one is a
ValueError) and returns results in the zone of its (first) argument. Time is counted in the
calendar's zone; see `business_time._schedule` for exactly which instants count around
daylight-saving changes. Cost grows with the number of days spanned, never with the minutes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

from business_time._schedule import OutOfRange, schedule_of
from contracts.sla import BusinessCalendar

ZERO = timedelta(0)


def _utc(instant: datetime, name: str) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got the naive {instant!r}")
    try:
        return instant.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        raise OutOfRange(f"{name} is too close to the ends of the datetime range: {instant!r}") from None


def _aware(naive_utc: datetime, zone: tzinfo | None) -> datetime:
    return naive_utc.replace(tzinfo=UTC).astimezone(zone)


def is_business_time(instant: datetime, calendar: BusinessCalendar) -> bool:
    """Whether `instant` falls within working time (a period's start counts, its end does not)."""
    at = _utc(instant, "instant")
    schedule = schedule_of(calendar)
    # Instants of local date d lie within a day either side of d, so only three dates can hold `at`.
    return any(start <= at < end
               for day in (at.date() - timedelta(days=1), at.date(), at.date() + timedelta(days=1))
               for start, end in schedule.day_intervals(day))


def next_business_instant(instant: datetime, calendar: BusinessCalendar) -> datetime:
    """The first instant at or after `instant` that is business time (`instant` itself if it is)."""
    at = _utc(instant, "instant")
    start, _ = next(schedule_of(calendar).intervals_from(at))
    return _aware(start, instant.tzinfo)


def add_business_time(start: datetime, duration: timedelta, calendar: BusinessCalendar) -> datetime:
    """The earliest instant by which `duration` of business time has elapsed since `start`.

    A zero duration gives `start`; otherwise the result lies within working time or at the end of a
    working period (Friday 16:00 + 1 h in a 9-17 calendar is Friday 17:00, not Monday 09:00).
    Raises ValueError for a negative duration, and `NoWorkingTime` (a ValueError) when the calendar
    runs ten years without working time.
    """
    at = _utc(start, "start")
    if duration < ZERO:
        raise ValueError(f"duration must not be negative, got {duration}")
    if duration == ZERO:
        return start
    remaining = duration
    for low, high in schedule_of(calendar).intervals_from(at):
        if high - low >= remaining:
            return _aware(low + remaining, start.tzinfo)
        remaining -= high - low
    raise AssertionError("intervals_from never ends")  # pragma: no cover


def business_time_between(start: datetime, end: datetime, calendar: BusinessCalendar) -> timedelta:
    """The business time within [start, end); negative when `end` is before `start`."""
    low, high = _utc(start, "start"), _utc(end, "end")
    if high < low:
        return -business_time_between(end, start, calendar)
    total = ZERO
    for interval_start, interval_end in schedule_of(calendar).intervals_from(low, until=high):
        total += min(interval_end, high) - interval_start
    return total
