"""Events of the kpi service: KPI definitions, reported values and their threshold crossings, period
reports the client acknowledges, and the customer health score of each agreement.

Streams: ``kpis-<agreement_id>`` holds an agreement's KPI book (definitions, values, crossings,
reports); ``health-<agreement_id>`` holds its health weights, scores and band changes. Each event
carries the instant it happened (``*_at``), so periods and delays are rebuilt from the events alone.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from contracts.agreements import Side
from contracts.envelope import EventData
from contracts.registry import event

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Unit = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Text = Annotated[str, StringConstraints(max_length=20_000)]
Line = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]
Direction = Literal["higher_is_better", "lower_is_better"]
KpiSource = Literal["provider", "accord"]
KpiStatus = Literal["on_target", "at_risk", "breached"]
Band = Literal["green", "yellow", "red"]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")


class _KpiEvent(EventData):
    EVENT_SERVICE = "kpi"


# --- KPI definitions and values -------------------------------------------------------------------

@event
class KPIDefined(_KpiEvent):
    """A KPI the two sides track. Thresholds are ordered by `direction`: when higher is better,
    breach ≤ warning ≤ target; when lower is better, target ≤ warning ≤ breach. A value at least as
    good as `warning_threshold` is on target; one worse than it but not worse than
    `breach_threshold` is at risk; one worse than `breach_threshold` is breached.

    `source` ``provider``: the provider reports a value every `cadence_seconds`; ``accord``: Accord
    computes it from the relationship KPI named by `metric` at the end of each cadence."""

    EVENT_NAME = "KPIDefined"
    agreement_id: UUID
    kpi_id: UUID
    name: Name
    description: Text = ""
    unit: Unit
    direction: Direction
    target: Finite
    warning_threshold: Finite
    breach_threshold: Finite
    cadence_seconds: int = Field(ge=1, le=366 * 86_400)
    source: KpiSource
    metric: Name | None = Field(default=None, description="For source accord: '<side>.<relationship KPI>'.")
    defined_by_side: Side | None = Field(default=None, description="None when Accord defined it.")
    defined_at: AwareDatetime


@event
class KPIReported(_KpiEvent):
    """A value of a KPI for a period, with its evidence; `status` is where it falls between the thresholds."""

    EVENT_NAME = "KPIReported"
    agreement_id: UUID
    kpi_id: UUID
    value: Finite
    period_start: AwareDatetime
    period_end: AwareDatetime
    evidence: Text = ""
    notes: Text = ""
    status: KpiStatus
    reported_by_side: Side | None = Field(default=None, description="None when Accord computed it.")
    reported_at: AwareDatetime


class _Crossing(_KpiEvent):
    agreement_id: UUID
    kpi_id: UUID
    name: Name
    value: Finite
    threshold: Finite
    period_end: AwareDatetime
    crossed_at: AwareDatetime


@event
class KPIAtRisk(_Crossing):
    """A reported value fell past the warning threshold (from on target, or on the first report);
    `threshold` is the warning threshold."""

    EVENT_NAME = "KPIAtRisk"


@event
class KPIBreached(_Crossing):
    """A reported value fell past the breach threshold; `threshold` is the breach threshold."""

    EVENT_NAME = "KPIBreached"


@event
class KPIRecovered(_Crossing):
    """A reported value came back from breached or at risk to a better status (`to_status`);
    `threshold` is the threshold it came back across."""

    EVENT_NAME = "KPIRecovered"
    from_status: Literal["at_risk", "breached"]
    to_status: Literal["on_target", "at_risk"]


@event
class KPIReportOverdue(_KpiEvent):
    """A provider-reported KPI's cadence ended without a value; the next period starts at `due_at`."""

    EVENT_NAME = "KPIReportOverdue"
    agreement_id: UUID
    kpi_id: UUID
    name: Name
    period: int = Field(ge=1, description="The KPI's reporting period that ended without a value.")
    due_at: AwareDatetime
    cadence_seconds: int = Field(ge=1)
    last_reported_at: AwareDatetime | None = None


