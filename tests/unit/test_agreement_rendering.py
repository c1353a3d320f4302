"""The Markdown document, the procedure flow charts and the diff between versions (pure functions)."""

from __future__ import annotations

import uuid

from services.agreements.rendering import diff, flow_chart, render_markdown
from tests.unit.agreement_builders import CLIENT, NOW, PROVIDER, active, policy, steps


def test_flow_chart_shows_owners_order_and_the_broken_step_only() -> None:
    agreement = active()
    proc, flow = uuid.uuid4(), steps("client", "provider", "client")
    agreement.define_procedure(CLIENT, procedure_id=proc, name='Close "fast"', steps=flow)
    agreement.report_breakdown(PROVIDER, breakdown_id=uuid.uuid4(), procedure_id=proc, step_id=flow[1].step_id,
                               what_broke="late", impact="slips")
    chart = flow_chart(agreement.procedures[proc], {flow[1].step_id})
    assert chart.startswith("```mermaid\nflowchart TD")
    assert "s1 --> s2" in chart and "s2 --> s3" in chart
    assert "owner: provider · bookkeeper" in chart and "needs: receipts" in chart
    assert "class s2 breakdown" in chart and "class s1" not in chart
    document = render_markdown(agreement, {CLIENT: "Acme | Ltd"})
    assert "| Client | Acme \\| Ltd |" in document
    assert "- Open breakdown: late (impact: slips)" in document


def test_document_has_a_section_per_part() -> None:
    agreement = active()
    agreement.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome="Close in 5 days", success_measure="BD5",
                         constraints=[])
    agreement.set_sla_policy(PROVIDER, policy=policy(), now=NOW)
    document = render_markdown(agreement)
    for heading in ("Goals and objectives", "Requirements", "Deliverables and expectations", "Communication plan",
                    "People and escalation", "SLA policy", "Operating procedures", "Scope changes",
                    "Staying in sync", "Customer-health check-ins", "Versions"):
        assert f"## {heading}" in document
    assert "### Close in 5 days" in document and "| normal | 60 | 480 |" in document
    assert "- Version 2 (amended): goal stated: Close in 5 days" in document


def test_diff_lists_added_removed_and_changed_parts() -> None:
    agreement = active()
    goal, contact = uuid.uuid4(), uuid.uuid4()
    agreement.state_goal(CLIENT, goal_id=goal, outcome="a", success_measure="m", constraints=[])
    agreement.assign_contact(CLIENT, contact_id=contact, role="cfo", name="Di", email="di@c.test")
    before = agreement.snapshot()
    agreement.revise_goal(CLIENT, goal_id=goal, outcome="b", success_measure="m", constraints=[])
    agreement.remove_contact(CLIENT, contact_id=contact)
    agreement.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome="c", success_measure="m", constraints=[])
    change = diff(before, agreement.snapshot())
    goals = change["parts"]["goals"]
    assert [g["outcome"] for g in goals["added"]] == ["c"]
    assert [(c["before"]["outcome"], c["after"]["outcome"]) for c in goals["changed"]] == [("a", "b")]
    assert [c["name"] for c in change["parts"]["contacts"]["removed"]] == ["Di"]
    assert diff(before, before) == {"fields": {}, "parts": {}}
