"""The CloudEvents 1.0 JSON envelope every Accord event travels in, and the event-data base class."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

TYPE_PATTERN = re.compile(r"^accord\.(?P<service>[a-z]+)\.(?P<name>[A-Z][A-Za-z]+)\.v(?P<version>\d+)$")


class EventData(BaseModel):
    """Base class of every event's `data`: frozen, strict, no unknown fields.

    Subclasses set `EVENT_SERVICE` (the owning service, also the routing-key prefix),
    `EVENT_NAME` (past tense, e.g. ``AgreementDrafted``) and `EVENT_VERSION`. The CloudEvents `type` is
    ``accord.<service>.<name>.v<version>``.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")

    EVENT_SERVICE: ClassVar[str]
    EVENT_NAME: ClassVar[str]
    EVENT_VERSION: ClassVar[int] = 1

    @classmethod
    def event_type(cls) -> str:
        return f"accord.{cls.EVENT_SERVICE}.{cls.EVENT_NAME}.v{cls.EVENT_VERSION}"

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.EVENT_SERVICE}.{cls.EVENT_NAME}"


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode JSON event with Accord's extensions.

    `subject` is the stream id, `sequence` the event's version within that stream.
    Extension attribute names follow the CloudEvents rule: lower-case letters and digits only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: UUID
    source: str = Field(min_length=1, description="URI reference of the producing service, e.g. /accord/agreements")
    type: str = Field(pattern=TYPE_PATTERN.pattern)
    subject: str = Field(min_length=1, description="The stream id the event belongs to.")
    time: AwareDatetime
    datacontenttype: str = Field(default="application/json", pattern=r"^application/json$")
    data: dict[str, Any]
    sequence: int = Field(ge=1, description="The event's version within its stream (1-based).")
    correlationid: UUID
    causationid: UUID | None = None
    actor: str = Field(min_length=1, description="Who caused the event: 'user:<id>', 'system:<service>'.")

    @classmethod
    def trusted(cls, *, id: UUID, source: str, type: str, subject: str, time: datetime, data: dict[str, Any],
                sequence: int, correlationid: UUID, causationid: UUID | None, actor: str) -> CloudEvent:
        """An envelope from values already known valid (read from the event store, or made by it):
        what `model_construct` does, without its per-field work — a tenth of its cost, which
        counts when a projection rebuild reads tens of thousands of events (bench/). A unit test
        holds it equal to `model_construct`."""
        envelope = cls.__new__(cls)
        object.__setattr__(envelope, "__dict__", {
            "specversion": "1.0", "id": id, "source": source, "type": type, "subject": subject, "time": time,
            "datacontenttype": "application/json", "data": data, "sequence": sequence,
            "correlationid": correlationid, "causationid": causationid, "actor": actor})
        object.__setattr__(envelope, "__pydantic_fields_set__", set(_ALL_FIELDS))  # its own: copies update it
        object.__setattr__(envelope, "__pydantic_extra__", None)
        object.__setattr__(envelope, "__pydantic_private__", None)
        return envelope

    @property
    def service(self) -> str:
        match = TYPE_PATTERN.match(self.type)
        assert match is not None  # guaranteed by the field pattern
        return match["service"]

    @property
    def routing_key(self) -> str:
        match = TYPE_PATTERN.match(self.type)
        assert match is not None
        return f"{match['service']}.{match['name']}"


_ALL_FIELDS = frozenset(CloudEvent.model_fields)


def parse_type(event_type: str) -> tuple[str, str, int]:
    """Split ``accord.<service>.<Name>.v<N>`` into its parts; ValueError if it is not one."""
    match = TYPE_PATTERN.match(event_type)
    if match is None:
        raise ValueError(f"not an Accord event type: {event_type!r}")
    return match["service"], match["name"], int(match["version"])

