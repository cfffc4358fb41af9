"""``rating.authorize``: each deny reason in SPEC §9 order, the auth entry that identified a
call, and ``max_seconds`` against hand-computed cases and against the engine's own charges."""

from __future__ import annotations

import gc
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rating.authorize import (
    Authorizer,
    Decision,
    Funds,
    decide,
    decide_many,
    max_seconds,
    micro_of,
    packages_left,
    problem,
    reach,
)
from rating.engine import Usage, charges, draw, price, usage_from
from rating.tables import compile_tables
from schemas.cdr import INPUT

NOW = datetime(2026, 11, 18, 10, 30, tzinfo=UTC)  # a Wednesday; the month began on a Sunday
NUMBER = "447700900123"


def catalog(
    rate: str = "0.60",
    mcd: int = 0,
    pulse: int = 1,
    *,
    grace: int = 0,
    connect_fee: str = "0",
    precision: int = 4,
    rounding: str = "half_up",
    tax: str = "0",
    status: str = "active",
) -> dict[str, Any]:
    """Customer ``c`` (and ``p``, pending) routed to card ``k``, whose one row prices 44."""
    customer = {"currency": "USD", "tax_percent": Decimal(tax), "channels": None, "cps": None}
    return {
        "customers": [
            {"customer_id": "c", "name": "C", "status": status, **customer},
            {"customer_id": "p", "name": "P", "status": "pending", **customer},
        ],
        "rate_cards": [
            {
                "card_id": "k",
                "name": "K",
                "currency": "USD",
                "direction": "termination",
                "precision": precision,
                "rounding": rounding,
                "duration_rounding": "up",
            }
        ],
        "rates": [
            {
                "id": 1,
                "card_id": "k",
                "prefix": "44",
                "name": "UK",
                "rate": Decimal(rate),
                "connect_fee": Decimal(connect_fee),
                "mcd": mcd,
                "pulse": pulse,
                "grace": grace,
                "effective_from": None,
                "effective_to": None,
            }
        ],
        "routes": [
            _route(1, "c"),
            _route(2, "p"),
        ],
        "auth": [],
        "cli_rules": [],
        "packages": [],
        "customer_packages": [],
        "dids": [],
        "providers": [],
    }


def _route(i: int, customer: str, dial: str | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "customer_id": customer,
        "card_id": "k",
        "tech_prefix": None,
        "strip_digits": 0,
        "dial_string": dial,
        "priority": 0,
    }


def _auth(i: int, customer: str, kind: str, value: str, tech: str | None = None) -> dict[str, Any]:
    return {
        "id": i,
        "customer_id": customer,
        "kind": kind,
        "value": value,
        "tech_prefix": tech,
        "channels": i,
        "cps": None,
    }


def authorizer(snapshot: dict[str, Any]) -> Authorizer:
    return Authorizer.of(compile_tables(snapshot), snapshot)


def funds(available: str, usage: Usage | None = None) -> Any:
    return lambda customer_id: Funds(micro_of(Decimal(available)), usage)


def ask(
    snapshot: dict[str, Any], available: str = "100", usage: Usage | None = None, **call: Any
) -> Decision:
    request = {"callid": "x", "dest_number": NUMBER, "customer_id": "c", **call}
    assert problem(request) is None
    return decide(authorizer(snapshot), request, NOW, funds(available, usage))


# -- the deny reasons, in order ----------------------------------------------------------------


def test_an_allowed_call_answers_customer_card_prefix_rate_and_seconds() -> None:
    d = ask(catalog(), available="1")  # 0.01/s: 100 s
    assert d.answer() == {
        "allow": True,
        "reason": None,
        "customer_id": "c",
        "card_id": "k",
        "dest_code": "44",
        "rate": "0.6",
        "max_seconds": 100,
    }


def test_unknown_customer_by_id_and_by_auth() -> None:
    snapshot = catalog()
    snapshot["auth"] = [_auth(1, "c", "ip", "10.0.0.0/24")]
    assert ask(snapshot, customer_id="nobody").reason == "unknown_customer"
    d = ask(snapshot, customer_id=None, source_ip="10.0.1.1")
    assert (d.allow, d.reason, d.customer_id, d.max_seconds) == (False, "unknown_customer", None, 0)
    assert ask(snapshot, customer_id=None, sip_user="someone").reason == "unknown_customer"
    assert ask(snapshot, customer_id=None, source_ip="not-an-ip").reason == "unknown_customer"


