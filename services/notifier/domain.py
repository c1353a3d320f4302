"""The Escalation aggregate: one matter's chain of levels, until it is resolved or acknowledged.

Pure: decisions check the rules and record events, `_evolve` is the only place state changes, so
replaying the stream rebuilds the state decisions were made on. The stream is ``escalation-<matter>``
and holds every chain the matter ever had, one *occurrence* after another: a triggering event starts
a chain only while none is open, so two racing triggers append at the same stream version and the
store lets one of them win (one open chain per matter). Once the chain is closed, a new triggering
event starts the next occurrence, but an event that triggered any occurrence never starts another
(a redelivery, e.g. after an inbox replay). Each occurrence has its own escalation id, derived from
the matter and its number, so acknowledge links and deliveries belong to one occurrence only.

Resolution and acknowledgement both stop the chain and neither undoes the other: an
acknowledgement after the resolution is refused (`EscalationClosed`), a resolution after an
acknowledgement is recorded (the matter is now handled), a second resolution records nothing.
Neither reaches past its occurrence: acknowledging an earlier occurrence is refused, and a
resolving event that resolved an earlier occurrence, or happened before the current one was
triggered, leaves the current one alone.
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


def escalation_id(matter: str, occurrence: int = 1) -> UUID:
    """The id of the matter's `occurrence`-th chain, the same wherever and however often it comes up."""
    first = uuid.uuid5(_NAMESPACE, matter)
    return first if occurrence == 1 else uuid.uuid5(first, str(occurrence))


def stream_id(matter: str) -> str:
    return f"escalation-{matter}"


@dataclass(frozen=True)
class Step:
    """A point of the chain: a level (1-based) and its round (0: first notice, n: n-th reminder)."""

    level: int
    round: int


@dataclass
class Escalation:
    """The matter's current (latest) occurrence, and what the earlier ones leave behind."""

    matter: str
    status: Status = "new"
    version: int = 0
    occurrence: int = 0  # 0: the matter never escalated
    rule: str = ""
    agreement_id: UUID | None = None
    levels: int = 0
    reached: Step | None = None
    trigger_data: dict[str, Any] = field(default_factory=dict)
    triggered_at: datetime | None = None
    triggers: set[UUID] = field(default_factory=set)  # the triggering event of every occurrence
    resolutions: set[UUID] = field(default_factory=set)  # every event that resolved an occurrence
    earlier: dict[UUID, Status] = field(default_factory=dict)  # earlier occurrences → how they closed
    pending: list[EventData] = field(default_factory=list)

    @property
    def id(self) -> UUID:
        """The current occurrence's escalation id (the first one's before the matter escalated)."""
        return escalation_id(self.matter, max(self.occurrence, 1))

    @classmethod
    def replay(cls, matter: str, events: list[EventData]) -> Escalation:
        escalation = cls(matter)
        for event in events:
            escalation._evolve(event)
            escalation.version += 1
        return escalation

    def appended(self) -> None:
        """The pending events were appended: the next decision's events follow them in the stream."""
        self.version += len(self.pending)
        self.pending.clear()

    # --- decisions -------------------------------------------------------------------------------

    def start(self, *, rule: str, agreement_id: UUID, levels: int, trigger_event_id: UUID, trigger_type: str,
              trigger_data: dict[str, Any], now: datetime, triggered_at: datetime | None = None) -> bool:
        """Start the matter's next chain; False (nothing recorded) while one is open, or if this event
        already triggered one (a redelivery)."""
        if self.status == "open" or trigger_event_id in self.triggers:
            return False
        occurrence = self.occurrence + 1
        self._record(EscalationStarted(
            escalation_id=escalation_id(self.matter, occurrence), matter=self.matter, rule=rule,
            agreement_id=agreement_id, levels=levels, trigger_event_id=trigger_event_id, trigger_type=trigger_type,
            trigger_data=trigger_data, started_at=now, occurrence=occurrence, triggered_at=triggered_at))
        return True

    def expects(self, step: Step, occurrence: int | None = None) -> bool:
        """Whether `step` (of `occurrence`, if given) is the chain's next one (a stale or repeated timer
        is not, nor one armed by an earlier occurrence)."""
        if occurrence is not None and occurrence != self.occurrence:
            return False
        if self.status != "open" or not 1 <= step.level <= self.levels:
            return False
        if self.reached is None:
            return step == Step(1, 0)
        return step in (Step(self.reached.level, self.reached.round + 1), Step(self.reached.level + 1, 0))

    def reach(self, step: Step, responsible: list[Responsible], notifications: int, now: datetime,
              occurrence: int | None = None) -> bool:
        if not self.expects(step, occurrence):
            return False
        assert self.agreement_id is not None
        self._record(EscalationLevelReached(
            escalation_id=self.id, agreement_id=self.agreement_id, level=step.level, round=step.round,
            responsible=responsible, notifications=notifications, reached_at=now))
        return True

    def ensure_acknowledgeable(self, escalation: UUID) -> None:
        """Raise why acknowledging `escalation` (an occurrence's id) is refused: no such chain, already
        resolved or acknowledged — an earlier occurrence is closed, whatever the current one does."""
        if escalation in self.earlier:
            how = self.earlier[escalation]
            raise EscalationClosed(f"this escalation is already {how}; the matter has escalated again since")
        if self.status == "new" or escalation != self.id:
            raise UnknownEscalation(f"no escalation {escalation} for {self.matter!r}")
        if self.status == "resolved":
            raise EscalationClosed("the matter is already resolved; there is nothing to acknowledge")
        if self.status == "acknowledged":
            raise EscalationClosed("the escalation is already acknowledged")

    def acknowledge(self, escalation: UUID, *, by: str, via: Literal["api", "link"], cancelled: int,
                    now: datetime) -> None:
        self.ensure_acknowledgeable(escalation)
        assert self.agreement_id is not None
        self._record(EscalationAcknowledged(
            escalation_id=self.id, agreement_id=self.agreement_id, level=self.reached.level if self.reached else 0,
            acknowledged_by=by, via=via, cancelled_notifications=cancelled, acknowledged_at=now))

    def resolves(self, by_event_id: UUID, occurred_at: datetime | None = None) -> bool:
        """Whether this event resolves the current chain: one is open or acknowledged, the event did not
        resolve an earlier occurrence (a redelivery), and it did not happen before this occurrence was
        triggered (it was about an earlier one and arrives late)."""
        if self.status in ("new", "resolved") or by_event_id in self.resolutions:
            return False
        return not (self.occurrence > 1 and occurred_at is not None and self.triggered_at is not None
                    and occurred_at < self.triggered_at)

    def resolve(self, *, by_type: str, by_event_id: UUID, cancelled: int, now: datetime,
                occurred_at: datetime | None = None) -> bool:
        """Record the resolution; False (nothing recorded) unless the event `resolves` the chain."""
        if not self.resolves(by_event_id, occurred_at):
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
                if self.occurrence:
                    self.earlier[self.id] = self.status
                self.occurrence, self.status, self.reached = event.occurrence, "open", None
                self.rule, self.agreement_id = event.rule, event.agreement_id
                self.levels, self.trigger_data = event.levels, dict(event.trigger_data)
                self.triggered_at = event.triggered_at
                self.triggers.add(event.trigger_event_id)
            case EscalationLevelReached():
                self.reached = Step(event.level, event.round)
            case EscalationAcknowledged():
                self.status = "acknowledged"
            case EscalationResolved():
                self.status = "resolved"
                self.resolutions.add(event.resolved_by_event_id)
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
