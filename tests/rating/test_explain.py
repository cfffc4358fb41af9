"""``rating.explain``: each step's verdict and words, each failure, the SPEC's worked examples,
and agreement with the engine and with the Decimal reference on many calls."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cdrfile import read_records
from pipelines.cli.demo import sample_catalog
from pipelines.simulate import read_catalog, simulate
from rating.engine import Usage, price, usage_from
from rating.explain import ENTITIES, INFORMATIONAL, Explanation, explain
from rating.tables import Tables, compile_tables
from schemas.cdr import INPUT, INPUT_NAMES
from tests.rating.reference import rate_reference, snapshot_of
from tests.rating.test_engine import catalog as spec_catalog
from tests.rating.test_engine import worlds

DAY = datetime(2026, 11, 2, 8, tzinfo=UTC)
STEPS = [
    "cdr",
    "customer",
    "cli",
    "route",
    "number",
    "rate",
    "billing",
    "packages",
    "charge",
    "tax",
    "provider",
]


def explained(
    snapshot: dict[str, Any],
    usage: list[tuple[str, str, str, date, int]] | None = None,
    tables: Tables | None = None,
    **cdr: Any,
) -> Explanation:
    """One call explained; the CDR's fields default to an answered minute now."""
    tables = tables or compile_tables(snapshot)
    rows = {name: snapshot.get(name, []) for name in ENTITIES}
    call = {"callid": "x", "dt": DAY, "sip_code": 200, "duration": Decimal(60), **cdr}
    return explain(rows, tables, call, usage_from(tables, usage or []))


@pytest.fixture(scope="module")
def sample_rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The bundled sample catalog's rows (rates included, for the reference)."""
    home = tmp_path_factory.mktemp("explain-sample")
    with Catalog(home) as store:
        import_directory(store, sample_catalog())
        rows = snapshot_of(store)
        rows["cli_rules"] = store.list("cli_rules")
        rows["simulated"] = read_catalog(store)
    yield rows


@pytest.fixture(scope="module")
def sample_tables(sample_rows: dict[str, Any]) -> Tables:
    return compile_tables(sample_rows)


@pytest.fixture
def sample(sample_rows: dict[str, Any], sample_tables: Tables) -> Any:
    def run(usage: list[tuple[str, str, str, date, int]] | None = None, **cdr: Any) -> Explanation:
        return explained(sample_rows, usage, sample_tables, **cdr)

    return run


def names(e: Explanation) -> list[str]:
    return [s.name for s in e.steps]


# -- the SPEC §5.2 worked examples -------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "billed"), [("1", 30), ("30", 30), ("31", 36), ("37", 42)])
def test_spec_30_6_increments(seconds: str, billed: int) -> None:
    e = explained(
        spec_catalog("0.015", 30, 6), customer_id="c", dest_number="447", duration=Decimal(seconds)
    )
    billing = e.step("billing")
    assert (e.result["billed_duration"], billing.values["billed"]) == (billed, billed)
    assert billing.result == f"{billed} s (30/6)"
    if billed > 30:
        pulses = (billed - 30) // 6
        assert (
            f"{seconds} s > mcd 30 s: 30 + ceil(({seconds} - 30) / 6) × 6 "
            f"= 30 + {pulses} × 6 = {billed} s" in billing.detail
        )
    else:
        assert f"{seconds} s ≤ minimum (mcd) 30 s → billed 30 s" in billing.detail


@pytest.mark.parametrize(
    ("mcd", "pulse", "billed", "charge", "exact"),
    [
        (6, 6, 12, "0.0030", "0.003"),
        (30, 6, 30, "0.0075", "0.0075"),
        (60, 6, 60, "0.0150", "0.015"),
    ],
)
def test_spec_7_seconds_at_0_015(
    mcd: int, pulse: int, billed: int, charge: str, exact: str
) -> None:
    e = explained(
        spec_catalog("0.015", mcd, pulse), customer_id="c", dest_number="4420", duration=Decimal(7)
    )
    assert e.reject_reason is None
    assert (e.result["billed_duration"], str(e.result["charge"])) == (billed, charge)
    step = e.step("charge")
    assert step.result == f"{charge} USD"
    assert f"{billed} s charged × 0.015/min ÷ 60 = {exact} exactly" in step.detail
    assert f"rounded half_up to 4 places → {charge}" in step.detail