@pytest.mark.parametrize("status", ["inactive", "pending", "penalty"])
def test_not_active(status: str) -> None:
    d = ask(catalog(status=status))
    assert (d.allow, d.reason, d.customer_id) == (False, "not_active", "c")


def test_cli_rules_first_match_in_catalog_order_decides() -> None:
    snapshot = catalog()
    snapshot["cli_rules"] = [
        {"id": 1, "customer_id": "c", "pattern": "4420", "action": "allow"},
        {"id": 2, "customer_id": "c", "pattern": "^44", "action": "deny"},
        {"id": 3, "customer_id": "c", "pattern": "^0+$", "action": "deny"},
        {"id": 4, "customer_id": "p", "pattern": "^.*$", "action": "deny"},
    ]
    assert ask(snapshot, source_cli="442071234567").allow  # rule 1 before rule 2
    assert ask(snapshot, source_cli="447911123456").reason == "cli_denied"
    assert ask(snapshot, source_cli="0000").reason == "cli_denied"  # a regex
    assert ask(snapshot, source_cli="12025550100").allow  # no rule matches
    assert ask(snapshot, source_cli=None).allow  # no CLI: no rule can match
    # Catalog order is the rules' ids, whatever order the rows come in.
    snapshot["cli_rules"].reverse()
    assert ask(snapshot, source_cli="442071234567").allow


def test_no_route_and_no_rate() -> None:
    snapshot = catalog()
    snapshot["routes"] = [_route(1, "c", dial="1|33")]
    d = ask(snapshot)
    assert (d.reason, d.card_id) == ("no_route", None)
    d = ask(catalog(), dest_number="33123456")
    assert (d.reason, d.customer_id, d.card_id, d.dest_code) == ("no_rate", "c", "k", None)


def test_credit_when_the_first_step_is_not_paid_for() -> None:
    d = ask(catalog(mcd=30, pulse=6), available="0.29")
    assert (d.allow, d.reason, d.max_seconds, d.rate) == (False, "credit", 0, 600_000)
    assert ask(catalog(mcd=30, pulse=6), available="-5").reason == "credit"
    assert ask(catalog(mcd=30, pulse=6), available="0.30").max_seconds == 30


def test_reasons_come_in_spec_order() -> None:
    snapshot = catalog(status="pending")
    snapshot["cli_rules"] = [{"id": 1, "customer_id": "c", "pattern": "1", "action": "deny"}]
    snapshot["routes"] = [_route(1, "c", dial="1")]
    # Not active, CLI denied, no route and no credit at once: not_active is the answer.
    assert ask(snapshot, available="0", source_cli="1").reason == "not_active"
    snapshot["customers"][0]["status"] = "active"
    assert ask(snapshot, available="0", source_cli="1").reason == "cli_denied"
    assert ask(snapshot, available="0", source_cli="2").reason == "no_route"
    assert ask(catalog(), available="0", dest_number="33").reason == "no_rate"


def test_a_live_limit_comes_before_credit_and_after_the_rest() -> None:
    credit = ask(catalog(), available="0")
    assert credit.reason == "credit"
    assert credit.limited("channels").reason == "channels"
    allowed = ask(catalog())
    limited = allowed.limited("cps")
    assert (limited.allow, limited.reason, limited.max_seconds) == (False, "cps", 0)
    assert limited.customer_id == "c"
    inactive = ask(catalog(status="inactive"))
    assert inactive.limited("channels").reason == "not_active"
    with pytest.raises(ValueError, match="live limit"):
        allowed.limited("credit")


# -- who pays, and by which auth entry ----------------------------------------------------------


