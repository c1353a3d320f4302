"""Options several commands share, and the caller's API client from the command context."""

from __future__ import annotations

from typing import Annotated

import typer

from accord_cli.http import Api

Json = Annotated[bool, typer.Option("--json", help="Print JSON (for programs) instead of tables.")]


def api(ctx: typer.Context) -> Api:
    """The API client `accord`'s root callback made for this invocation (with the caller's token)."""
    client = ctx.obj
    assert isinstance(client, Api), "the root callback sets ctx.obj"
    return client