@pytest.mark.parametrize(
    ("rounding", "charge"),
    [("half_up", "0.0018"), ("half_down", "0.0017"), ("down", "0.0017"), ("up", "0.0018")],
)
def test_spec_rounding_of_0_00175(rounding: str, charge: str) -> None:
    snapshot = spec_catalog("0.015", 1, 1, rounding=rounding)
    e = explained(snapshot, customer_id="c", dest_number="44", duration=Decimal(7))
    assert str(e.result["charge"]) == charge
    detail = e.step("charge").detail
    assert "7 s charged × 0.015/min ÷ 60 = 0.00175 exactly" in detail
    assert f"rounded {rounding} to 4 places → {charge}" in detail


def test_an_amount_that_never_ends_is_cut_not_rounded() -> None:
    e = explained(spec_catalog("0.0137", 1, 1), customer_id="c", dest_number="44", duration=7)
    # 7 × 0.0137 / 60 = 0.0015983333…
    assert "= 0.001598333333… exactly" in e.step("charge").detail
    assert str(e.result["charge"]) == "0.0016"


# -- billing ------------------------------------------------------------------------------------


def test_grace_bills_nothing_and_drops_the_connect_fee() -> None:
    snapshot = spec_catalog("0.015", 1, 1, grace=5, connect_fee="0.01")
    e = explained(snapshot, customer_id="c", dest_number="44", duration=Decimal(5))
    assert "5 s ≤ grace 5 s → nothing billed, no connect fee" in e.step("billing").detail
    assert (e.result["billed_duration"], e.result["charge"]) == (0, Decimal("0.0000"))
    assert e.step("charge").detail == "nothing billed → 0"
    e = explained(snapshot, customer_id="c", dest_number="44", duration=Decimal(6))
    assert "6 s > grace 5 s" in e.step("billing").detail
    assert "6 s charged × 0.015/min ÷ 60 + connect fee 0.01 = 0.0115 exactly" in (
        e.step("charge").detail
    )


@pytest.mark.parametrize(
    ("mode", "seconds", "whole"),
    [("up", "7.001", 8), ("down", "7.999", 7), ("half_up", "7.5", 8), ("half_down", "7.5", 7)],
)
def test_duration_rounding_is_shown(mode: str, seconds: str, whole: int) -> None:
    snapshot = spec_catalog("0.015", 1, 1, duration_rounding=mode)
    e = explained(snapshot, customer_id="c", dest_number="44", duration=Decimal(seconds))
    assert f"duration {seconds} s → {whole} s (rounded {mode})" in e.step("billing").detail
    assert e.result["billed_duration"] == whole


def test_an_unanswered_call_is_billed_nothing() -> None:
    e = explained(spec_catalog("0.015", 1, 1), customer_id="c", dest_number="44", sip_code=486)
    assert e.step("billing").detail == "sip_code 486: not answered → nothing billed"
    assert (e.result["billed_duration"], e.result["charge"]) == (0, 0)


# -- step 1: who pays ---------------------------------------------------------------------------


def test_customer_id_given(sample: Any) -> None:
    e = sample(customer_id="globex", dest_number="33612345678")
    step = e.step("customer")
    assert (step.ok, step.result, step.values["via"]) == (True, "globex", "customer_id")
    assert "customer_id given in the CDR" in step.detail
    assert "pays: globex (Globex Voice GmbH, active)" in step.detail


def test_status_does_not_stop_rating(sample: Any) -> None:
    e = sample(customer_id="hooli", dest_number="33612345678")
    assert "hooli (Hooli Mobile (suspended), penalty (rating does not stop on status))" in (
        e.step("customer").detail
    )
    assert e.reject_reason is None


