"""The shared agreement as one readable Markdown document, and the difference between two versions.

Pure functions of a replayed `Agreement` (or its snapshot): no I/O, so both are unit-tested and
serve any point in time the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from services.agreements.domain import KEYED_PARTS, Agreement
from services.agreements.domain.procedures import Procedure

#: Top-level fields compared by `diff` (besides the keyed parts).
DIFF_FIELDS = ("title", "summary", "status", "renewed_until", "communication_plan", "checkin_plan", "sla_policies")


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between two snapshots: fields before/after, and per part added/removed/changed."""
    fields = {name: {"before": before.get(name), "after": after.get(name)}
              for name in DIFF_FIELDS if before.get(name) != after.get(name)}
    parts: dict[str, Any] = {}
    for part in KEYED_PARTS:
        old, new = before.get(part, {}), after.get(part, {})
        change = {
            "added": [new[k] for k in new if k not in old],
            "removed": [old[k] for k in old if k not in new],
            "changed": [{"id": k, "before": old[k], "after": new[k]} for k in new if k in old and old[k] != new[k]],
        }
        if any(change.values()):
            parts[part] = change
    return {"fields": fields, "parts": parts}


def _esc(text: str) -> str:
    """Text safe inside a Markdown table cell or a single line."""
    return " ".join(text.split()).replace("|", "\\|")


def _bullets(items: Iterable[str]) -> list[str]:
    return [f"- {_esc(item)}" for item in items]


def _mermaid_label(text: str) -> str:
    return " ".join(text.split()).replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def flow_chart(procedure: Procedure, broken_steps: set[UUID]) -> str:
    """A Mermaid flow chart: one box per step (with its owner), arrows in order, broken steps in red."""
    lines = ["```mermaid", "flowchart TD"]
    for index, step in enumerate(procedure.steps, start=1):
        owner = step.owner_side + (f" · {step.owner_role}" if step.owner_role else "")
        label = f"{index}. {step.title}<br/>owner: {owner}"
        if step.needs_from_other_side:
            label += "<br/>needs: " + "; ".join(step.needs_from_other_side)
        if step.step_id in broken_steps:
            label += "<br/>⚠ breakdown open"
        lines.append(f'    s{index}["{_mermaid_label(label)}"]')
    lines += [f"    s{i} --> s{i + 1}" for i in range(1, len(procedure.steps))]
    broken = [f"s{i}" for i, s in enumerate(procedure.steps, start=1) if s.step_id in broken_steps]
    lines.append("    classDef breakdown fill:#fdd,stroke:#c00,stroke-width:2px,color:#900")
    if broken:
        lines.append(f"    class {','.join(broken)} breakdown")
    lines.append("```")
    return "\n".join(lines)


