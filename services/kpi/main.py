"""Composition root of the kpi service: its definition and its command line."""

from __future__ import annotations

from accord_runtime.cli import service_cli
from accord_runtime.parties import with_parties
from accord_runtime.service import ServiceDefinition
from accord_runtime.settings import ServiceSettings
from services.kpi.api import router
from services.kpi.domain import InvalidCommand, InvalidTransition, UnknownPart, WrongSide
from services.kpi.projections import HealthReadModel, KpiReadModel, RelationshipLog
from services.kpi.reactions import KPI_REPORT_DUE, REVIEW_DUE, HealthOnRelationshipEvents, kpi_report_due, review_due


class KpiSettings(ServiceSettings):
    service_name: str = "kpi"


DEFINITION = ServiceDefinition(
    name="kpi",
    migrations_package="services.kpi",
    projections=(KpiReadModel(), HealthReadModel()),
    consumers=(
        # the log before the health policy: it folds the log, including the event at hand
        with_parties("relationship", RelationshipLog(), HealthOnRelationshipEvents()),
    ),
    timers={KPI_REPORT_DUE: kpi_report_due, REVIEW_DUE: review_due},
    routers=(router,),
    error_statuses={InvalidTransition: 409, WrongSide: 403, InvalidCommand: 422, UnknownPart: 404},
)

cli = service_cli(DEFINITION, KpiSettings)
