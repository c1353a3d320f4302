"""The health score's arithmetic, checked by hypothesis: bounds, monotonicity in each component,
points adding up to the score, weights, bands, and an explanation for a red score."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from contracts.kpi import CustomerHealthChanged, HealthScoreRecorded
from services.kpi.health import COMPONENTS, DEFAULT_WEIGHTS, HealthInputs, band_of, moved, record, score, worst

unit = st.floats(min_value=0, max_value=1, allow_nan=False)
counts = st.integers(min_value=0, max_value=20)
scores_1_10 = st.integers(min_value=1, max_value=10)
sentiments = st.sampled_from(["positive", "neutral", "negative"])
inputs = st.builds(
    HealthInputs,
    kpi_attainment=st.none() | unit, sla_attainment=st.none() | unit, overdue_queries=counts,
    unacknowledged_reports=counts, open_breakdowns=counts,
    checkin_scores=st.none() | st.tuples(scores_1_10, scores_1_10),
    checkin_sentiments=st.none() | st.tuples(sentiments, sentiments))
weights = st.fixed_dictionaries({name: st.floats(min_value=0, max_value=100, allow_nan=False) for name in COMPONENTS})
RANK = {"negative": 0, "neutral": 1, "positive": 2}


@given(inputs, weights)
def test_score_is_bounded_and_is_the_sum_of_its_points(health: HealthInputs, w: dict[Any, float]) -> None:
    result = score(health, w)
    assert 0 <= result.score <= 100
    assert result.band == band_of(result.score)
    counted = [c for c in result.components if c.value is not None]
    if sum(c.weight for c in counted) > 0:
        assert abs(sum(c.points for c in result.components) - result.score) < 0.01
        assert abs(sum(c.points + c.shortfall for c in counted) - 100) < 1e-6
    for c in result.components:
        assert c.value is not None or c.points == c.shortfall == 0


def _better(health: HealthInputs, data: st.DataObject) -> HealthInputs:
    """`health` improved in one component (or unchanged)."""
    field = data.draw(st.sampled_from([
        "kpi_attainment", "sla_attainment", "overdue_queries", "unacknowledged_reports", "open_breakdowns",
        "checkin_scores", "checkin_sentiments"]))
    value = getattr(health, field)
    better: Any
    if field in ("kpi_attainment", "sla_attainment"):
        better = None if value is None else data.draw(st.floats(min_value=value, max_value=1))
    elif field in ("overdue_queries", "unacknowledged_reports", "open_breakdowns"):
        better = data.draw(st.integers(min_value=0, max_value=value))
    elif field == "checkin_scores":
        better = None if value is None else tuple(data.draw(st.integers(min_value=v, max_value=10)) for v in value)
    else:
        better = None if value is None else tuple(
            data.draw(st.sampled_from([s for s in RANK if RANK[s] >= RANK[v]])) for v in value)
    return dataclasses.replace(health, **{field: better})


@given(inputs, weights, st.data())
def test_score_never_drops_when_one_component_improves(health: HealthInputs, w: dict[Any, float],
                                                       data: st.DataObject) -> None:
    assert score(_better(health, data), w).score >= score(health, w).score - 1e-9


@given(inputs)
def test_default_weights_sum_to_100_and_equal_weights_scale_away(health: HealthInputs) -> None:
    assert sum(DEFAULT_WEIGHTS.values()) == 100
    doubled = {name: 2 * w for name, w in DEFAULT_WEIGHTS.items()}
    assert abs(score(health, doubled).score - score(health).score) < 0.011


@given(st.floats(min_value=0, max_value=100, allow_nan=False))
def test_bands(value: float) -> None:
    assert band_of(value) == ("green" if value >= 70 else "yellow" if value >= 40 else "red")


def test_missing_data_is_left_out_and_all_best_is_100() -> None:
    assert score(HealthInputs()).score == 100
    best = HealthInputs(kpi_attainment=1, sla_attainment=1, checkin_scores=(10, 10),
                        checkin_sentiments=("positive", "positive"))
    assert score(best).score == 100 and score(best).band == "green"
    only_counts = score(HealthInputs(open_breakdowns=3))  # the breakdowns cost 10 of 30 counted points
    assert abs(only_counts.score - 100 * 20 / 30) < 0.01
    assert score(HealthInputs(), {name: 0 for name in COMPONENTS}).score == 100


def test_a_red_score_explains_itself() -> None:
    before = score(HealthInputs(kpi_attainment=1, sla_attainment=1, checkin_scores=(8, 8),
                                checkin_sentiments=("positive", "positive")))
    after = score(HealthInputs(kpi_attainment=0, sla_attainment=0.2, open_breakdowns=3, overdue_queries=5,
                               checkin_scores=(2, 3), checkin_sentiments=("negative", "neutral")))
    assert before.band == "green" and after.band == "red"
    assert [c.component for c in worst(after)] == ["kpi_attainment", "sla_attainment", "checkin_scores"]
    assert moved(before.components, after.components)[0] == "kpi_attainment"
    assert set(moved(before.components, after.components)) == set(COMPONENTS) - {"unacknowledged_reports"}
    assert moved(after.components, after.components) == []


def test_recording_only_what_moved_and_band_changes() -> None:
    agreement, now = uuid.uuid4(), datetime(2026, 3, 1, tzinfo=UTC)
    first = record(agreement, None, score(HealthInputs()), cause="CheckInHeld", now=now)
    assert [type(e) for e in first] == [HealthScoreRecorded, CustomerHealthChanged]
    recorded = first[0]
    assert isinstance(recorded, HealthScoreRecorded)
    assert record(agreement, recorded, score(HealthInputs()), cause="again", now=now) == []
    slightly = record(agreement, recorded, score(HealthInputs(open_breakdowns=1)), cause="BreakdownReported", now=now)
    assert [type(e) for e in slightly] == [HealthScoreRecorded]
    assert slightly[0].moved == ["open_breakdowns"]  # type: ignore[attr-defined]
    red = record(agreement, recorded, score(HealthInputs(open_breakdowns=3, overdue_queries=5,
                                                         unacknowledged_reports=3)), cause="x", now=now)
    changed = red[1]
    assert isinstance(changed, CustomerHealthChanged)
    assert (changed.from_band, changed.to_band, changed.previous_score) == ("green", "red", 100)
