"""Customer health: a 0-100 score from weighted components, its band, and why it is what it is.

Each component is normalised to 0 (worst) … 1 (best):

==========================  =================================================================
kpi_attainment              mean over KPIs of their latest status: on target 1, at risk ½, breached 0
sla_attainment              share of answered queries answered within their SLA (both sides)
overdue_queries             1 - n / 5 for n queries overdue and unanswered (0 from 5 on)
unacknowledged_reports      1 - n / 3 for n KPI reports past their review window unacknowledged
open_breakdowns             1 - n / 3 for n process breakdowns reported and not resolved
checkin_scores              the latest check-in's two scores (1-10), averaged, as (s - 1) / 9
checkin_sentiment           the latest check-in's two sentiments: positive 1, neutral ½, negative 0
==========================  =================================================================

The score is ``100 * sum(w * v) / sum(w)`` over the components that have data: a component without
any (no KPI values yet, no answered query, no check-in) says nothing good or bad, so it is left
out and the others' weights scale up. With no weight left at all the score is 100. Weights are
configurable per agreement (`HealthWeightsSet`); `DEFAULT_WEIGHTS` sum to 100, so by default a
weight reads as "points out of 100".

Bands: green at 70 or more, yellow at 40 or more, red below 40. Every component reports the
points it adds and its shortfall (the points it costs), so a red score explains itself.
Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import get_args
from uuid import UUID

from contracts import EventData
from contracts.agreements import Sentiment
from contracts.kpi import Band, CustomerHealthChanged, HealthComponent, HealthComponentName, HealthScoreRecorded

COMPONENTS: tuple[HealthComponentName, ...] = get_args(HealthComponentName)
DEFAULT_WEIGHTS: Mapping[HealthComponentName, float] = {
    "kpi_attainment": 25, "sla_attainment": 20, "overdue_queries": 10, "unacknowledged_reports": 10,
    "open_breakdowns": 10, "checkin_scores": 15, "checkin_sentiment": 10,
}
#: A count at or above its cap scores 0.
CAPS: Mapping[HealthComponentName, int] = {"overdue_queries": 5, "unacknowledged_reports": 3, "open_breakdowns": 3}
GREEN, YELLOW = 70.0, 40.0
SENTIMENT: Mapping[Sentiment, float] = {"positive": 1.0, "neutral": 0.5, "negative": 0.0}


@dataclass(frozen=True)
class HealthInputs:
    """What the score is computed from (raw, before normalisation)."""

    kpi_attainment: float | None = None  # 0..1
    sla_attainment: float | None = None  # 0..1
    overdue_queries: int = 0
    unacknowledged_reports: int = 0
    open_breakdowns: int = 0
    checkin_scores: tuple[int, int] | None = None  # client, provider: 1..10
    checkin_sentiments: tuple[Sentiment, Sentiment] | None = None


@dataclass(frozen=True)
class HealthScore:
    score: float
    band: Band
    components: list[HealthComponent]

    def component(self, name: HealthComponentName) -> HealthComponent:
        return next(c for c in self.components if c.component == name)


def band_of(score: float) -> Band:
    if score >= GREEN:
        return "green"
    return "yellow" if score >= YELLOW else "red"


def weights_with(overrides: Mapping[HealthComponentName, float]) -> dict[HealthComponentName, float]:
    """The default weights with an agreement's own on top."""
    merged = dict(DEFAULT_WEIGHTS)
    merged.update(overrides)
    if any(w < 0 for w in merged.values()):
        raise ValueError("health weights must not be negative")
    return merged


def _count(n: int, cap: int) -> float:
    return max(0.0, 1.0 - n / cap)