def test_an_unknown_customer_id_fails_without_trying_auth(sample: Any) -> None:
    e = sample(customer_id="nobody", source_ip="203.0.113.10", dest_number="447700900123")
    assert names(e) == ["cdr", "customer"]
    step = e.failed
    assert step is not None and step.name == "customer"
    assert (step.verdict, step.result, e.reject_reason) == (
        "failed",
        "unknown_customer",
        "unknown_customer",
    )
    assert step.detail == (
        "customer_id 'nobody' names no customer (auth is not tried when it is given)"
    )
    assert e.result == {"reject_reason": "unknown_customer"}


def test_ip_auth_longest_tech_prefix_first(sample: Any) -> None:
    e = sample(source_ip="203.0.113.10", dest_number="9901#447700900123")
    step = e.step("customer")
    assert (step.values["via"], step.values["auth_id"]) == ("ip", 2)
    assert step.detail.splitlines()[0] == (
        "auth #2 ip 203.0.113.0/28 of acme: holds 203.0.113.10, "
        "its tech prefix 9901# starts 9901#447700900123 → matches"
    )
    e = sample(source_ip="203.0.113.10", dest_number="447700900123")
    step = e.step("customer")
    assert step.values["auth_id"] == 1
    assert step.detail.splitlines()[:2] == [
        "auth #2 ip 203.0.113.0/28 of acme: holds 203.0.113.10, but its tech prefix 9901# "
        "does not start 447700900123",
        "auth #1 ip 203.0.113.10 of acme: holds 203.0.113.10, no tech prefix → matches",
    ]


def test_ip_auth_most_specific_network_wins_a_tie() -> None:
    snapshot = spec_catalog("0.015", 1, 1)
    snapshot["customers"].append({**snapshot["customers"][0], "customer_id": "d"})
    snapshot["routes"].append({**snapshot["routes"][0], "id": 2, "customer_id": "d"})
    snapshot["auth"] = [
        {"id": 1, "customer_id": "c", "kind": "ip", "value": "10.0.0.0/24", "tech_prefix": None},
        {"id": 2, "customer_id": "d", "kind": "ip", "value": "10.0.0.0/30", "tech_prefix": None},
    ]
    e = explained(snapshot, source_ip="10.0.0.2", dest_number="44")
    assert (e.result["customer_id"], e.step("customer").values["auth_id"]) == ("d", 2)
    e = explained(snapshot, source_ip="10.0.0.9", dest_number="44")
    assert (e.result["customer_id"], e.step("customer").values["auth_id"]) == ("c", 1)


def test_user_auth_when_no_ip_entry_matches(sample: Any) -> None:
    e = sample(source_ip="192.0.2.200", sip_user="initech-pbx1", dest_number="12125551234")
    step = e.step("customer")
    assert (step.result, step.values["via"], step.values["auth_id"]) == ("initech", "user", 4)
    assert step.detail.splitlines()[:2] == [
        "source_ip 192.0.2.200: no ip auth entry holds it",
        "auth #4 user initech-pbx1 of initech: is initech-pbx1, no tech prefix → matches",
    ]


def test_no_auth_match_says_why_per_method(sample: Any) -> None:
    e = sample(source_ip="junk", sip_user="stranger", dest_number="447700900123")
    assert e.reject_reason == "unknown_customer"
    assert e.step("customer").detail.splitlines() == [
        "source_ip 'junk' is not an IP address",
        "sip_user stranger: no user auth entry has it",
        "no customer_id, and no auth entry matches",
    ]
    e = sample(dest_number="447700900123")
    assert e.step("customer").detail.splitlines()[:2] == ["no source_ip", "no sip_user"]


def test_an_inbound_call_to_a_did_goes_to_the_dids_customer(sample: Any) -> None:
    e = sample(
        direction="inbound",
        customer_id="globex",
        dest_number="+12125550100",
        duration=Decimal(7),
    )
    customer = e.step("customer")
    assert (customer.result, customer.values["via"], customer.values["did"]) == (
        "acme",
        "did",
        "12125550100",
    )
    assert "the DID's customer comes before the CDR's customer_id globex" in customer.detail
    assert e.step("route").result == "DID → did-in-usd"
    number = e.step("number")
    assert number.detail == "+12125550100 is the DID, its '+' removed: 12125550100"
    assert (e.result["card_id"], e.result["number"]) == ("did-in-usd", "12125550100")
    provider = e.step("provider")
    assert provider.detail.startswith("the DID's provider card cost-tier1: card cost-tier1")
    assert e.result["provider_charge"] == Decimal("0.00062")  # 12 s × 0.0031 / 60


