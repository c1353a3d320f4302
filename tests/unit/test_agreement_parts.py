"""Each part of the shared agreement: who may do what, in which state, and what makes a new version."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest

from contracts.agreements import AgreementAmended, StatusUpdateOverdue
from services.agreements.domain import InvalidCommand, InvalidTransition, NotAParty, UnknownPart, WrongSide
from tests.unit.agreement_builders import CLIENT, NOW, PROVIDER, STRANGER, active, drafted, policy, steps


def names(agreement: object) -> list[str]:
    return [type(e).__name__ for e in agreement.pending]  # type: ignore[attr-defined]


def fresh(agreement: object) -> None:
    agreement.pending.clear()  # type: ignore[attr-defined]


# --- goals ------------------------------------------------------------------------------------------

def test_only_the_client_states_goals_and_only_the_provider_acknowledges() -> None:
    agreement = drafted()
    goal = uuid.uuid4()
    with pytest.raises(WrongSide, match="only the client states goals"):
        agreement.state_goal(PROVIDER, goal_id=goal, outcome="o", success_measure="m", constraints=[])
    with pytest.raises(NotAParty):
        agreement.state_goal(STRANGER, goal_id=goal, outcome="o", success_measure="m", constraints=[])
    agreement.state_goal(CLIENT, goal_id=goal, outcome="Close the books by day 5", success_measure="day <= 5",
                         constraints=["no new tools"])
    with pytest.raises(WrongSide, match="only the provider acknowledges goals"):
        agreement.acknowledge_goal(CLIENT, goal_id=goal, understanding="u")
    agreement.request_goal_clarification(PROVIDER, goal_id=goal, question="Calendar or business days?")
    assert agreement.goals[goal].status == "clarification_requested"
    agreement.acknowledge_goal(PROVIDER, goal_id=goal, understanding="5 business days", revision=1)
    with pytest.raises(InvalidTransition, match="already acknowledged"):
        agreement.acknowledge_goal(PROVIDER, goal_id=goal, understanding="again")


def test_a_revised_goal_needs_a_fresh_acknowledgement() -> None:
    agreement = drafted()
    goal = uuid.uuid4()
    agreement.state_goal(CLIENT, goal_id=goal, outcome="o", success_measure="m", constraints=[])
    agreement.acknowledge_goal(PROVIDER, goal_id=goal, understanding="u")
    agreement.revise_goal(CLIENT, goal_id=goal, outcome="o2", success_measure="m2", constraints=[])
    assert (agreement.goals[goal].revision, agreement.goals[goal].status) == (2, "stated")
    with pytest.raises(InvalidTransition, match="at revision 2, not 1"):
        agreement.acknowledge_goal(PROVIDER, goal_id=goal, understanding="u", revision=1)
    agreement.acknowledge_goal(PROVIDER, goal_id=goal, understanding="u2", revision=2)
    with pytest.raises(UnknownPart):
        agreement.revise_goal(CLIENT, goal_id=uuid.uuid4(), outcome="o", success_measure="m", constraints=[])


# --- content, versions and the lifecycle ----------------------------------------------------------

def test_drafts_change_freely_proposals_not_at_all_and_active_agreements_by_amendment() -> None:
    agreement = drafted()
    agreement.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome="o", success_measure="m", constraints=[])
    assert "AgreementAmended" not in names(agreement)
    agreement.propose(CLIENT)
    with pytest.raises(InvalidTransition, match="proposal awaits acceptance"):
        agreement.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome="o", success_measure="m", constraints=[])
    agreement.accept(CLIENT)
    agreement.accept(PROVIDER)
    fresh(agreement)
    agreement.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome="Faster close", success_measure="m", constraints=[])
    assert names(agreement) == ["GoalStated", "AgreementAmended"]
    amended = agreement.pending[-1]
    assert isinstance(amended, AgreementAmended)
    assert amended.agreement_version == 2 and amended.changes == ["goal stated: Faster close"]
    assert agreement.agreement_version == 2


def test_suspended_and_terminated_agreements_refuse_changes() -> None:
    agreement = active()
    agreement.suspend(PROVIDER, "invoices unpaid")
    with pytest.raises(InvalidTransition, match="the agreement is suspended"):
        agreement.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome="o", success_measure="m", constraints=[])
    with pytest.raises(InvalidTransition, match="the agreement is suspended"):
        agreement.assign_contact(CLIENT, contact_id=uuid.uuid4(), role="r", name="n", email="a@b")
    with pytest.raises(InvalidTransition, match="only an active agreement can be suspended"):
        agreement.suspend(CLIENT, "again")
    agreement.resume(CLIENT, "paid")
    agreement.renew(CLIENT, "another year", date(2027, 12, 31))
    assert (agreement.status, agreement.agreement_version) == ("active", 2)
    with pytest.raises(InvalidCommand, match="beyond its current term"):
        agreement.renew(CLIENT, "shorter", date(2027, 1, 1))
    agreement.terminate(PROVIDER, "moving on")
    with pytest.raises(InvalidTransition, match="terminated"):
        agreement.resume(CLIENT, "please")
    assert [e.event for e in agreement.lifecycle] == ["suspended", "resumed", "renewed", "terminated"]


# --- requirements ---------------------------------------------------------------------------------

def test_requirement_clarification_round_trip_makes_a_new_revision() -> None:
    agreement = drafted()
    req, query = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(WrongSide, match="only the client documents requirements"):
        agreement.document_requirement(PROVIDER, requirement_id=req, title="t", description="d",
                                       acceptance_criteria=["c"])
    agreement.document_requirement(CLIENT, requirement_id=req, title="Monthly P&L", description="d",
                                   acceptance_criteria=["by day 5"], attachments=["https://x.test/spec.pdf"])
    with pytest.raises(WrongSide):
        agreement.request_requirement_clarification(CLIENT, requirement_id=req, query_id=query, question="q")
    agreement.request_requirement_clarification(PROVIDER, requirement_id=req, query_id=query, question="Format?")
    with pytest.raises(InvalidTransition, match="clarification of this requirement is open"):
        agreement.accept_requirement(PROVIDER, requirement_id=req)
    assert not agreement.clarify_requirement(requirement_id=req, query_id=uuid.uuid4(), answer="other query")
    assert agreement.clarify_requirement(requirement_id=req, query_id=query, answer="PDF and XLSX")
    assert not agreement.clarify_requirement(requirement_id=req, query_id=query, answer="again")  # idempotent
    requirement = agreement.requirements[req]
    assert (requirement.revision, requirement.status, requirement.clarifications[0].answer) == (
        2, "clarified", "PDF and XLSX")
    with pytest.raises(WrongSide, match="only the provider accepts requirements"):
        agreement.accept_requirement(CLIENT, requirement_id=req)
    agreement.accept_requirement(PROVIDER, requirement_id=req, revision=2)
    assert agreement.requirements[req].status == "accepted"


# --- deliverables ---------------------------------------------------------------------------------

def test_deliverables_are_delivered_by_the_provider_and_judged_by_the_client() -> None:
    agreement = drafted()
    item = uuid.uuid4()
    with pytest.raises(InvalidCommand, match="unknown requirements"):
        agreement.define_deliverable(CLIENT, deliverable_id=item, title="t", expectations="e",
                                     due_on=date(2026, 4, 5), requirement_ids=[uuid.uuid4()])
    agreement.define_deliverable(PROVIDER, deliverable_id=item, title="March close", expectations="signed P&L",
                                 due_on=date(2026, 4, 5))
    with pytest.raises(InvalidTransition, match="cannot deliver: the agreement is draft"):
        agreement.deliver(PROVIDER, deliverable_id=item)
    agreement.propose(CLIENT)
    agreement.accept(CLIENT)
    agreement.accept(PROVIDER)
    with pytest.raises(WrongSide, match="only the provider delivers"):
        agreement.deliver(CLIENT, deliverable_id=item)
    with pytest.raises(InvalidTransition, match="only a delivered deliverable"):
        agreement.accept_deliverable(CLIENT, deliverable_id=item)
    agreement.deliver(PROVIDER, deliverable_id=item, url="https://x.test/pl.pdf")
    with pytest.raises(WrongSide, match="only the client rejects"):
        agreement.reject_deliverable(PROVIDER, deliverable_id=item, reason="r")
    agreement.reject_deliverable(CLIENT, deliverable_id=item, reason="missing cost centres")
    agreement.deliver(PROVIDER, deliverable_id=item)
    agreement.accept_deliverable(CLIENT, deliverable_id=item)
    assert (agreement.deliverables[item].status, agreement.deliverables[item].deliveries) == ("accepted", 2)


# --- communication --------------------------------------------------------------------------------

def test_status_updates_and_the_overdue_clock() -> None:
    agreement = drafted()
    agreement.set_communication_plan(CLIENT, status_update_every_seconds=60, meetings="weekly", channels=["email"],
                                     now=NOW)
    assert agreement.status_update_cadence is None  # not in force until active
    agreement.propose(CLIENT)
    agreement.accept(CLIENT)
    agreement.accept(PROVIDER)
    assert agreement.status_update_cadence == 60
    period = agreement.status_update_period
    with pytest.raises(WrongSide, match="only the provider posts status updates"):
        agreement.post_status_update(CLIENT, update_id=uuid.uuid4(), summary="s", now=NOW)
    assert agreement.record_status_update_overdue(period=period, due_at=NOW + timedelta(seconds=60))
    assert agreement.status_update_period == period + 1
    assert not agreement.record_status_update_overdue(period=period, due_at=NOW)  # stale timer
    assert (agreement.status_updates_missed, agreement.last_missed_status_update_due_at) == \
        (1, NOW + timedelta(seconds=60))
    agreement.post_status_update(PROVIDER, update_id=uuid.uuid4(), summary="on track", now=NOW)
    assert not agreement.record_status_update_overdue(period=period + 1, due_at=NOW)  # an update came first
    assert agreement.status_updates_posted == 1 and agreement.last_status_update is not None
    assert agreement.last_status_update.summary == "on track"
    assert agreement.record_status_update_overdue(period=period + 2, due_at=NOW + timedelta(seconds=120))
    overdue = agreement.pending[-1]
    assert isinstance(overdue, StatusUpdateOverdue) and overdue.last_update_at == NOW  # names the last update
    assert agreement.status_updates_missed == 2
    agreement.suspend(CLIENT, "pause")
    assert agreement.status_update_cadence is None
    assert not agreement.record_status_update_overdue(period=agreement.status_update_period, due_at=NOW)


# --- people ---------------------------------------------------------------------------------------

def test_personnel_changes_reroute_the_escalation_matrix() -> None:
    agreement = active()
    lead, manager = uuid.uuid4(), uuid.uuid4()
    agreement.assign_contact(PROVIDER, contact_id=lead, role="delivery lead", name="Ann", email="ann@p.test",
                             escalation_level=1)
    agreement.assign_contact(CLIENT, contact_id=manager, role="finance manager", name="Bo", email="bo@c.test",
                             escalation_level=1)
    assert agreement.contacts[lead].side == "provider"
    with pytest.raises(WrongSide, match="only the provider changes its own personnel"):
        agreement.change_personnel(CLIENT, contact_id=lead, replaced_by_contact_id=uuid.uuid4(), name="X",
                                   email="x@c.test", handover_notes="n")
    successor = uuid.uuid4()
    agreement.change_personnel(PROVIDER, contact_id=lead, replaced_by_contact_id=successor, name="Cy",
                               email="cy@p.test", handover_notes="open items in the tracker")
    matrix = agreement.escalation_matrix()
    assert [(row["level"], [c["name"] for c in row["provider"]], [c["name"] for c in row["client"]])  # type: ignore[attr-defined]
            for row in matrix] == [(1, ["Cy"], ["Bo"])]
    assert agreement.handovers[0].notes == "open items in the tracker"
    agreement.remove_contact(CLIENT, contact_id=manager)
    assert agreement.escalation_matrix()[0]["client"] == []
    assert "AgreementAmended" not in names(agreement)  # people operate the agreement; no new version


# --- SLA ------------------------------------------------------------------------------------------

def test_sla_policies_are_never_back_dated() -> None:
    agreement = active()
    agreement.set_sla_policy(CLIENT, policy=policy(60), now=NOW)
    with pytest.raises(InvalidCommand, match="in the past"):
        agreement.set_sla_policy(CLIENT, policy=policy(30), now=NOW, effective_from=NOW - timedelta(days=1))
    agreement.set_sla_policy(PROVIDER, policy=policy(30), now=NOW, effective_from=NOW + timedelta(days=1))
    assert agreement.sla_policy_at(NOW + timedelta(hours=1)) == policy(60)
    assert agreement.sla_policy_at(NOW + timedelta(days=2)) == policy(30)
    assert agreement.agreement_version == 3


# --- procedures -----------------------------------------------------------------------------------

def test_a_breakdown_is_isolated_to_its_step() -> None:
    agreement = active()
    proc, flow = uuid.uuid4(), steps("client", "provider", "provider")
    agreement.define_procedure(CLIENT, procedure_id=proc, name="Month-end close", steps=flow)
    with pytest.raises(UnknownPart, match="has no step"):
        agreement.report_breakdown(CLIENT, breakdown_id=uuid.uuid4(), procedure_id=proc, step_id=uuid.uuid4(),
                                   what_broke="w", impact="i")
    broken = uuid.uuid4()
    agreement.report_breakdown(PROVIDER, breakdown_id=broken, procedure_id=proc, step_id=flow[1].step_id,
                               what_broke="receipts late", impact="close slips 2 days")
    assert [b.step_id for b in agreement.open_breakdowns(proc)] == [flow[1].step_id]
    with pytest.raises(InvalidTransition, match="before removing its step"):
        agreement.define_procedure(CLIENT, procedure_id=proc, name="n", steps=[flow[0]], replacing=True)
    agreement.resolve_breakdown(CLIENT, breakdown_id=broken, fix="upload receipts daily")
    with pytest.raises(InvalidTransition, match="already resolved"):
        agreement.resolve_breakdown(CLIENT, breakdown_id=broken, fix="again")
    agreement.define_procedure(CLIENT, procedure_id=proc, name="n", steps=[flow[0]], replacing=True)
    assert agreement.procedures[proc].revision == 2


# --- scope ----------------------------------------------------------------------------------------

def test_scope_changes_need_an_assessment_and_the_clients_approval() -> None:
    agreement = active()
    change = uuid.uuid4()
    agreement.request_scope_change(CLIENT, change_id=change, title="Add payroll", what="w", why="y")
    with pytest.raises(InvalidTransition, match="must assess"):
        agreement.approve_scope_change(CLIENT, change_id=change)
    with pytest.raises(WrongSide, match="only the provider assesses scope changes"):
        agreement.assess_scope_change(CLIENT, change_id=change, effort_hours=1, cost_minor_units=1, currency="EUR",
                                      timeline_impact_days=0)
    agreement.assess_scope_change(PROVIDER, change_id=change, effort_hours=40, cost_minor_units=400_000,
                                  currency="EUR", timeline_impact_days=10)
    with pytest.raises(WrongSide, match="only the client approves scope changes"):
        agreement.approve_scope_change(PROVIDER, change_id=change)
    fresh(agreement)
    agreement.approve_scope_change(CLIENT, change_id=change)
    assert names(agreement) == ["ScopeChangeApproved", "AgreementAmended"]
    with pytest.raises(InvalidTransition, match="already approved"):
        agreement.reject_scope_change(CLIENT, change_id=change, reason="r")


# --- sync and check-ins ---------------------------------------------------------------------------

def test_both_sides_record_the_agreed_resolution() -> None:
    agreement = drafted()
    item = uuid.uuid4()
    agreement.record_disagreement(PROVIDER, disagreement_id=item, topic="Response times", description="d")
    with pytest.raises(InvalidTransition, match="no resolution has been proposed"):
        agreement.confirm_resolution(CLIENT, disagreement_id=item)
    agreement.propose_resolution(CLIENT, disagreement_id=item, resolution="urgent = 2 business hours")
    with pytest.raises(WrongSide, match="only the provider confirms"):
        agreement.confirm_resolution(CLIENT, disagreement_id=item)
    agreement.confirm_resolution(PROVIDER, disagreement_id=item)
    assert agreement.disagreements[item].resolution == "urgent = 2 business hours"


def test_checkins_record_both_sides_scores() -> None:
    agreement = active()
    agreement.set_checkin_plan(CLIENT, every_days=30, format="video call")
    checkin = uuid.uuid4()
    agreement.hold_checkin(PROVIDER, checkin_id=checkin, held_on=date(2026, 3, 31), client_score=7,
                           provider_score=8, client_sentiment="neutral", provider_sentiment="positive")
    with pytest.raises(InvalidCommand, match="already has a check-in"):
        agreement.hold_checkin(PROVIDER, checkin_id=checkin, held_on=date(2026, 3, 31), client_score=7,
                               provider_score=8, client_sentiment="neutral", provider_sentiment="positive")
    assert agreement.checkins[checkin].client_score == 7
