"""``accord kpi``: report a KPI value, and see an agreement's KPIs and customer health."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.text import Text

from accord_cli.options import Json, api
from accord_cli.output import USAGE, emit_json, fail, key_values, out, short_time, table

app = typer.Typer(help="KPI values and customer health.", no_args_is_help=True)


def _aware(value: datetime | None, option: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        fail(f"{option} needs a time zone, e.g. 2026-03-01T00:00:00+00:00", USAGE)
    return value


@app.command()
def report(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement.")],
    kpi_id: Annotated[str, typer.Argument(help="The KPI (see `accord kpi list`).")],
    value: Annotated[float, typer.Argument(help="The measured value, in the KPI's unit.")],
    period_start: Annotated[datetime | None, typer.Option(help="Start of the period (default: 30 days ago).")]
    = None,
    period_end: Annotated[datetime | None, typer.Option(help="End of the period (default: now).")] = None,
    evidence: Annotated[str, typer.Option(help="Where the evidence is (a URL).")] = "",
    notes: Annotated[str, typer.Option(help="Notes on the value.")] = "",
    as_json: Json = False,
) -> None:
    """Report a KPI value for a period (the provider's side reports)."""
    end = _aware(period_end, "--period-end") or datetime.now(UTC)
    start = _aware(period_start, "--period-start") or end - timedelta(days=30)
    created = api(ctx).post("kpi", f"/agreements/{agreement_id}/kpis/{kpi_id}/values", {
        "value": value, "period_start": start.isoformat(), "period_end": end.isoformat(), "evidence": evidence,
        "notes": notes})
    if as_json:
        emit_json(created)
    else:
        out.print(f"[green]reported[/] {value:g} for KPI {kpi_id} (value {created['id']})")


@app.command("list")
def list_kpis(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement.")],
    as_json: Json = False,
) -> None:
    """An agreement's KPIs with their thresholds and latest values."""
    kpis = api(ctx).get("kpi", f"/agreements/{agreement_id}/kpis")
    if as_json:
        emit_json(kpis)
        return
    out.print(table("KPIs", ("id", "name", "target", "warning", "breach", "last value", "status"), [
        (k.get("kpi_id"), k.get("name"), _with_unit(k, "target"), _with_unit(k, "warning_threshold"),
         _with_unit(k, "breach_threshold"), _with_unit(k, "last_value"), k.get("status")) for k in kpis]))


def _with_unit(kpi: dict[str, Any], field: str) -> str | None:
    value = kpi.get(field)
    return None if value is None else f"{value:g} {kpi.get('unit', '')}".rstrip()


BAND_STYLE = {"green": "green", "yellow": "yellow", "red": "bold red"}


@app.command()
def health(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement.")],
    history: Annotated[int, typer.Option(help="How many of the latest scores to list (0: none).", min=0,
                                         max=10_000)] = 0,
    as_json: Json = False,
) -> None:
    """The agreement's customer-health score now, component by component, its KPIs, and (with
    --history) how the score moved."""
    calls = api(ctx)
    score = calls.get("kpi", f"/agreements/{agreement_id}/health")
    kpis = calls.get("kpi", f"/agreements/{agreement_id}/kpis")
    moves = calls.get("kpi", f"/agreements/{agreement_id}/health/history", latest=history) if history else []
    if as_json:
        emit_json({"health": score, "kpis": kpis, **({"history": moves} if history else {})})
        return
    style = BAND_STYLE.get(score["band"], "bold")
    out.print(key_values("Customer health", [
        ("score", f"{score['score']:.1f}"), ("band", Text(score["band"], style=style)), ("cause", score["cause"]),
        ("recorded", short_time(score["recorded_at"]))]))
    out.print(table("Components", ("component", "health", "weight", "points", "shortfall", "detail"), [
        (c["component"].replace("_", " "), "no data" if c.get("value") is None else f"{c['value']:.0%}",
         _fmt(c.get("weight")), _fmt(c.get("points")), _fmt(c.get("shortfall")), c.get("detail"))
        for c in score["components"]]))
    if kpis:
        out.print(table("KPIs", ("name", "last value", "status"), [
            (k.get("name"), _with_unit(k, "last_value"), k.get("status")) for k in kpis]))
    if moves:
        out.print(table("Latest scores", ("recorded", "score", "band", "moved by", "cause"), [
            (short_time(m["recorded_at"]), f"{m['score']:.1f}", Text(m["band"], style=BAND_STYLE.get(m["band"], "")),
             ", ".join(name.replace("_", " ") for name in m["moved"]) or None, m["cause"]) for m in moves]))


def _fmt(value: Any) -> str | None:
    return f"{value:.1f}" if isinstance(value, float) else None if value is None else str(value)