def test_an_inbound_call_to_no_did_is_resolved_like_any_call(sample: Any) -> None:
    e = sample(direction="inbound", customer_id="acme", dest_number="447700900123")
    assert e.step("customer").detail.splitlines()[0] == (
        "inbound, but 447700900123 is no DID: the call is resolved like an outbound one"
    )
    assert e.result["card_id"] == "retail-usd"


# -- CLI rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "result", "rule"),
    [
        ("+447911123456", "allow (rule #1)", 1),
        ("12125550000", "allow (rule #2)", 2),
        ("0000", "deny (rule #3)", 3),
        ("33123", "no rule matches", None),
        (None, "no CLI", None),
    ],
)
def test_cli_rule_verdicts(sample: Any, cli: str | None, result: str, rule: int | None) -> None:
    e = sample(customer_id="acme", source_cli=cli, dest_number="447700900123")
    step = e.step("cli")
    assert (step.ok, step.result, step.values["rule_id"]) == (True, result, rule)
    assert INFORMATIONAL in step.detail
    if rule == 3:
        assert step.detail.splitlines()[:3] == [
            "rule #1 +44 allow: does not match 0000",
            "rule #2 1 allow: does not match 0000",
            "rule #3 ^0+$ deny: matches 0000 (the first that does)",
        ]


def test_a_cli_rule_never_changes_the_rating(sample: Any) -> None:
    denied = sample(customer_id="acme", source_cli="0000", dest_number="4420000000")
    free = sample(customer_id="acme", dest_number="4420000000")
    assert denied.step("cli").values["action"] == "deny"
    assert denied.result == free.result and denied.reject_reason is None


def test_a_customer_without_cli_rules(sample: Any) -> None:
    step = sample(customer_id="globex", source_cli="+4930123", dest_number="4930123").step("cli")
    assert step.result == "no rules"
    assert step.detail == f"globex has no CLI rules; {INFORMATIONAL}"


def test_a_regex_cli_rule(sample: Any) -> None:
    step = sample(customer_id="hooli", source_cli="+9761234", dest_number="4930123").step("cli")
    assert (step.result, step.values["pattern"]) == ("deny (rule #5)", "^(\\+)?(900|976)")


# -- step 2: routes and the number --------------------------------------------------------------


def test_routes_are_tried_in_order_and_the_first_match_wins(sample: Any) -> None:
    e = sample(source_ip="203.0.113.5", dest_number="9901#+447700900123")
    route = e.step("route")
    assert (route.result, route.values["card_id"], route.values["route_id"]) == (
        "#2 → premium-usd",
        "premium-usd",
        2,
    )
    assert [r["verdict"] for r in route.values["routes"]] == ["matched", "not tried"]
    assert route.detail.splitlines() == [
        "route #2 (priority 1, tech prefix 9901#, strip 0, dial string any) → card premium-usd: "
        "takes 9901#+447700900123 as 447700900123 → the first route that matches",
        "route #1 (priority 10, tech prefix none, strip 0, dial string any) → card retail-usd: "
        "not tried (an earlier route matched)",
    ]
    number = e.step("number")
    assert number.detail == (
        "9901#+447700900123 → tech prefix 9901# removed → '+' removed → 447700900123"
    )
    assert number.values == {
        "dialled": "9901#+447700900123",
        "tech_prefix": "9901#",
        "plus_removed": True,
        "stripped": "",
        "number": "447700900123",
    }


