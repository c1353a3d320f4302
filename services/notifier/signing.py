"""HMAC-SHA256 signatures: of webhook bodies (for receivers to verify) and of acknowledge links.

An acknowledge link's token is the credential: it names the escalation, the recipient it was sent to
and an expiry, signed with the service's key, so no bearer token is needed to use it and a token for
one escalation acknowledges no other.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from uuid import UUID

SIGNATURE_HEADER = "X-Accord-Signature"
TIMESTAMP_HEADER = "X-Accord-Timestamp"


def sign_body(secret: bytes, body: bytes, timestamp: int) -> str:
    """The webhook signature header value: ``sha256=<hex>`` over ``<timestamp>.<raw body>``.

    Signing the timestamp with the body lets a receiver refuse replays of old deliveries."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_body(secret: bytes, body: bytes, timestamp: int, header: str) -> bool:
    return hmac.compare_digest(sign_body(secret, body, timestamp), header)


class InvalidToken(Exception):
    """The acknowledge link is forged, altered, for another escalation, or expired (HTTP 403)."""


@dataclass(frozen=True)
class AckToken:
    escalation_id: UUID
    recipient: str
    expires: int  # unix seconds


class AckSigner:
    def __init__(self, key: bytes, ttl_seconds: int = 7 * 86_400) -> None:
        if len(key) < 16:
            raise ValueError("the acknowledge-link signing key must be at least 16 bytes")
        self._key, self._ttl = key, ttl_seconds

    def _mac(self, escalation_id: UUID, recipient: str, expires: int) -> str:
        message = f"ack:{escalation_id}:{recipient}:{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def token(self, escalation_id: UUID, recipient: str, *, now: float | None = None) -> str:
        """``<expires>.<recipient>.<mac>``; the recipient is a contact id or a webhook name (no dots)."""
        if "." in recipient:
            raise ValueError("a recipient in a token must not contain '.'")
        expires = int((now if now is not None else time.time()) + self._ttl)
        return f"{expires}.{recipient}.{self._mac(escalation_id, recipient, expires)}"

    def verify(self, escalation_id: UUID, token: str, *, now: float | None = None) -> AckToken:
        expires_text, _, rest = token.partition(".")
        recipient, _, mac = rest.rpartition(".")
        if not expires_text.isdigit() or not recipient or not mac:
            raise InvalidToken("malformed acknowledge token")
        expires = int(expires_text)
        if not hmac.compare_digest(self._mac(escalation_id, recipient, expires), mac):
            raise InvalidToken("invalid acknowledge token")
        if expires < (now if now is not None else time.time()):
            raise InvalidToken("the acknowledge link has expired")
        return AckToken(escalation_id, recipient, expires)
