"""The kpi service's commands, as the HTTP API receives them."""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.kpi import Direction, Finite, HealthWeight, KpiSource, Line, Name, Text, Unit


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DefineKpi(_Command):
    name: Name
    description: Text = ""
    unit: Unit
    direction: Direction
    target: Finite
    warning_threshold: Finite
    breach_threshold: Finite
    cadence_seconds: int = Field(ge=1, le=366 * 86_400, description="How often a value is due.")
    source: KpiSource = "provider"
    metric: Name | None = Field(default=None, description="For source accord: a relationship KPI, "
                                                          "e.g. provider.answered_within_sla_share.")


class ReportKpiValue(_Command):
    value: Finite
    period_start: AwareDatetime
    period_end: AwareDatetime
    evidence: Text = ""
    notes: Text = ""


class PublishReport(_Command):
    title: Name
    period_start: AwareDatetime
    period_end: AwareDatetime
    narrative: Text
    kpi_ids: list[UUID] = Field(default_factory=list, description="Empty: every KPI of the agreement.")
    review_seconds: int = Field(default=7 * 86_400, ge=1, le=366 * 86_400,
                                description="How long the client has to acknowledge it.")


class AcknowledgeReport(_Command):
    comments: Text = ""
    questions: list[Line] = Field(default_factory=list, max_length=50)


class SetHealthWeights(_Command):
    weights: list[HealthWeight] = Field(min_length=1)


class Created(BaseModel):
    """What a command created, and the KPI book's stream version after it."""

    id: UUID
    version: int
