"""Composition root of the queries service: its definition and its command line."""

from __future__ import annotations

from accord_runtime.cli import service_cli
from accord_runtime.parties import with_parties
from accord_runtime.service import ServiceDefinition
from accord_runtime.settings import ServiceSettings
from services.queries import handlers
from services.queries.api import router
from services.queries.deadlines import DEADLINE, deadline_reached
from services.queries.domain import InvalidCommand, InvalidTransition, NotAParty, WrongSide
from services.queries.projections import QueryViews
from services.queries.reactions import ClarificationQueries
from services.queries.replica import AgreementTerms


class QueriesSettings(ServiceSettings):
    service_name: str = "queries"


DEFINITION = ServiceDefinition(
    name="queries",
    migrations_package="services.queries",
    projections=(QueryViews(),),
    # Agreement terms first: a clarification request finds its agreement's organisations and policy.
    consumers=(with_parties("agreements", AgreementTerms(), ClarificationQueries()),),
    timers={DEADLINE: deadline_reached},
    routers=(router,),
    error_statuses={
        InvalidTransition: 409,
        NotAParty: 403,
        WrongSide: 403,
        InvalidCommand: 422,
        handlers.NotFound: 404,
    },
)

cli = service_cli(DEFINITION, QueriesSettings)
