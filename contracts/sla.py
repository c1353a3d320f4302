"""Value types of SLA policies: the business calendar and the response targets per priority.

The agreements service publishes them (``SLAPolicySet``); the queries, kpi and notifier
services count business time with them (see the `business_time` package).
"""

from __future__ import annotations

import itertools
import json
import zoneinfo
from datetime import date, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

Priority = Literal["low", "normal", "high", "urgent"]
PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class WorkingPeriod(_Value):
    """Working time on one weekday, in the calendar's time zone. Several per day model breaks."""

    weekday: Annotated[int, Field(ge=0, le=6, description="0 = Monday … 6 = Sunday")]
    start: time
    end: time

    @model_validator(mode="after")
    def _ordered(self) -> WorkingPeriod:
        if self.start.tzinfo or self.end.tzinfo:
            raise ValueError("working period times are local times: no time zone")
        if not self.start < self.end:
            raise ValueError("a working period must end after it starts (within the same day)")
        return self


class BusinessCalendar(_Value):
    timezone: str = Field(description="IANA time zone, e.g. Europe/Berlin")
    working_periods: list[WorkingPeriod] = Field(min_length=1)
    holidays: list[date] = Field(default_factory=list, description="Whole days off, in the calendar's zone.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone: {value!r}") from None
        return value

    @model_validator(mode="after")
    def _no_overlaps(self) -> BusinessCalendar:
        for weekday in range(7):
            periods = sorted((p.start, p.end) for p in self.working_periods if p.weekday == weekday)
            for (_, end), (start, _) in itertools.pairwise(periods):
                if start < end:
                    raise ValueError(f"working periods overlap on weekday {weekday}")
        return self


class ResponseTarget(_Value):
    """How fast a query of one priority must be answered and resolved, in business minutes."""

    priority: Priority
    first_response_minutes: int = Field(gt=0, le=525_600)
    resolution_minutes: int = Field(gt=0, le=5_256_000)
    warn_at: list[Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: [0.5, 0.75], description="Fractions of the target that raise QueryAtRisk.")

    @model_validator(mode="after")
    def _resolution_after_response(self) -> ResponseTarget:
        if self.resolution_minutes < self.first_response_minutes:
            raise ValueError("resolution target must not be shorter than the first-response target")
        return self


class SLAPolicy(_Value):
    calendar: BusinessCalendar
    targets: list[ResponseTarget] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_target_per_priority(self) -> SLAPolicy:
        priorities = [t.priority for t in self.targets]
        if len(set(priorities)) != len(priorities):
            raise ValueError("one response target per priority")
        return self

    def target(self, priority: Priority) -> ResponseTarget | None:
        return next((t for t in self.targets if t.priority == priority), None)


def _policy_from_json(value: Any) -> Any:
    """The policy's models are strict; read a request's decoded JSON as JSON, not as Python."""
    return SLAPolicy.model_validate_json(json.dumps(value)) if isinstance(value, dict) else value


#: An `SLAPolicy` in a request body, which arrives as decoded JSON (dates and times as strings).
SLAPolicyInput = Annotated[SLAPolicy, BeforeValidator(_policy_from_json)]
