"""Composition root of the notifier: its definition, built from the settings at start, and its command line.

The definition depends on the rules file (which events to subscribe to, which timers and senders
exist), so it is built when a command runs — never at import.
"""

from __future__ import annotations

import sys

import typer

from accord_runtime.cli import service_cli
from accord_runtime.parties import with_parties
from accord_runtime.service import ConsumerDefinition, ServiceDefinition
from services.notifier.api import build_router
from services.notifier.bootstrap import build_notifier
from services.notifier.chain import LEVEL_TIMER, EscalationTriggers, LevelTimer
from services.notifier.domain import EscalationClosed, UnknownEscalation
from services.notifier.projections import AgreementContacts, EscalationViews
from services.notifier.rules import RulesError
from services.notifier.settings import NotifierSettings


def definition(settings: NotifierSettings) -> ServiceDefinition:
    """The notifier as the runtime runs it, with the rules of `settings` (`RulesError` if they are invalid)."""
    notifier = build_notifier(settings)
    triggers = EscalationTriggers(notifier)
    consumers = [with_parties("contacts", AgreementContacts())]
    if triggers.handles:
        consumers.append(ConsumerDefinition("escalations", (triggers,)))
    return ServiceDefinition(
        name="notifier",
        migrations_package="services.notifier",
        projections=(EscalationViews(),),
        consumers=tuple(consumers),
        timers={LEVEL_TIMER: LevelTimer(notifier)},
        routers=(build_router(notifier),),
        error_statuses={EscalationClosed: 409, UnknownEscalation: 404},
    )


def cli() -> None:
    """``accord-notifier``: serve, migrate, rebuild — with the rules validated first."""
    settings = NotifierSettings()
    try:
        built = definition(settings)
    except RulesError as error:
        typer.echo(str(error), err=True)
        sys.exit(2)
    service_cli(built, lambda: settings)()
