"""Goals and objectives: the client states them, the provider acknowledges its understanding.

Each revision of a goal needs a fresh acknowledgement; until then the goal is not shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, assert_never
from uuid import UUID

from contracts.agreements import GoalAcknowledged, GoalClarificationRequested, GoalRevised, GoalStated
from services.agreements.domain.core import AgreementCore, evolves
from services.agreements.domain.errors import InvalidTransition

GoalEvent = GoalStated | GoalRevised | GoalAcknowledged | GoalClarificationRequested

GoalStatus = Literal["stated", "clarification_requested", "acknowledged"]


@dataclass
class Goal:
    goal_id: UUID
    revision: int
    outcome: str
    success_measure: str
    constraints: list[str]
    status: GoalStatus = "stated"
    understanding: str | None = None
    question: str | None = None


@dataclass
class GoalsPart(AgreementCore):
    goals: dict[UUID, Goal] = field(default_factory=dict)

    def state_goal(self, by_organisation_id: UUID, *, goal_id: UUID, outcome: str, success_measure: str,
                   constraints: list[str]) -> None:
        self._only("client", by_organisation_id, "states goals")
        self._new_id(self.goals, goal_id, "goal")
        self._change_content([GoalStated(agreement_id=self.agreement_id, goal_id=goal_id, outcome=outcome,
                                         success_measure=success_measure, constraints=constraints)],
                             f"goal stated: {outcome}", "state a goal")

    def revise_goal(self, by_organisation_id: UUID, *, goal_id: UUID, outcome: str, success_measure: str,
                    constraints: list[str]) -> None:
        self._only("client", by_organisation_id, "revises goals")
        goal = self._find(self.goals, goal_id, "goal")
        self._change_content([GoalRevised(agreement_id=self.agreement_id, goal_id=goal_id,
                                          revision=goal.revision + 1, outcome=outcome,
                                          success_measure=success_measure, constraints=constraints)],
                             f"goal revised: {outcome}", "revise a goal")

    def acknowledge_goal(self, by_organisation_id: UUID, *, goal_id: UUID, understanding: str,
                         revision: int | None = None) -> None:
        self._only("provider", by_organisation_id, "acknowledges goals")
        goal = self._current(goal_id, revision)
        if goal.status == "acknowledged":
            raise InvalidTransition(f"revision {goal.revision} of this goal is already acknowledged")
        self._operate(GoalAcknowledged(agreement_id=self.agreement_id, goal_id=goal_id, revision=goal.revision,
                                       understanding=understanding), "acknowledge a goal")

    def request_goal_clarification(self, by_organisation_id: UUID, *, goal_id: UUID, question: str,
                                   revision: int | None = None) -> None:
        self._only("provider", by_organisation_id, "asks to clarify goals")
        goal = self._current(goal_id, revision)
        if goal.status == "acknowledged":
            raise InvalidTransition(f"revision {goal.revision} of this goal is already acknowledged")
        self._operate(GoalClarificationRequested(agreement_id=self.agreement_id, goal_id=goal_id,
                                                 revision=goal.revision, question=question),
                      "ask to clarify a goal")

    def _current(self, goal_id: UUID, revision: int | None) -> Goal:
        goal = self._find(self.goals, goal_id, "goal")
        if revision is not None and revision != goal.revision:
            raise InvalidTransition(f"the goal is at revision {goal.revision}, not {revision}")
        return goal

    @evolves
    def _evolve_goals(self, event: GoalEvent) -> None:
        match event:
            case GoalStated():
                self.goals[event.goal_id] = Goal(event.goal_id, 1, event.outcome, event.success_measure,
                                                 list(event.constraints))
            case GoalRevised():
                self.goals[event.goal_id] = Goal(event.goal_id, event.revision, event.outcome,
                                                 event.success_measure, list(event.constraints))
            case GoalAcknowledged():
                goal = self.goals[event.goal_id]
                goal.status, goal.understanding, goal.question = "acknowledged", event.understanding, None
            case GoalClarificationRequested():
                goal = self.goals[event.goal_id]
                goal.status, goal.question = "clarification_requested", event.question
            case _:
                assert_never(event)
