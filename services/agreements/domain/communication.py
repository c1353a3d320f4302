"""The communication plan: cadence of status updates and meetings, channels; status updates.

A missed status update is detected by a durable timer (see `handlers`). The timer is keyed by
`status_update_period`, which moves on whenever the clock restarts (plan set, agreement activated
or resumed, update posted, overdue recorded), so a timer armed for an earlier period finds it
stale and records nothing. Suspending or terminating the agreement moves the period too, which
cancels the pending timer.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import assert_never
from uuid import UUID

from contracts.agreements import (
    AgreementActivated,
    AgreementResumed,
    AgreementSuspended,
    AgreementTerminated,
    CommunicationPlanSet,
    StatusUpdateOverdue,
    StatusUpdatePosted,
)
from services.agreements.domain.core import ACTIVE_ONLY, AgreementCore, evolves
from services.agreements.domain.errors import InvalidCommand

CommunicationEvent = CommunicationPlanSet | StatusUpdatePosted | StatusUpdateOverdue

#: Events after which the status-update clock starts again, or stops (a new timer period).
StatusClockEvent = (CommunicationEvent | AgreementActivated | AgreementResumed | AgreementSuspended
                    | AgreementTerminated)
RESETS_STATUS_CLOCK = typing.get_args(StatusClockEvent)


@dataclass
class CommunicationPlan:
    status_update_every_seconds: int | None
    meetings: str
    channels: list[str]
    effective_from: datetime


@dataclass
class StatusUpdate:
    update_id: UUID
    summary: str
    posted_at: datetime


@dataclass
class CommunicationPart(AgreementCore):
    communication_plan: CommunicationPlan | None = None
    status_updates: list[StatusUpdate] = field(default_factory=list)
    overdue_status_updates: list[datetime] = field(default_factory=list)
    status_update_period: int = 0

    def set_communication_plan(self, by_organisation_id: UUID, *, status_update_every_seconds: int | None,
                               meetings: str, channels: list[str], now: datetime) -> None:
        self.side_of(by_organisation_id)
        cadence = f"status updates every {status_update_every_seconds}s" if status_update_every_seconds else \
            "no status-update cadence"
        self._change_content([CommunicationPlanSet(
            agreement_id=self.agreement_id, status_update_every_seconds=status_update_every_seconds,
            meetings=meetings, channels=channels, effective_from=now)],
            f"communication plan set: {cadence}", "set the communication plan")

    def post_status_update(self, by_organisation_id: UUID, *, update_id: UUID, summary: str, now: datetime) -> None:
        self._only("provider", by_organisation_id, "posts status updates")
        if any(u.update_id == update_id for u in self.status_updates):
            raise InvalidCommand(f"status update {update_id} was posted already")
        self._operate(StatusUpdatePosted(agreement_id=self.agreement_id, update_id=update_id, summary=summary,
                                         posted_at=now), "post a status update", ACTIVE_ONLY)

    @property
    def status_update_cadence(self) -> int | None:
        """Seconds between expected status updates, while the agreement is active and has a cadence."""
        plan = self.communication_plan
        return plan.status_update_every_seconds if plan and self.status == "active" else None

    def record_status_update_overdue(self, *, period: int, due_at: datetime) -> bool:
        """The timer of `period` fired: record the missed update, unless the timer is stale."""
        cadence = self.status_update_cadence
        if cadence is None or period != self.status_update_period:
            return False
        last = self.status_updates[-1].posted_at if self.status_updates else None
        self._record(StatusUpdateOverdue(agreement_id=self.agreement_id, due_at=due_at, cadence_seconds=cadence,
                                         last_update_at=last))
        return True

    @evolves
    def _evolve_communication(self, event: CommunicationEvent) -> None:
        match event:
            case CommunicationPlanSet():
                self.communication_plan = CommunicationPlan(event.status_update_every_seconds, event.meetings,
                                                            list(event.channels), event.effective_from)
            case StatusUpdatePosted():
                self.status_updates.append(StatusUpdate(event.update_id, event.summary, event.posted_at))
            case StatusUpdateOverdue():
                self.overdue_status_updates.append(event.due_at)
            case _:
                assert_never(event)

    @evolves
    def _restart_status_clock(self, event: StatusClockEvent) -> None:
        self.status_update_period += 1
