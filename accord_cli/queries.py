"""``accord queries``: raise a query on an agreement, answer one, list them with their SLA clocks."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from accord_cli.options import Json, api
from accord_cli.output import USAGE, emit_json, fail, key_values, out, short_time, table

app = typer.Typer(help="Raise, answer and list queries (questions on SLA clocks).", no_args_is_help=True)

Priority = Annotated[str, typer.Option(help="low, normal, high or urgent.")]


@app.command("raise")
def raise_query(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement the query is about.")],
    subject: Annotated[str, typer.Argument(help="One line.")],
    body: Annotated[str, typer.Option("--body", "-b", help="The question (default: the subject).")] = "",
    priority: Priority = "normal",
    to_role: Annotated[str | None, typer.Option("--to-role", help="The addressee's role, e.g. 'service manager'.")]
    = None,
    as_json: Json = False,
) -> None:
    """Raise a query to the other side; its SLA clocks start now."""
    raised = api(ctx).post("queries", f"/agreements/{agreement_id}/queries", {
        "priority": priority, "subject": subject, "body": body or subject, "addressee_role": to_role})
    if as_json:
        emit_json(raised)
    else:
        out.print(f"[green]raised[/] query {raised['query_id']} ({raised['status']}); "
                  f"next deadline {short_time(raised['next_deadline_at'])}")


@app.command()
def answer(
    ctx: typer.Context,
    query_id: Annotated[str, typer.Argument(help="The query's id.")],
    text: Annotated[str, typer.Argument(help="The answer.")],
    as_json: Json = False,
) -> None:
    """Answer a query addressed to your side (stops its first-response clock)."""
    answered = api(ctx).post("queries", f"/queries/{query_id}/answer", {"answer": text})
    if as_json:
        emit_json(answered)
    else:
        out.print(f"[green]answered[/] query {answered['query_id']} ({answered['status']})")


@app.command("list")
def list_queries(
    ctx: typer.Context,
    agreement_id: Annotated[str, typer.Argument(help="The agreement.")],
    status: Annotated[str | None, typer.Option(help="A status, or 'unfinished'.")] = None,
    side: Annotated[str | None, typer.Option(help="Raised by: client or provider.")] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal, high or urgent.")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue queries.")] = False,
    at_risk: Annotated[bool, typer.Option("--at-risk", help="Only queries at risk of going overdue.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    as_json: Json = False,
) -> None:
    """An agreement's queries, newest first, with their deadlines."""
    if overdue and at_risk:
        fail("--overdue and --at-risk exclude each other", USAGE)
    if (overdue or at_risk) and status:
        fail("--status does not combine with --overdue or --at-risk", USAGE)
    path = f"/agreements/{agreement_id}/queries" + ("/overdue" if overdue else "/at-risk" if at_risk else "")
    page = api(ctx).get("queries", path, status=status, side=side, priority=priority, limit=limit)
    if as_json:
        emit_json(page)
        return
    rows = [(q["query_id"], q["subject"], q["priority"], f"{q['raised_by_side']} → {q['addressed_to_side']}",
             q["status"], _flags(q), short_time(q["next_deadline_at"])) for q in page["items"]]
    out.print(table(f"Queries ({page['total']})", ("id", "subject", "priority", "from → to", "status", "SLA",
                                                   "next deadline"), rows))


def _flags(query: dict[str, Any]) -> str:
    flags = [name for name in ("overdue", "breached", "at_risk") if query.get(name)]
    return ", ".join(f.replace("_", " ") for f in flags) or "ok"


@app.command()
def show(
    ctx: typer.Context,
    query_id: Annotated[str, typer.Argument(help="The query's id.")],
    as_json: Json = False,
) -> None:
    """One query with its thread and clocks."""
    query = api(ctx).get("queries", f"/queries/{query_id}")
    if as_json:
        emit_json(query)
        return
    out.print(key_values(query["subject"], [
        ("id", query["query_id"]), ("agreement", query["agreement_id"]), ("priority", query["priority"]),
        ("from → to", f"{query['raised_by_side']} → {query['addressed_to_side']}"), ("status", query["status"]),
        ("SLA", _flags(query)), ("first response due", short_time(query["first_response_due_at"])),
        ("resolution due", short_time(query["resolution_due_at"]))]))
    out.print(table("Thread", ("#", "kind", "side", "text", "at"), [
        (t["position"], t["kind"], t["side"], t["body"], short_time(t["at"])) for t in query["thread"]]))
