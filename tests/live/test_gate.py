"""``pipelines.live.gate``'s bookkeeping: channel holds, their expiry and the CPS window
(SPEC §9.1: a limit is reached when the count equals it; none set is unlimited, 0 none;
the customer's and the auth entry's limits both apply)."""

from __future__ import annotations

import gc
import json

import pytest

from pipelines.live.gate import (
    CPS_WINDOW,
    Hold,
    Holds,
    answer_text,
    hold_json,
    hold_of,
    hold_read,
)

C = ("customer", "c")
E = ("auth", "ip|10.0.0.0/24|")


def hold(customer: str = "c", entry: str | None = E[1], expires: float = 100.0) -> Hold:
    return hold_of(customer, entry, expires, answer_text({"allow": True, "max_seconds": 40}))


def test_a_hold_counts_for_its_customer_and_its_auth_entry_until_freed() -> None:
    holds = Holds()
    holds.add("a", hold())
    holds.add("b", hold(entry=None))
    assert (holds.channels[C], holds.channels[E], len(holds)) == (2, 1, 2)
    assert holds.free("a") == hold()
    assert holds.channels == {C: 1}
    assert holds.free("a") is None  # freed once
    holds.free("b")
    assert holds.channels == {} and len(holds) == 0


def test_a_repeated_callid_keeps_its_first_hold() -> None:
    holds = Holds()
    holds.add("a", hold(expires=100))
    holds.add("a", hold(expires=999))
    assert (holds.channels[C], holds.get("a")) == (1, hold(expires=100))


def test_holds_expire_in_order_and_a_freed_one_is_not_expired_again() -> None:
    holds = Holds()
    holds.add("late", hold(expires=200))
    holds.add("early", hold(expires=100))
    holds.add("gone", hold(expires=50))
    holds.free("gone")
    assert holds.expired(99.9) == []
    assert holds.expired(100) == ["early"]
    assert holds.expired(150) == []  # early is still held until the caller frees it
    holds.free("early")
    assert holds.expired(10_000) == ["late"]


def test_the_json_of_a_hold_reads_back() -> None:
    assert hold_read(hold_json(hold())) == hold()
    assert hold_read(hold_json(hold(entry=None))) == hold(entry=None)
    assert json.loads(hold()[3]) == {"allow": True, "max_seconds": 40}


@pytest.mark.parametrize(
    "value",
    [
        {"entry": None, "expires": 1.0, "answer": "{}"},
        {"customer_id": "c", "expires": "soon", "answer": "{}"},
        {"customer_id": "c", "expires": 1.0, "answer": {"allow": True}},
        {"customer_id": "c", "expires": 1.0, "answer": "[1]"},
        {"customer_id": "c", "expires": 1.0, "answer": "{"},
    ],
)
def test_a_table_value_that_is_no_hold_is_an_error(value: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        hold_read(value)


def test_the_collector_stops_tracking_holds_and_their_table_values() -> None:
    """A busy gate holds hundreds of thousands of channels: neither a hold nor its table
    value may be something each full collection scans."""
    holds = Holds()
    holds.add("a", hold())
    value = hold_json(holds.get("a") or hold())
    gc.collect()
    assert not gc.is_tracked(holds.get("a")) and not gc.is_tracked(value)


def test_channels_limit_is_reached_when_the_count_equals_it() -> None:
    holds = Holds()
    limits = [(C, 2, None), (E, None, None)]
    assert holds.reached(limits, 0) is None
    holds.add("a", hold())
    assert holds.reached(limits, 0) is None
    holds.add("b", hold())
    assert holds.reached(limits, 0) == "channels"
    holds.free("a")
    assert holds.reached(limits, 0) is None


def test_zero_allows_none_and_none_is_unlimited() -> None:
    holds = Holds()
    assert holds.reached([(C, 0, None)], 0) == "channels"
    assert holds.reached([(C, None, 0)], 0) == "cps"
    for i in range(1000):
        holds.add(str(i), hold())
        holds.allowed([C], 0.0)
    assert holds.reached([(C, None, None)], 0.0) is None


def test_the_auth_entrys_limit_applies_beside_the_customers() -> None:
    holds = Holds()
    holds.add("a", hold())
    assert holds.reached([(C, 10, None), (E, 1, None)], 0) == "channels"
    holds.allowed([C, E], 5.0)
    assert holds.reached([(C, None, 10), (E, None, 1)], 5.5) == "cps"
    assert holds.reached([(C, None, 10), (E, None, 2)], 5.5) is None


def test_channels_come_before_cps() -> None:
    holds = Holds()
    holds.add("a", hold())
    holds.allowed([C], 0.0)
    assert holds.reached([(C, 1, 1)], 0.0) == "channels"


def test_cps_is_a_sliding_second() -> None:
    holds = Holds()
    for moment in (10.0, 10.4, 10.8):
        holds.allowed([C], moment)
    assert holds.cps(C, 10.8) == 3
    assert holds.cps(C, 10.0 + CPS_WINDOW) == 2  # the one at 10.0 is a second old
    assert holds.reached([(C, None, 2)], 11.0) == "cps"
    assert holds.cps(C, 11.41) == 1
    assert holds.reached([(C, None, 2)], 11.41) is None
    assert holds.cps(C, 20.0) == 0 and C not in holds.recent
