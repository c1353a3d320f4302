"""Events of the notifier service: escalation chains and the notifications they send.

An escalation is one matter (e.g. the first response of one query) that a rule escalates level by
level until it is resolved or acknowledged. Each notification records who was responsible when it
was sent, so the history answers "who knew, and when" even after personnel changes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from contracts.envelope import EventData
from contracts.registry import event

Channel = Literal["email", "webhook", "slack"]
MatterKey = Annotated[str, StringConstraints(min_length=1, max_length=300)]
RuleName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class Responsible(BaseModel):
    """A contact of the agreement who was responsible at the moment a level fired."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    contact_id: UUID
    side: Literal["client", "provider"]
    role: str
    name: str
    email: str
    escalation_level: int | None = None


class _NotifierEvent(EventData):
    EVENT_SERVICE = "notifier"


@event
class EscalationStarted(_NotifierEvent):
    """A rule matched an event and started an escalation chain of its matter: one open chain per matter.

    Once a chain is closed (resolved or acknowledged), a new triggering event starts the matter's next
    occurrence on the same stream, with an escalation id of its own."""

    EVENT_NAME = "EscalationStarted"
    escalation_id: UUID
    matter: MatterKey
    rule: RuleName
    agreement_id: UUID
    levels: int = Field(ge=1)
    trigger_event_id: UUID
    trigger_type: str
    trigger_data: dict[str, Any] = Field(default_factory=dict, description="The triggering event's data.")
    started_at: AwareDatetime
    occurrence: int = Field(default=1, ge=1, description="1 for the matter's first chain, n for its n-th.")
    triggered_at: AwareDatetime | None = Field(
        default=None, description="When the triggering event happened (its envelope's `time`).")


@event
class EscalationLevelReached(_NotifierEvent):
    """A level of the chain fired (`round` 0) or repeated (`round` ≥ 1) and notified `responsible`."""

    EVENT_NAME = "EscalationLevelReached"
    escalation_id: UUID
    agreement_id: UUID
    level: int = Field(ge=1)
    round: int = Field(ge=0)
    responsible: list[Responsible]
    notifications: int = Field(ge=0, description="How many notifications this level queued.")
    reached_at: AwareDatetime


@event
class NotificationSent(_NotifierEvent):
    EVENT_NAME = "NotificationSent"
    escalation_id: UUID
    notification_id: UUID
    agreement_id: UUID
    level: int = Field(ge=1)
    channel: Channel
    target: str = Field(description="The email address, or the name of the webhook.")
    responsible: list[Responsible]
    attempts: int = Field(ge=1)
    sent_at: AwareDatetime


@event
class NotificationFailed(_NotifierEvent):
    """Every attempt to deliver failed; the notification is in the dead-letter table."""

    EVENT_NAME = "NotificationFailed"
    escalation_id: UUID
    notification_id: UUID
    agreement_id: UUID
    level: int = Field(ge=1)
    channel: Channel
    target: str
    responsible: list[Responsible]
    attempts: int = Field(ge=1)
    error: str
    failed_at: AwareDatetime


@event
class EscalationAcknowledged(_NotifierEvent):
    """Someone took the matter on: the chain stops and its pending notifications are cancelled."""

    EVENT_NAME = "EscalationAcknowledged"
    escalation_id: UUID
    agreement_id: UUID
    level: int = Field(ge=0, description="The last level reached when acknowledged (0: none yet).")
    acknowledged_by: str = Field(description="'user:<id>', or 'link:<recipient>' for a signed link.")
    via: Literal["api", "link"]
    cancelled_notifications: int = Field(ge=0)
    acknowledged_at: AwareDatetime


@event
class EscalationResolved(_NotifierEvent):
    """The matter was handled (e.g. the query was answered): the chain stops."""

    EVENT_NAME = "EscalationResolved"
    escalation_id: UUID
    agreement_id: UUID
    resolved_by_type: str
    resolved_by_event_id: UUID
    cancelled_notifications: int = Field(ge=0)
    resolved_at: AwareDatetime
