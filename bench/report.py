"""Figures, the project's targets, and how they are printed and saved."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.cpu import CpuCost

#: Cores used by other processes above which a benchmark's figures are flagged as disturbed.
NOISY = 0.1
#: Share of CPU time taken by the hypervisor above which a benchmark's figures are flagged.
STOLEN = 0.05


@dataclass(frozen=True)
class Target:
    """A project target: a bound on the median and/or on its ratio to the baseline."""

    text: str
    at_least: float | None = None
    at_most: float | None = None
    min_ratio: float | None = None


@dataclass
class Figure:
    key: str
    name: str
    unit: str  # "events/s", "msgs/s", "ms"
    runs: list[float] = field(default_factory=list)
    baseline: str | None = None  # key of the figure this one is a fraction of
    target: Target | None = None
    notes: list[str] = field(default_factory=list)
    cpu: list[CpuCost] = field(default_factory=list)  # per run, where measured

    def add_run(self, value: float, cpu: CpuCost | None = None) -> None:
        self.runs.append(value)
        if cpu is not None:
            self.cpu.append(cpu)

    def cpu_medians(self) -> dict[str, float]:
        """Median µs of CPU per item by process group, over the runs that measured it."""
        medians = {}
        for part in CPU_PARTS:
            values = [v for cost in self.cpu if (v := getattr(cost, part)) is not None]
            if values:
                medians[part] = statistics.median(values)
        return medians

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan


class Results:
    """The figures of one `bench.run`, in the order they were measured."""

    def __init__(self, environment: dict[str, str]) -> None:
        self.environment = environment
        self.figures: dict[str, Figure] = {}
        self.skipped: dict[str, str] = {}  # benchmark → why it did not run
        self.foreign_load: dict[str, float] = {}  # benchmark → cores other processes used
        self.stolen: dict[str, float] = {}  # benchmark → share of CPU time the hypervisor took

    def add(self, figure: Figure) -> Figure:
        self.figures[figure.key] = figure
        return figure

    def ratio(self, figure: Figure) -> float | None:
        base = self.figures.get(figure.baseline) if figure.baseline else None
        if base is None or not base.runs or not figure.runs or base.median == 0:
            return None
        return figure.median / base.median

    def met(self, figure: Figure) -> bool | None:
        target = figure.target
        if target is None:
            return None
        if not figure.runs:
            return False
        median, ratio = figure.median, self.ratio(figure)
        return all((
            target.at_least is None or median >= target.at_least,
            target.at_most is None or median <= target.at_most,
            target.min_ratio is None or (ratio is not None and ratio >= target.min_ratio),
        ))

    def table(self) -> Table:
        loop = self.environment.get("event_loop", "?")
        table = Table(title=f"Accord benchmarks — {loop}, medians of {self.environment['runs']}")
        table.add_column("figure")
        table.add_column("unit")
        table.add_column("median", justify="right")
        table.add_column("runs", justify="right")
        table.add_column("vs baseline", justify="right")
        table.add_column("CPU µs/item\nthis·PG·MQ", justify="right")
        table.add_column("target")
        for figure in self.figures.values():
            ratio = self.ratio(figure)
            met = self.met(figure)
            verdict = "" if met is None else ("[green]met[/]" if met else "[red]missed[/]")
            target = f"{figure.target.text} {verdict}" if figure.target else ""
            name = figure.name + "".join(f"\n  [dim]{note}[/]" for note in figure.notes)
            table.add_row(name, figure.unit, figure_text(figure.median),
                          " ".join(figure_text(v) for v in figure.runs),
                          f"{ratio:.0%}" if ratio is not None else "", _cpu(figure), target)
        return table

    def print(self, console: Console) -> None:
        console.print(self.table())
        for benchmark, reason in self.skipped.items():
            console.print(f"[yellow]skipped[/] {benchmark}: {reason}")
        busy = {name: cores for name, cores in self.foreign_load.items() if cores >= NOISY}
        for benchmark, cores in busy.items():
            console.print(f"[yellow]noisy[/] {benchmark}: other processes used {cores:.2f} cores"
                          " meanwhile; its figures are pessimistic")
        for benchmark, share in self.stolen.items():
            if share >= STOLEN:
                console.print(f"[yellow]stolen[/] {benchmark}: the hypervisor took {share:.0%} of the CPU"
                              " time meanwhile (a shared host); every figure, CPU per item too, is pessimistic")

    def as_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "figures": [
                {"key": f.key, "name": f.name, "unit": f.unit, "median": _finite(f.median),
                 "runs": [_finite(v) for v in f.runs], "baseline": f.baseline,
                 "ratio_to_baseline": self.ratio(f),
                 "target": f.target.text if f.target else None, "target_met": self.met(f),
                 "notes": f.notes, "cpu_us_per_item": f.cpu_medians()}
                for f in self.figures.values()
            ],
            "skipped": self.skipped,
            "foreign_load_cores": self.foreign_load,
            "cpu_stolen_share": self.stolen,
        }

    def save(self, *paths: Path) -> None:
        text = json.dumps(self.as_json(), indent=2) + "\n"
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def figure_text(value: float) -> str:
    """A figure as the tables print it: thousands separated, small values with two decimals."""
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


CPU_PARTS = ("client", "postgres", "rabbitmq")  # this process (and its helpers), Postgres, RabbitMQ


def cpu_text(medians: dict[str, float]) -> str:
    """µs of CPU per item as "this·PG·MQ" ("-" for a part not measured, "" for none)."""
    if not medians:
        return ""
    return "·".join(f"{medians[part]:.0f}" if part in medians else "-" for part in CPU_PARTS)


def _cpu(figure: Figure) -> str:
    return cpu_text(figure.cpu_medians())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
