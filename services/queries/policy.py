"""Which SLA policy a query is raised under: the one in force at the moment it is raised.

Policies change from an effective instant on (`SLAPolicySet.effective_from`); a change never reaches
back, because each query keeps the terms it was raised under (see `QueryRaised.sla_target`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from contracts.sla import SLAPolicy


class PolicyVersion(Protocol):
    """Anything with a policy and the instant it takes effect, e.g. an `SLAPolicySet` event."""

    @property
    def policy(self) -> SLAPolicy: ...

    @property
    def effective_from(self) -> datetime: ...


def policy_in_force(versions: Iterable[PolicyVersion], at: datetime) -> SLAPolicy | None:
    """The policy with the latest `effective_from` at or before `at`; None before the first one.

    Of two versions effective from the same instant, the later one in `versions` wins (it was set
    afterwards), so pass them in the order they were recorded.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    chosen: tuple[datetime, SLAPolicy] | None = None
    for version in versions:
        if version.effective_from <= at and (chosen is None or version.effective_from >= chosen[0]):
            chosen = (version.effective_from, version.policy)
    return None if chosen is None else chosen[1]
