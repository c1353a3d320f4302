"""What the notifier's handlers share, built once from the settings at start: rules, signers, senders."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from services.notifier.channels import EmailSender, Sender, SmtpConfig, WebhookSender
from services.notifier.rules import RulesError, RuleSet, load_rules
from services.notifier.settings import NotifierSettings
from services.notifier.signing import AckSigner

SOURCE = "/accord/notifier"


@dataclass(frozen=True)
class Notifier:
    rules: RuleSet
    ack_signer: AckSigner | None
    ack_base_url: str
    senders: dict[str, Sender]  # channel → sender
    poll_seconds: float = 1.0
    source: str = SOURCE

    async def close_senders(self) -> None:
        """Close the senders' connections (the delivery worker has stopped)."""
        for sender in {id(sender): sender for sender in self.senders.values()}.values():  # one sender, many channels
            await sender.close()

    def ack_url(self, escalation_id: UUID, recipient: str) -> str | None:
        """The signed acknowledge link for one recipient, or None without a signing key."""
        if self.ack_signer is None:
            return None
        token = self.ack_signer.token(escalation_id, recipient)
        return f"{self.ack_base_url.rstrip('/')}/escalations/{escalation_id}/ack?token={token}"


def build_notifier(settings: NotifierSettings) -> Notifier:
    """Load and check the rules against the settings; raise `RulesError` naming what is wrong."""
    rules = load_rules(settings.notifier_rules_path)
    uses_webhooks = any(channel.startswith("webhook:") for rule in rules.rules for level in rule.chain
                        for channel in level.channels)
    secret = settings.notifier_webhook_secret
    if uses_webhooks and secret is None:
        raise RulesError(settings.notifier_rules_path, [
            f"{settings.notifier_rules_path}: rules use webhooks, but ACCORD_NOTIFIER_WEBHOOK_SECRET is not set"])
    urls = {name: hook.url for name, hook in rules.webhooks.items()}
    webhook = WebhookSender(urls, secret.get_secret_value().encode() if secret else b"",
                            rules.delivery.timeout_seconds)
    email = EmailSender(SmtpConfig(
        host=settings.notifier_smtp_host, port=settings.notifier_smtp_port, sender=settings.notifier_smtp_sender,
        starttls=settings.notifier_smtp_starttls, username=settings.notifier_smtp_username,
        password=settings.notifier_smtp_password.get_secret_value() if settings.notifier_smtp_password else None,
        timeout=rules.delivery.timeout_seconds), workers=rules.delivery.in_flight)
    key = settings.notifier_ack_key
    signer = AckSigner(key.get_secret_value().encode(), settings.notifier_ack_ttl_seconds) if key else None
    return Notifier(rules=rules, ack_signer=signer, ack_base_url=settings.notifier_ack_base_url,
                    senders={"email": email, "webhook": webhook, "slack": webhook},
                    poll_seconds=settings.notifier_poll_seconds, source=settings.source)
