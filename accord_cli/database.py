"""Opening a service's storage in this process (``rebuild``, the demo's operator path), with failures
reported as exit codes: 3 when the database cannot be reached or refuses the connection, 1 otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from accord_cli.output import FAILED, UNREACHABLE, fail

if TYPE_CHECKING:
    from accord_runtime.service import ServiceRuntime

#: Connecting failed: the server is not there, full, starting, or does not let us in.
UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError,
    asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)


async def open_storage(runtime: ServiceRuntime) -> None:
    """Migrate and open the runtime's pool, or end the command with a one-line reason."""
    name, schema = runtime.definition.name, runtime.settings.db_schema
    try:
        await runtime.open_storage()
    except UNREACHABLE_ERRORS as error:
        fail(f"cannot open the {name} database (schema {schema}): {type(error).__name__}: {error}", UNREACHABLE)
    except asyncpg.PostgresError as error:
        fail(f"the {name} database (schema {schema}) refused: {type(error).__name__}: {error}", FAILED)