def test_the_auth_entry_that_identified_the_call() -> None:
    snapshot = catalog()
    snapshot["auth"] = [
        _auth(1, "c", "ip", "10.0.0.0/24"),
        _auth(2, "p", "ip", "10.0.0.7", tech="99#"),
        _auth(3, "c", "user", "alice"),
    ]
    a = authorizer(snapshot)
    calls = [
        {"callid": "1", "dest_number": NUMBER, "source_ip": "10.0.0.7"},
        {"callid": "2", "dest_number": "99#" + NUMBER, "source_ip": "10.0.0.7"},
        {"callid": "3", "dest_number": NUMBER, "sip_user": "alice"},
        {"callid": "4", "dest_number": NUMBER, "customer_id": "c", "source_ip": "10.0.0.7"},
    ]
    got = decide_many(a, calls, NOW, funds("100"))
    assert [(d.callid, d.customer_id, d.auth_entry) for d in got] == [
        ("1", "c", 0),
        ("2", "p", 1),  # the longest tech prefix first
        ("3", "c", 2),
        ("4", "c", -1),  # a customer_id given: no auth entry identified it
    ]
    assert [a.entry_limits[d.auth_entry].channels for d in got[:3]] == [1, 2, 3]
    assert got[1].reason == "not_active"


def test_an_inbound_call_to_a_did_is_the_dids_customers() -> None:
    snapshot = catalog()
    snapshot["dids"] = [
        {
            "number": "442071234567",
            "customer_id": "c",
            "customer_card_id": "k",
            "provider_id": None,
            "provider_card_id": None,
        }
    ]
    snapshot["auth"] = [_auth(1, "p", "ip", "10.0.0.7")]
    d = ask(
        snapshot,
        available="1",
        customer_id=None,
        source_ip="10.0.0.7",
        dest_number="+442071234567",
        direction="inbound",
    )
    assert (d.allow, d.customer_id, d.auth_entry, d.max_seconds) == (True, "c", -1, 100)


def test_rows_of_another_version_are_refused() -> None:
    snapshot = catalog()
    snapshot["auth"] = [_auth(1, "c", "ip", "10.0.0.7")]
    tables = compile_tables(snapshot)
    with pytest.raises(Exception, match="one catalog version"):
        Authorizer.of(tables, {**snapshot, "auth": []})


# -- max_seconds, by hand ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "available", "expected"),
    [
        # 0.60/min is 0.01 a second. 30/6: 30, 36, …, 96, 102 billed seconds.
        ({"mcd": 30, "pulse": 6}, "1.00", 96),
        ({"mcd": 30, "pulse": 6}, "0.30", 30),
        ({"mcd": 30, "pulse": 6}, "0.3599", 30),
        ({"mcd": 30, "pulse": 6}, "0.36", 36),
        # A connect fee of 0.05: 0.01 B + 0.05 ≤ 1.00 → B ≤ 95 → 90.
        ({"mcd": 30, "pulse": 6, "connect_fee": "0.05"}, "1.00", 90),
        ({"mcd": 30, "pulse": 6, "connect_fee": "0.05"}, "0.34", 0),
        # Grace 5, 0/60 at 1.20/min: the first step is billed(6 s) = 60 s (1.20); 120 s cost
        # 2.40, 180 s 3.60.
        ({"rate": "1.20", "pulse": 60, "grace": 5}, "3.00", 120),
        # Grace 65: the shortest billed call is 66 s → 120 s (2.40); 60 s (1.20) is no step.
        ({"rate": "1.20", "pulse": 60, "grace": 65}, "2.00", 0),
        ({"rate": "1.20", "pulse": 60, "grace": 65}, "2.40", 120),
        # MCD 60, grace 70, pulse 6: billed(71) = 60 + 12 = 72 (0.72).
        ({"mcd": 60, "pulse": 6, "grace": 70}, "0.71", 0),
        ({"mcd": 60, "pulse": 6, "grace": 70}, "0.80", 78),
        # Tax 20 %: 0.012 a second; 78 s cost 0.936, 84 s 1.008.
        ({"mcd": 30, "pulse": 6, "tax": "20"}, "1.00", 78),
        # Tax 17.5 % at precision 2: 30 s → 0.30 + 0.0525 (→ 0.05) = 0.35; 36 s → 0.36 + 0.063
        # (→ 0.06) = 0.42.
        ({"mcd": 30, "pulse": 6, "tax": "17.5", "precision": 2}, "0.41", 30),
        ({"mcd": 30, "pulse": 6, "tax": "17.5", "precision": 2}, "0.42", 36),
        # docs/live.md: 30 s with a connect fee and 20 % tax cost (0.30 + 0.05) × 1.2.
        ({"mcd": 30, "pulse": 6, "connect_fee": "0.05", "tax": "20"}, "0.40", 0),
        ({"mcd": 30, "pulse": 6, "connect_fee": "0.05", "tax": "20"}, "0.42", 30),
        # Free calls and plenty of money stop at the cap.
        ({"rate": "0"}, "0", 10_800),
        ({"mcd": 30, "pulse": 6}, "1000", 10_800),
    ],
)
def test_max_seconds_by_hand(params: dict[str, Any], available: str, expected: int) -> None:
    d = ask(catalog(**params), available=available)
    assert d.max_seconds == expected
    assert d.allow == (expected > 0)
    assert d.reason == (None if expected else "credit")


