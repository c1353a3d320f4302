"""Operating procedures: named flows of ordered steps, each owned by a side, and their breakdowns.

A breakdown is reported at one step and resolved with its fix there, so the rest of the flow
stands (the flow chart marks the broken step, not the whole process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never
from uuid import UUID

from contracts.agreements import BreakdownReported, BreakdownResolved, ProcedureDefined, ProcedureStep, Side
from services.agreements.domain.core import ACTIVE_ONLY, AgreementCore, evolves
from services.agreements.domain.errors import InvalidCommand, InvalidTransition, UnknownPart

ProcedureEvent = ProcedureDefined | BreakdownReported | BreakdownResolved


@dataclass
class Procedure:
    procedure_id: UUID
    name: str
    steps: list[ProcedureStep]
    revision: int = 1


@dataclass
class Breakdown:
    breakdown_id: UUID
    procedure_id: UUID
    step_id: UUID
    reported_by_side: Side
    what_broke: str
    impact: str
    fix: str | None = None
    resolved_by_side: Side | None = None

    @property
    def open(self) -> bool:
        return self.fix is None


@dataclass
class ProceduresPart(AgreementCore):
    procedures: dict[UUID, Procedure] = field(default_factory=dict)
    breakdowns: dict[UUID, Breakdown] = field(default_factory=dict)

    def define_procedure(self, by_organisation_id: UUID, *, procedure_id: UUID, name: str,
                         steps: list[ProcedureStep], replacing: bool = False) -> None:
        """Define a procedure, or (`replacing`) replace the steps of an existing one."""
        self.side_of(by_organisation_id)
        if replacing:
            self._find(self.procedures, procedure_id, "procedure")
        else:
            self._new_id(self.procedures, procedure_id, "procedure")
        step_ids = [s.step_id for s in steps]
        if len(set(step_ids)) != len(step_ids):
            raise InvalidCommand("steps: step ids must be unique")
        stranded = [b for b in self.open_breakdowns(procedure_id) if b.step_id not in step_ids]
        if stranded:
            raise InvalidTransition(f"resolve the open breakdown {stranded[0].breakdown_id} before removing its step")
        verb = "redefined" if procedure_id in self.procedures else "defined"
        self._change_content([ProcedureDefined(agreement_id=self.agreement_id, procedure_id=procedure_id,
                                               name=name, steps=steps)],
                             f"procedure {verb}: {name}", "define a procedure")

    def report_breakdown(self, by_organisation_id: UUID, *, breakdown_id: UUID, procedure_id: UUID, step_id: UUID,
                         what_broke: str, impact: str) -> None:
        side = self.side_of(by_organisation_id)
        procedure = self._find(self.procedures, procedure_id, "procedure")
        if step_id not in {s.step_id for s in procedure.steps}:
            raise UnknownPart(f"procedure {procedure_id} has no step {step_id}")
        self._new_id(self.breakdowns, breakdown_id, "breakdown")
        self._operate(BreakdownReported(agreement_id=self.agreement_id, breakdown_id=breakdown_id,
                                        procedure_id=procedure_id, step_id=step_id, reported_by_side=side,
                                        what_broke=what_broke, impact=impact), "report a breakdown", ACTIVE_ONLY)

    def resolve_breakdown(self, by_organisation_id: UUID, *, breakdown_id: UUID, fix: str) -> None:
        side = self.side_of(by_organisation_id)
        breakdown = self._find(self.breakdowns, breakdown_id, "breakdown")
        if not breakdown.open:
            raise InvalidTransition("the breakdown is already resolved")
        self._operate(BreakdownResolved(agreement_id=self.agreement_id, breakdown_id=breakdown_id,
                                        resolved_by_side=side, fix=fix), "resolve a breakdown", ACTIVE_ONLY)

    def open_breakdowns(self, procedure_id: UUID | None = None) -> list[Breakdown]:
        return [b for b in self.breakdowns.values()
                if b.open and (procedure_id is None or b.procedure_id == procedure_id)]

    @evolves
    def _evolve_procedures(self, event: ProcedureEvent) -> None:
        match event:
            case ProcedureDefined():
                previous = self.procedures.get(event.procedure_id)
                self.procedures[event.procedure_id] = Procedure(event.procedure_id, event.name, list(event.steps),
                                                                previous.revision + 1 if previous else 1)
            case BreakdownReported():
                self.breakdowns[event.breakdown_id] = Breakdown(
                    event.breakdown_id, event.procedure_id, event.step_id, event.reported_by_side,
                    event.what_broke, event.impact)
            case BreakdownResolved():
                breakdown = self.breakdowns[event.breakdown_id]
                breakdown.fix, breakdown.resolved_by_side = event.fix, event.resolved_by_side
            case _:
                assert_never(event)
