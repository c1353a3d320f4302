"""Business-time arithmetic, checked against a reference that steps a clock minute by minute.

The reference reads each UTC minute's wall clock in the calendar's zone: that is the definition
(`business_time._schedule`), so the library's day-by-day interval arithmetic must agree with it for
random calendars (breaks, holidays) in zones with and without daylight saving, with starts placed
around the zones' offset changes.
"""

from __future__ import annotations

import time as timer
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from business_time import (
    NoWorkingTime,
    add_business_time,
    business_time_between,
    is_business_time,
    next_business_instant,
)
from contracts.sla import BusinessCalendar, WorkingPeriod

MINUTE = timedelta(minutes=1)
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
BERLIN = ZoneInfo("Europe/Berlin")


def office(zone: str = "Europe/Berlin", holidays: tuple[date, ...] = (), *, start: time = time(9),
           end: time = time(17), weekdays: range = range(5)) -> BusinessCalendar:
    return BusinessCalendar(timezone=zone, holidays=list(holidays),
                            working_periods=[WorkingPeriod(weekday=d, start=start, end=end) for d in weekdays])


def utc(instant: datetime) -> datetime:
    """Aware datetimes in the same zone compare by wall clock, ignoring `fold`: compare in UTC."""
    return instant.astimezone(UTC)


def later(start: datetime, minutes: int, seconds: int = 0) -> datetime:
    """`minutes` of real time after `start`, in its zone (`start + delta` would add wall-clock time)."""
    return (utc(start) + minutes * MINUTE + timedelta(seconds=seconds)).astimezone(start.tzinfo)


# --- the reference -------------------------------------------------------------------------------


def reference_flags(calendar: BusinessCalendar, start: datetime, minutes: int) -> list[bool]:
    """Whether each minute from `start` is business time, by reading the local wall clock."""
    zone = ZoneInfo(calendar.timezone)
    holidays = set(calendar.holidays)
    flags = []
    for index in range(minutes):
        local = later(start, index).astimezone(zone)
        reading = local.time()
        flags.append(local.date() not in holidays and any(
            p.weekday == local.weekday() and p.start <= reading < p.end for p in calendar.working_periods))
    return flags


def offset_changes(zone_name: str) -> list[datetime]:
    """The hours (UTC) of 2024-2026 at which `zone_name` changes its offset."""
    zone, hour = ZoneInfo(zone_name), datetime(2024, 1, 1, tzinfo=UTC)
    changes, previous = [], hour.astimezone(zone).utcoffset()
    while hour.year < 2027:
        offset = hour.astimezone(zone).utcoffset()
        if offset != previous:
            changes.append(hour)
        previous, hour = offset, hour + timedelta(hours=1)
    return changes


CHANGES = {zone: offset_changes(zone) for zone in ZONES}

# --- strategies ----------------------------------------------------------------------------------

# Period boundaries in whole minutes, often around the small hours where offsets change.
boundary = st.one_of(st.integers(0, 1439), st.integers(0, 240))