@pytest.mark.parametrize(
    ("rounding", "available", "expected"),
    [
        # 0.015/min, 1/1, precision 3: 0.00025 a second, rounded to 0.001.
        # B:       1        2       3        4      5        6       7        8
        # exact  .00025  .0005  .00075   .001   .00125  .0015  .00175   .002
        ("half_up", "0.001", 5),  # 6 s: .0015 → .002
        ("half_down", "0.001", 6),  # 6 s: .0015 → .001; 7 s → .002
        ("down", "0.001", 7),  # 8 s: .002
        ("up", "0.001", 4),  # 5 s: .00125 → .002
        ("half_up", "0", 1),  # 2 s: .0005 → .001
        ("half_down", "0", 2),
        ("down", "0", 3),
        ("up", "0", 0),  # even 1 s costs .001: credit
    ],
)
def test_max_seconds_rounding(rounding: str, available: str, expected: int) -> None:
    snapshot = catalog("0.015", 0, 1, precision=3, rounding=rounding)
    assert ask(snapshot, available=available).max_seconds == expected


def test_the_cap_is_a_setting_and_need_not_be_a_step() -> None:
    a = authorizer(catalog(mcd=30, pulse=6))
    call = {"callid": "x", "dest_number": NUMBER, "customer_id": "c"}
    assert decide(a, call, NOW, funds("1000"), cap=100).max_seconds == 100
    assert decide(a, call, NOW, funds("0.96"), cap=100).max_seconds == 96
    assert decide(a, call, NOW, funds("1000"), cap=20).max_seconds == 20  # below mcd


def _with_package(snapshot: dict[str, Any], prefixes: str | None = None) -> dict[str, Any]:
    snapshot["packages"] = [
        {
            "package_id": "P1",
            "name": "UK minute",
            "seconds": 60,
            "prefixes": prefixes,
            "frequency": "monthly",
            "retail": Decimal(0),
            "cost": None,
            "setup_retail": None,
        }
    ]
    snapshot["customer_packages"] = [
        {
            "customer_id": "c",
            "package_id": "P1",
            "quantity": None,
            "auto_decrement": False,
            "start_date": "2026-01-01",
            "end_date": None,
        }
    ]
    return snapshot


def _drawn(snapshot: dict[str, Any], seconds: int, period: date = date(2026, 11, 1)) -> Usage:
    tables = compile_tables(snapshot)
    return usage_from(tables, [("c", "P1", "2026-01-01", period, seconds)])


@pytest.mark.parametrize(
    ("params", "available", "expected"),
    [
        # 40 package seconds left: cost 0.01 × (B - 40). 0.30 → B ≤ 70 → 66.
        ({}, "0.30", 66),
        # Nothing to spend: 30 and 36 s are free, 42 s costs 0.02.
        ({}, "0", 36),
        # A connect fee only once the package no longer covers the call:
        # 0.01 (B - 40) + 0.05 ≤ 0.30 → B ≤ 65 → 60.
        ({"connect_fee": "0.05"}, "0.30", 60),
        ({"connect_fee": "0.05"}, "0", 36),
        # docs/live.md's worked example: with 20 % tax, 114 s cost 0.948 and 120 s 1.02.
        ({"connect_fee": "0.05", "tax": "20"}, "1.00", 114),
    ],
)
def test_max_seconds_after_the_package_seconds_left(
    params: dict[str, Any], available: str, expected: int
) -> None:
    snapshot = _with_package(catalog(mcd=30, pulse=6, **params))
    d = ask(snapshot, available=available, usage=_drawn(snapshot, 20))
    assert (d.package_seconds, d.max_seconds) == (40, expected)


