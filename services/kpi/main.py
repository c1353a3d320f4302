"""Composition root of the kpi service: its definition and its command line."""

from __future__ import annotations

from accord_runtime.cli import service_cli
from accord_runtime.parties import parties_consumer
from accord_runtime.service import ServiceDefinition
from accord_runtime.settings import ServiceSettings


class KpiSettings(ServiceSettings):
    service_name: str = "kpi"


DEFINITION = ServiceDefinition(
    name="kpi",
    consumers=(parties_consumer(),),
)

cli = service_cli(DEFINITION, KpiSettings)