def test_no_route_gives_the_reason_of_every_route(sample: Any) -> None:
    e = sample(customer_id="hooli", dest_number="4477")
    assert names(e) == ["cdr", "customer", "cli", "route"]
    assert (e.reject_reason, e.failed and e.failed.name) == ("no_route", "route")
    assert e.step("route").detail.splitlines() == [
        "route #6 (priority 0, tech prefix none, strip 0, dial string ^(33|49)[0-9]+$) → card "
        "wholesale-eur: 4477 does not match its dial string regex ^(33|49)[0-9]+$",
        "no route of hooli takes 4477",
    ]
    e = sample(customer_id="initech", dest_number="33123")
    assert e.step("route").values["routes"] == [
        {
            "route_id": 4,
            "verdict": "no",
            "why": "33123 starts with none of its dial string's prefixes 1|44|52",
        }
    ]


def _manipulating() -> dict[str, Any]:
    snapshot = spec_catalog("0.015", 1, 1)
    base = snapshot["routes"][0]
    snapshot["routes"] = [
        {**base, "id": 1, "tech_prefix": "99", "strip_digits": 2, "dial_string": "44"},
        {**base, "id": 2, "tech_prefix": "9", "strip_digits": 0, "dial_string": "^44"},
    ]
    return snapshot


def test_tech_prefix_plus_and_stripped_digits() -> None:
    e = explained(_manipulating(), customer_id="c", dest_number="99+0044123")
    assert e.step("number").detail == (
        "99+0044123 → tech prefix 99 removed → '+' removed → 2 digits stripped (00) → 44123"
    )
    assert (e.result["number"], e.result["dest_code"]) == ("44123", "44")


@pytest.mark.parametrize(
    ("dest", "whys"),
    [
        ("99+00", ["nothing is left of the number after its tech prefix, '+' and strip_digits",
                   "what is left, 9+00, is not all digits"]),
        ("9900*44", ["what is left, *44, is not all digits",
                     "what is left, 900*44, is not all digits"]),
        ("8844", ["its tech prefix 99 does not start 8844",
                  "its tech prefix 9 does not start 8844"]),
        ("990033", ["33 starts with none of its dial string's prefixes 44",
                    "90033 does not match its dial string regex ^44"]),
    ],
)  # fmt: skip
def test_why_a_route_does_not_take_a_number(dest: str, whys: list[str]) -> None:
    e = explained(_manipulating(), customer_id="c", dest_number=dest)
    assert e.reject_reason == "no_route"
    assert [r["why"] for r in e.step("route").values["routes"]] == whys
    assert e.step("route").detail.splitlines()[-1] == f"no route of c takes {dest}"


def test_within_a_priority_the_longest_tech_prefix_is_tried_first() -> None:
    snapshot = spec_catalog("0.015", 1, 1)
    base = snapshot["routes"][0]
    snapshot["routes"] = [
        {**base, "id": 1, "tech_prefix": "9"},
        {**base, "id": 2, "tech_prefix": "99"},
        {**base, "id": 3, "tech_prefix": None, "priority": 1},
    ]
    e = explained(snapshot, customer_id="c", dest_number="99441")
    route = e.step("route")
    assert [r["route_id"] for r in route.values["routes"]] == [2, 1, 3]
    assert [r["verdict"] for r in route.values["routes"]] == ["matched", "not tried", "not tried"]
    assert (route.values["route_id"], e.result["number"]) == (2, "441")


def test_a_customer_without_routes() -> None:
    snapshot = spec_catalog("0.015", 1, 1)
    snapshot["routes"] = []
    e = explained(snapshot, customer_id="c", dest_number="44")
    assert e.step("route").detail.splitlines() == ["c has no routes", "no route of c takes 44"]


# -- step 3: the rate row -----------------------------------------------------------------------


