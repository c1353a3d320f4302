"""Delivery policy, signed: webhook HMAC signatures, acknowledge-link tokens, the backoff schedule,
quiet hours and business-time delays."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import uuid
from datetime import UTC, datetime, time, timedelta

import pytest

from contracts.sla import BusinessCalendar
from services.notifier.rules import Delay, DeliveryPolicy, QuietHours
from services.notifier.signing import AckSigner, InvalidToken, sign_body, verify_body
from services.notifier.timing import backoff, due_after, quiet_until

KEY = b"0123456789abcdef-key"


def test_the_webhook_signature_is_hmac_sha256_over_timestamp_and_raw_body() -> None:
    body = b'{"level": 1}'
    expected = hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign_body(b"secret", body, 1700000000) == f"sha256={expected}"
    header = sign_body(b"secret", body, 1700000000)
    assert verify_body(b"secret", body, 1700000000, header)
    assert not verify_body(b"secret", body + b" ", 1700000000, header)
    assert not verify_body(b"secret", body, 1700000001, header)
    assert not verify_body(b"other", body, 1700000000, header)


def test_an_acknowledge_token_is_bound_to_its_escalation_and_expires() -> None:
    signer = AckSigner(KEY, ttl_seconds=3600)
    escalation = uuid.uuid4()
    token = signer.token(escalation, "contact-1", now=1_000_000)
    verified = signer.verify(escalation, token, now=1_000_100)
    assert (verified.recipient, verified.expires) == ("contact-1", 1_003_600)
    with pytest.raises(InvalidToken, match="invalid"):
        signer.verify(uuid.uuid4(), token, now=1_000_100)  # another escalation
    with pytest.raises(InvalidToken, match="invalid"):
        signer.verify(escalation, token.replace("contact-1", "contact-2"), now=1_000_100)
    with pytest.raises(InvalidToken, match="invalid"):
        AckSigner(b"another key of 16+ bytes").verify(escalation, token, now=1_000_100)
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(escalation, token, now=1_003_601)
    with pytest.raises(InvalidToken, match="malformed"):
        signer.verify(escalation, "nonsense", now=0)
    with pytest.raises(ValueError, match="16 bytes"):
        AckSigner(b"short")


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    policy = DeliveryPolicy(backoff_base_seconds=1, backoff_cap_seconds=10, jitter=0.0)
    assert [backoff(n, policy) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    jittery = DeliveryPolicy(backoff_base_seconds=1, backoff_cap_seconds=10, jitter=0.5)
    rng = random.Random(7)
    for attempt, ceiling in ((1, 1), (3, 4), (6, 10)):
        waits = [backoff(attempt, jittery, rng) for _ in range(200)]
        assert all(ceiling * 0.5 <= wait <= ceiling for wait in waits)
        assert len(set(waits)) > 100  # spread, so failures that happened together do not retry together


QUIET = QuietHours(start=time(22), end=time(7))


def test_quiet_hours_overnight_end_in_the_zone_s_morning() -> None:
    midnight_berlin = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)  # 00:00 in Berlin (UTC+1)
    assert quiet_until(midnight_berlin, QUIET, "Europe/Berlin") == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    late_evening = datetime(2026, 3, 2, 21, 30, tzinfo=UTC)  # 22:30 in Berlin
    assert quiet_until(late_evening, QUIET, "Europe/Berlin") == datetime(2026, 3, 3, 6, 0, tzinfo=UTC)
    assert quiet_until(datetime(2026, 3, 2, 12, 0, tzinfo=UTC), QUIET, "Europe/Berlin") is None
    daytime = QuietHours(start=time(12), end=time(13))
    assert quiet_until(datetime(2026, 3, 2, 12, 30, tzinfo=UTC), daytime, "UTC") == datetime(
        2026, 3, 2, 13, 0, tzinfo=UTC)


CALENDAR = BusinessCalendar.model_validate_json(json.dumps({
    "timezone": "UTC", "working_periods": [{"weekday": d, "start": "09:00:00", "end": "17:00:00"} for d in range(5)]}))


def test_business_delays_count_working_hours_and_wall_delays_do_not() -> None:
    friday_four_pm = datetime(2026, 3, 6, 16, 0, tzinfo=UTC)
    monday_ten_am = datetime(2026, 3, 9, 10, 0, tzinfo=UTC)
    assert due_after(friday_four_pm, Delay(hours=2, business=True), CALENDAR) == monday_ten_am
    assert due_after(friday_four_pm, Delay(hours=2), CALENDAR) == friday_four_pm + timedelta(hours=2)
    assert due_after(friday_four_pm, Delay(hours=2, business=True), None) == friday_four_pm + timedelta(hours=2)
