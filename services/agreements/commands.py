"""Commands the agreements service accepts: imperative, validated at the edge."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterOrganisation(Command):
    display_name: Name


class RegisterUser(Command):
    organisation_id: UUID
    display_name: Name
    email: Email


class IssueApiToken(Command):
    user_id: UUID
    label: Annotated[str, StringConstraints(max_length=200)] = ""


class DraftAgreement(Command):
    title: Title
    summary: Annotated[str, StringConstraints(max_length=10_000)] = ""
    client_organisation_id: UUID
    provider_organisation_id: UUID


class ProposeAgreement(Command):
    agreement_id: UUID


class AcceptAgreement(Command):
    agreement_id: UUID


class AgreementState(BaseModel):
    """What a command on an agreement returns: its state right after the command."""

    agreement_id: UUID
    status: str
    version: int = Field(description="Stream version: the number of events the agreement has.")
    agreement_version: int
    accepted_by: list[str]