def test_the_longest_prefix_in_effect(sample: Any) -> None:
    e = sample(customer_id="acme", dest_number="447912345678")
    rate = e.step("rate")
    assert rate.result == "447 United Kingdom Mobile @ 0.025/min"
    assert rate.values["effective_to"] == "2026-12-01T00:00:00Z"
    assert rate.values["effective_from"] is None
    lines = rate.detail.splitlines()
    assert lines[0] == (
        "card retail-usd (USD, precision 4, rounding half_up, durations rounded up), "
        "number 447912345678 at 2026-11-02T08:00:00Z"
    )
    assert lines[1:] == [
        "447 United Kingdom Mobile: 0.021/min, 30/6, grace 3 s, from 2026-12-01T00:00:00Z: "
        "not in effect at 2026-11-02T08:00:00Z",
        "447 United Kingdom Mobile: 0.025/min, 30/6, grace 3 s, until 2026-12-01T00:00:00Z: "
        "the longest prefix in effect → this row",
        "44 United Kingdom: 0.011/min, 30/6, grace 3 s, always in effect: in effect, "
        "but a longer prefix matched",
    ]
    later = sample(
        customer_id="acme", dest_number="447912345678", dt=datetime(2026, 12, 5, tzinfo=UTC)
    )
    assert later.step("rate").values["rate"] == Decimal("0.021")
    assert later.step("rate").values["effective_from"] == "2026-12-01T00:00:00Z"
    assert later.result["rate"] == Decimal("0.021")


def test_no_rate(sample: Any) -> None:
    e = sample(customer_id="acme", dest_number="999123")
    assert names(e) == ["cdr", "customer", "cli", "route", "number", "rate"]
    assert (e.reject_reason, e.failed and e.failed.result) == ("no_rate", "no_rate")
    assert e.step("rate").detail.splitlines()[1:] == [
        "no row of the card has a prefix of 999123",
        "card retail-usd has no rate for 999123 at 2026-11-02T08:00:00Z",
    ]


def test_no_rate_in_effect_yet() -> None:
    snapshot = spec_catalog("0.015", 1, 1)
    snapshot["rates"][0]["effective_from"] = "2026-12-01T00:00:00Z"
    e = explained(snapshot, customer_id="c", dest_number="4420")
    assert e.reject_reason == "no_rate"
    assert "from 2026-12-01T00:00:00Z: not in effect at 2026-11-02T08:00:00Z" in (
        e.step("rate").detail
    )


# -- packages -----------------------------------------------------------------------------------


def test_usage_already_drawn_counts(sample: Any) -> None:
    used = [("initech", "pkg-all-weekly", "2026-03-02", date(2026, 11, 2), 5950)]
    e = sample(used, sip_user="initech-pbx1", dest_number="12125551234", duration=Decimal(66))
    packages = e.step("packages")
    assert packages.result == "50 s (pkg-all-weekly)"
    assert packages.detail.splitlines()[0] == (
        "pkg-all-weekly (Any destination 100 minutes a week; weekly; prefixes all; "
        "valid 2026-03-02 … open): period from 2026-11-02, 6000 s, 5950 s used, "
        "50 s left → draws 50 s"
    )
    assert (e.result["package_seconds"], e.result["package_id"]) == (50, "pkg-all-weekly")
    assert "16 s charged (66 billed - 50 from packages) × 0.0065/min" in e.step("charge").detail
    used = [("initech", "pkg-all-weekly", "2026-03-02", date(2026, 11, 2), 6000)]
    e = sample(used, sip_user="initech-pbx1", dest_number="12125551234", duration=Decimal(66))
    assert e.step("packages").result == "0 s"
    assert "6000 s used: nothing left" in e.step("packages").detail


def test_explaining_does_not_use_up_packages(sample_rows: Any, sample_tables: Tables) -> None:
    usage = usage_from(sample_tables, [])
    rows = {name: sample_rows[name] for name in ENTITIES}
    call = {"dt": DAY, "sip_code": 200, "duration": Decimal(600), "customer_id": "initech"}
    first = explain(rows, sample_tables, {**call, "dest_number": "12125551234"}, usage)
    again = explain(rows, sample_tables, {**call, "dest_number": "12125551234"}, usage)
    assert first.result["package_seconds"] == again.result["package_seconds"] == 600
    assert len(usage) == 0


