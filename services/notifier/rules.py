"""Escalation rules: a declarative YAML file, validated at start with errors naming file, rule and field.

A rule matches an event type (by its ``service.Name`` string, so rules may name event types this build
does not know yet) and predicates on the event's data, names the matter the event is about (a
template over the data, e.g. ``query:{query_id}:{clock}``: one open escalation per matter, and a new
one once it is closed), the events that resolve that matter, and the chain's levels. The first
matching rule in file order wins.

Levels name targets by role or by escalation-matrix level, resolved when the level fires from the
agreement's current contacts. ``matrix:`` is a per-agreement policy: one level per level of the
agreement's escalation matrix.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from contracts import REGISTRY
from contracts.envelope import TYPE_PATTERN

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Scalar = str | int | float | bool
_EVENT = r"^(accord\.)?[a-z]+\.[A-Z][A-Za-z]+(\.v\d+)?$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Delay(_Model):
    """A wait: wall-clock time, or business time on the agreement's SLA calendar (`business: true`)."""

    seconds: float = Field(default=0, ge=0)
    minutes: float = Field(default=0, ge=0)
    hours: float = Field(default=0, ge=0)
    business: bool = False

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=self.seconds, minutes=self.minutes, hours=self.hours)


class Target(_Model):
    """Who a level notifies: contacts with this role and/or escalation level, on one side or both.

    `side_field` takes the side from the event's data (e.g. ``addressed_to_side``)."""

    role: Name | None = None
    matrix_level: int | None = Field(default=None, ge=1, le=9)
    side: Literal["client", "provider"] | None = None
    side_field: Name | None = None

    @model_validator(mode="after")
    def _selects_someone(self) -> Target:
        if self.role is None and self.matrix_level is None:
            raise ValueError("a target needs a role or a matrix_level")
        if self.side is not None and self.side_field is not None:
            raise ValueError("give either side or side_field, not both")
        return self


ChannelRef = Annotated[str, StringConstraints(pattern=r"^(email|webhook:[A-Za-z0-9_-]+)$")]


class Level(_Model):
    after: Delay = Field(default_factory=Delay, description="Wait after the previous level (or the start).")
    targets: list[Target] = Field(min_length=1)
    channels: list[ChannelRef] = Field(min_length=1, description="'email' or 'webhook:<name>'.")
    repeat: int = Field(default=0, ge=0, le=20, description="Reminders at this level after the first notice.")
    every: Delay | None = Field(default=None, description="Between reminders (default: `after`).")

    @property
    def reminder_delay(self) -> Delay:
        return self.every or self.after


class MatrixPolicy(_Model):
    """Levels derived from the agreement's escalation matrix: level n notifies matrix level n."""

    levels: int = Field(ge=1, le=9)
    side: Literal["client", "provider"] | None = None
    side_field: Name | None = None
    after: Delay = Field(default_factory=Delay)
    channels: list[ChannelRef] = Field(min_length=1)
    repeat: int = Field(default=0, ge=0, le=20)
    every: Delay | None = None

    def expand(self) -> list[Level]:
        return [Level(after=self.after, channels=self.channels, repeat=self.repeat, every=self.every,
                      targets=[Target(matrix_level=n, side=self.side, side_field=self.side_field)])
                for n in range(1, self.levels + 1)]


class Resolution(_Model):
    event: Annotated[str, StringConstraints(pattern=_EVENT)]
    matter: list[str] = Field(min_length=1)

    @field_validator("matter", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Rule(_Model):
    name: Name
    event: Annotated[str, StringConstraints(pattern=_EVENT)] = Field(description="e.g. queries.QueryOverdue")
    when: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict,
                                                   description="Data field → value or any of values.")
    matter: str = Field(min_length=1, description="Template over the event's data naming the matter.")
    agreement_field: str = "agreement_id"
    resolved_by: list[Resolution] = Field(default_factory=list)
    notify_in_quiet_hours: bool = False
    levels: list[Level] = Field(default_factory=list)
    matrix: MatrixPolicy | None = None

    @model_validator(mode="after")
    def _has_levels(self) -> Rule:
        if bool(self.levels) == (self.matrix is not None):
            raise ValueError("give either levels or matrix")
        return self

    @property
    def chain(self) -> list[Level]:
        return self.matrix.expand() if self.matrix else list(self.levels)