def test_package_seconds_of_another_period_or_number_do_not_count() -> None:
    snapshot = _with_package(catalog(mcd=30, pulse=6))
    # Last month's draws leave this month's 60 s whole: 0.30 → B ≤ 90 → 90.
    d = ask(snapshot, available="0.30", usage=_drawn(snapshot, 60, date(2026, 10, 1)))
    assert (d.package_seconds, d.max_seconds) == (60, 90)
    d = ask(snapshot, available="0.30", usage=_drawn(snapshot, 60))
    assert (d.package_seconds, d.max_seconds) == (0, 30)
    d = ask(snapshot, available="0.30")  # nothing drawn yet
    assert d.package_seconds == 60
    only_us = _with_package(catalog(mcd=30, pulse=6), prefixes="1")
    d = ask(only_us, available="0.30")
    assert (d.package_seconds, d.max_seconds) == (0, 30)


def test_drawn_usage_is_not_changed() -> None:
    snapshot = _with_package(catalog(mcd=30, pulse=6))
    usage = _drawn(snapshot, 20)
    keys, values = usage.keys.copy(), usage.values.copy()
    ask(snapshot, usage=usage)
    ask(snapshot, usage=usage)
    assert (usage.keys == keys).all() and (usage.values == values).all()


# -- max_seconds against the engine, on many tariffs --------------------------------------------


def _engine_max(snapshot: dict[str, Any], free: int, available: int, cap: int) -> int:
    """The slow way: price every duration from grace + 1 s on through the engine, charge
    each (charge + tax after min(free, billed) package seconds) and keep the longest billed
    duration within ``available``; 0 if the shortest is not."""
    tables = compile_tables(snapshot)
    row = snapshot["rates"][0]
    first = row["grace"] + 1
    durations = range(first, first + cap + row["mcd"] + row["pulse"] + 1)
    calls = [
        {
            "callid": str(d),
            "dt": NOW,
            "dest_number": NUMBER,
            "duration": Decimal(d),
            "sip_code": 200,
            "customer_id": "c",
        }
        for d in durations
    ]
    priced = price(tables, pa.Table.from_pylist(calls, schema=INPUT))
    money = charges(tables, priced, np.minimum(priced.billed, free))
    costs = money.charge + money.tax
    if costs[0] > available:
        return 0
    return min(cap, int(priced.billed[costs <= available].max()))


@settings(max_examples=60, deadline=None)
@given(
    rate=st.decimals(min_value=0, max_value=5, places=4),
    fee=st.sampled_from(["0", "0.01", "0.0333"]),
    mcd=st.sampled_from([0, 1, 30, 60]),
    pulse=st.sampled_from([1, 6, 30, 60]),
    grace=st.sampled_from([0, 3, 45]),
    precision=st.integers(0, 6),
    rounding=st.sampled_from(["up", "down", "half_up", "half_down"]),
    tax=st.sampled_from(["0", "17.5", "20"]),
    free=st.sampled_from([0, 7, 45]),
    available=st.integers(0, 3_000_000),
)
def test_max_seconds_agrees_with_the_engine(
    rate: Decimal,
    fee: str,
    mcd: int,
    pulse: int,
    grace: int,
    precision: int,
    rounding: str,
    tax: str,
    free: int,
    available: int,
) -> None:
    snapshot = catalog(
        str(rate),
        mcd,
        pulse,
        grace=grace,
        connect_fee=fee,
        precision=precision,
        rounding=rounding,
        tax=tax,
    )
    tables = compile_tables(snapshot)
    billed = np.zeros(1, np.int64)
    first = price(
        tables,
        pa.Table.from_pylist(
            [
                {
                    "callid": "x",
                    "dt": NOW,
                    "dest_number": NUMBER,
                    "duration": Decimal(grace + 1),
                    "sip_code": 200,
                    "customer_id": "c",
                }
            ],
            schema=INPUT,
        ),
    ).billed
    billed[0] = first[0]
    cap = 400
    got = max_seconds(tables, 0, 0, 0, int(billed[0]), free, available, cap)
    assert got == _engine_max(snapshot, free, available, cap)


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"dest_number": NUMBER, "customer_id": "c"}, "callid: missing"),
        ({"callid": "x", "customer_id": "c"}, "dest_number: missing"),
        ({"callid": "x", "dest_number": NUMBER}, "one of customer_id"),
        ({"callid": 7, "dest_number": NUMBER, "customer_id": "c"}, "callid: must be a string"),
        ({"callid": "x", "dest_number": "44a", "customer_id": "c"}, "only digits"),
        ({"callid": "x", "dest_number": NUMBER, "customer_id": ["c"]}, "customer_id: must be"),
        ({"callid": "x", "dest_number": NUMBER, "sip_user": "u", "direction": "up"}, "direction"),
        ({"callid": "x" * 300, "dest_number": NUMBER, "customer_id": "c"}, "longer than"),
    ],
)
def test_problems_of_a_request(body: Any, message: str) -> None:
    found = problem(body)
    assert found is not None and message in found


