"""The command line every service shares: ``serve``, ``migrate``, ``rebuild``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import typer
import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

from accord_runtime.logs import configure_logging
from accord_runtime.service import ServiceDefinition, ServiceRuntime
from accord_runtime.settings import ServiceSettings

console = Console(stderr=True)


def uvicorn_config(app: FastAPI, **options: Any) -> uvicorn.Config:
    """How a service's HTTP server runs (`serve`, and the HTTP benchmark); `options` add to it.

    httptools parses HTTP (never uvicorn's slower pure-Python fallback: it is a dependency) and
    uvloop runs the loop when installed; no access log, since every request is logged once, with
    its correlation id, by the app; uvicorn's own records go through the logging configuration.
    """
    return uvicorn.Config(app, **{"http": "httptools", "loop": "auto", "log_config": None, "access_log": False,
                                  "timeout_graceful_shutdown": 15, **options})


def service_cli(definition: ServiceDefinition, settings: Callable[[], ServiceSettings]) -> typer.Typer:
    """A Typer app for one service; a service may add commands of its own to it."""
    app = typer.Typer(help=f"Accord {definition.name} service.", no_args_is_help=True,
                      add_completion=False)

    @app.command()
    def serve() -> None:
        """Run the HTTP API and the background workers until SIGTERM/SIGINT."""
        current = settings()
        configure_logging(current.log_level, json=current.log_json)
        runtime = ServiceRuntime(definition, current)
        uvicorn.Server(uvicorn_config(runtime.app(), host=current.http_host, port=current.http_port)).run()

    @app.command()
    def migrate() -> None:
        """Apply pending database migrations and exit."""
        current = settings()
        configure_logging(current.log_level, json=current.log_json)
        asyncio.run(ServiceRuntime(definition, current).migrate())
        console.print(f"[green]migrations applied[/] in schema {current.db_schema}")

    @app.command()
    def rebuild(
        projection: list[str] = typer.Option(None, "--projection", "-p",  # noqa: B008
                                             help="Rebuild only these (default: all)."),
    ) -> None:
        """Rebuild read models from the event store (safe while the service runs)."""
        current = settings()
        configure_logging(current.log_level, json=current.log_json)
        known = definition.rebuildable()
        unknown = sorted(set(projection or []) - set(known))
        if unknown:
            console.print(f"[red]unknown projection(s): {', '.join(unknown)}[/]; known: {', '.join(known)}")
            raise typer.Exit(2)

        async def run() -> int:
            runtime = ServiceRuntime(definition, current)
            await runtime.open_storage()
            try:
                with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console) as bar:
                    task = bar.add_task("replaying events", total=None)
                    done = 0

                    def advance(n: int) -> None:
                        nonlocal done
                        done += n
                        bar.update(task, description=f"replayed {done} events")

                    return await runtime.rebuild(projection or None, progress=advance)
            finally:
                await runtime.pool.close()

        total = asyncio.run(run())
        console.print(f"[green]rebuilt[/] {', '.join(projection or known)} from {total} events")

    return app