class Webhook(_Model):
    url: Annotated[str, StringConstraints(pattern=r"^https?://")]
    format: Literal["json", "slack"] = "json"


QuietChannel = Literal["email", "webhook", "slack"]


class QuietHours(_Model):
    start: time
    end: time
    channels: list[QuietChannel] = Field(default_factory=lambda: list[QuietChannel](["email"]))


class RateLimit(_Model):
    max: int = Field(default=20, ge=1)
    per_seconds: float = Field(default=3600, gt=0)


class Defaults(_Model):
    timezone: str = "UTC"
    quiet_hours: QuietHours | None = None
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone: {value!r}") from None
        return value


class DeliveryPolicy(_Model):
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=300.0, gt=0)
    jitter: float = Field(default=0.2, ge=0, le=1, description="Up to this fraction of each wait is random.")
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    in_flight: int = Field(default=20, ge=1, le=500, description=(
        "Deliveries sent at once, at most: with receivers that take a while to answer, this over the"
        " time they take bounds the deliveries per second."))


class RuleSet(_Model):
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    webhooks: dict[str, Webhook] = Field(default_factory=dict)
    rules: list[Rule] = Field(min_length=1)

    # --- matching --------------------------------------------------------------------------------

    def match(self, event_type: str, data: Mapping[str, Any]) -> Match | None:
        """The first rule this event starts a chain for, with its matter key; None if none."""
        for rule in self.rules:
            if same_event(rule.event, event_type) and predicates_hold(rule.when, data):
                matter = render(rule.matter, data)
                agreement = data.get(rule.agreement_field)
                if matter is not None and agreement is not None:
                    return Match(rule, matter, str(agreement))
        return None

    def resolved_matters(self, event_type: str, data: Mapping[str, Any]) -> list[str]:
        """The matter keys an event resolves, by every rule's `resolved_by`."""
        keys: list[str] = []
        for rule in self.rules:
            for resolution in rule.resolved_by:
                if same_event(resolution.event, event_type):
                    keys += [k for k in (render(t, data) for t in resolution.matter) if k and k not in keys]
        return keys

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(f"no rule named {name!r}")

    def event_names(self) -> set[str]:
        """``service.Name`` of every event the rules react to (triggers and resolutions)."""
        names = {_name(rule.event) for rule in self.rules}
        return names | {_name(r.event) for rule in self.rules for r in rule.resolved_by}


@dataclass(frozen=True)
class Match:
    rule: Rule
    matter: str
    agreement_id: str


def _name(reference: str) -> str:
    """``accord.queries.QueryOverdue.v1`` or ``queries.QueryOverdue`` → ``queries.QueryOverdue``."""
    parts = reference.removeprefix("accord.").split(".")
    return f"{parts[0]}.{parts[1]}"


def same_event(reference: str, event_type: str) -> bool:
    """Whether a rule's event reference names this CloudEvents type (a version, if given, must match)."""
    found = TYPE_PATTERN.match(event_type)
    if found is None:
        return False
    wanted_version = reference.rsplit(".v", 1)[1] if reference.count(".") == 3 else None
    return (_name(reference) == f"{found['service']}.{found['name']}"
            and (wanted_version is None or wanted_version == found["version"]))


def predicates_hold(when: Mapping[str, Scalar | list[Scalar]], data: Mapping[str, Any]) -> bool:
    """Every predicate holds: the field equals the value, or one of the values (compared as text)."""
    for field, expected in when.items():
        if field not in data:
            return False
        allowed = expected if isinstance(expected, list) else [expected]
        if _text(data[field]) not in {_text(value) for value in allowed}:
            return False
    return True


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def render(template: str, data: Mapping[str, Any]) -> str | None:
    """The template filled from the data; None when a field is missing or empty."""
    values = {}
    for field in template_fields(template):
        if data.get(field) in (None, ""):
            return None
        values[field] = data[field]
    return template.format_map(values)


# --- loading and validation ------------------------------------------------------------------------


class RulesError(ValueError):
    """The rules file is not valid; the message lists each problem as ``file: rule …: field: message``."""

    def __init__(self, path: Path | str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"invalid escalation rules in {path}:\n" + "\n".join(f"  {p}" for p in problems))


