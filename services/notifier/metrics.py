"""The notifier's Prometheus metrics. Labels are bounded: channel, outcome, level (1 to 9; 0 before the first)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFICATIONS = Counter(
    "accord_notifier_notifications_total",
    "Notifications by channel (email, webhook, slack) and outcome (sent, retried, failed, deferred, cancelled).",
    ["channel", "outcome"],
)
OPEN_ESCALATIONS = Gauge(
    "accord_notifier_open_escalations", "Escalations neither acknowledged nor resolved, by the level reached.",
    ["level"],
)
DELIVERY_LATENCY = Histogram(
    "accord_notifier_delivery_seconds", "From queuing a notification to its successful delivery.", ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
