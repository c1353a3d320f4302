"""The kpi service's Prometheus metrics.

Labels stay bounded: agreement ids and KPI names grow with every customer, so neither is a label.
Per-KPI and per-agreement values are served by the HTTP API; the metrics describe the whole
deployment — how reported values sit against their targets (by direction and status), threshold
crossings by kind, the distribution of health scores, how many agreements sit in each band, and
queries answered within or outside their SLA by the answering side.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

KPI_VALUES = Counter(
    "accord_kpi_values_reported_total", "KPI values reported or computed, by direction and status.",
    ["direction", "status"])
KPI_ATTAINMENT = Histogram(
    "accord_kpi_attainment_ratio",
    "Reported KPI values relative to their targets (1 = on target, higher = better, capped at 2).",
    ["direction"], buckets=(0.25, 0.5, 0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0))
KPI_CROSSINGS = Counter(
    "accord_kpi_threshold_crossings_total", "KPI threshold crossings (at_risk, breached, recovered) and overdue "
    "reports (report_overdue, review_overdue).", ["kind"])
HEALTH_SCORE = Histogram(
    "accord_customer_health_score", "Customer health scores as they are recorded.",
    buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100))
HEALTH_BANDS = Gauge("accord_customer_health_agreements", "Agreements in each health band.", ["band"])
SLA_ANSWERS = Counter(
    "accord_kpi_sla_answers_total", "Answered queries seen by the kpi service, by answering side and whether "
    "the first answer met its SLA.", ["side", "within_sla"])