def test_packages_that_do_not_apply(sample: Any) -> None:
    e = sample(customer_id="acme", dest_number="12125551234", dt=datetime(2027, 1, 4, tzinfo=UTC))
    lines = e.step("packages").detail.splitlines()
    assert lines[0].endswith("does not cover 12125551234")
    assert lines[1].endswith("not valid on 2027-01-04")
    assert e.result["package_seconds"] == 0
    e = sample(customer_id="globex", dest_number="4930123")
    assert e.step("packages").detail.splitlines()[0] == "globex has no packages"


# -- tax and the provider leg -------------------------------------------------------------------


def test_tax_and_provider_cost(sample: Any) -> None:
    e = sample(
        source_ip="198.51.100.7",
        dest_number="33612345678",
        duration=Decimal("95.5"),
        provider_card_id="cost-eurotrans",
    )
    # 96 s × 0.028 / 60 = 0.0448 (5 places, half_down); 19 % of it is 0.008512 → 0.00851.
    assert (str(e.result["charge"]), str(e.result["tax"])) == ("0.04480", "0.00851")
    assert e.step("tax").detail == (
        "0.04480 × 19 % = 0.008512 exactly\nrounded half_up to 5 places → 0.00851"
    )
    provider = e.step("provider")
    assert provider.result == "0.030080 EUR"  # 96 s at 1/1 × 0.0188 / 60
    assert provider.values["profit"] == Decimal("0.014720")
    assert "profit = charge - provider charge = 0.014720 EUR" in provider.detail
    assert (e.result["provider_charge"], e.result["profit"]) == (
        Decimal("0.03008"),
        Decimal("0.01472"),
    )


def test_provider_leg_left_empty(sample: Any) -> None:
    e = sample(customer_id="acme", dest_number="447700900123", provider_card_id="nope")
    assert e.step("provider").detail == (
        "provider_card_id 'nope' is no card: provider_charge stays empty; profit stays empty"
    )
    e = sample(customer_id="acme", dest_number="447700900123", provider_card_id="cost-tier1")
    assert e.step("provider").result == "none (no rate)"
    assert e.result["provider_charge"] is None and e.reject_reason is None


def test_profit_is_empty_across_currencies(sample: Any) -> None:
    e = sample(customer_id="globex", dest_number="12125551234", provider_card_id="cost-tier1")
    assert e.result["profit"] is None and e.result["provider_charge"] is not None
    assert e.step("provider").detail.endswith(
        "profit stays empty: the provider is paid in USD, the customer in EUR"
    )


# -- the CDR itself -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"dest_number": "44a1"}, "dest_number: '44a1' may hold only digits, +, * and #"),
        ({"dest_number": ""}, "dest_number: missing"),
        ({"sip_code": 99}, "sip_code: '99' is not a SIP response code (100-699)"),
        ({"sip_code": None}, "sip_code: missing"),
        ({"duration": Decimal(-1)}, "duration: '-1' is not a number of seconds >= 0"),
        ({"duration": Decimal("1.0000001")},
         "duration: '1.0000001' has more than 6 decimal places"),
        ({"dt": datetime(1970, 1, 1, tzinfo=UTC)},
         "dt: '1970-01-01T00:00:00+00:00' is not in the years 2000 to 2099"),
        ({"duration": Decimal("1000000000.000001")},
         "duration: '1000000000.000001' is more than 1000000000 seconds, longer than any call"),
        ({"direction": "sideways"}, "direction: 'sideways' is neither outbound nor inbound"),
    ],
)  # fmt: skip
def test_an_invalid_cdr_fails_first(sample: Any, change: dict[str, Any], problem: str) -> None:
    e = sample(**{"customer_id": "acme", "dest_number": "44", **change})
    assert names(e) == ["cdr"]
    assert (e.reject_reason, e.steps[0].verdict, e.steps[0].detail) == (
        "invalid",
        "failed",
        problem,
    )


def test_a_rated_call_has_every_step(sample: Any) -> None:
    e = sample(customer_id="acme", dest_number="447700900123")
    assert names(e) == STEPS
    assert all(s.ok for s in e.steps) and e.failed is None


# -- agreement with the engine and the reference, on many calls --------------------------------

