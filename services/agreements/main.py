"""Composition root of the agreements service: its definition and its command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.console import Console

from accord_runtime.cli import service_cli
from accord_runtime.doorbell import ring_from_outside
from accord_runtime.eventstore import Metadata
from accord_runtime.identity import IdentityProjection
from accord_runtime.logs import configure_logging
from accord_runtime.parties import AgreementParties
from accord_runtime.service import ConsumerDefinition, ServiceDefinition, ServiceRuntime
from accord_runtime.settings import ServiceSettings
from services.agreements import handlers
from services.agreements.api import router
from services.agreements.commands import IssueApiToken, RegisterOrganisation, RegisterUser, RevokeApiToken
from services.agreements.domain import InvalidCommand, InvalidTransition, NotAParty, UnknownPart, WrongSide
from services.agreements.projections import AgreementHistory, AgreementSummaries, SharedAgreements
from services.agreements.reactions import STATUS_UPDATE_DUE, RequirementClarifications, status_update_due

T = TypeVar("T")


class AgreementsSettings(ServiceSettings):
    service_name: str = "agreements"


DEFINITION = ServiceDefinition(
    name="agreements",
    migrations_package="services.agreements",
    projections=(IdentityProjection(), AgreementParties(), AgreementSummaries(), AgreementHistory(),
                 SharedAgreements()),
    consumers=(ConsumerDefinition("clarifications", (RequirementClarifications(),)),),
    timers={STATUS_UPDATE_DUE: status_update_due},
    routers=(router,),
    error_statuses={
        InvalidTransition: 409,
        NotAParty: 403,
        WrongSide: 403,
        InvalidCommand: 422,
        UnknownPart: 404,
        handlers.NotFound: 404,
    },
)

cli = service_cli(DEFINITION, AgreementsSettings)
admin = typer.Typer(help="Operator commands: register organisations and users, issue tokens.",
                    no_args_is_help=True)
cli.add_typer(admin, name="admin")

err = Console(stderr=True)


def _operator(work: Callable[[handlers.Context, Metadata], Awaitable[T]]) -> T:
    """Run an operator command against the store, then bring read models up to date."""
    settings = AgreementsSettings()
    configure_logging(settings.log_level, json=settings.log_json)

    async def run() -> T:
        runtime = ServiceRuntime(DEFINITION, settings)
        await runtime.open_storage()
        try:
            result = await work(handlers.Context(runtime.store, runtime.pool), Metadata.new("operator"))
            await ring_from_outside(runtime.pool, settings.db_schema)  # a running relay publishes at once
            assert runtime.projections is not None
            await runtime.projections.catch_up()  # the new token works at once
            return result
        finally:
            await runtime.pool.close()

    try:
        return asyncio.run(run())
    except (ValidationError, handlers.NotFound, InvalidTransition) as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None


@admin.command("create-organisation")
def create_organisation(name: str = typer.Argument(..., help="Display name.")) -> None:
    """Register an organisation (a client or a provider); prints its id."""
    organisation_id = _operator(lambda ctx, meta: handlers.register_organisation(
        ctx, RegisterOrganisation(display_name=name), meta))
    typer.echo(json.dumps({"organisation_id": str(organisation_id)}))


@admin.command("create-user")
def create_user(organisation_id: UUID, name: str, email: str) -> None:
    """Register a user of an organisation; prints its id."""
    user_id = _operator(lambda ctx, meta: handlers.register_user(
        ctx, RegisterUser(organisation_id=organisation_id, display_name=name, email=email), meta))
    typer.echo(json.dumps({"user_id": str(user_id)}))


@admin.command("issue-token")
def issue_token(user_id: UUID, label: str = typer.Option("", help="What the token is for.")) -> None:
    """Issue an API token for a user. It is printed once and stored only as a hash."""
    token = _operator(lambda ctx, meta: handlers.issue_api_token(
        ctx, IssueApiToken(user_id=user_id, label=label), meta))
    typer.echo(json.dumps({"token": token}))


@admin.command("revoke-token")
def revoke_token(token: str = typer.Option(..., prompt=True, hide_input=True, envvar="ACCORD_REVOKE_TOKEN",
                                           help="The token to revoke (prompted for, never echoed).")) -> None:
    """Revoke an API token in every service at once; prints its id."""
    token_id = _operator(lambda ctx, meta: handlers.revoke_api_token(ctx, RevokeApiToken(token=token), meta))
    typer.echo(json.dumps({"revoked_token_id": str(token_id)}))


@admin.command("bootstrap")
def bootstrap(organisation: str, user: str, email: str) -> None:
    """Create an organisation, its first user and a token in one go (first-run convenience)."""

    async def work(ctx: handlers.Context, meta: Metadata) -> dict[str, str]:
        organisation_id = await handlers.register_organisation(
            ctx, RegisterOrganisation(display_name=organisation), meta)
        user_id = await handlers.register_user(
            ctx, RegisterUser(organisation_id=organisation_id, display_name=user, email=email), meta)
        token = await handlers.issue_api_token(ctx, IssueApiToken(user_id=user_id, label="bootstrap"), meta)
        return {"organisation_id": str(organisation_id), "user_id": str(user_id), "token": token}

    typer.echo(json.dumps(_operator(work)))
