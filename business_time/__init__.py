"""Business time: durations and deadlines counted only in an SLA calendar's working hours.

The calendar (`contracts.sla.BusinessCalendar`) names an IANA zone, working periods per weekday
(several a day model breaks) and holidays (whole local days off). An instant is business time when
its wall-clock reading in that zone is on a working, non-holiday day within one of that weekday's
periods; across daylight-saving changes a period lasts the real time between its two local ends
(a skipped hour holds no work, a repeated hour counts twice). Pure functions, no I/O.
"""

from business_time._schedule import NoWorkingTime, OutOfRange
from business_time.arithmetic import (
    add_business_time,
    business_time_between,
    is_business_time,
    next_business_instant,
)

__all__ = [
    "NoWorkingTime",
    "OutOfRange",
    "add_business_time",
    "business_time_between",
    "is_business_time",
    "next_business_instant",
]
