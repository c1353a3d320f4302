"""The agreement's core: parties, lifecycle, versions, and the rules every part's decisions share.

A decision checks the rules, then records events; the methods marked `@evolves` are the only
place state changes, so replaying a stream rebuilds exactly the state the decisions were made
on. Each part of the agreement (goals, requirements, …) is a mixin over this core that adds its
state, its decisions and the `@evolves` methods that apply its events; `evolve` calls those
whose `event` annotation names the event's type, from a table built once per class.

Content and versions: a change to what the sides agreed (see `_change_content`) is free while the
agreement is a draft, refused while a proposal awaits acceptance, and, once active, followed by
`AgreementAmended` with the next agreement version. Operating the agreement (acknowledging,
delivering, posting updates, reporting breakdowns…) never makes a version. A suspended or
terminated agreement refuses every change but the lifecycle's own.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Literal, TypeVar, assert_never
from uuid import UUID

from contracts import EventData
from contracts.agreements import (
    AgreementAccepted,
    AgreementActivated,
    AgreementAmended,
    AgreementDrafted,
    AgreementProposed,
    AgreementRenewed,
    AgreementResumed,
    AgreementSuspended,
    AgreementTerminated,
    Side,
)
from services.agreements.domain.errors import InvalidCommand, InvalidTransition, NotAParty, UnknownPart, WrongSide

T = TypeVar("T")
Evolver = TypeVar("Evolver", bound=Callable[..., None])
LifecycleEvent = (AgreementDrafted | AgreementProposed | AgreementAccepted | AgreementActivated | AgreementAmended
                  | AgreementRenewed | AgreementSuspended | AgreementResumed | AgreementTerminated)
Status = Literal["new", "draft", "proposed", "active", "suspended", "terminated"]
SIDES: tuple[Side, Side] = ("client", "provider")
OPERATING: frozenset[Status] = frozenset({"draft", "proposed", "active"})
ACTIVE_ONLY: frozenset[Status] = frozenset({"active"})


def other(side: Side) -> Side:
    return "provider" if side == "client" else "client"


def stream_id(agreement_id: UUID) -> str:
    return f"agreement-{agreement_id}"


def evolves(method: Evolver) -> Evolver:
    """Mark `method(self, event)` as how the agreement changes on the events its `event`
    parameter is annotated with: one event type or a union of them."""
    method.__evolves__ = True  # type: ignore[attr-defined]
    return method


def _evolvers_of(cls: type) -> dict[type, tuple[Callable[[Any, Any], None], ...]]:
    """Event type → the `@evolves` methods of `cls` and its bases that apply it, the core's first."""
    table: dict[type, list[Callable[[Any, Any], None]]] = {}
    for klass in reversed(cls.__mro__):
        for member in vars(klass).values():
            if getattr(member, "__evolves__", False):
                annotation = typing.get_type_hints(member)["event"]
                for event_type in typing.get_args(annotation) or (annotation,):
                    table.setdefault(event_type, []).append(member)
    return {event_type: tuple(methods) for event_type, methods in table.items()}


@dataclass
class VersionEntry:
    """How an agreement version came about: activation, an amendment or a renewal."""

    agreement_version: int
    kind: Literal["activated", "amended", "renewed"]
    changes: list[str]


@dataclass
class LifecycleEntry:
    event: Literal["suspended", "resumed", "terminated", "renewed"]
    side: Side
    reason: str