FIELDS = (
    "customer_id", "card_id", "number", "dest_code", "dest_name", "billed_duration", "rate",
    "connect_fee", "package_seconds", "package_id", "charge", "tax", "currency",
    "provider_charge", "provider_currency", "profit",
)  # fmt: skip


def assert_steps_agree(e: Explanation) -> None:
    """What the steps name is what the result (the engine's) holds."""
    r = e.result
    assert e.step("customer").values["customer_id"] == r["customer_id"]
    assert e.step("route").values["card_id"] == r["card_id"]
    assert e.step("number").values["number"] == r["number"]
    rate = e.step("rate").values
    assert (rate["card_id"], rate["prefix"], rate["name"]) == (
        r["card_id"],
        r["dest_code"],
        r["dest_name"],
    )
    assert (rate["rate"], rate["connect_fee"]) == (r["rate"], r["connect_fee"])
    assert e.step("billing").values["billed"] == r["billed_duration"]
    assert e.step("packages").values["package_seconds"] == r["package_seconds"]
    assert e.step("charge").values["charge"] == r["charge"]
    assert e.step("tax").values["tax"] == r["tax"]
    assert e.step("provider").values["provider_charge"] == r["provider_charge"]


def assert_matches_reference(e: Explanation, reference: dict[str, Any]) -> None:
    assert e.reject_reason == reference["reject_reason"]
    if e.reject_reason is None:
        for name in FIELDS:
            assert e.result[name] == reference[name], name


def _simulated(rows: dict[str, Any], tmp_path: Path, count: int) -> list[dict[str, Any]]:
    path = tmp_path / "traffic.jsonl"
    simulate(rows, count, path, seed=11, duplicate_rate=0, malformed_rate=0, start=DAY)
    with duckdb.connect() as con:
        tables = [block.valid.select(list(INPUT_NAMES)) for block in read_records(path, con)]
    return pa.concat_tables(tables).to_pylist()


def test_explanations_agree_with_the_engine_on_simulated_traffic(
    sample_rows: dict[str, Any], sample_tables: Tables, tmp_path: Path
) -> None:
    """On a thousand calls of the sample catalog (every customer, auth kind, route, DID,
    provider): the explanation of each agrees with its own engine run (``explain`` raises
    otherwise), with the steps it shows, with the engine pricing the whole batch at once,
    and with the Decimal reference."""
    cdrs = _simulated(sample_rows["simulated"], tmp_path, 1000)
    batch = price(sample_tables, pa.Table.from_pylist(cdrs, schema=INPUT))
    rows = {name: sample_rows[name] for name in ENTITIES}
    outcomes = set()
    for i, cdr in enumerate(cdrs):
        e = explain(rows, sample_tables, cdr, Usage())
        assert e.reject_reason == batch.reason[i], cdr
        outcomes.add(e.reject_reason)
        [reference] = rate_reference(sample_rows, [cdr])
        assert_matches_reference(e, reference)
        if e.reject_reason is not None:
            continue
        assert_steps_agree(e)
        t = sample_tables
        assert t.customer_ids[batch.customer[i]] == e.result["customer_id"]
        assert t.card_ids[batch.card[i]] == e.result["card_id"]
        assert t.row_prefix[batch.row[i]] == e.result["dest_code"]
        assert batch.billed[i] == e.result["billed_duration"]
    assert outcomes >= {None, "no_rate"}  # the simulator dials some unknown destinations


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_explanations_agree_with_the_reference_on_random_catalogs(world: Any) -> None:
    """Random catalogs (tech prefixes, '+', strip digits, regex dial strings, effective
    dates, grace, DIDs, unknown customers and cards): every call, one at a time."""
    snapshot, cdrs = world
    tables = compile_tables(snapshot)
    rows = {name: snapshot.get(name, []) for name in ENTITIES}
    for cdr in cdrs:
        e = explain(rows, tables, cdr, usage_from(tables, []))
        [reference] = rate_reference(snapshot, [cdr])
        assert_matches_reference(e, reference)
        if e.reject_reason is None:
            assert_steps_agree(e)
        else:
            failed = e.failed
            assert failed is not None and failed.result == e.reject_reason
            assert e.steps[-1] is failed
