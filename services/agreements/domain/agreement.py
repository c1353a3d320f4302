"""The agreement aggregate: one stream per agreement, composed of its parts.

Every part (see the sibling modules) adds state, decisions and the events it evolves on; the
core holds the parties, the lifecycle and the versions. Replaying the one stream therefore
rebuilds the whole agreement as of any point, which is what versions and time travel rely on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter
from pydantic_core import to_json, to_jsonable_python

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
    def replay(cls, agreement_id: UUID, events: Iterable[EventData]) -> Agreement:
        return cls(agreement_id).catch_up(events)

    def catch_up(self, events: Iterable[EventData]) -> Agreement:
        """Evolve by the stream's next `events`, in order; returns the agreement itself."""
        for event in events:
            self.evolve(event)
            self.version += 1
        return self

    @classmethod
    def restore(cls, snapshot: str | bytes) -> Agreement:
        """The agreement from its `snapshot_json()`, without pending events: what replaying
        its stream gives, in one validation instead of an `evolve` per event. Only for a snapshot
        of `state_format()`; raises `pydantic.ValidationError` if the text does not fit."""
        return _state().validate_json(snapshot)

    def snapshot(self) -> dict[str, Any]:
        """The whole agreement as JSON-ready data: the detail read model, time travel and diffs use it."""
        data: dict[str, Any] = to_jsonable_python(self._snapshot_state())
        return data

    def snapshot_json(self) -> bytes:
        """`snapshot()` as JSON text, each part's entries in the order the agreement holds them (the
        order its escalation matrix lists contacts in): what `restore` reads."""
        return to_json(self._snapshot_state())

    def _snapshot_state(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "pending"}
        state["accepted_by"] = sorted(self.accepted_by)
        # The keyed parts as they are: pydantic-core writes their ids as strings and each entry as
        # an object of its fields, in a fifth of the time it took to deep-copy every entry with
        # `dataclasses.asdict` and turn every key into a string first (bench/snapshot.py).
        state["escalation_matrix"] = self.escalation_matrix()
        return state


@functools.cache
def _state() -> TypeAdapter[Agreement]:
    return TypeAdapter(Agreement)


@functools.cache
def state_format() -> str:
    """A name for the shape of `Agreement.snapshot()` in this build (its JSON schema, hashed).

    Keep it beside a stored snapshot: a snapshot of another format must be replayed from the
    stream, not restored. (Restoring would fill a field added since with its default, not with
    what replaying the events sets it to.)
    """
    schema = json.dumps(_state().json_schema(), sort_keys=True)
    return hashlib.sha256(schema.encode()).hexdigest()[:16]
