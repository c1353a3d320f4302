"""The KPI service's pure domain: the KPI book aggregate and its threshold rules."""

from services.kpi.domain.book import Kpi, KpiBook, Report, stream_id
from services.kpi.domain.errors import DomainError, InvalidCommand, InvalidTransition, UnknownPart, WrongSide
from services.kpi.domain.thresholds import Thresholds

__all__ = [
    "DomainError",
    "InvalidCommand",
    "InvalidTransition",
    "Kpi",
    "KpiBook",
    "Report",
    "Thresholds",
    "UnknownPart",
    "WrongSide",
    "stream_id",
]
