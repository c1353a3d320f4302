"""When things happen: level delays (wall or business time), retry backoff, quiet hours. Pure functions."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from business_time import NoWorkingTime, add_business_time
from contracts.sla import BusinessCalendar
from services.notifier.rules import Delay, DeliveryPolicy, QuietHours


def due_after(start: datetime, delay: Delay, calendar: BusinessCalendar | None) -> datetime:
    """`start` plus the delay; business delays count only the agreement's working hours (wall time if
    the agreement has no calendar or its calendar has no working time)."""
    if delay.business and calendar is not None:
        try:
            return add_business_time(start, delay.duration, calendar)
        except NoWorkingTime:
            pass
    return start + delay.duration


def backoff(attempt: int, policy: DeliveryPolicy, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential, capped, with jitter.

    The wait is ``min(cap, base · 2^(attempt-1))``, of which up to `jitter` (a fraction) is random, so
    notifications that failed together do not all come back at the same instant."""
    ceiling = min(policy.backoff_cap_seconds, policy.backoff_base_seconds * 2.0 ** (attempt - 1))
    spread = ceiling * policy.jitter
    draw: float = (rng or random).random()  # jitter, not security
    return ceiling - spread + draw * spread


def quiet_until(now: datetime, quiet: QuietHours, zone: str) -> datetime | None:
    """The end of the quiet period `now` falls in (in the zone's local time), or None if it is not quiet."""
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    moment = local.time().replace(tzinfo=None)
    if quiet.start == quiet.end:
        return None
    overnight = quiet.start > quiet.end
    inside = (moment >= quiet.start or moment < quiet.end) if overnight else quiet.start <= moment < quiet.end
    if not inside:
        return None
    end = datetime.combine(local.date(), quiet.end, tzinfo=tz)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), quiet.end, tzinfo=tz)
    return end
