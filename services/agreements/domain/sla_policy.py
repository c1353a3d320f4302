"""The SLA policy: response targets per query priority and the business calendar.

Policies take effect from a point in time and are never back-dated, so a new policy never
rewrites past compliance; the queries service counts each query with the policy in effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from contracts.agreements import SLAPolicySet
from contracts.sla import SLAPolicy
from services.agreements.domain.core import AgreementCore, evolves
from services.agreements.domain.errors import InvalidCommand

CLOCK_SKEW = timedelta(seconds=5)


@dataclass
class PolicyPeriod:
    policy: SLAPolicy
    effective_from: datetime


@dataclass
class SLAPart(AgreementCore):
    sla_policies: list[PolicyPeriod] = field(default_factory=list)

    def set_sla_policy(self, by_organisation_id: UUID, *, policy: SLAPolicy, now: datetime,
                       effective_from: datetime | None = None) -> None:
        self.side_of(by_organisation_id)
        start = effective_from or now
        if start < now - CLOCK_SKEW:
            raise InvalidCommand("effective_from: a policy cannot take effect in the past")
        if self.sla_policies and start <= self.sla_policies[-1].effective_from:
            raise InvalidCommand("effective_from: must be after the current policy's start")
        self._change_content([SLAPolicySet(agreement_id=self.agreement_id, policy=policy, effective_from=start)],
                             f"SLA policy set from {start.isoformat()}", "set the SLA policy")

    def sla_policy_at(self, moment: datetime) -> SLAPolicy | None:
        current = [p for p in self.sla_policies if p.effective_from <= moment]
        return current[-1].policy if current else None

    @evolves
    def _evolve_sla_policy(self, event: SLAPolicySet) -> None:
        self.sla_policies.append(PolicyPeriod(event.policy, event.effective_from))
