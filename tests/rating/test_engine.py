"""The numba engine against the Decimal reference: worked examples, and random catalogs.

``rate_engine`` composes the engine exactly as ``pipelines.rate`` does (price, mark
duplicates, finish) and returns what ``tests.rating.reference.rate_reference`` returns.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.dedupe import BilledCallids, hashes
from rating.engine import finish, may_draw, price, usage_from
from rating.tables import compile_tables
from schemas.cdr import INPUT, INPUT_NAMES
from tests.rating.reference import rate_reference

COMPARED = (
    "customer_id",
    "customer_status",
    "card_id",
    "number",
    "dest_code",
    "dest_name",
    "billed_duration",
    "rate",
    "connect_fee",
    "package_seconds",
    "package_id",
    "charge",
    "tax",
    "currency",
    "provider_charge",
    "provider_currency",
    "profit",
)


def rate_engine(
    snapshot: dict[str, list[dict[str, Any]]],
    cdrs: list[dict[str, Any]],
    lake_callids: frozenset[str] = frozenset(),
    usage: dict[tuple[str, str, str, str], int] | None = None,
    home: Path = Path("/nonexistent"),
) -> list[dict[str, Any]]:
    tables = compile_tables(snapshot)
    batch = pa.Table.from_pylist([{n: c.get(n) for n in INPUT_NAMES} for c in cdrs], schema=INPUT)
    priced = price(tables, batch)
    billed = BilledCallids(home)
    billed._insert(*hashes(pa.array(sorted(lake_callids), pa.string())))
    ok = priced.reason == None  # noqa: E711
    priced.reason[billed.mark(batch["callid"], ok)] = "duplicate"
    draws = [(c, p, s, date.fromisoformat(d), n) for (c, p, s, d), n in (usage or {}).items()]
    usage = usage_from(tables, draws)
    # As the runner does: calls that cannot draw on a package are finished first, the others
    # after them; a call wrongly thought unable to draw would lose its package seconds.
    drawing = may_draw(tables, priced)
    ok = (priced.reason == None) & ~drawing  # noqa: E711
    first = finish(tables, priced.select(ok), usage, 0).to_pylist()
    later = finish(tables, priced.select(drawing), usage, 0).to_pylist()
    by_index = dict(zip(np.flatnonzero(ok).tolist(), first, strict=True))
    by_index.update(zip(np.flatnonzero(drawing).tolist(), later, strict=True))
    rated = [by_index[i] for i in sorted(by_index)]
    out, rows = [], iter(rated)
    for callid, reason in zip(batch["callid"].to_pylist(), priced.reason, strict=True):
        if reason is not None:
            out.append({"callid": callid, "reject_reason": reason})
            continue
        row = next(rows)
        result = {"callid": callid, "reject_reason": None, **{k: row[k] for k in COMPARED}}
        result["package_draws"] = [
            (
                d["package_id"],
                d["start_date"].isoformat(),
                d["period_start"].isoformat(),
                d["seconds"],
            )
            for d in row["package_draws"]
        ]
        out.append(result)
    return out


def _normal(result: dict[str, Any]) -> dict[str, Any]:
    """Compare decimals by value, draws as tuples of text."""
    out = {}
    for key, value in result.items():
        if isinstance(value, Decimal):
            value = value.normalize() + 0
        if key == "package_draws":
            value = [tuple(str(x) for x in d) for d in value]
        out[key] = value
    return out


def assert_same(
    snapshot: dict[str, Any], cdrs: list[dict[str, Any]], **kw: Any
) -> list[dict[str, Any]]:
    engine = [_normal(r) for r in rate_engine(snapshot, cdrs, **kw)]
    reference = [
        _normal(
            {
                k: r.get(k)
                for k in ("callid", "reject_reason", *COMPARED, "package_draws")
                if k in r or r.get("reject_reason") is None
            }
        )
        for r in rate_reference(snapshot, cdrs, **kw)
    ]
    for i, (e, r) in enumerate(zip(engine, reference, strict=True)):
        if r["reject_reason"] is not None:
            r = {"callid": r["callid"], "reject_reason": r["reject_reason"]}
        assert e == r, f"CDR {i} {cdrs[i]}"
    return engine


# -- a small catalog for the SPEC's worked examples ------------------------------------------


def catalog(
    rate: str,
    mcd: int,
    pulse: int,
    *,
    precision: int = 4,
    rounding: str = "half_up",
    grace: int = 0,
    connect_fee: str = "0",
    duration_rounding: str = "up",
) -> dict[str, Any]:
    return {
        "customers": [
            {
                "customer_id": "c",
                "name": "C",
                "status": "active",
                "currency": "USD",
                "tax_percent": Decimal("20"),
            }
        ],
        "rate_cards": [
            {
                "card_id": "k",
                "name": "K",
                "currency": "USD",
                "direction": "termination",
                "precision": precision,
                "rounding": rounding,
                "duration_rounding": duration_rounding,
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
            {
                "id": 1,
                "customer_id": "c",
                "card_id": "k",
                "tech_prefix": None,
                "strip_digits": 0,
                "dial_string": None,
                "priority": 0,
            }
        ],
        "auth": [],
        "packages": [],
        "customer_packages": [],
        "dids": [],
        "providers": [],
    }


def one_call(duration: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    cdr = {
        "callid": "x",
        "dt": datetime(2026, 11, 1, tzinfo=UTC),
        "dest_number": "447700900123",
        "duration": Decimal(duration),
        "sip_code": 200,
        "customer_id": "c",
    }
    [result] = assert_same(snapshot, [cdr])
    return result


@pytest.mark.parametrize(("seconds", "billed"), [("1", 30), ("30", 30), ("31", 36), ("37", 42)])
def test_spec_30_6_increments(seconds: str, billed: int) -> None:
    assert one_call(seconds, catalog("0.015", 30, 6))["billed_duration"] == billed


@pytest.mark.parametrize(
    ("mcd", "pulse", "billed", "charge"),
    [(6, 6, 12, "0.003"), (30, 6, 30, "0.0075"), (60, 6, 60, "0.015")],
)
def test_spec_7_seconds_at_0_015(mcd: int, pulse: int, billed: int, charge: str) -> None:
    result = one_call("7", catalog("0.015", mcd, pulse))
    assert (result["billed_duration"], result["charge"]) == (billed, Decimal(charge))


@pytest.mark.parametrize(
    ("rounding", "charge"),
    [("half_up", "0.0018"), ("half_down", "0.0017"), ("down", "0.0017"), ("up", "0.0018")],
)
def test_spec_rounding_tie_0_00175(rounding: str, charge: str) -> None:
    result = one_call("7", catalog("0.015", 1, 1, rounding=rounding))
    assert result["charge"] == Decimal(charge)


def test_grace_means_no_charge_and_no_connect_fee() -> None:
    snapshot = catalog("0.015", 1, 1, grace=5, connect_fee="0.01")
    assert one_call("5", snapshot)["charge"] == 0
    assert one_call("6", snapshot)["charge"] == Decimal("0.0115")  # 6 × 0.015 / 60 + 0.01


@pytest.mark.parametrize(
    ("mode", "seconds", "billed"),
    [("up", "7.001", 8), ("down", "7.999", 7), ("half_up", "7.5", 8), ("half_down", "7.5", 7)],
)
def test_duration_rounding(mode: str, seconds: str, billed: int) -> None:
    assert (
        one_call(seconds, catalog("0.015", 1, 1, duration_rounding=mode))["billed_duration"]
        == billed
    )


# -- random catalogs and traffic against the reference ---------------------------------------

DIGITS = "123"
DAY0 = datetime(2026, 11, 1, tzinfo=UTC)
CHANGE = "2026-11-02T00:00:00Z"


def _digits(draw: Any, low: int, high: int) -> str:
    return draw(st.text(alphabet=DIGITS, min_size=low, max_size=high))


@st.composite
def worlds(draw: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    currencies = ["USD", "EUR"]
    customers = [
        {
            "customer_id": f"c{i}",
            "name": "C",
            "status": draw(st.sampled_from(["active", "penalty"])),
            "currency": draw(st.sampled_from(currencies)),
            "tax_percent": draw(
                st.sampled_from([Decimal(0), Decimal("7.5"), Decimal("19.6"), Decimal(20)])
            ),
        }
        for i in range(draw(st.integers(1, 3)))
    ]
    modes = ["up", "down", "half_up", "half_down"]
    cards = [
        {
            "card_id": f"k{i}",
            "name": "K",
            "currency": draw(st.sampled_from(currencies)),
            "direction": "termination",
            "precision": draw(st.integers(0, 6)),
            "rounding": draw(st.sampled_from(modes)),
            "duration_rounding": draw(st.sampled_from(modes)),
        }
        for i in range(draw(st.integers(1, 3)))
    ]
    rates, seen = [], set()
    for card in cards:
        for _ in range(draw(st.integers(1, 8))):
            prefix = _digits(draw, 1, 4)
            start = draw(st.sampled_from([None, CHANGE]))
            if (card["card_id"], prefix, start) in seen:
                continue
            seen.add((card["card_id"], prefix, start))
            end = draw(st.sampled_from([None, "2026-11-03T00:00:00Z"])) if start is None else None
            rates.append(
                {
                    "id": len(rates) + 1,
                    "card_id": card["card_id"],
                    "prefix": prefix,
                    "name": f"d{prefix}",
                    "rate": Decimal(draw(st.integers(0, 2_000_000))).scaleb(-6),
                    "connect_fee": Decimal(draw(st.sampled_from([0, 0, 5000, 123457]))).scaleb(-6),
                    "mcd": draw(st.sampled_from([0, 1, 6, 30, 60])),
                    "pulse": draw(st.sampled_from([1, 6, 30, 60])),
                    "grace": draw(st.sampled_from([0, 0, 3, 10])),
                    "effective_from": start,
                    "effective_to": end,
                }
            )
    routes = []
    for customer in customers:
        mine = [c for c in cards if c["currency"] == customer["currency"]]
        for _ in range(draw(st.integers(0, 3)) if mine else 0):
            routes.append(
                {
                    "id": len(routes) + 1,
                    "customer_id": customer["customer_id"],
                    "card_id": draw(st.sampled_from(mine))["card_id"],
                    "tech_prefix": draw(st.sampled_from([None, "9", "99", "*1"])),
                    "strip_digits": draw(st.integers(0, 2)),
                    "dial_string": draw(
                        st.sampled_from([None, None, "1|2", "3", "^3[12]", "^(1|2)2"])
                    ),
                    "priority": draw(st.integers(0, 2)),
                }
            )
    auth, keys = [], set()
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["ip", "user"]))
        value = draw(
            st.sampled_from(["10.0.0.1", "10.0.0.0/24", "10.0.0.0/30", "192.168.1.1"])
            if kind == "ip"
            else st.sampled_from(["u0", "u1"])
        )
        tech = draw(st.sampled_from([None, "9", "99"]))
        if (kind, value, tech) in keys:
            continue
        keys.add((kind, value, tech))
        auth.append(
            {
                "id": len(auth) + 1,
                "customer_id": draw(st.sampled_from(customers))["customer_id"],
                "kind": kind,
                "value": value,
                "tech_prefix": tech,
                "channels": None,
                "cps": None,
            }
        )
    packages = [
        {
            "package_id": f"p{i}",
            "name": "P",
            "seconds": draw(st.integers(10, 200)),
            "prefixes": draw(st.sampled_from([None, "1", "12|3"])),
            "frequency": draw(st.sampled_from(["daily", "weekly", "monthly", "once"])),
            "retail": Decimal(1),
            "cost": None,
            "setup_retail": None,
        }
        for i in range(draw(st.integers(0, 2)))
    ]
    customer_packages = []
    for package in packages:
        for customer in draw(
            st.lists(st.sampled_from(customers), max_size=2, unique_by=lambda c: c["customer_id"])
        ):
            customer_packages.append(
                {
                    "id": len(customer_packages) + 1,
                    "customer_id": customer["customer_id"],
                    "package_id": package["package_id"],
                    "quantity": draw(st.integers(1, 2)),
                    "auto_decrement": False,
                    "start_date": draw(st.sampled_from(["2026-10-01", "2026-11-02"])),
                    "end_date": draw(st.sampled_from([None, "2026-11-02"])),
                }
            )
    dids = []
    if draw(st.booleans()):
        owner = draw(st.sampled_from(customers))
        mine = [c for c in cards if c["currency"] == owner["currency"]]
        if mine:
            dids.append(
                {
                    "number": "3123",
                    "customer_id": owner["customer_id"],
                    "customer_card_id": draw(st.sampled_from(mine))["card_id"],
                    "provider_id": None,
                    "provider_card_id": draw(
                        st.sampled_from([None, *[c["card_id"] for c in cards]])
                    ),
                    "monthly_retail": None,
                    "monthly_cost": None,
                }
            )
    snapshot = {
        "customers": customers,
        "rate_cards": cards,
        "rates": rates,
        "routes": routes,
        "auth": auth,
        "packages": packages,
        "customer_packages": customer_packages,
        "dids": dids,
        "providers": [],
    }
    cdrs = []
    for _ in range(draw(st.integers(1, 25))):
        tech = draw(st.sampled_from(["", "", "9", "99", "*1"]))
        plus = draw(st.sampled_from(["", "", "+"]))
        answered = draw(st.booleans()) or draw(st.booleans())
        cdrs.append(
            {
                "callid": f"x{draw(st.integers(0, 12))}",
                "dt": DAY0 + timedelta(seconds=draw(st.integers(0, 3 * 86400))),
                "dest_number": tech + plus + _digits(draw, 1, 8)
                if draw(st.integers(0, 9)) != 0
                else "+3123",
                "duration": Decimal(draw(st.integers(0, 400_000))).scaleb(-3)
                if draw(st.integers(0, 5))
                else None,
                "sip_code": 200 if answered else draw(st.sampled_from([486, 487, 503])),
                "customer_id": draw(st.sampled_from([None, None, None, "c0", "c1", "nobody"])),
                "source_ip": draw(
                    st.sampled_from([None, "10.0.0.1", "10.0.0.2", "192.168.1.1", "junk"])
                ),
                "sip_user": draw(st.sampled_from([None, "u0", "u1"])),
                "provider_card_id": draw(st.sampled_from([None, "k0", "k1", "nope"])),
                "direction": draw(st.sampled_from([None, "outbound", "inbound"])),
            }
        )
    return snapshot, cdrs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.data())
def test_engine_agrees_with_the_reference(world: Any, data: st.DataObject) -> None:
    snapshot, cdrs = world
    lake = frozenset(data.draw(st.lists(st.sampled_from([f"x{i}" for i in range(13)]), max_size=2)))
    assert_same(snapshot, cdrs, lake_callids=lake)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_the_prefix_filter_never_changes_a_rate_row(world: Any) -> None:
    """The bloom filter only skips lookups that would miss: with a filter that lets every
    length through (every probe goes to the table, and the one-length-at-a-time fallback
    runs whenever a probe fails) the rows found are the same."""
    snapshot, cdrs = world
    tables = compile_tables(snapshot)
    batch = pa.Table.from_pylist([{n: c.get(n) for n in INPUT_NAMES} for c in cdrs], schema=INPUT)
    saturated = dataclasses.replace(
        tables, bloom=np.full(1, np.iinfo(np.uint64).max, np.uint64), bloom_bits=6
    )
    filtered, everything = price(tables, batch), price(saturated, batch)
    assert filtered.row.tolist() == everything.row.tolist()
    assert filtered.provider_row.tolist() == everything.provider_row.tolist()


def test_prior_usage_continues(tmp_path: Path) -> None:
    snapshot = catalog("0.06", 1, 1)
    snapshot["packages"] = [
        {
            "package_id": "p",
            "name": "P",
            "seconds": 100,
            "prefixes": None,
            "frequency": "daily",
            "retail": Decimal(1),
            "cost": None,
            "setup_retail": None,
        }
    ]
    snapshot["customer_packages"] = [
        {
            "id": 1,
            "customer_id": "c",
            "package_id": "p",
            "quantity": 1,
            "auto_decrement": False,
            "start_date": "2026-10-01",
            "end_date": None,
        }
    ]
    cdr = {
        "callid": "x",
        "dt": datetime(2026, 11, 1, 12, tzinfo=UTC),
        "dest_number": "4477",
        "duration": Decimal(60),
        "sip_code": 200,
        "customer_id": "c",
    }
    [result] = assert_same(snapshot, [cdr], usage={("c", "p", "2026-10-01", "2026-11-01"): 70})
    assert (result["package_seconds"], result["charge"]) == (30, Decimal("0.03"))


def test_large_values_fall_back_to_exact_integers() -> None:
    # 10^9 a minute for 10^4 s: the product in millionths (10^19) overflows int64, the charge
    # (1.7 × 10^11) does not overflow DECIMAL(18,6).
    snapshot = catalog("1000000000", 1, 1, precision=6)
    result = one_call("10000", snapshot)
    assert result["charge"] == Decimal("166666666666.666667")


def test_kernels_match_on_a_big_batch() -> None:
    """Many CDRs in one batch (one kernel call) against the reference, on one world."""
    rng = np.random.default_rng(7)
    snapshot = catalog("0.0137", 30, 6, rounding="half_down", precision=3)
    cdrs = [
        {
            "callid": f"b{i}",
            "dt": DAY0 + timedelta(seconds=int(s)),
            "dest_number": f"44{n}",
            "duration": Decimal(int(d)).scaleb(-3),
            "sip_code": 200,
            "customer_id": "c",
        }
        for i, (s, n, d) in enumerate(
            zip(
                rng.integers(0, 86400, 2000),
                rng.integers(0, 10**9, 2000),
                rng.integers(0, 4_000_000, 2000),
                strict=True,
            )
        )
    ]
    assert_same(snapshot, cdrs)
