"""``accord agreements``: draft an agreement, list and inspect agreements, render the shared document."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markdown import Markdown
from rich.table import Table

from accord_cli.options import Json, api
from accord_cli.output import USAGE, emit_json, fail, key_values, out, short_time, table

app = typer.Typer(help="Create and inspect agreements.", no_args_is_help=True)

#: The keyed parts of an agreement's snapshot, in the order `show` counts them.
PARTS = ("goals", "requirements", "deliverables", "contacts", "procedures", "breakdowns", "scope_changes",
         "disagreements", "checkins")

AsOf = Annotated[datetime | None, typer.Option("--as-of", help="As it was at this time (ISO 8601 with zone).")]
Version = Annotated[int | None, typer.Option("--version", min=1, help="As of this agreement version.")]


def _when(as_of: datetime | None) -> str | None:
    if as_of is not None and as_of.tzinfo is None:
        fail("--as-of needs a time zone, e.g. 2026-03-31T12:00:00+00:00", USAGE)
    return as_of.isoformat() if as_of else None


@app.command()
def create(
    ctx: typer.Context,
    title: Annotated[str, typer.Argument(help="The agreement's title.")],
    client: Annotated[str | None, typer.Option(help="Client organisation id (default: yours).")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider organisation id (default: yours).")] = None,
    summary: Annotated[str, typer.Option(help="A one-paragraph summary.")] = "",
    as_json: Json = False,
) -> None:
    """Draft an agreement between a client and a provider (your organisation is one of them)."""
    if (client is None) == (provider is None):
        fail("give exactly one of --client or --provider: the other side is your own organisation", USAGE)
    calls = api(ctx)
    mine = calls.get("agreements", "/me")["organisation_id"]
    body = {"title": title, "summary": summary, "client_organisation_id": client or mine,
            "provider_organisation_id": provider or mine}
    created = calls.post("agreements", "/agreements", body)
    if as_json:
        emit_json(created)
    else:
        out.print(f"[green]drafted[/] agreement {created['agreement_id']} ({created['status']})")


@app.command("list")
def list_agreements(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="draft, proposed, active, suspended or terminated.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    as_json: Json = False,
) -> None:
    """The agreements your organisation is a party to, newest first."""
    page = api(ctx).get("agreements", "/agreements", status=status, limit=limit)
    if as_json:
        emit_json(page["items"])
        return
    rows = [(a["agreement_id"], a["title"], a["status"], f"v{a['agreement_version']}", _accepted(a),
             short_time(a["updated_at"])) for a in page["items"]]
    out.print(table("Agreements", ("id", "title", "status", "version", "accepted by", "updated"), rows))


def _accepted(summary: dict[str, Any]) -> str:
    sides = [side for side in ("client", "provider") if summary[f"{side}_accepted"]]
    return ", ".join(sides) or "-"


@app.command()
def show(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement's id.")],
    as_of: AsOf = None,
    version: Version = None,
    history: Annotated[int, typer.Option(help="How many of the latest events to list.", min=0)] = 10,
    as_json: Json = False,
) -> None:
    """One agreement: its state, its parts and its latest history."""
    detail = api(ctx).get("agreements", f"/agreements/{agreement_id}", as_of=_when(as_of), version=version,
                          history_limit=None if as_json else history)
    if as_json:
        emit_json(detail)
        return
    snapshot = detail["agreement"]
    out.print(key_values(detail["title"], [
        ("id", detail["agreement_id"]), ("status", detail["status"]),
        ("version", f"agreement v{detail['agreement_version']}, stream {detail['stream_version']}"),
        ("your side", detail["your_side"]),
        ("accepted by", _accepted(detail)),
        ("summary", detail["summary"] or None),
        *[(part.replace("_", " "), _count(snapshot.get(part))) for part in PARTS],
        ("status updates", f"{snapshot.get('status_updates_posted', 0)} posted,"
                           f" {snapshot.get('status_updates_missed', 0)} missed"),
    ]))
    if detail["history"]:
        out.print(_events("Latest events", detail["history"]))


@app.command("history")
def list_history(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement's id.")],
    after: Annotated[int, typer.Option(help="List the events after this one (its number).", min=0)] = 0,
    limit: Annotated[int, typer.Option(help="How many events to list.", min=1, max=500)] = 100,
    types: Annotated[list[str] | None, typer.Option(
        "--type", help="Only events of this type, by name (e.g. StatusUpdatePosted); repeat it for several.")] = None,
    as_json: Json = False,
) -> None:
    """The agreement's events in order, a page at a time (every change either side made)."""
    page = api(ctx).get("agreements", f"/agreements/{agreement_id}/history", after=after, limit=limit, type=types)
    if as_json:
        emit_json(page)
        return
    items = page["items"]
    title = f"{', '.join(types)} events" if types else "Events"
    span = f"{items[0]['sequence']} to {items[-1]['sequence']}" if items else "none"
    out.print(_events(f"{title}: {span} ({page['total']} in all)", items))
    if page["next_after"] is not None:
        out.print(f"more: --after {page['next_after']}")


def _events(title: str, entries: list[dict[str, Any]]) -> Table:
    return table(title, ("#", "event", "actor", "at"), [
        (e["sequence"], e["event_type"].split(".")[2] if e["event_type"].count(".") >= 2 else e["event_type"],
         e["actor"], short_time(e["occurred_at"])) for e in entries])


def _count(part: Any) -> str:
    if not part:
        return "none"
    statuses: dict[str, int] = {}
    for item in part.values() if isinstance(part, dict) else part:
        status = item.get("status") if isinstance(item, dict) else None
        statuses[status or "listed"] = statuses.get(status or "listed", 0) + 1
    if set(statuses) == {"listed"}:
        return str(len(part))
    return f"{len(part)} (" + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")"


@app.command()
def document(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement's id.")],
    as_of: AsOf = None,
    version: Version = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the Markdown to this file.")] = None,
    render: Annotated[bool, typer.Option(help="Render the Markdown in the terminal.")] = False,
    as_json: Json = False,
) -> None:
    """The whole shared agreement as Markdown (with Mermaid flow charts)."""
    markdown = api(ctx).get("agreements", f"/agreements/{agreement_id}/document", as_of=_when(as_of),
                            version=version)
    if as_json:
        emit_json({"agreement_id": agreement_id, "markdown": markdown})
    elif output is not None:
        output.write_text(markdown, encoding="utf-8")
        out.print(f"wrote {output}")
    elif render:
        out.print(Markdown(markdown))
    else:
        typer.echo(markdown, nl=False)