@st.composite
def day_periods(draw: st.DrawFn, weekday: int) -> list[WorkingPeriod]:
    marks = sorted(draw(st.sets(boundary, max_size=6)))
    marks = marks[: len(marks) // 2 * 2]
    return [WorkingPeriod(weekday=weekday, start=time(*divmod(a, 60)), end=time(*divmod(b, 60)))
            for a, b in zip(marks[::2], marks[1::2], strict=True)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[BusinessCalendar, datetime, int]:
    """A random calendar, a whole-minute start (often near an offset change) and a window in minutes."""
    zone = draw(st.sampled_from(ZONES))
    near_a_change: bool = draw(st.booleans())
    if near_a_change and CHANGES[zone]:
        anchor = draw(st.sampled_from(CHANGES[zone]))
        start = anchor + draw(st.integers(-3 * 1440, 1440)) * MINUTE
    else:
        start = datetime(2025, 1, 1, tzinfo=UTC) + draw(st.integers(0, 2 * 365 * 1440)) * MINUTE
    periods = [p for weekday in range(7) for p in draw(day_periods(weekday))]
    if not periods:
        periods = [WorkingPeriod(weekday=draw(st.integers(0, 6)), start=time(9), end=time(10))]
    window = draw(st.integers(1, 4 * 1440))
    first_day = start.astimezone(ZoneInfo(zone)).date()
    holidays = draw(st.sets(st.integers(-1, 5).map(lambda n: first_day + timedelta(days=n)), max_size=3))
    calendar = BusinessCalendar(timezone=zone, working_periods=periods, holidays=sorted(holidays))
    # The caller's zone is independent of the calendar's.
    start = start.astimezone(ZoneInfo(draw(st.sampled_from(ZONES))))
    return calendar, start, window


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- properties ----------------------------------------------------------------------------------


@FAST
@given(scenarios(), st.data())
def test_adding_business_time_matches_the_reference(scenario: tuple[BusinessCalendar, datetime, int],
                                                    data: st.DataObject) -> None:
    calendar, start, window = scenario
    flags = reference_flags(calendar, start, window)
    worked = [index for index, flag in enumerate(flags) if flag]
    count = data.draw(st.integers(0, len(worked)), label="business minutes")
    expected = start if count == 0 else later(start, worked[count - 1] + 1)
    result = add_business_time(start, count * MINUTE, calendar)
    assert utc(result) == utc(expected)
    assert result.tzinfo is start.tzinfo


@FAST
@given(scenarios(), st.data())
def test_business_time_between_matches_the_reference(scenario: tuple[BusinessCalendar, datetime, int],
                                                     data: st.DataObject) -> None:
    calendar, start, window = scenario
    flags = reference_flags(calendar, start, window)
    low = data.draw(st.integers(0, window), label="from minute")
    high = data.draw(st.integers(low, window), label="to minute")
    expected = sum(flags[low:high]) * MINUTE
    begin, end = later(start, low), later(start, high)
    assert business_time_between(begin, end, calendar) == expected
    assert business_time_between(end, begin, calendar) == -expected


@FAST
@given(scenarios(), st.data())
def test_is_business_time_and_next_business_instant_match_the_reference(
        scenario: tuple[BusinessCalendar, datetime, int], data: st.DataObject) -> None:
    calendar, start, window = scenario
    flags = reference_flags(calendar, start, window)
    index = data.draw(st.integers(0, window - 1), label="minute")
    seconds = data.draw(st.integers(0, 59), label="second")
    instant = later(start, index, seconds)
    assert is_business_time(instant, calendar) == flags[index]
    if True in flags[index:]:
        following = flags.index(True, index)
        expected = instant if following == index else later(start, following)
        assert utc(next_business_instant(instant, calendar)) == utc(expected)


@settings(max_examples=40, deadline=None)
@given(scenarios(), st.integers(0, 400_000))
def test_adding_then_measuring_round_trips(scenario: tuple[BusinessCalendar, datetime, int], minutes: int) -> None:
    calendar, start, _ = scenario
    end = add_business_time(start, minutes * MINUTE, calendar)
    assert business_time_between(start, end, calendar) == minutes * MINUTE
    assert minutes == 0 or is_business_time(utc(end) - timedelta(microseconds=1), calendar)


# --- known cases ---------------------------------------------------------------------------------


def test_friday_afternoon_runs_into_monday() -> None:
    friday = datetime(2025, 3, 14, 16, tzinfo=BERLIN)
    assert add_business_time(friday, timedelta(hours=2), office()) == datetime(2025, 3, 17, 10, tzinfo=BERLIN)
    # An hour fits before closing: the deadline is the close, not the next opening.
    assert add_business_time(friday, timedelta(hours=1), office()) == datetime(2025, 3, 14, 17, tzinfo=BERLIN)
    assert business_time_between(friday, datetime(2025, 3, 17, 10, tzinfo=BERLIN), office()) == timedelta(hours=2)


def test_holidays_are_whole_days_off() -> None:
    friday = datetime(2025, 3, 14, 16, tzinfo=BERLIN)
    calendar = office(holidays=(date(2025, 3, 17),))
    assert add_business_time(friday, timedelta(hours=2), calendar) == datetime(2025, 3, 18, 10, tzinfo=BERLIN)
    assert not is_business_time(datetime(2025, 3, 17, 12, tzinfo=BERLIN), calendar)
    assert next_business_instant(friday + timedelta(hours=1), calendar) == datetime(2025, 3, 18, 9, tzinfo=BERLIN)


def test_breaks_are_not_worked() -> None:
    calendar = BusinessCalendar(timezone="Europe/Berlin", working_periods=[
        WorkingPeriod(weekday=0, start=time(9), end=time(12)), WorkingPeriod(weekday=0, start=time(13), end=time(17))])
    monday = datetime(2025, 3, 17, 11, tzinfo=BERLIN)
    assert add_business_time(monday, timedelta(hours=2), calendar) == datetime(2025, 3, 17, 14, tzinfo=BERLIN)
    assert not is_business_time(datetime(2025, 3, 17, 12, 30, tzinfo=BERLIN), calendar)


def test_the_spring_forward_night_has_one_hour_less() -> None:
    nights = office(start=time(0), end=time(6), weekdays=range(7))
    saturday_midnight = datetime(2025, 3, 30, 0, tzinfo=BERLIN)  # 02:00 CET becomes 03:00 CEST
    assert add_business_time(saturday_midnight, timedelta(hours=3), nights) == datetime(2025, 3, 30, 4, tzinfo=BERLIN)
    assert business_time_between(saturday_midnight, datetime(2025, 3, 30, 6, tzinfo=BERLIN), nights) == timedelta(
        hours=5)
    # A period lying wholly in the skipped hour holds nothing that day (and 30 minutes a week later).
    skipped = office(start=time(2, 15), end=time(2, 45), weekdays=range(6, 7))
    assert business_time_between(saturday_midnight, saturday_midnight + timedelta(days=1), skipped) == timedelta(0)
    assert business_time_between(saturday_midnight, saturday_midnight + timedelta(days=8), skipped) == timedelta(
        minutes=30)


def test_the_fall_back_night_counts_the_repeated_hour_twice() -> None:
    nights = office(start=time(0), end=time(6), weekdays=range(7))
    midnight = datetime(2025, 10, 26, 0, tzinfo=BERLIN)  # 03:00 CEST becomes 02:00 CET
    assert utc(add_business_time(midnight, timedelta(hours=3), nights)) == utc(
        datetime(2025, 10, 26, 2, fold=1, tzinfo=BERLIN))
    assert business_time_between(midnight, datetime(2025, 10, 26, 6, tzinfo=BERLIN), nights) == timedelta(hours=7)


def test_lord_howe_shifts_by_half_an_hour() -> None:
    calendar = office("Australia/Lord_Howe", start=time(1), end=time(3), weekdays=range(6, 7))
    zone = ZoneInfo("Australia/Lord_Howe")
    spring = datetime(2025, 10, 5, tzinfo=zone)  # 02:00 becomes 02:30
    autumn = datetime(2025, 4, 6, tzinfo=zone)  # 02:00 becomes 01:30
    assert business_time_between(spring, spring + timedelta(days=1), calendar) == timedelta(hours=1, minutes=30)
    assert business_time_between(autumn, autumn + timedelta(days=1), calendar) == timedelta(hours=2, minutes=30)


def test_results_keep_the_callers_zone() -> None:
    new_york = ZoneInfo("America/New_York")
    start = datetime(2025, 3, 14, 11, tzinfo=new_york)  # 16:00 in Berlin
    result = add_business_time(start, timedelta(hours=2), office())
    assert result.tzinfo is new_york
    assert result == datetime(2025, 3, 17, 10, tzinfo=BERLIN)


def test_long_targets_are_fast() -> None:
    start = datetime(2025, 1, 6, 9, tzinfo=BERLIN)
    two_years = timedelta(minutes=2 * 525_600)
    began = timer.perf_counter()
    end = add_business_time(start, two_years, office())
    assert business_time_between(start, end, office()) == two_years
    assert timer.perf_counter() - began < 5
    # 1,051,200 minutes at 40 hours a week: exactly 438 weeks, ending on a Friday evening.
    assert end == datetime.combine(date(2025, 1, 10) + timedelta(weeks=437), time(17), BERLIN)


def test_sparse_calendars_work() -> None:
    sparse = office(start=time(9), end=time(9, 1), weekdays=range(6, 7))  # a minute on Sundays
    start = datetime(2025, 1, 1, tzinfo=BERLIN)
    end = add_business_time(start, timedelta(minutes=520), sparse)
    assert end == datetime.combine(date(2025, 1, 5) + timedelta(weeks=519), time(9, 1), BERLIN)  # 520th Sunday


def test_a_calendar_without_working_time_is_an_error() -> None:
    mondays = [date(2025, 1, 6) + timedelta(weeks=week) for week in range(600)]
    calendar = office("UTC", tuple(mondays), weekdays=range(1))
    start = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(NoWorkingTime, match="no working time"):
        add_business_time(start, MINUTE, calendar)
    with pytest.raises(ValueError, match="no working time"):
        next_business_instant(start, calendar)
    assert business_time_between(start, start + timedelta(days=3000), calendar) == timedelta(0)


@pytest.mark.parametrize("call", [
    lambda: add_business_time(datetime(2025, 1, 1), MINUTE, office()),
    lambda: business_time_between(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2), office()),
    lambda: is_business_time(datetime(2025, 1, 1), office()),
    lambda: next_business_instant(datetime(2025, 1, 1), office()),
    lambda: add_business_time(datetime(2025, 1, 1, tzinfo=UTC), -MINUTE, office()),
])
def test_naive_instants_and_negative_durations_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_zero_duration_is_the_start() -> None:
    saturday = datetime(2025, 3, 15, 12, tzinfo=BERLIN)
    assert add_business_time(saturday, timedelta(0), office()) is saturday
