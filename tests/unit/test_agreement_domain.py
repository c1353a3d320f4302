"""The agreement aggregate's rules, and that replaying its events rebuilds its state."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import REGISTRY
from contracts.agreements import AgreementActivated, UserRegistered
from services.agreements.domain import (
    RESETS_STATUS_CLOCK,
    Agreement,
    DomainError,
    InvalidCommand,
    InvalidTransition,
    NotAParty,
    stream_id,
)
from services.agreements.domain.agreement import KEYED_PARTS
from tests.unit.agreement_builders import CLIENT, NOW, PROVIDER, STRANGER, active, drafted, policy, steps


def test_both_sides_accepting_activates() -> None:
    agreement = drafted()
    agreement.propose(PROVIDER)
    agreement.accept(CLIENT)
    assert agreement.status == "proposed"
    agreement.accept(PROVIDER)
    assert agreement.status == "active"
    assert [type(e).__name__ for e in agreement.pending] == [
        "AgreementDrafted", "AgreementProposed", "AgreementAccepted", "AgreementAccepted", "AgreementActivated"]
    assert agreement.agreement_version == 1


def test_every_agreement_event_is_applied_by_its_part_and_no_other_is() -> None:
    """Each event carrying an agreement id changes the agreement through the part it belongs
    to, the status clock moving on after the events that restart it; anything else is refused."""
    agreement_events = {m for m in REGISTRY if m.EVENT_SERVICE == "agreements" and "agreement_id" in m.model_fields}
    evolvers = {event: [f.__qualname__ for f in methods] for event, methods in Agreement._evolvers.items()}
    assert set(evolvers) == agreement_events
    for event, names in evolvers.items():
        clock = ["CommunicationPart._restart_status_clock"] if event in RESETS_STATUS_CLOCK else []
        assert len(names) == 1 + len(clock) and names[1:] == clock, (event, names)
    assert evolvers[AgreementActivated][0] == "AgreementCore._evolve_lifecycle"
    with pytest.raises(TypeError, match="not an agreement event: UserRegistered"):
        drafted().evolve(UserRegistered(user_id=uuid.uuid4(), organisation_id=CLIENT, display_name="n",
                                          email="e@x.org"))


def test_illegal_transitions_say_why() -> None:
    agreement = drafted()
    with pytest.raises(InvalidTransition, match="only a proposed agreement can be accepted"):
        agreement.accept(CLIENT)
    agreement.propose(CLIENT)
    with pytest.raises(InvalidTransition, match="only a draft can be proposed"):
        agreement.propose(CLIENT)
    agreement.accept(CLIENT)
    with pytest.raises(InvalidTransition, match="client side has already accepted"):
        agreement.accept(CLIENT)


def test_strangers_and_self_dealing_are_refused() -> None:
    agreement = drafted()
    with pytest.raises(NotAParty):
        agreement.propose(STRANGER)
    with pytest.raises(NotAParty):
        Agreement(uuid.uuid4()).draft(title="x", summary="", client_organisation_id=CLIENT,
                                      provider_organisation_id=PROVIDER, by_organisation_id=STRANGER)
    with pytest.raises(InvalidCommand):
        Agreement(uuid.uuid4()).draft(title="x", summary="", client_organisation_id=CLIENT,
                                      provider_organisation_id=CLIENT, by_organisation_id=CLIENT)


commands = st.lists(st.tuples(st.sampled_from(["propose", "accept"]),
                              st.sampled_from([CLIENT, PROVIDER, STRANGER])), max_size=12)


@given(commands)
def test_random_command_sequences_keep_invariants_and_replay(sequence: list[tuple[str, uuid.UUID]]) -> None:
    agreement = drafted()
    for command, organisation in sequence:
        before = (agreement.status, set(agreement.accepted_by), len(agreement.pending))
        try:
            getattr(agreement, command)(organisation)
        except (InvalidTransition, NotAParty):
            # a refused command records nothing and changes nothing
            assert (agreement.status, agreement.accepted_by, len(agreement.pending)) == before
        # invariants
        assert agreement.status in {"draft", "proposed", "active"}
        assert (agreement.status == "active") == (agreement.accepted_by == {"client", "provider"})
        assert agreement.accepted_by <= {"client", "provider"}
    # events survive the wire (JSON) and replaying them rebuilds the same state
    wire = [REGISTRY.decode(e.event_type(), e.model_dump(mode="json")) for e in agreement.pending]
    replayed = Agreement.replay(agreement.agreement_id, wire)
    assert (replayed.status, replayed.accepted_by, replayed.agreement_version, replayed.version) == (
        agreement.status, agreement.accepted_by, agreement.agreement_version, len(agreement.pending))


# --- random command sequences across every part ------------------------------------------------------

PARTIES = st.sampled_from([CLIENT, PROVIDER, CLIENT, PROVIDER, STRANGER])
TEXT = st.sampled_from(["a", "b", "c"])


def _pick(items: dict, index: int) -> uuid.UUID:  # type: ignore[type-arg]
    """An existing id (chosen by `index`), or a fresh one when there is none."""
    keys = list(items)
    return keys[index % len(keys)] if keys else uuid.uuid4()


def _apply(agreement: Agreement, command: str, by: uuid.UUID, n: int, text: str) -> None:
    """Run one command of the given kind; `n` chooses among existing parts."""
    a = agreement
    match command:
        case "propose" | "accept":
            getattr(a, command)(by)
        case "suspend" | "resume" | "terminate":
            getattr(a, command)(by, text)
        case "renew":
            a.renew(by, text, None)
        case "state_goal":
            a.state_goal(by, goal_id=uuid.uuid4(), outcome=text, success_measure=text, constraints=[])
        case "revise_goal":
            a.revise_goal(by, goal_id=_pick(a.goals, n), outcome=text, success_measure=text, constraints=[])
        case "acknowledge_goal":
            a.acknowledge_goal(by, goal_id=_pick(a.goals, n), understanding=text)
        case "document_requirement":
            a.document_requirement(by, requirement_id=uuid.uuid4(), title=text, description=text,
                                   acceptance_criteria=[text])
        case "ask_requirement":
            a.request_requirement_clarification(by, requirement_id=_pick(a.requirements, n), query_id=uuid.uuid4(),
                                                question=text)
        case "answer_requirement":
            requirement = a.requirements.get(_pick(a.requirements, n))
            if requirement and requirement.open_query_id:
                a.clarify_requirement(requirement_id=requirement.requirement_id, query_id=requirement.open_query_id,
                                      answer=text)
        case "accept_requirement":
            a.accept_requirement(by, requirement_id=_pick(a.requirements, n))
        case "define_deliverable":
            a.define_deliverable(by, deliverable_id=uuid.uuid4(), title=text, expectations=text, due_on=NOW.date())
        case "deliver":
            a.deliver(by, deliverable_id=_pick(a.deliverables, n))
        case "accept_deliverable":
            a.accept_deliverable(by, deliverable_id=_pick(a.deliverables, n))
        case "reject_deliverable":
            a.reject_deliverable(by, deliverable_id=_pick(a.deliverables, n), reason=text)
        case "set_plan":
            a.set_communication_plan(by, status_update_every_seconds=60, meetings=text, channels=[], now=NOW)
        case "post_update":
            a.post_status_update(by, update_id=uuid.uuid4(), summary=text, now=NOW)
        case "overdue":
            a.record_status_update_overdue(period=a.status_update_period - n % 2, due_at=NOW)
        case "assign_contact":
            a.assign_contact(by, contact_id=uuid.uuid4(), role=text, name=text, email="x@y", escalation_level=1 + n % 3)
        case "change_personnel":
            a.change_personnel(by, contact_id=_pick(a.contacts, n), replaced_by_contact_id=uuid.uuid4(), name=text,
                               email="x@y", handover_notes=text)
        case "remove_contact":
            a.remove_contact(by, contact_id=_pick(a.contacts, n))
        case "set_sla":
            a.set_sla_policy(by, policy=policy(30 + n), now=NOW, effective_from=NOW + timedelta(minutes=len(a.pending)))
        case "define_procedure":
            a.define_procedure(by, procedure_id=uuid.uuid4(), name=text, steps=steps("client", "provider"))
        case "report_breakdown":
            procedure = a.procedures.get(_pick(a.procedures, n))
            step_id = procedure.steps[n % len(procedure.steps)].step_id if procedure else uuid.uuid4()
            a.report_breakdown(by, breakdown_id=uuid.uuid4(), procedure_id=_pick(a.procedures, n), step_id=step_id,
                               what_broke=text, impact=text)
        case "resolve_breakdown":
            a.resolve_breakdown(by, breakdown_id=_pick(a.breakdowns, n), fix=text)
        case "request_scope":
            a.request_scope_change(by, change_id=uuid.uuid4(), title=text, what=text, why=text)
        case "assess_scope":
            a.assess_scope_change(by, change_id=_pick(a.scope_changes, n), effort_hours=n, cost_minor_units=n,
                                  currency="EUR", timeline_impact_days=n)
        case "approve_scope":
            a.approve_scope_change(by, change_id=_pick(a.scope_changes, n))
        case "reject_scope":
            a.reject_scope_change(by, change_id=_pick(a.scope_changes, n), reason=text)
        case "disagree":
            a.record_disagreement(by, disagreement_id=uuid.uuid4(), topic=text, description=text)
        case "propose_resolution":
            a.propose_resolution(by, disagreement_id=_pick(a.disagreements, n), resolution=text)
        case "confirm_resolution":
            a.confirm_resolution(by, disagreement_id=_pick(a.disagreements, n))
        case "checkin":
            a.hold_checkin(by, checkin_id=uuid.uuid4(), held_on=NOW.date(), client_score=1 + n % 10,
                           provider_score=1 + n % 10, client_sentiment="neutral", provider_sentiment="positive")
        case _:
            raise AssertionError(command)


COMMANDS = ["propose", "accept", "accept", "suspend", "resume", "terminate", "renew", "state_goal", "revise_goal",
            "acknowledge_goal", "document_requirement", "ask_requirement", "answer_requirement", "accept_requirement",
            "define_deliverable", "deliver", "accept_deliverable", "reject_deliverable", "set_plan", "post_update",
            "overdue", "assign_contact", "change_personnel", "remove_contact", "set_sla", "define_procedure",
            "report_breakdown", "resolve_breakdown", "request_scope", "assess_scope", "approve_scope", "reject_scope",
            "disagree", "propose_resolution", "confirm_resolution", "checkin"]
any_commands = st.lists(st.tuples(st.sampled_from(COMMANDS), PARTIES, st.integers(0, 5), TEXT),
                        min_size=30, max_size=100)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), any_commands)
def test_random_commands_across_all_parts_keep_invariants_and_replay(
    start_active: bool, sequence: list[tuple[str, uuid.UUID, int, str]],
) -> None:
    agreement = active() if start_active else drafted()
    for command, by, n, text in sequence:
        before = (agreement.snapshot(), len(agreement.pending))
        try:
            _apply(agreement, command, by, n, text)
        except DomainError:
            # a refused command records nothing and changes nothing
            assert (agreement.snapshot(), len(agreement.pending)) == before
        _check_invariants(agreement)
    wire = [REGISTRY.decode(e.event_type(), e.model_dump(mode="json")) for e in agreement.pending]
    replayed = Agreement.replay(agreement.agreement_id, wire)
    snapshot = agreement.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot  # plain JSON data, shared with nothing
    for part in KEYED_PARTS:
        for key, entry in snapshot[part].items():
            value = getattr(agreement, part)[uuid.UUID(key)]
            assert set(entry) == {f.name for f in dataclasses.fields(value)}
    expected = snapshot | {"version": len(agreement.pending)}
    assert replayed.snapshot() == expected
    # restored from its JSON text, it is the replayed agreement again, its parts in the same order
    restored = Agreement.restore(replayed.snapshot_json())
    assert restored == replayed and restored.snapshot_json() == replayed.snapshot_json()
    assert stream_id(agreement.agreement_id) == f"agreement-{agreement.agreement_id}"


def _check_invariants(a: Agreement) -> None:
    assert a.status in {"draft", "proposed", "active", "suspended", "terminated"}
    # versions: none before activation, then 1, 2, 3… one per activation/amendment/renewal
    assert [v.agreement_version for v in a.versions] == list(range(1, a.agreement_version + 1))
    assert (a.agreement_version == 0) == (a.status in {"draft", "proposed"})
    # every amendment follows a change of content, recorded while active
    for previous, event in zip(a.pending, a.pending[1:], strict=False):
        if type(event).__name__ == "AgreementAmended":
            assert type(previous).__name__ in AMENDING
    # part invariants
    for goal in a.goals.values():
        assert (goal.understanding is not None) == (goal.status == "acknowledged")
    for requirement in a.requirements.values():
        answered = [c for c in requirement.clarifications if c.answer is not None]
        assert requirement.revision == 1 + len(answered)
        assert (requirement.open_query_id is not None) == (len(answered) < len(requirement.clarifications))
    for breakdown in a.breakdowns.values():
        assert breakdown.step_id in {s.step_id for s in a.procedures[breakdown.procedure_id].steps} or \
            not breakdown.open
    for change in a.scope_changes.values():
        assert change.status != "approved" or change.assessment is not None
    assert all(c.escalation_level in {1, 2, 3} for c in a.contacts.values())
    effective = [p.effective_from for p in a.sla_policies]
    assert effective == sorted(effective)


AMENDING = {"GoalStated", "GoalRevised", "RequirementAccepted", "DeliverableDefined", "CommunicationPlanSet",
            "SLAPolicySet", "ProcedureDefined", "ScopeChangeApproved", "CheckInPlanSet"}