def test_a_request_may_carry_any_other_field() -> None:
    body = {"callid": "x", "dest_number": NUMBER, "sip_user": "u", "switch": "s1", "dt": 5}
    assert problem(body) is None


def test_decide_many_answers_each_call_on_its_own() -> None:
    """Credit is not reserved between calls: two calls each get the whole of it."""
    a = authorizer(catalog(mcd=30, pulse=6))
    calls = [{"callid": str(i), "dest_number": NUMBER, "customer_id": "c"} for i in range(3)]
    got = decide_many(a, calls, NOW, funds("1.00"))
    assert [(d.callid, d.max_seconds) for d in got] == [("0", 96), ("1", 96), ("2", 96)]
    assert decide_many(a, [], NOW, funds("1")) == []


def test_each_call_of_a_batch_sees_all_the_package_seconds_left() -> None:
    """Calls of one customer in one batch are drawn in separate rounds: none takes the
    seconds of another; and one usage of everyone's draws counts once per customer."""
    snapshot = _with_package(catalog(mcd=30, pulse=6))
    snapshot["customers"].append({**snapshot["customers"][0], "customer_id": "d", "name": "D"})
    snapshot["routes"].append(_route(3, "d"))
    snapshot["customer_packages"].append({**snapshot["customer_packages"][0], "customer_id": "d"})
    tables = compile_tables(snapshot)
    usage = usage_from(
        tables,
        [
            ("c", "P1", "2026-01-01", date(2026, 11, 1), 20),
            ("d", "P1", "2026-01-01", date(2026, 11, 1), 50),
        ],
    )
    numbers = [NUMBER, "447911123456", NUMBER, NUMBER]
    calls = [
        {"callid": str(i), "dest_number": n, "customer_id": "cdcc"[i]}
        for i, n in enumerate(numbers)
    ]
    got = decide_many(Authorizer.of(tables, snapshot), calls, NOW, funds("0.30", usage))
    assert [d.package_seconds for d in got] == [40, 10, 40, 40]
    assert [d.max_seconds for d in got] == [66, 36, 66, 66]


def test_limits_follow_the_auth_rows_in_any_order_and_rows_without_ids() -> None:
    """A snapshot's rows may come in another order than the compiled entries, and without
    ids (the catalog's order is then the order given)."""
    snapshot = catalog()
    snapshot["auth"] = [
        _auth(1, "c", "ip", "10.0.0.0/24"),
        _auth(2, "c", "ip", "10.0.0.7", tech="99#"),
        _auth(3, "c", "user", "alice"),
    ]
    snapshot["cli_rules"] = [
        {"id": 1, "customer_id": "c", "pattern": "44", "action": "deny"},
        {"id": 2, "customer_id": "c", "pattern": "4420", "action": "allow"},
    ]
    tables = compile_tables(snapshot)
    rows = {
        **snapshot,
        "auth": [{k: v for k, v in r.items() if k != "id"} for r in reversed(snapshot["auth"])],
        "cli_rules": [{k: v for k, v in r.items() if k != "id"} for r in snapshot["cli_rules"]],
    }
    a = Authorizer.of(tables, rows)
    assert [limit.channels for limit in a.entry_limits] == [1, 2, 3]
    call = {"callid": "x", "dest_number": NUMBER, "customer_id": "c", "source_cli": "4420"}
    assert decide(a, call, NOW, funds("1")).reason == "cli_denied"