def render_markdown(agreement: Agreement, names: Mapping[UUID, str] | None = None) -> str:
    """The whole agreement as the document both sides read and sign off."""
    names = names or {}

    def party(organisation_id: UUID | None) -> str:
        return names.get(organisation_id, str(organisation_id)) if organisation_id else "?"

    a = agreement
    out = [f"# {_esc(a.title)}", ""]
    if a.summary:
        out += [a.summary.strip(), ""]
    out += [
        "| | |", "|---|---|",
        f"| Client | {_esc(party(a.client_organisation_id))} |",
        f"| Provider | {_esc(party(a.provider_organisation_id))} |",
        f"| Status | {a.status} |",
        f"| Agreement version | {a.agreement_version or 'draft'} |",
        f"| Accepted by | {', '.join(sorted(a.accepted_by)) or 'nobody yet'} |",
    ]
    if a.renewed_until:
        out.append(f"| Renewed until | {a.renewed_until.isoformat()} |")

    out += ["", "## Goals and objectives", ""]
    for goal in a.goals.values():
        out += [f"### {_esc(goal.outcome)}", "",
                f"- Success measure: {_esc(goal.success_measure)}",
                f"- Revision {goal.revision}, {goal.status.replace('_', ' ')}"]
        out += [f"- Constraint: {_esc(c)}" for c in goal.constraints]
        if goal.understanding:
            out.append(f"- Provider's understanding: {_esc(goal.understanding)}")
        if goal.question:
            out.append(f"- Open question: {_esc(goal.question)}")
        out.append("")
    if not a.goals:
        out += ["_No goals stated yet._", ""]

    out += ["## Requirements", ""]
    for req in a.requirements.values():
        out += [f"### {_esc(req.title)} (revision {req.revision}, {req.status.replace('_', ' ')})", "",
                req.description.strip(), "", "Acceptance criteria:", *_bullets(req.acceptance_criteria)]
        if req.technical_specifications:
            out += ["", f"Technical specifications: {_esc(req.technical_specifications)}"]
        if req.timeline:
            out += ["", f"Timeline: {_esc(req.timeline)}"]
        out += [f"- Attachment: <{url}>" for url in req.attachments]
        for c in req.clarifications:
            answer = _esc(c.answer) if c.answer else "_awaiting answer_"
            out += ["", f"> **Q:** {_esc(c.question)}", f"> **A:** {answer}"]
        out.append("")
    if not a.requirements:
        out += ["_No requirements documented yet._", ""]

    out += ["## Deliverables and expectations", ""]
    if a.deliverables:
        out += ["| Deliverable | Due | Status | Client expects |", "|---|---|---|---|"]
        out += [f"| {_esc(d.title)} | {d.due_on.isoformat()} | {d.status} | {_esc(d.expectations)} |"
                for d in a.deliverables.values()]
    else:
        out.append("_No deliverables defined yet._")

    out += ["", "## Communication plan", ""]
    plan = a.communication_plan
    if plan:
        cadence = f"every {plan.status_update_every_seconds} s" if plan.status_update_every_seconds else "no cadence"
        out += [f"- Status updates from the provider: {cadence}",
                f"- Meetings: {_esc(plan.meetings) or '—'}",
                f"- Channels: {', '.join(_esc(c) for c in plan.channels) or '—'}",
                f"- Status updates posted: {a.status_updates_posted}; missed: {a.status_updates_missed}"]
    else:
        out.append("_No communication plan yet._")

    out += ["", "## People and escalation", ""]
    if a.contacts:
        out += ["| Side | Role | Name | Email | Escalation level |", "|---|---|---|---|---|"]
        out += [f"| {c.side} | {_esc(c.role)} | {_esc(c.name)} | {c.email} | {c.escalation_level or ''} |"
                for c in sorted(a.contacts.values(), key=lambda c: (c.side, c.escalation_level or 99, c.role))]
        matrix = a.escalation_matrix()
        if matrix:
            out += ["", "Escalation matrix:", "", "| Level | Client | Provider |", "|---|---|---|"]
            for row in matrix:
                cells = [", ".join(_esc(str(p["name"])) for p in row[side]) or "—"  # type: ignore[attr-defined]
                         for side in ("client", "provider")]
                out.append(f"| {row['level']} | {cells[0]} | {cells[1]} |")
    else:
        out.append("_No contacts named yet._")
    for h in a.handovers:
        out.append(f"- Handover ({h.side}, {_esc(h.role)}): {_esc(h.from_name)} → {_esc(h.to_name)}: {_esc(h.notes)}")

    out += ["", "## SLA policy", ""]
    for period in a.sla_policies:
        cal = period.policy.calendar
        out += [f"From {period.effective_from.isoformat()} (time zone {cal.timezone}, "
                f"{len(cal.working_periods)} working periods, {len(cal.holidays)} holidays):", "",
                "| Priority | First response (business min) | Resolution (business min) |", "|---|---|---|"]
        out += [f"| {t.priority} | {t.first_response_minutes} | {t.resolution_minutes} |"
                for t in period.policy.targets]
        out.append("")
    if not a.sla_policies:
        out += ["_No SLA policy yet._", ""]

    out += ["## Operating procedures", ""]
    for procedure in a.procedures.values():
        open_here = a.open_breakdowns(procedure.procedure_id)
        out += [f"### {_esc(procedure.name)}", "", flow_chart(procedure, {b.step_id for b in open_here}), ""]
        for b in open_here:
            out.append(f"- Open breakdown: {_esc(b.what_broke)} (impact: {_esc(b.impact)})")
        if open_here:
            out.append("")
    if not a.procedures:
        out += ["_No procedures defined yet._", ""]

    out += ["## Scope changes", ""]
    for change in a.scope_changes.values():
        line = f"- **{_esc(change.title)}** ({change.status}, requested by the {change.requested_by_side}): " \
               f"{_esc(change.what)} — why: {_esc(change.why)}"
        if change.assessment:
            x = change.assessment
            line += (f"; impact: {x.effort_hours} h, {x.cost_minor_units / 100:.2f} {x.currency},"
                     f" {x.timeline_impact_days:+d} days")
        out.append(line)
    if not a.scope_changes:
        out.append("_No scope changes._")

    out += ["", "## Staying in sync", ""]
    for d in a.disagreements.values():
        resolution = f" — resolved: {_esc(d.resolution)}" if d.resolution else (
            f" — proposed by the {d.proposed_by_side}: {_esc(d.proposed_resolution)}" if d.proposed_resolution else "")
        out.append(f"- **{_esc(d.topic)}** ({d.status}, raised by the {d.raised_by_side}){resolution}")
    if not a.disagreements:
        out.append("_No disagreements recorded._")

    out += ["", "## Customer-health check-ins", ""]
    if a.checkin_plan:
        out.append(f"Every {a.checkin_plan.every_days} days. {_esc(a.checkin_plan.format)}".rstrip())
        out.append("")
    for ci in sorted(a.checkins.values(), key=lambda c: c.held_on):
        out.append(f"- {ci.held_on.isoformat()}: client {ci.client_score}/10 ({ci.client_sentiment}), "
                   f"provider {ci.provider_score}/10 ({ci.provider_sentiment}); {len(ci.action_items)} action items")
    if not a.checkin_plan and not a.checkins:
        out.append("_No check-ins planned._")

    out += ["", "## Versions", ""]
    out += [f"- Version {v.agreement_version} ({v.kind}): {'; '.join(_esc(c) for c in v.changes)}" for v in a.versions]
    out += [f"- {e.event.capitalize()} by the {e.side}: {_esc(e.reason)}" for e in a.lifecycle
            if e.event != "renewed"]
    if not a.versions:
        out.append("_Not yet in force._")
    return "\n".join(out).rstrip() + "\n"
