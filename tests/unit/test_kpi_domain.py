"""The KPI book: who may do what, direction-aware threshold crossings, reporting clocks, reports."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts.kpi import (
    KPIAtRisk,
    KPIBreached,
    KPIRecovered,
    KPIReportAcknowledged,
    KPIReported,
    KPIReportOverdue,
    KPIReportPublished,
    KPIReportReviewOverdue,
)
from services.kpi.domain import InvalidCommand, InvalidTransition, KpiBook, Thresholds, UnknownPart, WrongSide

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def book_with_kpi(direction: str = "higher_is_better", source: str = "provider") -> tuple[KpiBook, uuid.UUID]:
    book, kpi_id = KpiBook(uuid.uuid4()), uuid.uuid4()
    high = direction == "higher_is_better"
    book.define("client", kpi_id=kpi_id, name="On-time close", unit="%", direction=direction,  # type: ignore[arg-type]
                target=95 if high else 2, warning=90 if high else 3, breach=80 if high else 5, cadence_seconds=3600,
                source=source, now=T0, metric="provider.answered_within_sla_share" if source == "accord" else None)  # type: ignore[arg-type]
    book.pending.clear()
    return book, kpi_id


def report(book: KpiBook, kpi_id: uuid.UUID, value: float, at: datetime = T0 + HOUR) -> list[type]:
    book.pending.clear()
    book.report_value("provider", kpi_id=kpi_id, value=value, period_start=at - HOUR, period_end=at, now=at)
    return [type(e) for e in book.pending]


@pytest.mark.parametrize(("direction", "values", "expected"), [
    ("higher_is_better", [96, 85, 70, 85, 99],
     [[], [KPIAtRisk], [KPIBreached], [KPIRecovered], [KPIRecovered]]),
    ("lower_is_better", [1, 4, 9, 2, 2],
     [[], [KPIAtRisk], [KPIBreached], [KPIRecovered], []]),
])
def test_crossings_follow_the_direction(direction: str, values: list[float], expected: list[list[type]]) -> None:
    book, kpi_id = book_with_kpi(direction)
    for value, crossing in zip(values, expected, strict=True):
        assert report(book, kpi_id, value)[1:] == crossing


def test_first_value_may_breach_and_recovery_names_both_statuses() -> None:
    book, kpi_id = book_with_kpi()
    assert report(book, kpi_id, 50) == [KPIReported, KPIBreached]
    breached = book.pending[1]
    assert isinstance(breached, KPIBreached) and breached.threshold == 80
    report(book, kpi_id, 85)
    recovered = book.pending[1]
    assert isinstance(recovered, KPIRecovered)
    assert (recovered.from_status, recovered.to_status, recovered.threshold) == ("breached", "at_risk", 80)


def test_a_value_on_a_threshold_meets_it() -> None:
    t = Thresholds("higher_is_better", 95, 90, 80)
    assert (t.status(90), t.status(80), t.status(79.9)) == ("on_target", "at_risk", "breached")
    t = Thresholds("lower_is_better", 2, 3, 5)
    assert (t.status(3), t.status(5), t.status(5.1)) == ("on_target", "at_risk", "breached")


def test_definitions_are_checked() -> None:
    book, _ = book_with_kpi()
    with pytest.raises(InvalidCommand, match="breach ≤ warning ≤ target"):
        book.define("provider", kpi_id=uuid.uuid4(), name="x", unit="%", direction="higher_is_better", target=1,
                    warning=2, breach=3, cadence_seconds=60, source="provider", now=T0)
    with pytest.raises(InvalidTransition, match="already has a KPI named"):
        book.define("provider", kpi_id=uuid.uuid4(), name="on-time CLOSE", unit="%", direction="higher_is_better",
                    target=3, warning=2, breach=1, cadence_seconds=60, source="provider", now=T0)
    with pytest.raises(InvalidCommand, match="names its metric"):
        book.define("provider", kpi_id=uuid.uuid4(), name="y", unit="%", direction="higher_is_better", target=3,
                    warning=2, breach=1, cadence_seconds=60, source="accord", now=T0)


def test_only_the_provider_reports_and_accord_kpis_refuse_reports() -> None:
    book, kpi_id = book_with_kpi()
    with pytest.raises(WrongSide, match="only the provider reports KPI values"):
        book.report_value("client", kpi_id=kpi_id, value=1, period_start=T0, period_end=T0 + HOUR, now=T0)
    with pytest.raises(UnknownPart):
        book.report_value("provider", kpi_id=uuid.uuid4(), value=1, period_start=T0, period_end=T0 + HOUR, now=T0)
    with pytest.raises(InvalidCommand, match="must end after"):
        book.report_value("provider", kpi_id=kpi_id, value=1, period_start=T0, period_end=T0, now=T0)
    accord, accord_kpi = book_with_kpi(source="accord")
    with pytest.raises(InvalidTransition, match="computed by Accord"):
        accord.report_value("provider", kpi_id=accord_kpi, value=1, period_start=T0, period_end=T0 + HOUR, now=T0)
    accord.report_value(None, kpi_id=accord_kpi, value=0.99, period_start=T0, period_end=T0 + HOUR, now=T0 + HOUR)
    assert accord.clocks()[accord_kpi] == (2, T0 + 2 * HOUR)


def test_the_reporting_clock_restarts_on_a_value_and_overdue_is_recorded_once_per_period() -> None:
    book, kpi_id = book_with_kpi()
    assert book.clocks()[kpi_id] == (1, T0 + HOUR)
    assert book.record_report_overdue(kpi_id=kpi_id, period=1)
    overdue = book.pending[-1]
    assert isinstance(overdue, KPIReportOverdue) and overdue.due_at == T0 + HOUR
    assert book.clocks()[kpi_id] == (2, T0 + 2 * HOUR)
    assert not book.record_report_overdue(kpi_id=kpi_id, period=1)  # stale timer
    report(book, kpi_id, 96, at=T0 + 90 * timedelta(minutes=1))
    assert book.clocks()[kpi_id] == (3, T0 + 150 * timedelta(minutes=1))
    assert not book.record_report_overdue(kpi_id=kpi_id, period=2)


def test_reports_are_published_by_the_provider_and_acknowledged_by_the_client() -> None:
    book, kpi_id = book_with_kpi()
    report(book, kpi_id, 85)
    report_id = uuid.uuid4()
    with pytest.raises(WrongSide, match="only the provider publishes KPI reports"):
        book.publish_report("client", report_id=report_id, title="March", period_start=T0, period_end=T0 + 2 * HOUR,
                            narrative="n", kpi_ids=[], review_seconds=60, now=T0 + 2 * HOUR)
    book.pending.clear()
    book.publish_report("provider", report_id=report_id, title="March", period_start=T0, period_end=T0 + 2 * HOUR,
                        narrative="Close slipped", kpi_ids=[], review_seconds=60, now=T0 + 2 * HOUR)
    published = book.pending[-1]
    assert isinstance(published, KPIReportPublished)
    assert [(k.value, k.status) for k in published.kpis] == [(85, "at_risk")]
    assert published.review_due_at == T0 + 2 * HOUR + timedelta(seconds=60)
    with pytest.raises(WrongSide, match="only the client acknowledges KPI reports"):
        book.acknowledge_report("provider", report_id=report_id, now=T0 + 3 * HOUR)
    assert book.record_review_overdue(report_id=report_id)
    assert isinstance(book.pending[-1], KPIReportReviewOverdue)
    assert not book.record_review_overdue(report_id=report_id)
    assert book.overdue_unacknowledged_reports() == 1
    book.acknowledge_report("client", report_id=report_id, now=T0 + 3 * HOUR, comments="Why?", questions=["BD5?"])
    acknowledged = book.pending[-1]
    assert isinstance(acknowledged, KPIReportAcknowledged)
    assert (acknowledged.delay_seconds, acknowledged.late) == (3600, True)
    assert book.overdue_unacknowledged_reports() == 0
    with pytest.raises(InvalidTransition, match="already acknowledged"):
        book.acknowledge_report("client", report_id=report_id, now=T0 + 3 * HOUR)


def test_replay_rebuilds_the_same_state() -> None:
    book, kpi_id = book_with_kpi()
    history = [*book.pending]
    for value in (96, 70):
        report(book, kpi_id, value)
        history += book.pending
    book.record_report_overdue(kpi_id=kpi_id, period=3)
    history.append(book.pending[-1])
    definition = KpiBook(book.agreement_id)
    definition.define("client", kpi_id=kpi_id, name="On-time close", unit="%", direction="higher_is_better",
                      target=95, warning=90, breach=80, cadence_seconds=3600, source="provider", now=T0)
    replayed = KpiBook.replay(book.agreement_id, [*definition.pending, *history])
    assert replayed.clocks() == book.clocks()
    assert replayed.kpis[kpi_id].status == "breached" and replayed.kpi_attainment() == 0.0
