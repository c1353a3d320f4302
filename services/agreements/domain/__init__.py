"""The shared agreement's pure domain: the aggregate, its parts, and why commands are refused."""

from services.agreements.domain.agreement import KEYED_PARTS, Agreement
from services.agreements.domain.communication import RESETS_STATUS_CLOCK
from services.agreements.domain.core import SIDES, stream_id
from services.agreements.domain.errors import (
    DomainError,
    InvalidCommand,
    InvalidTransition,
    NotAParty,
    UnknownPart,
    WrongSide,
)

__all__ = [
    "KEYED_PARTS",
    "RESETS_STATUS_CLOCK",
    "SIDES",
    "Agreement",
    "DomainError",
    "InvalidCommand",
    "InvalidTransition",
    "NotAParty",
    "UnknownPart",
    "WrongSide",
    "stream_id",
]
