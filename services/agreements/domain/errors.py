"""Why the domain refuses a command; the service maps each kind to an HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule of the domain."""


class InvalidTransition(DomainError):
    """The command is not allowed in the agreement's (or the part's) current state (HTTP 409)."""


class NotAParty(DomainError):
    """The acting organisation is neither the client nor the provider (HTTP 403)."""


class WrongSide(DomainError):
    """The acting organisation is a party, but this is the other side's responsibility (HTTP 403)."""


class InvalidCommand(DomainError):
    """The command's content is wrong in itself (HTTP 422)."""


class UnknownPart(DomainError):
    """The command names a goal, requirement, contact… the agreement does not have (HTTP 404)."""
