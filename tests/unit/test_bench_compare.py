"""bench.compare's summary: medians per side, the change, and which side did better per pair."""

from __future__ import annotations

from typing import Any

from bench.compare import summarise


def result(**figures: tuple[str, float]) -> dict[str, Any]:
    return {"figures": [{"key": key, "name": f"({key})", "unit": unit, "runs": [value],
                         "cpu_us_per_item": {"client": value / 100, "rabbitmq": value / 10}}
                        for key, (unit, value) in figures.items()]}


def test_medians_change_and_pairs_won_with_the_direction_of_each_unit() -> None:
    runs = {
        "old": [result(rate=("events/s", 100), p99=("ms", 30), gone=("ms", 1)),
                result(rate=("events/s", 120), p99=("ms", 50)), result(rate=("events/s", 90), p99=("ms", 10))],
        "new": [result(rate=("events/s", 130), p99=("ms", 20)), result(rate=("events/s", 110), p99=("ms", 60)),
                result(rate=("events/s", 150), p99=("ms", 5), added=("ms", 1))],
    }
    rows = {row["key"]: row for row in summarise(runs, "old", "new")}
    assert set(rows) == {"rate", "p99"}  # a figure one side lacks in some run is left out
    rate, p99 = rows["rate"], rows["p99"]
    assert rate["median"] == {"old": 100, "new": 130} and round(rate["change"], 6) == 0.3
    assert rate["changed_won"] == 2 and rate["pairs"] == 3  # more events/s is better: 130>100, 150>90
    assert p99["median"] == {"old": 30, "new": 20} and p99["changed_won"] == 2  # fewer ms is better
    # CPU medians per side and part, for the parts measured ("postgres" was not)
    assert rate["cpu_us"] == {"old": {"client": 1.0, "rabbitmq": 10.0}, "new": {"client": 1.3, "rabbitmq": 13.0}}
