"""The agreement aggregate: one stream per agreement, composed of its parts.

Every part (see the sibling modules) adds state, decisions and the events it evolves on; the
core holds the parties, the lifecycle and the versions. Replaying the one stream therefore
rebuilds the whole agreement as of any point, which is what versions and time travel rely on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic_core import to_jsonable_python

from contracts import EventData
from services.agreements.domain.checkins import CheckInsPart
from services.agreements.domain.communication import CommunicationPart
from services.agreements.domain.deliverables import DeliverablesPart
from services.agreements.domain.goals import GoalsPart
from services.agreements.domain.people import PeoplePart
from services.agreements.domain.procedures import ProceduresPart
from services.agreements.domain.scope import ScopePart
from services.agreements.domain.sla_policy import SLAPart
from services.agreements.domain.sync import SyncPart

#: Parts whose state is a collection keyed by id: the snapshot and the diff treat them alike.
KEYED_PARTS = ("goals", "requirements", "deliverables", "contacts", "procedures", "breakdowns",
               "scope_changes", "disagreements", "checkins")


@dataclass
class Agreement(GoalsPart, DeliverablesPart, CommunicationPart, PeoplePart, SLAPart, ProceduresPart, ScopePart,
                SyncPart, CheckInsPart):
    """The shared agreement between one client and one provider organisation."""

    @classmethod
    def replay(cls, agreement_id: UUID, events: list[EventData]) -> Agreement:
        agreement = cls(agreement_id)
        for event in events:
            agreement.evolve(event)
            agreement.version += 1
        return agreement

    def snapshot(self) -> dict[str, Any]:
        """The whole agreement as JSON-ready data: the detail read model, time travel and diffs use it."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "pending"}
        state["accepted_by"] = sorted(self.accepted_by)
        # The keyed parts as they are: to_jsonable_python writes their ids as strings and each entry
        # as a dict of its fields, in a fifth of the time it took to deep-copy every entry with
        # `dataclasses.asdict` and turn every key into a string first (bench/snapshot.py).
        state["escalation_matrix"] = self.escalation_matrix()
        data: dict[str, Any] = to_jsonable_python(state)
        return data
