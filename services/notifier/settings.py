"""The notifier's settings: the runtime's, plus rules, delivery and acknowledge-link settings.

Secrets have no defaults: without a webhook secret the service refuses rules that use webhooks,
and without an acknowledge-link key notifications carry no acknowledge link.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from accord_runtime.settings import ServiceSettings
from services.notifier.rules import DEFAULT_RULES


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"
    notifier_rules_path: Path = Field(default=DEFAULT_RULES, description="The escalation rules (YAML).")
    notifier_webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key signing webhook bodies (X-Accord-Signature).")
    notifier_ack_key: SecretStr | None = Field(default=None, description="Key signing acknowledge links.")
    notifier_ack_base_url: str = Field(default="http://127.0.0.1:8004",
                                       description="Public base URL of this service, for acknowledge links.")
    notifier_ack_ttl_seconds: int = Field(default=7 * 86_400, ge=60)
    notifier_smtp_host: str = "127.0.0.1"
    notifier_smtp_port: int = Field(default=1025, ge=1, le=65535)
    notifier_smtp_sender: str = "accord-notifier@localhost"
    notifier_smtp_starttls: bool = False
    notifier_smtp_username: str | None = None
    notifier_smtp_password: SecretStr | None = None
    notifier_poll_seconds: float = Field(default=1.0, gt=0, le=60,
                                         description="Longest wait of the delivery worker between looks.")
