"""The ``accord`` command: one Typer app with a group per service and the operators' commands."""

from __future__ import annotations

from typing import Annotated

import typer

from accord_cli import agreements, dlq, events, kpi, queries
from accord_cli.demo import demo
from accord_cli.http import SERVICES, Api, base_url
from accord_cli.options import Json, api
from accord_cli.output import EXIT_CODES_HELP, UNREACHABLE, emit_json, fail, out, quiet_logs, table
from accord_cli.rebuild import rebuild

app = typer.Typer(
    name="accord",
    help="Operate Accord: agreements, queries, KPIs and health over HTTP; events and dead letters on "
         "RabbitMQ; read-model rebuilds; a demo engagement.\n\n"
         "Service URLs come from ACCORD_AGREEMENTS_URL, ACCORD_QUERIES_URL, ACCORD_KPI_URL and "
         "ACCORD_NOTIFIER_URL (default http://127.0.0.1:8001 … 8004); the broker from ACCORD_AMQP_URL and "
         f"ACCORD_EXCHANGE.\n\n{EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Option(envvar="ACCORD_TOKEN", show_envvar=True, show_default=False,
                                              help="Your API token (never printed).")] = None,
    timeout: Annotated[float, typer.Option(min=0.5, max=300, help="HTTP timeout in seconds.")] = 15.0,
) -> None:
    quiet_logs()
    client = Api(token, timeout)
    ctx.obj = client
    ctx.call_on_close(client.close)


app.add_typer(agreements.app, name="agreements")
app.add_typer(queries.app, name="queries")
app.add_typer(kpi.app, name="kpi")
app.add_typer(events.app, name="events")
app.add_typer(dlq.app, name="dlq")
app.command(name="rebuild")(rebuild)
app.command(name="demo")(demo)


@app.command()
def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Whether each service is up and ready (its database, broker and workers); exit 3 if one is not."""
    calls = api(ctx)
    report = {}
    for service in SERVICES:
        ready = calls.reachable(service, "/readyz")
        report[service] = {"url": base_url(service), **ready}
    if as_json:
        emit_json(report)
    else:
        out.print(table("Services", ("service", "url", "ready", "checks"), [
            (name, r["url"], "yes" if r["ready"] else "NO", r["detail"]) for name, r in report.items()]))
    if not all(r["ready"] for r in report.values()):
        fail("not every service is ready", UNREACHABLE)
