"""The Escalation aggregate: one matter's chain of levels, until it is resolved or acknowledged.

Pure: decisions check the rules and record events, `_evolve` is the only place state changes, so
replaying the stream rebuilds the state decisions were made on. The stream is ``escalation-<matter>``
and the escalation id is derived from the matter, so a repeated trigger finds the chain that exists
(and appending a second start at expected version 0 fails: one chain per matter).

Resolution and acknowledgement both stop the chain and neither undoes the other: an
acknowledgement after the resolution is refused (`EscalationClosed`), a resolution after an
acknowledgement is recorded (the matter is now handled), a second resolution records nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from contracts import EventData
from contracts.notifier import (
    EscalationAcknowledged,
    EscalationLevelReached,
    EscalationResolved,
    EscalationStarted,
    NotificationFailed,
    NotificationSent,
    Responsible,
)
from services.notifier.rules import Delay, Level

Status = Literal["new", "open", "acknowledged", "resolved"]
_NAMESPACE = uuid.UUID("5b0d7c52-8a53-4c39-9a57-8f1d2a6c0e11")


class EscalationClosed(Exception):
    """The escalation no longer takes this command (HTTP 409); the message says why."""


class UnknownEscalation(LookupError):
    """No escalation with this id (HTTP 404)."""


def escalation_id(matter: str) -> UUID:
    """The escalation's id, the same wherever and however often the matter comes up."""
    return uuid.uuid5(_NAMESPACE, matter)


def stream_id(matter: str) -> str:
    return f"escalation-{matter}"


@dataclass(frozen=True)
class Step:
    """A point of the chain: a level (1-based) and its round (0: first notice, n: n-th reminder)."""

    level: int
    round: int


@dataclass
class Escalation:
    matter: str
    status: Status = "new"
    version: int = 0
    rule: str = ""
    agreement_id: UUID | None = None
    levels: int = 0
    reached: Step | None = None
    trigger_data: dict[str, Any] = field(default_factory=dict)
    pending: list[EventData] = field(default_factory=list)

    @property
    def id(self) -> UUID:
        return escalation_id(self.matter)

    @classmethod
    def replay(cls, matter: str, events: list[EventData]) -> Escalation:
        escalation = cls(matter)
        for event in events:
            escalation._evolve(event)
            escalation.version += 1
        return escalation

    # --- decisions -------------------------------------------------------------------------------

    def start(self, *, rule: str, agreement_id: UUID, levels: int, trigger_event_id: UUID, trigger_type: str,
              trigger_data: dict[str, Any], now: datetime) -> bool:
        """Start the chain; False (nothing recorded) if this matter already has one."""
        if self.status != "new":
            return False
        self._record(EscalationStarted(
            escalation_id=self.id, matter=self.matter, rule=rule, agreement_id=agreement_id, levels=levels,
            trigger_event_id=trigger_event_id, trigger_type=trigger_type, trigger_data=trigger_data,
            started_at=now))
        return True

    def expects(self, step: Step) -> bool:
        """Whether `step` is the chain's next one (a stale or repeated timer is not)."""
        if self.status != "open" or not 1 <= step.level <= self.levels:
            return False
        if self.reached is None:
            return step == Step(1, 0)
        return step in (Step(self.reached.level, self.reached.round + 1), Step(self.reached.level + 1, 0))

    def reach(self, step: Step, responsible: list[Responsible], notifications: int, now: datetime) -> bool:
        if not self.expects(step):
            return False
        assert self.agreement_id is not None
        self._record(EscalationLevelReached(
            escalation_id=self.id, agreement_id=self.agreement_id, level=step.level, round=step.round,
            responsible=responsible, notifications=notifications, reached_at=now))
        return True

    def ensure_acknowledgeable(self) -> None:
        """Raise why an acknowledgement is refused: no such chain, already resolved or acknowledged."""
        if self.status == "new":
            raise UnknownEscalation(f"no escalation for {self.matter!r}")
        if self.status == "resolved":
            raise EscalationClosed("the matter is already resolved; there is nothing to acknowledge")
        if self.status == "acknowledged":
            raise EscalationClosed("the escalation is already acknowledged")

    def acknowledge(self, *, by: str, via: Literal["api", "link"], cancelled: int, now: datetime) -> None:
        self.ensure_acknowledgeable()
        assert self.agreement_id is not None
        self._record(EscalationAcknowledged(
            escalation_id=self.id, agreement_id=self.agreement_id, level=self.reached.level if self.reached else 0,
            acknowledged_by=by, via=via, cancelled_notifications=cancelled, acknowledged_at=now))

    def resolve(self, *, by_type: str, by_event_id: UUID, cancelled: int, now: datetime) -> bool:
        """Record the resolution; False if there is no chain or it is already resolved."""
        if self.status in ("new", "resolved"):
            return False
        assert self.agreement_id is not None
        self._record(EscalationResolved(
            escalation_id=self.id, agreement_id=self.agreement_id, resolved_by_type=by_type,
            resolved_by_event_id=by_event_id, cancelled_notifications=cancelled, resolved_at=now))
        return True

    def record_delivery(self, outcome: NotificationSent | NotificationFailed) -> None:
        """A notification's outcome, whatever the chain's status (it was sent, or failed, all the same)."""
        self._record(outcome)

    # --- state -----------------------------------------------------------------------------------

    def _record(self, event: EventData) -> None:
        self._evolve(event)
        self.pending.append(event)

    def _evolve(self, event: EventData) -> None:
        match event:
            case EscalationStarted():
                self.status, self.rule, self.agreement_id = "open", event.rule, event.agreement_id
                self.levels, self.trigger_data = event.levels, dict(event.trigger_data)
            case EscalationLevelReached():
                self.reached = Step(event.level, event.round)
            case EscalationAcknowledged():
                self.status = "acknowledged"
            case EscalationResolved():
                self.status = "resolved"
            case _:
                pass  # notification outcomes change nothing the decisions read


def first_step(chain: Sequence[Level]) -> tuple[Step, Delay]:
    return Step(1, 0), chain[0].after


def next_step(chain: Sequence[Level], step: Step) -> tuple[Step, Delay] | None:
    """The step after `step` and the wait before it: the level's reminders, then the next level."""
    level = chain[step.level - 1]
    if step.round < level.repeat:
        return Step(step.level, step.round + 1), level.reminder_delay
    if step.level < len(chain):
        return Step(step.level + 1, 0), chain[step.level].after
    return None