@settings(max_examples=40, deadline=None)
@given(
    used=st.lists(st.integers(0, 200), min_size=3, max_size=3),
    numbers=st.lists(st.sampled_from(["4477", "4420", "1212", "3312"]), min_size=1, max_size=8),
)
def test_packages_left_is_each_calls_own_draw_of_everything(
    used: list[int], numbers: list[str]
) -> None:
    """One draw for a batch gives each call what a draw of that call alone (on a fresh copy
    of the usage) would give."""
    snapshot = _with_package(catalog())
    base = snapshot["packages"][0]
    snapshot["packages"] = [
        {**base, "package_id": "P1", "seconds": 100, "prefixes": "44"},
        {**base, "package_id": "P2", "seconds": 150, "prefixes": "4477|1", "frequency": "daily"},
        {**base, "package_id": "P3", "seconds": 90, "prefixes": None, "frequency": "weekly"},
    ]
    cp = snapshot["customer_packages"][0]
    snapshot["customer_packages"] = [{**cp, "package_id": p} for p in ("P1", "P2", "P3")]
    tables = compile_tables(snapshot)
    usage = usage_from(
        tables,
        [
            ("c", "P1", "2026-01-01", date(2026, 11, 1), used[0]),
            ("c", "P2", "2026-01-01", date(2026, 11, 18), used[1]),
            ("c", "P3", "2026-01-01", date(2026, 11, 16), used[2]),
        ],
    )
    calls = [
        {"callid": str(i), "dest_number": n + "555", "customer_id": "c"}
        for i, n in enumerate(numbers)
    ]
    priced = price(tables, _batch_of(calls))
    numbers = priced.batch["dest_number"].to_pylist()
    args = (tables, priced.customer, priced.days, numbers, priced.start, range(len(calls)))
    together = packages_left(*args, {0: usage})
    # What it keeps between batches (the allotments open to each call) is the same whatever
    # was drawn when it was found: first found with nothing drawn, then used with the usage.
    known: dict[Any, Any] = {}
    everything = {"4477555": 340, "4420555": 190, "1212555": 240, "3312555": 90}
    assert packages_left(*args, {}, known) == {i: everything[n] for i, n in enumerate(numbers)}
    assert packages_left(*args, {0: usage}, known) == together and len(known) == len(set(numbers))
    for i in range(len(calls)):
        alone = Usage(usage.keys.size)
        alone.keys, alone.values = usage.keys.copy(), usage.values.copy()
        billed = np.zeros(len(calls), np.int64)
        billed[i] = 10**9
        mine = draw(
            tables,
            priced.customer,
            priced.days,
            priced.batch["dest_number"],
            priced.start,
            billed,
            None,
            alone,
        )
        assert together[i] == mine.seconds[i]


def test_numbers_that_start_alike_as_far_as_the_prefixes_reach_share_what_is_kept() -> None:
    """Which allotments a call may draw on is kept by as much of its rated number as the
    customer's longest allotment prefix: numbers alike that far are found once."""
    snapshot = _with_package(catalog(), prefixes="4477|1")
    tables = compile_tables(snapshot)
    c = tables.customer_index["c"]
    assert reach(tables) == [4 if i == c else 0 for i in range(len(tables.customer_ids))]
    numbers = ["447700900123", "447700111222", "442071234567", "1555"]
    known: dict[Any, Any] = {}
    day = (NOW.date() - date(1970, 1, 1)).days
    left = packages_left(tables, [c] * 4, [day] * 4, numbers, [0] * 4, range(4), {}, known)
    assert left == {0: 60, 1: 60, 2: 0, 3: 60}
    assert sorted(key[1] for key in known) == ["1555", "4420", "4477"]


