"""The runtime's Prometheus metrics. Labels are bounded: service, event type, consumer, outcome."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPENDED = Counter(
    "accord_events_appended_total", "Events appended to the event store.", ["service", "event_type"]
)


@functools.cache
def events_appended(service: str, event_type: str) -> Counter:
    """`EVENTS_APPENDED` of one service and event type, kept: `labels()` takes a lock and builds its
    key on every call: 1.9 µs with it, 0.3 µs without, of an append's 35 (bench (b))."""
    return EVENTS_APPENDED.labels(service, event_type)


EVENTS_PUBLISHED = Counter(
    "accord_events_published_total", "Events the outbox relay published and the broker confirmed.", ["service"]
)
PUBLISH_FAILURES = Counter(
    "accord_publish_failures_total", "Outbox publishes the broker did not confirm (retried).", ["service"]
)
OUTBOX_BACKLOG = Gauge(
    "accord_outbox_backlog", "Events committed but not yet confirmed by the broker.", ["service"]
)
EVENTS_CONSUMED = Counter(
    "accord_events_consumed_total",
    "Messages a consumer finished with, by outcome (handled, duplicate, ignored, dead_lettered).",
    ["service", "consumer", "outcome"],
)
HANDLER_LATENCY = Histogram(
    "accord_handler_seconds",
    "Time to handle one message or one projection batch.",
    ["service", "handler"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PROJECTION_POSITION = Gauge(
    "accord_projection_global_position", "Global position a projection has processed up to.",
    ["service", "projection"],
)
TIMERS_FIRED = Counter("accord_timers_fired_total", "Durable timers fired.", ["service", "kind"])
TIMER_DELAY = Histogram(
    "accord_timer_delay_seconds", "How late a timer fired after its due time.", ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
