"""The crossing rules of alerts (SPEC §9, §9.1): once per crossing, re-armed when the value
crosses back, armed again when edited, exact decimals."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from pipelines.live.alerts import Alert, Firing, State, by_customer, evaluate

AT = datetime(2026, 12, 7, 10, 15, tzinfo=UTC)


def alert(area: str = "balance", op: str = "<", threshold: str = "100", **extra: str) -> Alert:
    row = {
        "alert_id": "low",
        "customer_id": "C1",
        "name": "Balance below 100",
        "area": area,
        "operator": op,
        "threshold": threshold,
        "recipient": "noc@example.com",
        **extra,
    }
    return Alert.of(row)


def run(
    rule: Alert, values: list[str | int | None], states: dict[str, State] | None = None
) -> tuple[list[int | None], dict[str, State]]:
    """Each value in turn: the crossing number that fired at that step, or None."""
    states = dict(states or {})
    fired: list[int | None] = []
    for step, raw in enumerate(values):
        value = None if raw is None else raw if isinstance(raw, int) else Decimal(raw)
        firings, changed = evaluate(
            [rule], states, {rule.area: value}, AT + timedelta(seconds=step)
        )
        states.update(changed)
        assert len(firings) <= 1
        fired.append(firings[0].crossing if firings else None)
    return fired, states


@pytest.mark.parametrize(
    ("area", "op", "threshold", "values", "fired"),
    [
        # Fires once when the condition becomes true, stays quiet while it holds.
        ("balance", "<", "100", ["150", "99.99", "50", "10"], [None, 1, None, None]),
        # Re-arms when it becomes false, fires again when it becomes true anew.
        (
            "balance",
            "<",
            "100",
            ["150", "90", "120", "80", "70", "100", "99"],
            [None, 1, None, 2, None, None, 3],
        ),
        # Already true when first seen: fires once.
        ("balance", "<", "100", ["50", "40", "30"], [1, None, None]),
        # The boundary: < is strict, <= is not.
        ("balance", "<", "100", ["100", "100.000001", "99.999999"], [None, None, 1]),
        ("balance", "<=", "100", ["100.000001", "100", "99"], [None, 1, None]),
        ("asr", ">", "35", ["35", "35.0000001", "20", "36"], [None, 1, None, 2]),
        ("asr", ">=", "35", ["34.9999999999", "35"], [None, 1]),
        # Negative thresholds (balances below zero), and counts given as ints.
        ("balance", "<", "-25.5", ["-25.5", "-25.500001", "0", "-30"], [None, 1, None, 2]),
        ("channels", ">=", "3", [1, 2, 3, 4, 2, 3], [None, None, 1, None, None, 2]),
        ("cps", ">", "10", [11, 11, 10, 12], [1, None, None, 2]),
        ("pdd", ">", "4000", ["3999", "4000.5"], [None, 1]),
        ("acd", "<", "30", ["29.999", "30", "15"], [1, None, 2]),
        # No value (an area the batch did not move, or no calls in the window): no change.
        ("asr", "<", "35", [None, "20", None, "40", None, "10"], [None, 1, None, None, None, 2]),
    ],
)
def test_crossings(
    area: str, op: str, threshold: str, values: list[str | int | None], fired: list[int | None]
) -> None:
    assert run(alert(area, op, threshold), values)[0] == fired


def test_comparisons_are_exact_decimals() -> None:
    """0.1 + 0.2 is 0.3 exactly: a float would see 0.30000000000000004 > 0.3."""
    rule = alert("balance", ">", "0.3")
    total = Decimal("0.1") + Decimal("0.2")
    assert run(rule, [str(total)])[0] == [None]
    with pytest.raises(TypeError, match="float"):
        evaluate([rule], {}, {"balance": 0.1 + 0.2}, AT)


def test_an_edited_alert_is_armed_again_and_keeps_counting() -> None:
    rule = alert(threshold="100")
    fired, states = run(rule, ["150", "90", "80"])
    assert fired == [None, 1, None]
    # Same condition, spelled differently: not an edit.
    assert run(alert(threshold="100.000"), ["70"], states)[0] == [None]
    # A new threshold the value is already below: armed, so it fires once, as crossing 2.
    edited = alert(threshold="95")
    fired, states = run(edited, ["80", "75"], states)
    assert fired == [2, None]
    # Any column is the alert's definition: a new recipient arms it too.
    fired, states = run(alert(threshold="95", recipient="https://hooks.example/x"), ["70"], states)
    assert fired == [3]
    # An edit that makes the condition false re-arms it, as any false value does.
    fired, _ = run(alert(threshold="50"), ["70", "40"], states)
    assert fired == [None, 4]


def test_a_recorded_firing_wins_over_a_state_behind_it() -> None:
    """A crash after the lake recorded crossing 1 but before the state was kept: the state
    says armed at 0 crossings; the lake's record says crossing 1 fired. Nothing fires twice."""
    rule = alert()
    behind = {"low": State(armed=True, crossings=0, definition=rule.definition)}
    recorded = {"low": State(armed=False, crossings=1, definition=rule.definition)}
    firings, changed = evaluate([rule], behind, {"balance": Decimal(50)}, AT, recorded)
    assert firings == []
    assert changed == {"low": recorded["low"]}
    # No state at all (a table made anew): crossing numbers go on from the lake's.
    firings, changed = evaluate([rule], {}, {"balance": Decimal(150)}, AT, recorded)
    assert firings == [] and changed["low"] == State(True, 1, rule.definition)
    firings, _ = evaluate([rule], changed, {"balance": Decimal(50)}, AT, recorded)
    assert [f.crossing for f in firings] == [2]
    # The recorded firing was of an older definition: the edited alert is armed.
    old = State(armed=False, crossings=1, definition=alert(threshold="10").definition)
    firings, _ = evaluate([rule], {}, {"balance": Decimal(50)}, AT, {"low": old})
    assert [f.crossing for f in firings] == [2]
    # A state ahead of the lake (the lake of another machine, restored) is kept.
    ahead = {"low": State(armed=True, crossings=5, definition=rule.definition)}
    firings, _ = evaluate([rule], ahead, {"balance": Decimal(50)}, AT, recorded)
    assert [f.crossing for f in firings] == [6]


