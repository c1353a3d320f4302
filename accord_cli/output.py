"""How the CLI speaks: rich tables and lines for people, JSON for programs, errors on stderr with exit codes.

Exit codes (``accord --help`` lists them): 0 done; 1 a service refused the request (its ``detail`` is
shown) or the operation failed; 2 a usage error; 3 a service, the broker or the database cannot be
reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3

EXIT_CODES_HELP = (
    "Exit codes: 0 done; 1 a service refused the request (its detail is shown) or the operation failed; "
    "2 usage error; 3 a service, the broker or the database cannot be reached."
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = FAILED) -> NoReturn:
    """Report `message` on stderr and end the command with `code`."""
    err.print("[red]error:[/] ", end="")
    err.print(message, markup=False)
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    """One JSON document on stdout (plain, so programs can parse it)."""
    typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def json_line(data: Any) -> None:
    """One compact JSON document per line (for streams)."""
    typer.echo(json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":")))


def detail_text(detail: Any) -> str:
    """A service's ``detail``: a string, or FastAPI's list of validation errors, as one line."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return json.dumps(detail, default=str)


def short_time(value: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM`` (UTC offset kept out of the way)."""
    if not value:
        return "-"
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return parsed.strftime("%Y-%m-%d %H:%M")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    grid = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        grid.add_column(column, overflow="fold", no_wrap=column in ("id", "message id"))
    for row in rows:
        grid.add_row(*(cell_text(cell) for cell in row))
    return grid


def key_values(title: str, pairs: Iterable[tuple[str, Any]]) -> Table:
    grid = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for key, value in pairs:
        grid.add_row(key, cell_text(value))
    return grid


def cell_text(value: Any) -> Text:
    """A table cell: styled `Text` as given, anything else as plain text (never read as markup)."""
    if isinstance(value, Text):
        return value
    return Text("-" if value is None or value == "" else str(value))


def quiet_logs() -> None:
    """Library and service logs go to stderr, warnings and worse only, so stdout stays the command's
    output (``--json`` documents included). Broker connection errors are reported by the command."""
    import logging
    import sys

    import structlog

    # The stream is looked up at each call and loggers are not cached: whoever replaces
    # sys.stderr later (a test runner capturing output, then closing it) is followed.
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
