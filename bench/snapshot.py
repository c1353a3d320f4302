"""Benchmark: `Agreement.snapshot()` of agreements that use every part, µs per snapshot.

The shared-agreement read model takes a snapshot of each agreement a projection batch touches,
and the API takes two for every diff, so its cost grows with what an agreement holds. This builds
agreements through the domain's own commands (goals, requirements, deliverables, contacts,
procedures, breakdowns, scope changes, disagreements, check-ins, a communication plan with status
updates) and times their snapshots, in this process, without a database.

    .venv/bin/python -m bench.snapshot [--agreements 200] [--size 10] [--runs 5]

`--size` is how many entries each keyed part gets. Prints the median of the runs and each run.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, date, datetime

from contracts.agreements import ProcedureStep
from services.agreements.domain import Agreement

CLIENT, PROVIDER = uuid.uuid4(), uuid.uuid4()
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def rich_agreement(size: int) -> Agreement:
    """An active agreement with `size` entries in each keyed part, made by its commands."""
    a = Agreement(uuid.uuid4())
    a.draft(title="Bookkeeping", summary="Monthly books", client_organisation_id=CLIENT,
            provider_organisation_id=PROVIDER, by_organisation_id=CLIENT)
    a.set_communication_plan(CLIENT, status_update_every_seconds=86_400, meetings="weekly", channels=["email"],
                             now=NOW)
    for n in range(size):
        text = f"entry {n}"
        a.state_goal(CLIENT, goal_id=uuid.uuid4(), outcome=text, success_measure=text, constraints=[text])
        a.document_requirement(CLIENT, requirement_id=uuid.uuid4(), title=text, description=text,
                               acceptance_criteria=[text, text])
        a.define_deliverable(PROVIDER, deliverable_id=uuid.uuid4(), title=text, expectations=text,
                             due_on=date(2026, 12, 1))
        a.assign_contact(CLIENT if n % 2 else PROVIDER, contact_id=uuid.uuid4(), role=text, name=text,
                         email=f"person{n}@example.com", escalation_level=1 + n % 3)
        steps = [ProcedureStep(step_id=uuid.uuid4(), title=f"{text}: send receipts", owner_side="client",
                               owner_role="office manager", needs_from_other_side=[]),
                 ProcedureStep(step_id=uuid.uuid4(), title=f"{text}: book them", owner_side="provider",
                               owner_role="bookkeeper", needs_from_other_side=["receipts"])]
        a.define_procedure(PROVIDER, procedure_id=uuid.uuid4(), name=text, steps=steps)
    a.propose(CLIENT)
    a.accept(CLIENT)
    a.accept(PROVIDER)
    for n, procedure in enumerate(list(a.procedures.values())):  # operations: once active
        text = f"entry {n}"
        a.report_breakdown(CLIENT, breakdown_id=uuid.uuid4(), procedure_id=procedure.procedure_id,
                           step_id=procedure.steps[1].step_id, what_broke=text, impact=text)
        a.request_scope_change(CLIENT, change_id=uuid.uuid4(), title=text, what=text, why=text)
        a.record_disagreement(PROVIDER, disagreement_id=uuid.uuid4(), topic=text, description=text)
        a.hold_checkin(CLIENT, checkin_id=uuid.uuid4(), held_on=date(2026, 11, 1), client_score=8,
                       provider_score=9, client_sentiment="positive", provider_sentiment="neutral")
        a.post_status_update(PROVIDER, update_id=uuid.uuid4(), summary=f"update {n}", now=NOW)
    return a


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agreements", type=int, default=200)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    agreements = [rich_agreement(args.size) for _ in range(args.agreements)]
    runs = []
    for _ in range(args.runs):
        started = time.perf_counter()
        for agreement in agreements:
            agreement.snapshot()
        runs.append((time.perf_counter() - started) / len(agreements) * 1e6)
    print(f"Agreement.snapshot(), {args.agreements} agreements with {args.size} entries per part"
          f" ({len(agreements[0].pending)} events each): median {statistics.median(runs):.1f} µs"
          f" per snapshot; runs {' '.join(f'{r:.1f}' for r in runs)}")


if __name__ == "__main__":
    main()
