"""Compare two versions of Accord by benchmarks run in alternation: before and after a change.

    .venv/bin/python -m bench.compare BASE [CHANGED] [--only f] [--pairs 6] [--quick]

BASE and CHANGED are git revisions; CHANGED defaults to ``.``, this checkout as it is
(uncommitted changes included). Each revision is checked out in a temporary worktree, and
`bench.run` runs there (``--only``, one run) with this interpreter, once per side in each
pair, the order swapped from one pair to the next (A B, B A, A B…), so that a machine whose
speed drifts, as the shared virtual machines here do by up to half within an hour, slows
both sides alike. The number of pairs is even, so that each side runs first as often as the
other (in one set of five pairs of (f) here, the first run of each pair made the higher
sustained rate every time, and an odd count gives one side that place once more).

Prints each figure's runs and median per side, the change of the medians, and in how many
pairs the changed side did better (``--output FILE``: the same as JSON).

A revision is compared with the benchmarks *it* has: a figure one side lacks is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import CPU_PARTS, cpu_text, figure_text

ROOT = Path(__file__).resolve().parent.parent
HERE = "."  # this checkout as it is
LOWER_IS_BETTER = ("ms", "µs/request")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def checked_out(revisions: list[str]) -> Iterator[dict[str, Path]]:
    """Each revision in a temporary worktree (``.``: this checkout), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="accord-compare-") as scratch:
        places: dict[str, Path] = {}
        try:
            for n, revision in enumerate(revisions):
                if revision == HERE:
                    places[revision] = ROOT
                    continue
                place = Path(scratch) / f"side{n}"
                _git("worktree", "add", "--detach", str(place), _git("rev-parse", "--verify", revision))
                places[revision] = place
            yield places
        finally:
            for revision, place in places.items():
                if revision != HERE:
                    subprocess.run(["git", "worktree", "remove", "--force", str(place)], cwd=ROOT, check=False)


def run_once(place: Path, only: str, quick: bool, output: Path) -> dict[str, Any]:
    """One `bench.run` of the code at `place` (its directory first on the module path)."""
    command = [sys.executable, "-m", "bench.run", "--only", only, "--runs", "1", *(["--quick"] if quick else [])]
    if "--output" not in (place / "bench" / "run.py").read_text():
        output = place / "bench" / "results" / "latest.json"  # a revision before --output (a worktree's own)
    else:
        command += ["--output", str(output)]
    subprocess.run(command, cwd=place, check=True, stdout=subprocess.DEVNULL)
    results: dict[str, Any] = json.loads(output.read_text())
    ran = results["environment"]["commit"]
    expected = _git("rev-parse", "--short", "HEAD", cwd=place)
    if not ran.startswith(expected):
        raise SystemExit(f"{place} holds {expected}, but the benchmark ran the code of {ran}")
    return results


def better(unit: str, changed: float, base: float) -> bool:
    return changed < base if unit in LOWER_IS_BETTER else changed > base


def summarise(runs: dict[str, list[dict[str, Any]]], base: str, changed: str) -> list[dict[str, Any]]:
    """Per figure both sides' runs, medians, CPU medians, the change and the pairs won."""
    rows = []
    for figure in runs[base][0]["figures"]:
        key = figure["key"]
        sides = {side: [next((f for f in result["figures"] if f["key"] == key), None) for result in runs[side]]
                 for side in (base, changed)}
        if any(f is None for found in sides.values() for f in found):
            continue
        values = {side: [f["runs"][0] for f in found if f is not None] for side, found in sides.items()}
        cpu = {side: {part: statistics.median(measured) for part in CPU_PARTS
                      if (measured := [f["cpu_us_per_item"][part] for f in found
                                       if f is not None and part in f.get("cpu_us_per_item", {})])}
               for side, found in sides.items()}
        medians = {side: statistics.median(v) for side, v in values.items()}
        won = sum(better(figure["unit"], c, b) for b, c in zip(values[base], values[changed], strict=True))
        rows.append({"key": key, "name": figure["name"], "unit": figure["unit"], "runs": values,
                     "median": medians, "cpu_us": cpu, "changed_won": won, "pairs": len(values[base]),
                     "change": medians[changed] / medians[base] - 1 if medians[base] else None})
    return rows


def print_table(rows: list[dict[str, Any]], base: str, changed: str, console: Console) -> None:
    table = Table(title=f"{base} → {changed}, alternated runs, medians")
    for column in ("figure", "unit", f"{base}: median · runs", f"{changed}: median · runs", "change",
                   f"{changed} better", "CPU µs/item this·PG·MQ"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for row in rows:
        def cell(side: str, row: dict[str, Any] = row) -> str:
            return f"{figure_text(row['median'][side])} · " + " ".join(figure_text(v) for v in row["runs"][side])
        change = "" if row["change"] is None else f"{row['change']:+.0%}"
        table.add_row(row["name"], row["unit"], cell(base), cell(changed), change,
                      f"{row['changed_won']} of {row['pairs']}",
                      f"{cpu_text(row['cpu_us'][base])} → {cpu_text(row['cpu_us'][changed])}"
                      if row["cpu_us"][base] else "")
    console.print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the revision before the change")
    parser.add_argument("changed", nargs="?", default=HERE, help="the revision after it (default: this checkout)")
    parser.add_argument("--only", default="e", help="benchmarks to run, as bench.run takes them (default: e)")
    parser.add_argument("--pairs", type=int, default=6, help="runs of each side, an even number (default: 6)")
    parser.add_argument("--quick", action="store_true", help="bench.run's shorter windows")
    parser.add_argument("--output", type=Path, help="also write the figures (JSON) to this file")
    args = parser.parse_args()
    if args.base == args.changed:
        parser.error("compare two different revisions")
    if args.pairs < 2 or args.pairs % 2:
        parser.error("--pairs must be an even number (each side runs first in half of the pairs)")
    console = Console(width=None if sys.stdout.isatty() else 150)
    runs: dict[str, list[dict[str, Any]]] = {args.base: [], args.changed: []}
    with checked_out([args.base, args.changed]) as places, tempfile.TemporaryDirectory() as scratch:
        for pair in range(args.pairs):
            order = [args.base, args.changed] if pair % 2 == 0 else [args.changed, args.base]
            for side in order:
                console.log(f"pair {pair + 1} of {args.pairs}: {side} ({args.only})")
                output = Path(scratch) / f"{pair}-{order.index(side)}.json"
                runs[side].append(run_once(places[side], args.only, args.quick, output))
    rows = summarise(runs, args.base, args.changed)
    print_table(rows, args.base, args.changed, console)
    commits = {side: [result["environment"]["commit"] for result in results] for side, results in runs.items()}
    if args.output:
        args.output.write_text(json.dumps({"base": args.base, "changed": args.changed, "only": args.only,
                                           "commits": commits, "figures": rows}, indent=2) + "\n")
        console.print(f"saved to {args.output}")


if __name__ == "__main__":
    cli()
