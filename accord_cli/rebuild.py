"""``accord rebuild``: rebuild a service's read models, in this process, with a progress bar.

It is ``accord-<service> rebuild`` for an operator's shell: the service's own definition and
settings (its ``ACCORD_*`` environment: database URL and schema), run here rather than in the
service's container. Safe while the service runs.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from accord_cli.database import open_storage
from accord_cli.options import Json
from accord_cli.output import USAGE, emit_json, err, fail, out

if TYPE_CHECKING:
    from accord_runtime.service import ServiceRuntime

SETTINGS_CLASSES = {"agreements": "AgreementsSettings", "queries": "QueriesSettings", "kpi": "KpiSettings"}
SERVICE_NAMES = (*SETTINGS_CLASSES, "notifier")


def runtime_of(service: str, schema: str | None) -> ServiceRuntime:
    """The service's runtime (not started), from its definition and its settings in the environment."""
    from accord_runtime.service import ServiceRuntime

    overrides = {"database_schema": schema} if schema else {}
    if service == "notifier":
        from services.notifier.main import definition
        from services.notifier.rules import RulesError
        from services.notifier.settings import NotifierSettings

        notifier_settings = NotifierSettings().model_copy(update=overrides)
        try:
            return ServiceRuntime(definition(notifier_settings), notifier_settings)
        except RulesError as error:
            fail(str(error), USAGE)
    module = importlib.import_module(f"services.{service}.main")
    settings = getattr(module, SETTINGS_CLASSES[service])().model_copy(update=overrides)
    return ServiceRuntime(module.DEFINITION, settings)


async def _sizes(runtime: ServiceRuntime, selected: list[str]) -> int:
    """About how many events the rebuild replays (own events, plus the inbox of each bus-fed consumer)."""
    definition, pool = runtime.definition, runtime.pool
    total = 0
    if any(p.name in selected for p in definition.projections):
        total += await pool.fetchval("SELECT count(*) FROM events")
    for consumer in definition.consumers:
        if any(getattr(h, "name", None) in selected and hasattr(h, "clear") for h in consumer.handlers):
            total += await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = $1", consumer.name)
    return int(total)


async def _rebuild(runtime: ServiceRuntime, selected: list[str], quiet: bool) -> int:
    await open_storage(runtime)
    try:
        total = await _sizes(runtime, selected)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=err, disable=quiet) as bar:
            task = bar.add_task(f"rebuilding {', '.join(selected)}", total=total or None)
            replayed = await runtime.rebuild(selected, progress=lambda n: bar.advance(task, n))
            bar.update(task, total=max(replayed, total), completed=replayed)
        return replayed
    finally:
        await runtime.pool.close()


def rebuild(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}.")],
    projection: Annotated[list[str] | None, typer.Option("--projection", "-p", help="Only these read models "
                                                         "(repeatable; default: all).")] = None,
    schema: Annotated[str | None, typer.Option(help="The service's database schema (default: "
                                               "$ACCORD_DATABASE_SCHEMA or the service's name).")] = None,
    as_json: Json = False,
) -> None:
    """Rebuild a service's read models from its events (and its inbox), with a progress bar."""
    if service not in SERVICE_NAMES:
        fail(f"unknown service {service!r}; one of: {', '.join(SERVICE_NAMES)}", USAGE)
    runtime = runtime_of(service, schema)
    known = runtime.definition.rebuildable()
    unknown = sorted(set(projection or []) - set(known))
    if unknown:
        fail(f"unknown read model(s) of {service}: {', '.join(unknown)}; known: {', '.join(known)}", USAGE)
    selected = list(projection or known)
    replayed = asyncio.run(_rebuild(runtime, selected, quiet=as_json))
    if as_json:
        emit_json({"service": service, "rebuilt": selected, "events": replayed})
    else:
        out.print(f"[green]rebuilt[/] {', '.join(selected)} of {service} from {replayed} events")