def normalise(inputs: HealthInputs) -> dict[HealthComponentName, tuple[float | None, str]]:
    """Each component's value in 0..1 (None: no data) with a short human reading of it."""
    result: dict[HealthComponentName, tuple[float | None, str]] = {}
    kpi = inputs.kpi_attainment
    result["kpi_attainment"] = (None, "no KPI values yet") if kpi is None else (
        _unit(kpi), f"KPI attainment {kpi:.0%}")
    sla = inputs.sla_attainment
    result["sla_attainment"] = (None, "no answered queries") if sla is None else (
        _unit(sla), f"{sla:.0%} of queries answered within SLA")
    result["overdue_queries"] = (_count(inputs.overdue_queries, CAPS["overdue_queries"]),
                                 f"{inputs.overdue_queries} queries overdue")
    result["unacknowledged_reports"] = (_count(inputs.unacknowledged_reports, CAPS["unacknowledged_reports"]),
                                        f"{inputs.unacknowledged_reports} reports unacknowledged past review")
    result["open_breakdowns"] = (_count(inputs.open_breakdowns, CAPS["open_breakdowns"]),
                                 f"{inputs.open_breakdowns} process breakdowns open")
    if inputs.checkin_scores is None:
        result["checkin_scores"] = (None, "no check-in yet")
    else:
        client, provider = inputs.checkin_scores
        result["checkin_scores"] = (_unit(((client + provider) / 2 - 1) / 9),
                                    f"latest check-in: client {client}/10, provider {provider}/10")
    if inputs.checkin_sentiments is None:
        result["checkin_sentiment"] = (None, "no check-in yet")
    else:
        client_s, provider_s = inputs.checkin_sentiments
        result["checkin_sentiment"] = ((SENTIMENT[client_s] + SENTIMENT[provider_s]) / 2,
                                       f"latest check-in: client {client_s}, provider {provider_s}")
    return result


def _unit(value: float) -> float:
    return max(0.0, min(1.0, value))


def score(inputs: HealthInputs, weights: Mapping[HealthComponentName, float] = DEFAULT_WEIGHTS) -> HealthScore:
    """The health score of `inputs` under `weights` (missing weights: the defaults)."""
    merged = weights_with(weights)
    values = normalise(inputs)
    counted = sum(merged[name] for name, (value, _) in values.items() if value is not None)
    components = []
    for name in COMPONENTS:
        value, detail = values[name]
        share = 100 * merged[name] / counted if value is not None and counted > 0 else 0.0
        points = share * value if value is not None else 0.0
        components.append(HealthComponent(
            component=name, value=value, weight=merged[name], points=_clamp(points),
            shortfall=_clamp(share - points), detail=detail))
    total = 100.0 if counted == 0 else _clamp(round(sum(c.points for c in components), 2))
    return HealthScore(total, band_of(total), components)


def _clamp(points: float) -> float:
    return max(0.0, min(100.0, points))


def moved(before: Sequence[HealthComponent], after: Sequence[HealthComponent],
          tolerance: float = 1e-9) -> list[HealthComponentName]:
    """The components whose value changed (or gained or lost its data) from `before` to `after`,
    the biggest move in points first. Components whose points shifted only because another one
    gained or lost its data did not move."""
    old = {c.component: c for c in before}
    changes: list[tuple[float, HealthComponentName]] = []
    for component in after:
        previous = old.get(component.component)
        was = previous.value if previous is not None else None
        now = component.value
        if (was is None) != (now is None) or (was is not None and now is not None and abs(was - now) > tolerance):
            delta = abs(component.points - (previous.points if previous is not None else 0.0))
            changes.append((delta, component.component))
    return [name for _, name in sorted(changes, key=lambda change: -change[0])]


def worst(result: HealthScore, n: int = 3) -> list[HealthComponent]:
    """The components costing the most points: what makes a red score red."""
    return sorted((c for c in result.components if c.shortfall > 0), key=lambda c: -c.shortfall)[:n]


def record(agreement_id: UUID, previous: HealthScoreRecorded | None, result: HealthScore, *, cause: str,
           now: datetime) -> list[EventData]:
    """The events a new evaluation makes: none if nothing moved, else `HealthScoreRecorded` with the
    components that moved, and `CustomerHealthChanged` if the band changed (or is the first one)."""
    before = previous.components if previous else []
    changed = moved(before, result.components)
    if previous is not None and not changed and previous.score == result.score:
        return []
    events: list[EventData] = [HealthScoreRecorded(
        agreement_id=agreement_id, score=result.score, band=result.band, components=result.components,
        moved=changed, cause=cause[:200], recorded_at=now)]
    if previous is None or previous.band != result.band:
        events.append(CustomerHealthChanged(
            agreement_id=agreement_id, from_band=previous.band if previous else None, to_band=result.band,
            score=result.score, previous_score=previous.score if previous else None, moved=changed,
            changed_at=now))
    return events