# --- period reports -------------------------------------------------------------------------------

class ReportedKpi(_Value):
    """One KPI in a period report: its latest value in the period (None: nothing reported)."""

    kpi_id: UUID
    name: Name
    unit: Unit
    direction: Direction
    target: Finite
    value: Finite | None
    status: KpiStatus | None


@event
class KPIReportPublished(_KpiEvent):
    """The provider published the period's report: the KPI values and a narrative of what they mean.
    The client is to acknowledge it by `review_due_at`."""

    EVENT_NAME = "KPIReportPublished"
    agreement_id: UUID
    report_id: UUID
    title: Name
    period_start: AwareDatetime
    period_end: AwareDatetime
    narrative: Text
    kpis: list[ReportedKpi]
    published_at: AwareDatetime
    review_due_at: AwareDatetime


@event
class KPIReportAcknowledged(_KpiEvent):
    """The client reviewed the report, optionally with comments and questions for the provider."""

    EVENT_NAME = "KPIReportAcknowledged"
    agreement_id: UUID
    report_id: UUID
    comments: Text = ""
    questions: list[Line] = Field(default_factory=list)
    acknowledged_at: AwareDatetime
    delay_seconds: int = Field(ge=0, description="Seconds from publication to acknowledgement.")
    late: bool = Field(description="Acknowledged after the review window closed.")


@event
class KPIReportReviewOverdue(_KpiEvent):
    """A published report was not acknowledged within its review window."""

    EVENT_NAME = "KPIReportReviewOverdue"
    agreement_id: UUID
    report_id: UUID
    published_at: AwareDatetime
    review_due_at: AwareDatetime


# --- customer health ------------------------------------------------------------------------------

HealthComponentName = Literal["kpi_attainment", "sla_attainment", "overdue_queries", "unacknowledged_reports",
                              "open_breakdowns", "checkin_scores", "checkin_sentiment"]


class HealthWeight(_Value):
    component: HealthComponentName
    weight: float = Field(ge=0, le=1000, allow_inf_nan=False)


class HealthComponent(_Value):
    """One component of a health score: its health (0 = worst, 1 = best) and what it adds.

    `points` is what it adds to the score; `shortfall` the points it costs (its share of the
    weight times 1 - value). A component without data (no KPIs yet, no check-in) has value None and
    does not count: the other components' weights are scaled up instead."""

    component: HealthComponentName
    value: float | None = Field(ge=0, le=1)
    weight: float = Field(ge=0)
    points: float = Field(ge=0, le=100)
    shortfall: float = Field(ge=0, le=100)
    detail: Annotated[str, StringConstraints(max_length=500)] = ""


@event
class HealthWeightsSet(_KpiEvent):
    """A side set the weights of the agreement's health components (missing ones keep their defaults)."""

    EVENT_NAME = "HealthWeightsSet"
    agreement_id: UUID
    weights: list[HealthWeight] = Field(min_length=1)
    set_by_side: Side
    set_at: AwareDatetime


@event
class HealthScoreRecorded(_KpiEvent):
    """The agreement's health score moved: the score, its band, every component, and which components
    moved since the previous score (so a red score explains itself). `cause` is the event type that
    triggered the evaluation."""

    EVENT_NAME = "HealthScoreRecorded"
    agreement_id: UUID
    score: float = Field(ge=0, le=100)
    band: Band
    components: list[HealthComponent]
    moved: list[HealthComponentName] = Field(default_factory=list)
    cause: Annotated[str, StringConstraints(max_length=200)]
    recorded_at: AwareDatetime


@event
class CustomerHealthChanged(_KpiEvent):
    """The agreement's health band changed (green ≥ 70, yellow ≥ 40, red below)."""

    EVENT_NAME = "CustomerHealthChanged"
    agreement_id: UUID
    from_band: Band | None
    to_band: Band
    score: float = Field(ge=0, le=100)
    previous_score: float | None = None
    moved: list[HealthComponentName] = Field(default_factory=list)
    changed_at: AwareDatetime
