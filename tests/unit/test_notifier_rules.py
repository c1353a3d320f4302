"""Escalation rules: validation errors name the file, the rule and the field; matching and matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.notifier.rules import DEFAULT_RULES, RulesError, load_rules, parse_rules, predicates_hold, same_event


def rules(*rule: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"webhooks": {"ops": {"url": "http://127.0.0.1:9/hook"}}, **top, "rules": list(rule)}


def overdue_rule(**changes: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": "late", "event": "queries.QueryOverdue", "when": {"priority": ["urgent", "high"]},
        "matter": "query:{query_id}:{clock}",
        "resolved_by": [{"event": "queries.QueryAnswered", "matter": "query:{query_id}:first_response"},
                        {"event": "queries.QueryClosed",
                         "matter": ["query:{query_id}:first_response", "query:{query_id}:resolution"]}],
        "levels": [{"targets": [{"side_field": "addressed_to_side", "matrix_level": 1}],
                    "channels": ["email", "webhook:ops"]},
                   {"after": {"minutes": 30, "business": True}, "targets": [{"role": "account director"}],
                    "channels": ["email"], "repeat": 2}]}
    return {**rule, **changes}


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(RulesError) as raised:
        parse_rules(document, "rules.yaml")
    return raised.value.problems


def test_the_packaged_rules_are_valid() -> None:
    loaded = load_rules(DEFAULT_RULES)
    assert {"queries.QueryOverdue", "queries.QueryAnswered", "kpi.KPIBreached"} <= loaded.event_names()


def test_a_missing_field_names_the_file_the_rule_and_the_field() -> None:
    rule = overdue_rule()
    del rule["levels"][1]["targets"]
    assert problems(rules(rule)) == ["rules.yaml: rule 0 'late': levels.1.targets: Field required"]


def test_an_unknown_webhook_and_an_unknown_data_field_are_named() -> None:
    rule = overdue_rule(when={"priorty": "urgent"})
    rule["levels"][0]["channels"] = ["webhook:pager"]
    found = problems(rules(overdue_rule(name="first"), rule))
    assert any(p.startswith("rules.yaml: rule 1 'late': levels.0.channels.0: unknown webhook 'pager'") for p in found)
    assert any(p.startswith("rules.yaml: rule 1 'late': when.priorty: queries.QueryOverdue has no field 'priorty'")
               for p in found)


def test_duplicate_names_bad_templates_and_both_levels_and_matrix_are_refused() -> None:
    assert problems(rules(overdue_rule(), overdue_rule())) == [
        "rules.yaml: rule 1 'late': name: duplicate rule name 'late'"]
    assert "has no field 'ticket'" in problems(rules(overdue_rule(matter="q:{ticket}")))[0]
    both = overdue_rule(matrix={"levels": 2, "channels": ["email"]})
    assert "give either levels or matrix" in problems(rules(both))[0]
    assert "a target needs a role or a matrix_level" in problems(rules(overdue_rule(levels=[
        {"targets": [{"side": "client"}], "channels": ["email"]}])))[0]


def test_a_file_that_is_not_yaml_or_missing_is_reported_with_its_path(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text("rules: [\n")
    with pytest.raises(RulesError, match="not YAML"):
        load_rules(broken)
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    broken.write_text(yaml.safe_dump(rules(overdue_rule(event="queries.QueryOverdue.vX"))))
    with pytest.raises(RulesError, match=r"rule 0 'late': event: String should match"):
        load_rules(broken)


def test_event_types_unknown_to_this_build_are_matched_by_name_without_field_checks() -> None:
    loaded = parse_rules(rules({"name": "future", "event": "kpi.SomethingNew", "when": {"band": "red"},
                                "matter": "x:{thing_id}",
                                "levels": [{"targets": [{"role": "r"}], "channels": ["email"]}]}))
    found = loaded.match("accord.kpi.SomethingNew.v3", {"band": "red", "thing_id": "7", "agreement_id": "a"})
    assert found is not None and found.matter == "x:7"


def test_the_first_matching_rule_wins_and_names_the_matter() -> None:
    catch_all = overdue_rule(name="any", when={})
    loaded = parse_rules(rules(overdue_rule(), catch_all))
    data = {"query_id": "q1", "clock": "first_response", "priority": "urgent", "agreement_id": "a1"}
    found = loaded.match("accord.queries.QueryOverdue.v1", data)
    assert found is not None and (found.rule.name, found.matter, found.agreement_id) == (
        "late", "query:q1:first_response", "a1")
    normal = loaded.match("accord.queries.QueryOverdue.v1", {**data, "priority": "normal"})
    assert normal is not None and normal.rule.name == "any"
    assert loaded.match("accord.queries.QueryRaised.v1", data) is None
    assert loaded.match("accord.queries.QueryOverdue.v1", {**data, "query_id": None}) is None


def test_resolutions_name_every_matter_they_close() -> None:
    loaded = parse_rules(rules(overdue_rule()))
    assert loaded.resolved_matters("accord.queries.QueryAnswered.v1", {"query_id": "q"}) == ["query:q:first_response"]
    assert loaded.resolved_matters("accord.queries.QueryClosed.v1", {"query_id": "q"}) == [
        "query:q:first_response", "query:q:resolution"]
    assert loaded.resolved_matters("accord.queries.QueryRaised.v1", {"query_id": "q"}) == []


def test_predicates_compare_one_value_or_any_of_several() -> None:
    assert predicates_hold({"priority": ["urgent", "high"], "side": "provider"},
                           {"priority": "high", "side": "provider"})
    assert not predicates_hold({"priority": "urgent"}, {"priority": "high"})
    assert not predicates_hold({"priority": "urgent"}, {})
    assert predicates_hold({"late": True, "level": 2}, {"late": True, "level": 2})


def test_event_references_may_name_a_version() -> None:
    assert same_event("queries.QueryOverdue", "accord.queries.QueryOverdue.v2")
    assert same_event("accord.queries.QueryOverdue.v1", "accord.queries.QueryOverdue.v1")
    assert not same_event("accord.queries.QueryOverdue.v1", "accord.queries.QueryOverdue.v2")
    assert not same_event("queries.QueryOverdue", "accord.queries.QueryAnswered.v1")


def test_a_matrix_policy_expands_into_one_level_per_matrix_level() -> None:
    loaded = parse_rules(rules(overdue_rule(levels=[], matrix={
        "levels": 3, "side_field": "addressed_to_side", "after": {"hours": 1}, "channels": ["email"]})))
    chain = loaded.rules[0].chain
    assert [level.targets[0].matrix_level for level in chain] == [1, 2, 3]
    assert all(level.targets[0].side_field == "addressed_to_side" for level in chain)