def load_rules(path: Path | str = DEFAULT_RULES) -> RuleSet:
    """Read and validate the rules file, or raise `RulesError` naming every problem."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise RulesError(path, [f"{path}: cannot read: {error.strerror or error}"]) from None
    except yaml.YAMLError as error:
        raise RulesError(path, [f"{path}: not YAML: {error}"]) from None
    return parse_rules(document, path)


def parse_rules(document: object, path: Path | str = "<rules>") -> RuleSet:
    raw_rules = document.get("rules") if isinstance(document, dict) else None
    try:
        rules = RuleSet.model_validate(document)
    except ValidationError as error:
        raise RulesError(path, [_describe(path, raw_rules, e["loc"], e["msg"]) for e in error.errors()]) from None
    problems = [_describe(path, raw_rules, loc, message) for loc, message in _cross_check(rules)]
    if problems:
        raise RulesError(path, problems)
    return rules


def _describe(path: Path | str, raw_rules: object, loc: Sequence[int | str], message: str) -> str:
    """``rules.yaml: rule 2 'late-answer': levels.0.channels.1: message``."""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        name = None
        if isinstance(raw_rules, list) and index < len(raw_rules) and isinstance(raw_rules[index], dict):
            name = raw_rules[index].get("name")
        where = f"rule {index}" + (f" {name!r}" if name else "")
        field = ".".join(str(part) for part in loc[2:]) or "(rule)"
        return f"{path}: {where}: {field}: {message}"
    field = ".".join(str(part) for part in loc) or "(top)"
    return f"{path}: {field}: {message}"


def _cross_check(rules: RuleSet) -> list[tuple[tuple[int | str, ...], str]]:
    """What the models alone cannot see: unique names, known webhooks, fields the event type has."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    seen: set[str] = set()
    for index, rule in enumerate(rules.rules):
        at: tuple[int | str, ...] = ("rules", index)
        if rule.name in seen:
            problems.append(((*at, "name"), f"duplicate rule name {rule.name!r}"))
        seen.add(rule.name)
        levels: list[tuple[tuple[int | str, ...], Sequence[str], Sequence[Target]]] = (
            [((*at, "matrix"), rule.matrix.channels, [Target(matrix_level=1, side=rule.matrix.side,
                                                             side_field=rule.matrix.side_field)])]
            if rule.matrix else
            [((*at, "levels", n), level.channels, level.targets) for n, level in enumerate(rule.levels)])
        for where, channels, targets in levels:
            for c, channel in enumerate(channels):
                name = channel.partition(":")[2]
                if channel.startswith("webhook:") and name not in rules.webhooks:
                    problems.append(((*where, "channels", c),
                                     f"unknown webhook {name!r} (declared: {sorted(rules.webhooks) or 'none'})"))
            trigger_fields = _fields_of(rule.event)
            for t, target in enumerate(targets):
                if trigger_fields is not None and target.side_field and target.side_field not in trigger_fields:
                    problems.append(((*where, "targets", t, "side_field"),
                                     f"{rule.event} has no field {target.side_field!r}"))
        used = [((*at, "when", field), field) for field in rule.when]
        used += [((*at, "agreement_field"), rule.agreement_field)]
        used += [((*at, "matter"), field) for field in template_fields(rule.matter)]
        problems += _check_fields(rule.event, used)
        for r, resolution in enumerate(rule.resolved_by):
            problems += _check_fields(resolution.event, [((*at, "resolved_by", r, "matter"), field)
                                                      for template in resolution.matter
                                                      for field in template_fields(template)])
    return problems


def _fields_of(reference: str) -> set[str] | None:
    """The data fields of the current version of the referenced event type; None if unknown here."""
    service, name = _name(reference).split(".")
    versions = [m for m in REGISTRY if service == m.EVENT_SERVICE and name == m.EVENT_NAME]
    if not versions:
        return None
    return set(max(versions, key=lambda m: m.EVENT_VERSION).model_fields)


def _check_fields(reference: str, used: Sequence[tuple[tuple[int | str, ...], str]]
                  ) -> list[tuple[tuple[int | str, ...], str]]:
    known = _fields_of(reference)
    if known is None:
        return []  # an event type this build does not know yet: matched by name when it appears
    return [(loc, f"{reference} has no field {field!r} (fields: {', '.join(sorted(known))})")
            for loc, field in used if field not in known]