def _batch_of(calls: list[dict[str, Any]]) -> pa.Table:
    rows = [{**c, "dt": NOW, "sip_code": 200} for c in calls]
    return pa.Table.from_pylist(rows, schema=INPUT)


# -- the routing cache -------------------------------------------------------------------------


def _two_versions() -> dict[str, Any]:
    """Card k's 44 at 0.60 until NOW + 1 min, then at 1.20 (a row effective from then)."""
    snapshot = catalog()
    boundary = "2026-11-18T10:31:00Z"
    snapshot["rates"][0]["effective_to"] = boundary
    snapshot["rates"].append(
        {**snapshot["rates"][0], "id": 2, "rate": Decimal("1.20"), "effective_from": boundary,
         "effective_to": None}
    )  # fmt: skip
    return snapshot


def test_the_routing_cache_answers_the_rate_in_effect_as_a_boundary_passes() -> None:
    snapshot = _two_versions()
    made = authorizer(snapshot)  # one authorizer, its cache kept between the calls
    call = {"callid": "x", "dest_number": NUMBER, "customer_id": "c"}
    before = datetime(2026, 11, 18, 10, 30, 59, 999_999, tzinfo=UTC)
    at = datetime(2026, 11, 18, 10, 31, tzinfo=UTC)
    assert decide(made, call, NOW, funds("100")).rate == 600_000
    assert made.routes((NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))
    assert decide(made, call, before, funds("100")).rate == 600_000
    assert decide(made, call, at, funds("100")).rate == 1_200_000
    assert decide(made, call, before, funds("100")).rate == 600_000  # back again: exact
    # Each answer is the one a fresh authorizer (an empty cache) gives.
    for moment in (NOW, before, at):
        assert decide(made, call, moment, funds("3")) == decide(
            authorizer(snapshot), call, moment, funds("3")
        )


def test_the_routing_cache_is_per_catalog_version() -> None:
    snapshot = catalog()
    first = authorizer(snapshot)
    call = {"callid": "x", "dest_number": NUMBER, "customer_id": "c"}
    assert decide(first, call, NOW, funds("100")).allow
    edited = catalog(status="suspended")
    assert decide(authorizer(edited), call, NOW, funds("100")).reason == "not_active"
    moved = catalog()
    moved["routes"] = [_route(1, "c", dial="33")]
    assert decide(authorizer(moved), call, NOW, funds("100")).reason == "no_route"
    assert decide(first, call, NOW, funds("100")).allow  # the old version's own cache


def test_calls_of_one_batch_sharing_routing_fields_get_their_own_answers() -> None:
    made = authorizer(catalog())
    calls = [
        {"callid": "a", "dest_number": NUMBER, "customer_id": "c"},
        {"callid": "b", "dest_number": NUMBER, "customer_id": "c"},
        {"callid": "c", "dest_number": "33123", "customer_id": "c"},
        {"callid": "d", "dest_number": NUMBER, "customer_id": "nobody"},
    ]
    fresh = decide_many(made, calls, NOW, funds("1"))
    again = decide_many(made, calls, NOW, funds("1"))  # all from the cache now
    assert fresh == again
    assert [d.callid for d in again] == ["a", "b", "c", "d"]
    assert [d.reason for d in again] == [None, None, "no_rate", "unknown_customer"]


def test_what_the_authorizer_keeps_is_out_of_the_collectors_sight() -> None:
    """With every number new it keeps up to 100,000 answers of each kind: none may be an
    object each full collection scans."""
    snapshot = _with_package(catalog(), prefixes="44")
    made = Authorizer.of(compile_tables(snapshot), snapshot)
    decide_many(made, [{"callid": "a", "dest_number": NUMBER, "customer_id": "c"}], NOW, funds("1"))
    gc.collect()
    gc.collect()  # a tuple of tuples is let go a level a collection, the inner one first
    kept = [*made.routes(int(NOW.timestamp()) * 1_000_000).items(), *made.drawables.items()]
    assert len(kept) == 2 and not any(gc.is_tracked(item) for pair in kept for item in pair)
