"""The query aggregate: a question from one side of an agreement to the other, on SLA clocks.

Lifecycle: raised (open) → answered → closed by the asker, or reopened by the asker (open again)
and answered anew; the responder may ask the asker for more information (awaiting_information)
until the asker provides it; the asker may withdraw the query until it is closed. Either side may
comment while it is not finished.

Two clocks run from the raise, counted in business time on the calendar in force then:
first response (stops at the first answer) and resolution (stops at close or withdrawal). Both
pause while the responder waits for information; the resolution clock also pauses while an answer
waits for the asker to close or reopen. Every pause is kept with its reason, actor, start and end.
A clock that stops past its target records `QueryBreached` with how late it was.

As in `services.agreements.domain`, a method checks a rule and records events; `evolve` is the only
place state changes, so replaying the stream rebuilds exactly the state decisions were made on.
Commands take the instant they happen at (`at`); one earlier than the query's last event is taken
as that last instant, so clocks never run backwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import ValidationError

from business_time import add_business_time, business_time_between
from contracts import EventData
from contracts.agreements import Side
from contracts.queries import (
    AboutKind,
    Clock,
    QueryAnswered,
    QueryAtRisk,
    QueryBreached,
    QueryClosed,
    QueryCommented,
    QueryInformationProvided,
    QueryInformationRequested,
    QueryOverdue,
    QueryRaised,
    QueryReopened,
    QueryWithdrawn,
)
from contracts.sla import Priority, SLAPolicy
from services.queries.clock import CLOCKS, OVERDUE, Deadline, SLAClock, SLATerms, StopReason, business_seconds

Status = Literal["new", "open", "awaiting_information", "answered", "closed", "withdrawn"]
PauseKind = Literal["information_requested", "answered"]
ThreadKind = Literal["question", "comment", "information_request", "information", "answer", "reopen", "withdrawal"]
UNFINISHED: tuple[Status, ...] = ("open", "awaiting_information", "answered")
ANSWERED_PAUSE_REASON = "answered: waiting for the asker to close or reopen"


class DomainError(Exception):
    """A command broke a rule of the domain."""


class InvalidTransition(DomainError):
    """The command is not allowed in the query's current state (HTTP 409)."""


class NotAParty(DomainError):
    """The acting organisation is neither side of the agreement (HTTP 403)."""


class WrongSide(DomainError):
    """The acting side is a party, but the command belongs to the other side (HTTP 403)."""


class InvalidCommand(DomainError):
    """The command's content is wrong in itself (HTTP 422)."""


def stream_id(query_id: UUID) -> str:
    return f"query-{query_id}"


@dataclass(frozen=True)
class Pause:
    """One stop of the clocks, for the pause audit: who stopped them, why, and for how long."""

    kind: PauseKind
    reason: str
    actor_side: Side
    actor_user_id: UUID | None
    clocks: tuple[Clock, ...]
    started_at: datetime
    ended_at: datetime | None = None
    business_duration: timedelta | None = None  # on the query's calendar; None while open or without SLA

    @property
    def duration(self) -> timedelta | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclass(frozen=True)
class ThreadEntry:
    kind: ThreadKind
    side: Side
    user_id: UUID | None
    body: str
    at: datetime | None


