"""Numbered plain-SQL migrations, applied on start under an advisory lock, once each.

A service applies the runtime's migrations and then its own, all in its own schema. Several
replicas starting at once serialize on the lock; each migration runs in its own transaction
and is recorded in ``schema_migrations``, so a second run is a no-op.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    component: str
    number: int
    name: str
    sql: str


def migrations_in(component: str, package: str) -> list[Migration]:
    """The migrations shipped as ``NNNN_name.sql`` files in ``<package>/migrations/``."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(component, int(match["number"]), match["name"], entry.read_text()))
    return sorted(found, key=lambda m: m.number)


RUNTIME_MIGRATIONS = "accord_runtime"


async def migrate(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[Migration]:
    """Create `schema` if needed and apply the migrations not yet applied there; return those applied."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"invalid schema name: {schema!r}")
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock(hashtext('accord.migrate.' || $1))", schema)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"SET search_path TO {schema}")
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   component text NOT NULL,
                   number integer NOT NULL,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, number))"""
        )
        rows = await conn.fetch("SELECT component, number FROM schema_migrations")
        done = {(r["component"], r["number"]) for r in rows}
        for migration in migrations:
            if (migration.component, migration.number) in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (component, number, name) VALUES ($1, $2, $3)",
                    migration.component,
                    migration.number,
                    migration.name,
                )
            log.info("migration applied", schema=schema, component=migration.component,
                     number=migration.number, migration=migration.name)
            applied_now.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('accord.migrate.' || $1))", schema)
    return applied_now
