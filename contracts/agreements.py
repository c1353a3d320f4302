"""Events of the agreements service: identity (organisations, users, API tokens) and agreements."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import Field, StringConstraints

from contracts.envelope import EventData
from contracts.registry import event

Side = Literal["client", "provider"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(max_length=10_000)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
TokenHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _AgreementsEvent(EventData):
    EVENT_SERVICE = "agreements"


@event
class OrganisationRegistered(_AgreementsEvent):
    """An operator registered an organisation that can be a client or a provider."""

    EVENT_NAME = "OrganisationRegistered"
    organisation_id: UUID
    display_name: Name


@event
class UserRegistered(_AgreementsEvent):
    """A person who acts for an organisation."""

    EVENT_NAME = "UserRegistered"
    user_id: UUID
    organisation_id: UUID
    display_name: Name
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]


@event
class ApiTokenIssued(_AgreementsEvent):
    """An API token for a user. Only the token's SHA-256 is ever stored or published."""

    EVENT_NAME = "ApiTokenIssued"
    token_id: UUID
    user_id: UUID
    organisation_id: UUID
    token_hash: TokenHash
    label: Annotated[str, StringConstraints(max_length=200)] = ""


@event
class ApiTokenRevoked(_AgreementsEvent):
    EVENT_NAME = "ApiTokenRevoked"
    token_id: UUID
    user_id: UUID


@event
class AgreementDrafted(_AgreementsEvent):
    """One party drafted a shared agreement between a client and a provider organisation."""

    EVENT_NAME = "AgreementDrafted"
    agreement_id: UUID
    title: Title
    summary: Text = ""
    client_organisation_id: UUID
    provider_organisation_id: UUID
    drafted_by_side: Side


@event
class AgreementProposed(_AgreementsEvent):
    """The draft is put to both sides for acceptance; it can no longer be edited as a draft."""

    EVENT_NAME = "AgreementProposed"
    agreement_id: UUID
    proposed_by_side: Side


@event
class AgreementAccepted(_AgreementsEvent):
    """One side accepted the proposed agreement."""

    EVENT_NAME = "AgreementAccepted"
    agreement_id: UUID
    side: Side


@event
class AgreementActivated(_AgreementsEvent):
    """Both sides accepted: the agreement is in force from now on."""

    EVENT_NAME = "AgreementActivated"
    agreement_id: UUID
    agreement_version: int = Field(ge=1)