@dataclass
class Query:
    query_id: UUID
    version: int = 0  # stream version: events loaded so far
    status: Status = "new"
    agreement_id: UUID | None = None
    client_organisation_id: UUID | None = None
    provider_organisation_id: UUID | None = None
    asker: Side = "client"
    responder: Side = "provider"
    addressee_role: str | None = None
    priority: Priority = "normal"
    subject: str = ""
    about_kind: AboutKind = "agreement"
    about_id: UUID | None = None
    purpose: Literal["question", "clarification"] = "question"
    raised_at: datetime | None = None
    last_at: datetime | None = None
    terms: SLATerms | None = None
    clocks: dict[Clock, SLAClock] = field(default_factory=dict)
    pauses: list[Pause] = field(default_factory=list)
    thread: list[ThreadEntry] = field(default_factory=list)
    signalled: dict[Clock, float] = field(default_factory=dict)  # highest threshold announced per clock
    breaches: list[QueryBreached] = field(default_factory=list)
    answers: int = 0
    pending: list[EventData] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def replay(cls, query_id: UUID, events: list[EventData]) -> Query:
        query = cls(query_id)
        for event in events:
            query.evolve(event)
            query.version += 1
        return query

    # --- reading ---------------------------------------------------------------------------

    def side_of(self, organisation_id: UUID) -> Side:
        if self.status == "new":
            raise InvalidTransition("the query does not exist")
        if organisation_id == self.client_organisation_id:
            return "client"
        if organisation_id == self.provider_organisation_id:
            return "provider"
        raise NotAParty("your organisation is not a party to this query's agreement")

    def due_at(self, clock: Clock) -> datetime | None:
        """When `clock` is (or was) due; None without SLA terms, or while a pause leaves it open."""
        return self.clocks[clock].due_at if clock in self.clocks else None

    def deadlines(self) -> list[Deadline]:
        """Every warning point and due time still ahead of the running clocks, earliest first.

        The service keeps a timer at the earliest and calls `check_clocks` when it fires; after any
        command it re-reads them, since a pause or resume moves them (a paused clock has none).
        """
        if self.terms is None:
            return []
        found = []
        for name, clock in self.clocks.items():
            if not clock.is_running:
                continue
            for threshold in self.terms.thresholds:
                if threshold > self.signalled.get(name, 0.0):
                    at = clock.reaches(threshold)
                    assert at is not None  # a running clock reaches every fraction
                    found.append(Deadline(at, name, threshold))
        return sorted(found, key=lambda d: (d.at, d.threshold))

    def next_deadline(self) -> Deadline | None:
        deadlines = self.deadlines()
        return deadlines[0] if deadlines else None

    # --- decisions -------------------------------------------------------------------------

    def raise_query(self, *, agreement_id: UUID, client_organisation_id: UUID, provider_organisation_id: UUID,
                    by_organisation_id: UUID, priority: Priority, subject: str, body: str,
                    policy: SLAPolicy | None, at: datetime, by_user_id: UUID | None = None,
                    addressee_role: str | None = None, about_kind: AboutKind = "agreement",
                    about_id: UUID | None = None, purpose: Literal["question", "clarification"] = "question") -> None:
        """Raise the query under `policy`: the SLA policy in force at `at` (see `policy_in_force`)."""
        if self.status != "new":
            raise InvalidTransition("the query already exists")
        if client_organisation_id == provider_organisation_id:
            raise InvalidCommand("the client and the provider must be different organisations")
        if by_organisation_id not in (client_organisation_id, provider_organisation_id):
            raise NotAParty("you can only raise a query on an agreement your organisation is a party to")
        at = self._when(at)
        asker: Side = "client" if by_organisation_id == client_organisation_id else "provider"
        terms = SLATerms.from_policy(policy, priority)
        self._record(_new(
            QueryRaised, query_id=self.query_id, agreement_id=agreement_id, raised_by_side=asker,
            addressed_to_side=_other(asker), addressee_role=addressee_role, priority=priority, subject=subject,
            body=body, about_kind=about_kind, about_id=about_id, purpose=purpose, raised_at=at,
            raised_by_user_id=by_user_id, client_organisation_id=client_organisation_id,
            provider_organisation_id=provider_organisation_id,
            sla_calendar=terms.calendar if terms else None, sla_target=terms.target if terms else None,
            first_response_due_at=_add(terms, "first_response", at),
            resolution_due_at=_add(terms, "resolution", at)))

    def comment(self, *, by_organisation_id: UUID, body: str, at: datetime, by_user_id: UUID | None = None) -> None:
        side = self.side_of(by_organisation_id)
        self._require(UNFINISHED, "comment on")
        self._record(_new(QueryCommented, query_id=self.query_id, agreement_id=self.agreement_id,
                          commented_by_side=side, commented_by_user_id=by_user_id, body=body,
                          commented_at=self._when(at)))

    def request_information(self, *, by_organisation_id: UUID, reason: str, at: datetime,
                            by_user_id: UUID | None = None) -> None:
        """The responder asks the asker for more: the clocks pause until `provide_information`."""
        side = self._responder(by_organisation_id, "request information")
        self._require(("open",), "request information on")
        self._record(_new(QueryInformationRequested, query_id=self.query_id, agreement_id=self.agreement_id,
                          requested_by_side=side, requested_by_user_id=by_user_id, reason=reason,
                          requested_at=self._when(at)))

    def provide_information(self, *, by_organisation_id: UUID, body: str, at: datetime,
                            by_user_id: UUID | None = None) -> None:
        side = self._asker(by_organisation_id, "provide information")
        self._require(("awaiting_information",), "provide information on")
        at = self._when(at)
        paused_since = self.pauses[-1].started_at
        paused = business_time_between(paused_since, at, self.terms.calendar) if self.terms else timedelta(0)
        self._record(_new(QueryInformationProvided, query_id=self.query_id, agreement_id=self.agreement_id,
                          provided_by_side=side, provided_by_user_id=by_user_id, body=body, provided_at=at,
                          paused_business_seconds=business_seconds(paused)))
        # The due times only exist once the clocks run again: publish them on a corrected copy.
        self._amend_last(first_response_due_at=self.due_at("first_response"),
                         resolution_due_at=self.due_at("resolution"))

    def answer(self, *, by_organisation_id: UUID, answer: str, at: datetime, by_user_id: UUID | None = None) -> None:
        """Answer (also while awaiting information: that ends the wait). The first answer stops the
        first-response clock; any answer pauses the resolution clock until the asker reopens."""
        side = self._responder(by_organisation_id, "answer")
        self._require(("open", "awaiting_information"), "answer")
        at = self._when(at)
        first = self.clocks.get("first_response")
        late = first.late_by(at) if first is not None and not first.is_stopped else timedelta(0)
        self._record(_new(QueryAnswered, query_id=self.query_id, agreement_id=self.agreement_id,
                          answered_by_side=side, answered_by_user_id=by_user_id, answer=answer,
                          about_kind=self.about_kind, about_id=self.about_id, purpose=self.purpose,
                          late_by_seconds=business_seconds(late), answered_at=at))
        if late:
            self._breach("first_response", at)

    def reopen(self, *, by_organisation_id: UUID, reason: str, at: datetime, by_user_id: UUID | None = None) -> None:
        side = self._asker(by_organisation_id, "reopen")
        self._require(("answered",), "reopen")
        self._record(_new(QueryReopened, query_id=self.query_id, agreement_id=self.agreement_id,
                          reopened_by_side=side, reopened_by_user_id=by_user_id, reason=reason,
                          reopened_at=self._when(at)))
        self._amend_last(resolution_due_at=self.due_at("resolution"))

    def close(self, *, by_organisation_id: UUID, at: datetime, by_user_id: UUID | None = None) -> None:
        """The asker accepts the answer: the resolution clock stops where the answer paused it."""
        side = self._asker(by_organisation_id, "close")
        self._require(("answered",), "close")
        at = self._when(at)
        self._record(_new(QueryClosed, query_id=self.query_id, agreement_id=self.agreement_id, closed_by_side=side,
                          closed_by_user_id=by_user_id, about_kind=self.about_kind, about_id=self.about_id,
                          purpose=self.purpose, closed_at=at))
        self._breach("resolution", at)

    def withdraw(self, *, by_organisation_id: UUID, at: datetime, reason: str = "",
                 by_user_id: UUID | None = None) -> None:
        """The asker gives up the query. A clock that had already overrun its target is still a breach."""
        side = self._asker(by_organisation_id, "withdraw")
        self._require(UNFINISHED, "withdraw")
        at = self._when(at)
        self._record(_new(QueryWithdrawn, query_id=self.query_id, agreement_id=self.agreement_id,
                          withdrawn_by_side=side, withdrawn_by_user_id=by_user_id, reason=reason, withdrawn_at=at))
        for clock in CLOCKS:
            self._breach(clock, at)

    def check_clocks(self, at: datetime) -> None:
        """Announce the highest warning point or due time each running clock has reached by `at` and
        not yet announced. Idempotent; a timer made stale by a pause announces nothing."""
        if self.terms is None or self.status not in UNFINISHED:
            return
        at = self._when(at)
        for name, clock in self.clocks.items():
            if not clock.is_running:
                continue
            elapsed, target = clock.elapsed(at), clock.target
            reached = [t for t in self.terms.thresholds if elapsed >= target * t]
            if not reached or reached[-1] <= self.signalled.get(name, 0.0):
                continue
            due_at = clock.due_at
            assert due_at is not None  # the clock runs
            common: dict[str, Any] = dict(query_id=self.query_id, agreement_id=self.agreement_id, clock=name,
                                          priority=self.priority, addressed_to_side=self.responder,
                                          addressee_role=self.addressee_role, due_at=due_at)
            if reached[-1] >= OVERDUE:
                self._record(_new(QueryOverdue, **common))
            else:
                self._record(_new(QueryAtRisk, threshold=reached[-1], **common))

    # --- rules -----------------------------------------------------------------------------

    def _require(self, allowed: tuple[Status, ...], action: str) -> None:
        if self.status not in allowed:
            state = "does not exist" if self.status == "new" else f"is {self.status.replace('_', ' ')}"
            raise InvalidTransition(f"cannot {action} the query: it {state}")

    def _asker(self, organisation_id: UUID, action: str) -> Side:
        side = self.side_of(organisation_id)
        if side != self.asker:
            raise WrongSide(f"only the asking side ({self.asker}) can {action}")
        return side

    def _responder(self, organisation_id: UUID, action: str) -> Side:
        side = self.side_of(organisation_id)
        if side != self.responder:
            raise WrongSide(f"only the answering side ({self.responder}) can {action}")
        return side

    def _when(self, at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise InvalidCommand("times must be timezone-aware")
        return at if self.last_at is None or at >= self.last_at else self.last_at

    def _breach(self, name: Clock, at: datetime) -> None:
        """Record a breach if clock `name` (just stopped at `at`) ran past its target."""
        clock = self.clocks.get(name)
        if clock is None or clock.stopped_at != at or any(b.clock == name for b in self.breaches):
            return
        late = clock.late_by(at)
        due_at = clock.due_at
        if late and due_at is not None:
            self._record(_new(QueryBreached, query_id=self.query_id, agreement_id=self.agreement_id, clock=name,
                              priority=self.priority, addressed_to_side=self.responder, due_at=due_at,
                              stopped_at=at, late_by_seconds=business_seconds(late)))

    # --- state -----------------------------------------------------------------------------

    def _record(self, event: EventData) -> None:
        self.evolve(event)
        self.pending.append(event)

    def _amend_last(self, **fields: Any) -> None:
        """Fill in facts of the last recorded event that only its own evolve makes known (due times)."""
        self.pending[-1] = self.pending[-1].model_copy(update=fields)

    def evolve(self, event: EventData) -> None:
        match event:
            case QueryRaised():
                self._raised(event)
            case QueryCommented():
                self._say("comment", event.commented_by_side, event.commented_by_user_id, event.body,
                          event.commented_at)
            case QueryInformationRequested():
                at = self._at(event.requested_at)
                self._say("information_request", event.requested_by_side, event.requested_by_user_id,
                          event.reason, at)
                self._pause("information_requested", event.reason, event.requested_by_side,
                            event.requested_by_user_id, at)
                self.status = "awaiting_information"
            case QueryInformationProvided():
                at = self._at(event.provided_at)
                self._say("information", event.provided_by_side, event.provided_by_user_id, event.body, at)
                self._end_pause(at)
                self.status = "open"
            case QueryAnswered():
                at = self._at(event.answered_at)
                self._say("answer", event.answered_by_side, event.answered_by_user_id, event.answer, at)
                self._end_pause(at)
                self._stop("first_response", at, "answered")
                self._pause("answered", ANSWERED_PAUSE_REASON, event.answered_by_side, event.answered_by_user_id, at)
                self.answers += 1
                self.status = "answered"
            case QueryReopened():
                at = self._at(event.reopened_at)
                self._say("reopen", event.reopened_by_side, event.reopened_by_user_id, event.reason, at)
                self._end_pause(at)
                self.status = "open"
            case QueryClosed():
                at = self._at(event.closed_at)
                self._end_pause(at)
                self._stop("resolution", at, "closed")
                self.status = "closed"
            case QueryWithdrawn():
                at = self._at(event.withdrawn_at)
                if event.reason:
                    self._say("withdrawal", event.withdrawn_by_side, event.withdrawn_by_user_id, event.reason, at)
                self._end_pause(at)
                for clock in CLOCKS:
                    self._stop(clock, at, "withdrawn")
                self.status = "withdrawn"
            case QueryAtRisk():
                self.signalled[event.clock] = max(self.signalled.get(event.clock, 0.0), event.threshold)
            case QueryOverdue():
                self.signalled[event.clock] = OVERDUE
            case QueryBreached():
                self.breaches.append(event)
            case _:
                raise TypeError(f"not a query event: {type(event).__name__}")

    def _raised(self, event: QueryRaised) -> None:
        self.status = "open"
        self.agreement_id = event.agreement_id
        self.client_organisation_id = event.client_organisation_id
        self.provider_organisation_id = event.provider_organisation_id
        self.asker, self.responder = event.raised_by_side, event.addressed_to_side
        self.addressee_role = event.addressee_role
        self.priority, self.subject = event.priority, event.subject
        self.about_kind, self.about_id, self.purpose = event.about_kind, event.about_id, event.purpose
        self.raised_at = self.last_at = event.raised_at
        self._say("question", event.raised_by_side, event.raised_by_user_id, event.body, event.raised_at)
        if event.sla_calendar is not None and event.sla_target is not None and event.raised_at is not None:
            self.terms = SLATerms(event.sla_calendar, event.sla_target)
            self.clocks = {name: SLAClock(name, event.sla_calendar, self.terms.target_of(name), event.raised_at)
                           for name in CLOCKS}

    def _at(self, at: datetime | None) -> datetime | None:
        if at is not None:
            self.last_at = at
        elif self.clocks:
            raise ValueError(f"query {self.query_id} has SLA clocks, but an event without its instant")
        return at

    def _say(self, kind: ThreadKind, side: Side, user_id: UUID | None, body: str, at: datetime | None) -> None:
        self.thread.append(ThreadEntry(kind, side, user_id, body, at))
        if at is not None:
            self.last_at = at

    def _pause(self, kind: PauseKind, reason: str, side: Side, user_id: UUID | None, at: datetime | None) -> None:
        if at is None:
            return
        paused = tuple(name for name, clock in self.clocks.items()
                       if clock.is_running and (kind == "information_requested" or name == "resolution"))
        for name in paused:
            self.clocks[name].pause(at)
        self.pauses.append(Pause(kind, reason, side, user_id, paused, at))

    def _end_pause(self, at: datetime | None) -> None:
        if at is None or not self.pauses or self.pauses[-1].ended_at is not None:
            return
        pause = self.pauses[-1]
        for name in pause.clocks:
            self.clocks[name].resume(at)
        business = business_time_between(pause.started_at, at, self.terms.calendar) if self.terms else None
        self.pauses[-1] = Pause(pause.kind, pause.reason, pause.actor_side, pause.actor_user_id, pause.clocks,
                                pause.started_at, at, business)

    def _stop(self, name: Clock, at: datetime | None, reason: StopReason) -> None:
        if at is not None and name in self.clocks:
            self.clocks[name].stop(at, reason)


def _other(side: Side) -> Side:
    return "provider" if side == "client" else "client"


def _add(terms: SLATerms | None, clock: Clock, at: datetime) -> datetime | None:
    return None if terms is None else add_business_time(at, terms.target_of(clock), terms.calendar)


def _new(model: type[EventData], **fields: Any) -> EventData:
    """Build an event, turning invalid content (an empty body, an over-long subject) into InvalidCommand."""
    try:
        return model(**fields)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise InvalidCommand(problems) from None
