"""Benchmark: what re-scoring an agreement's health costs as its relationship history grows.

The kpi service re-scores an agreement's health on each of its agreements and queries events
(`HealthOnRelationshipEvents`, in the consumer's transaction). This seeds agreements whose log
of relationship events (`relationship_events`: queries raised and answered, as the bus feeds
them) holds 10 to 10,000 events, whose health stream holds a score for every second one (each
answer moved the share answered within the SLA), and whose KPI book holds a value for every
tenth (ten weekly KPIs), then times that policy on one more query
raised, committed, one at a time.

    .venv/bin/python -m bench.kpi_health [--lengths 10,100,1000,10000] [--samples 20]

Prints the median and p90, in ms, per length. A throwaway database, like `bench.run`'s.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from accord_runtime.eventstore import Metadata
from accord_runtime.postgres import transaction
from accord_runtime.service import ServiceRuntime
from bench.harness import BenchConfig, by_length_cli, p50_p90_ms, throwaway_database
from contracts import CloudEvent
from contracts.kpi import HealthScoreRecorded
from contracts.queries import QueryAnswered, QueryRaised
from services.kpi import health
from services.kpi.domain import KpiBook
from services.kpi.domain import stream_id as kpi_stream
from services.kpi.evaluation import health_stream
from services.kpi.main import DEFINITION, KpiSettings
from services.kpi.reactions import HealthOnRelationshipEvents


def raised(agreement_id: uuid.UUID, at: datetime) -> QueryRaised:
    return QueryRaised(query_id=uuid.uuid4(), agreement_id=agreement_id, raised_by_side="client",
                       addressed_to_side="provider", priority="normal", subject="Invoices",
                       body="Where are March's invoices?", raised_at=at)


def envelope(data: QueryRaised | QueryAnswered, at: datetime) -> CloudEvent:
    return CloudEvent(id=uuid.uuid4(), source="/accord/queries", type=data.event_type(),
                      subject=f"query-{data.query_id}", time=at, data=data.model_dump(mode="json"), sequence=1,
                      correlationid=uuid.uuid4(), actor="user:bench")


async def seed(runtime: ServiceRuntime, agreement_id: uuid.UUID, length: int) -> None:
    """`length` relationship events, queries raised and answered an hour later, over past days."""
    start = datetime.now(UTC) - timedelta(days=365)
    rows = []
    for n in range(length // 2):
        at = start + timedelta(minutes=30 * n)
        question = raised(agreement_id, at)
        answer = QueryAnswered(query_id=question.query_id, agreement_id=agreement_id, answered_by_side="provider",
                               answer="Sent.", answered_at=at + timedelta(hours=1))
        for data, when in ((question, at), (answer, at + timedelta(hours=1))):
            rows.append((uuid.uuid4(), agreement_id, data.event_type(), when, json.dumps(data.model_dump(mode="json"))))
    await runtime.pool.executemany(
        "INSERT INTO relationship_events VALUES ($1, $2, $3, $4, $5::text::jsonb)", rows)
    # a KPI book with a value for every tenth event: ten weekly KPIs the provider reports
    book = KpiBook(agreement_id)
    kpis = [uuid.uuid4() for _ in range(10)]
    for n, kpi_id in enumerate(kpis):
        book.define("client", kpi_id=kpi_id, name=f"KPI {n}", unit="%", direction="higher_is_better", target=95,
                    warning=90, breach=80, cadence_seconds=7 * 86_400, source="provider", now=start)
    for n in range(length // 10):
        week = start + timedelta(weeks=n // len(kpis))
        book.report_value("provider", kpi_id=kpis[n % len(kpis)], value=80 + n % 20, period_start=week,
                          period_end=week + timedelta(weeks=1), now=week + timedelta(weeks=1))
    await runtime.store.append(kpi_stream(agreement_id), 0, book.pending, Metadata.new("user:bench"))
    # and a health stream as long as the answers: each moved the share answered within the SLA
    recorded, meta, version = None, Metadata.new("system:kpi"), 0
    for n in range(1, length // 2 + 1):
        score = health.score(health.HealthInputs(sla_attainment=1 - 1 / (n + 1), overdue_queries=n % 3))
        events = health.record(agreement_id, recorded, score, cause="QueryAnswered", now=start)
        version = (await runtime.store.append(health_stream(agreement_id), version, events, meta)).version
        recorded = next(e for e in events if isinstance(e, HealthScoreRecorded))


async def main(lengths: list[int], samples: int) -> None:
    config = BenchConfig.create(quick=False)
    async with throwaway_database(config) as url:
        runtime = ServiceRuntime(DEFINITION, KpiSettings(database_url=url, database_schema="kpi_health",
                                                         log_level="WARNING"))
        await runtime.open_storage()
        policy = HealthOnRelationshipEvents()
        try:
            print(f"{'events':>7}  {'re-score p50 / p90 ms':>22}")
            for length in lengths:
                agreement_id = uuid.uuid4()
                await seed(runtime, agreement_id, length)
                took = []
                for _ in range(samples):
                    now = datetime.now(UTC)
                    event = envelope(raised(agreement_id, now), now)
                    started = time.perf_counter()
                    async with transaction(runtime.pool) as conn:
                        await policy.apply(conn, event)
                    took.append(time.perf_counter() - started)
                print(f"{length:>7}  {p50_p90_ms(took):>22}")
        finally:
            await runtime.pool.close()


def cli() -> None:
    by_length_cli("python -m bench.kpi_health", __doc__, main, lengths="10,100,1000,10000", samples=20)


if __name__ == "__main__":
    cli()
