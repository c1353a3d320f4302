"""An agreement's KPI book: the KPIs the sides track, their reported values and threshold crossings,
their reporting clocks, and the period reports the provider publishes and the client acknowledges.

Who does what (the seeds: the provider delivers clear reports on the KPIs that matter, the client
reviews them and seeks to understand their value):

* either side may define a KPI — the client names what matters, the provider proposes how it is
  measured; the event records which side did;
* only the provider reports values of provider-sourced KPIs; KPIs sourced from Accord are computed
  by the service itself at the end of each cadence and refuse reported values;
* only the provider publishes period reports; only the client acknowledges them.

Reporting clock: each KPI's cadence runs from its definition; a value restarts it (from the
report, or from the computed period's end for Accord KPIs), and a cadence ending without a value
records `KPIReportOverdue` and starts the next period at the missed deadline.

A decision checks the rules, then records events; `_evolve` is the only place state changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from contracts import EventData
from contracts.agreements import Side
from contracts.kpi import (
    Direction,
    KPIAtRisk,
    KPIBreached,
    KPIDefined,
    KPIRecovered,
    KPIReportAcknowledged,
    KPIReported,
    KPIReportOverdue,
    KPIReportPublished,
    KPIReportReviewOverdue,
    KpiSource,
    KpiStatus,
    ReportedKpi,
)
from services.kpi.domain.errors import InvalidCommand, InvalidTransition, UnknownPart, WrongSide
from services.kpi.domain.thresholds import Thresholds, worse

#: How well a KPI's latest status attains its target, for the health score.
STATUS_ATTAINMENT: dict[KpiStatus, float] = {"on_target": 1.0, "at_risk": 0.5, "breached": 0.0}


def stream_id(agreement_id: UUID) -> str:
    return f"kpis-{agreement_id}"


@dataclass
class Kpi:
    definition: KPIDefined
    period: int = 1  # the reporting period running now
    due_at: datetime | None = None  # when the running period ends
    status: KpiStatus | None = None
    values: list[KPIReported] = field(default_factory=list)

    @property
    def thresholds(self) -> Thresholds:
        d = self.definition
        return Thresholds(d.direction, d.target, d.warning_threshold, d.breach_threshold)

    @property
    def last_reported_at(self) -> datetime | None:
        return self.values[-1].reported_at if self.values else None

    def value_in(self, start: datetime, end: datetime) -> KPIReported | None:
        """The latest value whose period overlaps [start, end)."""
        overlapping = [v for v in self.values if v.period_end > start and v.period_start < end]
        return max(overlapping, key=lambda v: (v.period_end, v.reported_at), default=None)


@dataclass
class Report:
    published: KPIReportPublished
    acknowledged: KPIReportAcknowledged | None = None
    review_overdue: bool = False


@dataclass
class KpiBook:
    agreement_id: UUID
    version: int = 0  # stream version: events applied so far
    kpis: dict[UUID, Kpi] = field(default_factory=dict)
    reports: dict[UUID, Report] = field(default_factory=dict)
    pending: list[EventData] = field(default_factory=list)

    @classmethod
    def replay(cls, agreement_id: UUID, events: Iterable[EventData]) -> KpiBook:
        return cls(agreement_id).catch_up(events)

    def catch_up(self, events: Iterable[EventData]) -> KpiBook:
        """Evolve by the stream's next `events`, in order; returns the book itself."""
        for event in events:
            self.evolve(event)
            self.version += 1
        return self

    # --- KPIs ----------------------------------------------------------------------------------

    def define(self, side: Side | None, *, kpi_id: UUID, name: str, unit: str, direction: Direction, target: float,
               warning: float, breach: float, cadence_seconds: int, source: KpiSource, now: datetime,
               description: str = "", metric: str | None = None) -> None:
        if kpi_id in self.kpis:
            raise InvalidCommand(f"the agreement already has a KPI {kpi_id}")
        if any(k.definition.name.casefold() == name.strip().casefold() for k in self.kpis.values()):
            raise InvalidTransition(f"the agreement already has a KPI named {name.strip()!r}")
        problem = Thresholds(direction, target, warning, breach).check()
        if problem:
            raise InvalidCommand(problem)
        if (source == "accord") != (metric is not None):
            raise InvalidCommand("a KPI computed by Accord names its metric; a reported one does not")
        self._record(KPIDefined(
            agreement_id=self.agreement_id, kpi_id=kpi_id, name=name, description=description, unit=unit,
            direction=direction, target=target, warning_threshold=warning, breach_threshold=breach,
            cadence_seconds=cadence_seconds, source=source, metric=metric, defined_by_side=side, defined_at=now))

    def report_value(self, side: Side | None, *, kpi_id: UUID, value: float, period_start: datetime,
                     period_end: datetime, now: datetime, evidence: str = "", notes: str = "") -> KpiStatus:
        """Record a value (side None: Accord computed it) and the threshold crossing it makes."""
        kpi = self._kpi(kpi_id)
        if side is not None and kpi.definition.source == "accord":
            raise InvalidTransition(f"KPI {kpi.definition.name!r} is computed by Accord; values cannot be reported")
        if side is not None and side != "provider":
            raise WrongSide("only the provider reports KPI values")
        if period_end <= period_start:
            raise InvalidCommand("a reporting period must end after it starts")
        thresholds, before = kpi.thresholds, kpi.status
        status = thresholds.status(value)
        self._record(KPIReported(
            agreement_id=self.agreement_id, kpi_id=kpi_id, value=value, period_start=period_start,
            period_end=period_end, evidence=evidence, notes=notes, status=status, reported_by_side=side,
            reported_at=now))
        crossing = self._crossing(kpi, before, status, value, period_end, now)
        if crossing is not None:
            self._record(crossing)
        return status

    def _crossing(self, kpi: Kpi, before: KpiStatus | None, after: KpiStatus, value: float, period_end: datetime,
                  now: datetime) -> EventData | None:
        if before == after or (before is None and after == "on_target"):
            return None
        d = kpi.definition
        at = {"agreement_id": self.agreement_id, "kpi_id": d.kpi_id, "name": d.name, "value": value,
              "period_end": period_end, "crossed_at": now}
        if before is None or worse(after, before):
            if after == "breached":
                return KPIBreached.model_validate({**at, "threshold": d.breach_threshold})
            return KPIAtRisk.model_validate({**at, "threshold": d.warning_threshold})
        threshold = d.warning_threshold if after == "on_target" else d.breach_threshold
        return KPIRecovered.model_validate({**at, "threshold": threshold, "from_status": before,
                                           "to_status": after})

    def record_report_overdue(self, *, kpi_id: UUID, period: int) -> bool:
        """The clock of `period` ran out; False (nothing recorded) if stale: a value came, or the KPI
        is Accord's (its clock computes instead)."""
        kpi = self.kpis.get(kpi_id)
        if kpi is None or kpi.period != period or kpi.due_at is None or kpi.definition.source != "provider":
            return False
        d = kpi.definition
        self._record(KPIReportOverdue(
            agreement_id=self.agreement_id, kpi_id=kpi_id, name=d.name, period=period, due_at=kpi.due_at,
            cadence_seconds=d.cadence_seconds, last_reported_at=kpi.last_reported_at))
        return True

    def clocks(self) -> dict[UUID, tuple[int, datetime]]:
        """Each KPI's running period and when it ends: the durable timers the service keeps."""
        return {kpi_id: (k.period, k.due_at) for kpi_id, k in self.kpis.items() if k.due_at is not None}

    # --- period reports ------------------------------------------------------------------------

    def publish_report(self, side: Side, *, report_id: UUID, title: str, period_start: datetime,
                       period_end: datetime, narrative: str, kpi_ids: Sequence[UUID], review_seconds: int,
                       now: datetime) -> None:
        if side != "provider":
            raise WrongSide("only the provider publishes KPI reports")
        if report_id in self.reports:
            raise InvalidCommand(f"the agreement already has a report {report_id}")
        if period_end <= period_start:
            raise InvalidCommand("a reporting period must end after it starts")
        if review_seconds < 1:
            raise InvalidCommand("the review window must be at least a second")
        chosen = [self._kpi(k) for k in kpi_ids] if kpi_ids else list(self.kpis.values())
        if not chosen:
            raise InvalidTransition("define a KPI before publishing a report")
        entries = []
        for kpi in chosen:
            d, reported = kpi.definition, kpi.value_in(period_start, period_end)
            entries.append(ReportedKpi(
                kpi_id=d.kpi_id, name=d.name, unit=d.unit, direction=d.direction, target=d.target,
                value=reported.value if reported else None, status=reported.status if reported else None))
        self._record(KPIReportPublished(
            agreement_id=self.agreement_id, report_id=report_id, title=title, period_start=period_start,
            period_end=period_end, narrative=narrative, kpis=entries, published_at=now,
            review_due_at=now + timedelta(seconds=review_seconds)))

    def acknowledge_report(self, side: Side, *, report_id: UUID, now: datetime, comments: str = "",
                           questions: Sequence[str] = ()) -> None:
        if side != "client":
            raise WrongSide("only the client acknowledges KPI reports")
        report = self._report(report_id)
        if report.acknowledged is not None:
            raise InvalidTransition(f"report {report_id} is already acknowledged")
        published = report.published
        self._record(KPIReportAcknowledged(
            agreement_id=self.agreement_id, report_id=report_id, comments=comments, questions=list(questions),
            acknowledged_at=now, delay_seconds=max(0, int((now - published.published_at).total_seconds())),
            late=now > published.review_due_at))

    def record_review_overdue(self, *, report_id: UUID) -> bool:
        """The review window closed; False (nothing recorded) if acknowledged or already overdue."""
        report = self.reports.get(report_id)
        if report is None or report.acknowledged is not None or report.review_overdue:
            return False
        p = report.published
        self._record(KPIReportReviewOverdue(agreement_id=self.agreement_id, report_id=report_id,
                                            published_at=p.published_at, review_due_at=p.review_due_at))
        return True

    # --- what the health score reads ----------------------------------------------------------

    def kpi_attainment(self) -> float | None:
        """Mean attainment of the KPIs' latest statuses (on target 1, at risk ½, breached 0); None: no values."""
        statuses = [k.status for k in self.kpis.values() if k.status is not None]
        return sum(STATUS_ATTAINMENT[s] for s in statuses) / len(statuses) if statuses else None

    def overdue_unacknowledged_reports(self) -> int:
        return sum(1 for r in self.reports.values() if r.review_overdue and r.acknowledged is None)

    # --- state ---------------------------------------------------------------------------------

    def _kpi(self, kpi_id: UUID) -> Kpi:
        try:
            return self.kpis[kpi_id]
        except KeyError:
            raise UnknownPart(f"the agreement has no KPI {kpi_id}") from None

    def _report(self, report_id: UUID) -> Report:
        try:
            return self.reports[report_id]
        except KeyError:
            raise UnknownPart(f"the agreement has no KPI report {report_id}") from None

    def _record(self, event: EventData) -> None:
        self.evolve(event)
        self.pending.append(event)

    def evolve(self, event: EventData) -> None:
        match event:
            case KPIDefined():
                self.kpis[event.kpi_id] = Kpi(event, due_at=event.defined_at + timedelta(
                    seconds=event.cadence_seconds))
            case KPIReported():
                kpi = self.kpis[event.kpi_id]
                kpi.values.append(event)
                kpi.status = event.status
                kpi.period += 1
                start = event.period_end if event.reported_by_side is None else event.reported_at
                kpi.due_at = start + timedelta(seconds=kpi.definition.cadence_seconds)
            case KPIReportOverdue():
                kpi = self.kpis[event.kpi_id]
                kpi.period = event.period + 1
                kpi.due_at = event.due_at + timedelta(seconds=event.cadence_seconds)
            case KPIAtRisk() | KPIBreached() | KPIRecovered():
                pass  # the status moved with the value
            case KPIReportPublished():
                self.reports[event.report_id] = Report(event)
            case KPIReportAcknowledged():
                self.reports[event.report_id].acknowledged = event
            case KPIReportReviewOverdue():
                self.reports[event.report_id].review_overdue = True
            case _:
                raise TypeError(f"not a KPI book event: {type(event).__name__}")
