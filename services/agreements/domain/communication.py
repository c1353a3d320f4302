"""The communication plan: cadence of status updates and meetings, channels; status updates.

A missed status update is detected by a durable timer (see `handlers`). The timer is keyed by
`status_update_period`, which moves on whenever the clock restarts (plan set, agreement activated
or resumed, update posted, overdue recorded), so a timer armed for an earlier period finds it
stale and records nothing. Suspending or terminating the agreement moves the period too, which
cancels the pending timer.

The agreement keeps how many status updates were posted and missed and the latest of each, not
every one: an agreement that lives for years would otherwise carry all of them in its state
(3,000 updates made a 344 KB snapshot, restored and written again for every event of the
agreement). Each update stays in the agreement's history (`GET /agreements/{id}/history`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
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
    status_updates_posted: int = 0
    last_status_update: StatusUpdate | None = None
    status_updates_missed: int = 0
    last_missed_status_update_due_at: datetime | None = None
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
        """Post a status update; `update_id` is minted by the service (a fresh uuid4 per request)."""
        self._only("provider", by_organisation_id, "posts status updates")
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
        last = self.last_status_update.posted_at if self.last_status_update else None
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
                self.status_updates_posted += 1
                self.last_status_update = StatusUpdate(event.update_id, event.summary, event.posted_at)
            case StatusUpdateOverdue():
                self.status_updates_missed += 1
                self.last_missed_status_update_due_at = event.due_at
            case _:
                assert_never(event)

    @evolves
    def _restart_status_clock(self, event: StatusClockEvent) -> None:
        self.status_update_period += 1
