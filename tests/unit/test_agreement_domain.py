"""The agreement aggregate's rules, and that replaying its events rebuilds its state."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import REGISTRY
from services.agreements.domain import Agreement, InvalidCommand, InvalidTransition, NotAParty

CLIENT, PROVIDER, STRANGER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def drafted() -> Agreement:
    agreement = Agreement(uuid.uuid4())
    agreement.draft(title="Bookkeeping", summary="", client_organisation_id=CLIENT,
                    provider_organisation_id=PROVIDER, by_organisation_id=CLIENT)
    return agreement


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