@dataclass
class AgreementCore:
    agreement_id: UUID
    version: int = 0  # stream version: events applied so far
    status: Status = "new"
    title: str = ""
    summary: str = ""
    client_organisation_id: UUID | None = None
    provider_organisation_id: UUID | None = None
    drafted_by_side: Side | None = None
    accepted_by: set[Side] = field(default_factory=set)
    agreement_version: int = 0
    versions: list[VersionEntry] = field(default_factory=list)
    lifecycle: list[LifecycleEntry] = field(default_factory=list)
    renewed_until: date | None = None
    pending: list[EventData] = field(default_factory=list)
    # Event type → what applies it, built once per class: a replay evolves thousands of events,
    # and asking each of ten parts in turn cost five times the change itself (bench/history.py).
    _evolvers: ClassVar[dict[type, tuple[Callable[[Any, Any], None], ...]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._evolvers = _evolvers_of(cls)

    # --- shared rules ------------------------------------------------------------------------

    def side_of(self, organisation_id: UUID) -> Side:
        if organisation_id == self.client_organisation_id:
            return "client"
        if organisation_id == self.provider_organisation_id:
            return "provider"
        raise NotAParty("your organisation is not a party to this agreement")

    def _only(self, required: Side, organisation_id: UUID, duty: str) -> Side:
        """The acting side, if it is `required`; else `WrongSide` ("only the client states goals")."""
        side = self.side_of(organisation_id)
        if side != required:
            raise WrongSide(f"only the {required} {duty}")
        return side

    def _require_status(self, allowed: Collection[Status], doing: str) -> None:
        if self.status not in allowed:
            raise InvalidTransition(f"cannot {doing}: the agreement is {self.status}")

    @staticmethod
    def _find(items: dict[UUID, T], key: UUID, what: str) -> T:
        try:
            return items[key]
        except KeyError:
            raise UnknownPart(f"the agreement has no {what} {key}") from None

    @staticmethod
    def _new_id(items: Collection[UUID], key: UUID, what: str) -> None:
        if key in items:
            raise InvalidCommand(f"the agreement already has a {what} {key}")

    def _operate(self, event: EventData, doing: str, allowed: Collection[Status] = OPERATING) -> None:
        """Record an event that operates the agreement (no new version)."""
        self._require_status(allowed, doing)
        self._record(event)

    def _change_content(self, events: list[EventData], change: str, doing: str) -> None:
        """Record a change of the agreed content; once active, it makes the next agreement version."""
        if self.status == "proposed":
            raise InvalidTransition(f"cannot {doing}: the proposal awaits acceptance; "
                                    "the content can change again once it is active")
        self._require_status(("draft", "active"), doing)
        for event in events:
            self._record(event)
        if self.status == "active":
            self._record(AgreementAmended(agreement_id=self.agreement_id,
                                          agreement_version=self.agreement_version + 1, changes=[change[:500]]))

    # --- lifecycle decisions ---------------------------------------------------------------------

    def draft(self, *, title: str, summary: str, client_organisation_id: UUID,
              provider_organisation_id: UUID, by_organisation_id: UUID) -> None:
        if self.status != "new":
            raise InvalidTransition("the agreement already exists")
        if client_organisation_id == provider_organisation_id:
            raise InvalidCommand("the client and the provider must be different organisations")
        if by_organisation_id not in (client_organisation_id, provider_organisation_id):
            raise NotAParty("you can only draft an agreement your organisation is a party to")
        side: Side = "client" if by_organisation_id == client_organisation_id else "provider"
        self._record(AgreementDrafted(
            agreement_id=self.agreement_id, title=title, summary=summary,
            client_organisation_id=client_organisation_id,
            provider_organisation_id=provider_organisation_id, drafted_by_side=side,
        ))

    def propose(self, by_organisation_id: UUID) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "draft":
            raise InvalidTransition(f"only a draft can be proposed; the agreement is {self.status}")
        self._record(AgreementProposed(agreement_id=self.agreement_id, proposed_by_side=side))

    def accept(self, by_organisation_id: UUID) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "proposed":
            raise InvalidTransition(f"only a proposed agreement can be accepted; the agreement is {self.status}")
        if side in self.accepted_by:
            raise InvalidTransition(f"the {side} side has already accepted")
        self._record(AgreementAccepted(agreement_id=self.agreement_id, side=side))
        if self.accepted_by == set(SIDES):
            self._record(AgreementActivated(agreement_id=self.agreement_id,
                                            agreement_version=self.agreement_version + 1))

    def suspend(self, by_organisation_id: UUID, reason: str) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "active":
            raise InvalidTransition(f"only an active agreement can be suspended; the agreement is {self.status}")
        self._record(AgreementSuspended(agreement_id=self.agreement_id, side=side, reason=reason))

    def resume(self, by_organisation_id: UUID, reason: str) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "suspended":
            raise InvalidTransition(f"only a suspended agreement can be resumed; the agreement is {self.status}")
        self._record(AgreementResumed(agreement_id=self.agreement_id, side=side, reason=reason))

    def terminate(self, by_organisation_id: UUID, reason: str) -> None:
        side = self.side_of(by_organisation_id)
        if self.status not in ("active", "suspended"):
            raise InvalidTransition(
                f"only an active or suspended agreement can be terminated; the agreement is {self.status}")
        self._record(AgreementTerminated(agreement_id=self.agreement_id, side=side, reason=reason))

    def renew(self, by_organisation_id: UUID, reason: str, renewed_until: date | None) -> None:
        side = self.side_of(by_organisation_id)
        if self.status != "active":
            raise InvalidTransition(f"only an active agreement can be renewed; the agreement is {self.status}")
        if renewed_until is not None and self.renewed_until is not None and renewed_until <= self.renewed_until:
            raise InvalidCommand("a renewal must extend the agreement beyond its current term")
        self._record(AgreementRenewed(agreement_id=self.agreement_id, side=side, reason=reason,
                                      agreement_version=self.agreement_version + 1, renewed_until=renewed_until))

    # --- state -----------------------------------------------------------------------------------

    def _record(self, event: EventData) -> None:
        self.evolve(event)
        self.pending.append(event)

    def evolve(self, event: EventData) -> None:
        evolvers = self._evolvers.get(type(event))
        if evolvers is None:
            raise TypeError(f"not an agreement event: {type(event).__name__}")
        for evolver in evolvers:
            evolver(self, event)

    @evolves
    def _evolve_lifecycle(self, event: LifecycleEvent) -> None:
        match event:
            case AgreementDrafted():
                self.status = "draft"
                self.title, self.summary = event.title, event.summary
                self.client_organisation_id = event.client_organisation_id
                self.provider_organisation_id = event.provider_organisation_id
                self.drafted_by_side = event.drafted_by_side
            case AgreementProposed():
                self.status = "proposed"
                self.accepted_by = set()
            case AgreementAccepted():
                self.accepted_by.add(event.side)
            case AgreementActivated():
                self.status = "active"
                self.agreement_version = event.agreement_version
                self.versions.append(VersionEntry(event.agreement_version, "activated", ["both sides accepted"]))
            case AgreementAmended():
                self.agreement_version = event.agreement_version
                self.versions.append(VersionEntry(event.agreement_version, "amended", list(event.changes)))
            case AgreementRenewed():
                self.agreement_version = event.agreement_version
                self.renewed_until = event.renewed_until or self.renewed_until
                self.versions.append(VersionEntry(event.agreement_version, "renewed", [event.reason]))
                self.lifecycle.append(LifecycleEntry("renewed", event.side, event.reason))
            case AgreementSuspended():
                self.status = "suspended"
                self.lifecycle.append(LifecycleEntry("suspended", event.side, event.reason))
            case AgreementResumed():
                self.status = "active"
                self.lifecycle.append(LifecycleEntry("resumed", event.side, event.reason))
            case AgreementTerminated():
                self.status = "terminated"
                self.lifecycle.append(LifecycleEntry("terminated", event.side, event.reason))
            case _:
                assert_never(event)