def test_only_the_areas_given_are_evaluated() -> None:
    rules = [alert(), replace(alert("asr", "<", "35"), alert_id="asr")]
    firings, changed = evaluate(rules, {}, {"asr": Decimal(20)}, AT)
    assert [f.alert_id for f in firings] == ["asr"]
    assert list(changed) == ["asr"]
    # An unchanged state is not returned (the caller writes only what changed).
    _, changed = evaluate(rules, {"asr": State(False, 1, rules[1].definition)}, {"asr": 10}, AT)
    assert changed == {}


def test_a_firing_is_the_message_of_spec_9() -> None:
    rule = alert(threshold="100.50")
    (firing,), _ = evaluate([rule], {}, {"balance": Decimal("-1.2500")}, AT)
    assert firing == Firing(
        "low", 1, "C1", "Balance below 100", "balance", "<", Decimal("100.50"),
        Decimal("-1.2500"), AT, "noc@example.com",
    )  # fmt: skip
    assert firing.key == "low~1"
    message = firing.message()
    assert message == {
        "alert_id": "low",
        "crossing": 1,
        "customer_id": "C1",
        "name": "Balance below 100",
        "area": "balance",
        "operator": "<",
        "threshold": "100.50",
        "value": "-1.2500",
        "at": "2026-12-07T10:15:00Z",
    }
    assert json.loads(json.dumps(message)) == message
    big = evaluate([alert(threshold="1E+3")], {}, {"balance": Decimal("1E+2")}, AT)[0][0]
    assert (big.message()["threshold"], big.message()["value"]) == ("1000", "100")
    assert firing.summary() == "Balance below 100: customer C1 balance -1.2500 < 100.50"
    asr = evaluate([alert("asr", "<", "35")], {}, {"asr": Decimal("20.5")}, AT)[0][0]
    assert asr.summary().endswith("asr 20.5% < 35%")


def test_rows_from_the_catalog() -> None:
    rows = [
        {"alert_id": "a", "customer_id": "C1", "name": "n", "area": "pdd", "operator": ">",
         "threshold": Decimal("4000"), "recipient": "x@y.example"},
        {"alert_id": "b", "customer_id": "C2", "name": "n", "area": "cps", "operator": ">=",
         "threshold": "5", "recipient": "https://h.example/"},
        {"alert_id": "c", "customer_id": "C1", "name": "n", "area": "asr", "operator": "<",
         "threshold": "35", "recipient": "x@y.example"},
    ]  # fmt: skip
    grouped = by_customer(rows)
    assert {c: [a.alert_id for a in alerts] for c, alerts in grouped.items()} == {
        "C1": ["a", "c"],
        "C2": ["b"],
    }
    with pytest.raises(ValueError, match="operator '=' is not one of"):
        Alert.of({**rows[0], "operator": "="})
    with pytest.raises(ValueError, match="area 'mos' is not one of"):
        Alert.of({**rows[0], "area": "mos"})


def test_state_round_trips_through_json() -> None:
    state = State(armed=False, crossings=7, definition=alert().definition)
    assert State.from_json(json.loads(json.dumps(state.to_json()))) == state
