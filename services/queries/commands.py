"""Commands of the queries service (what a caller asks for) and the state a command returns."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints, model_validator

from contracts.queries import AboutKind, Role, Subject, Text
from contracts.sla import Priority

Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=20_000)]


class RaiseQuery(BaseModel):
    """Ask the other side about the agreement or one of its parts."""

    priority: Priority = "normal"
    subject: Subject
    body: Text
    addressee_role: Role | None = Field(default=None, description="A role of the other side, e.g. 'delivery lead'.")
    about_kind: AboutKind = "agreement"
    about_id: UUID | None = Field(default=None, description="The part asked about; none for the agreement itself.")

    @model_validator(mode="after")
    def _about_names_a_part(self) -> RaiseQuery:
        if (self.about_kind == "agreement") != (self.about_id is None):
            raise ValueError("about_id names the part asked about, and only a part (not the agreement itself)")
        return self


class CommentOnQuery(BaseModel):
    body: Text


class RequestInformation(BaseModel):
    reason: Text


class ProvideInformation(BaseModel):
    body: Text


class AnswerQuery(BaseModel):
    answer: Text


class ReopenQuery(BaseModel):
    reason: Text


class WithdrawQuery(BaseModel):
    reason: Reason = ""


class QueryState(BaseModel):
    """A query right after a command: its status, stream version and next deadline."""

    query_id: UUID
    agreement_id: UUID
    status: str
    version: int
    next_deadline_at: datetime | None
