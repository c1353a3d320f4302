"""Why the KPI domain refuses a command; the service maps each kind to an HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """A command broke a rule of the domain."""


class InvalidTransition(DomainError):
    """The command is not allowed in the current state (HTTP 409)."""


class WrongSide(DomainError):
    """The caller is a party, but this is the other side's responsibility (HTTP 403)."""


class InvalidCommand(DomainError):
    """The command's content is wrong in itself (HTTP 422)."""


class UnknownPart(DomainError):
    """The command names a KPI or a report the agreement does not have (HTTP 404)."""
