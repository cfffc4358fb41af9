"""Tests of the reference rater itself (tests/rating/reference.py) against /tmp/rules.md.

Catalogs are built through ``Catalog.add`` so that the reference reads real rows; every
expected figure is worked out by hand in a comment. Rates are per minute.
"""

from __future__ import annotations

import copy
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.catalog import Catalog
from tests.rating.reference import rate_reference, snapshot_of

D = Decimal
MODES = ("up", "down", "half_up", "half_down")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class Book:
    """Adds catalog rows from keyword arguments, and rates CDRs against the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def add(self, entity: str, **fields: Any) -> dict[str, Any]:
        return self.catalog.add(entity, {k: _text(v) for k, v in fields.items()})

    def edit(self, entity: str, ident: str, **fields: Any) -> None:
        self.catalog.edit(entity, ident, {k: _text(v) for k, v in fields.items()})

    def customer(self, customer_id: str, **kw: Any) -> None:
        fields = {"name": customer_id, "status": "active", "currency": "USD", **kw}
        self.add("customers", customer_id=customer_id, **fields)

    def card(self, card_id: str, **kw: Any) -> None:
        fields = {"name": card_id, "currency": "USD", "direction": "termination", **kw}
        self.add("rate_cards", card_id=card_id, **fields)

    def rate(self, card_id: str, prefix: str, rate: str, **kw: Any) -> dict[str, Any]:
        kw.setdefault("name", f"dest {prefix}")
        return self.add("rates", card_id=card_id, prefix=prefix, rate=rate, **kw)

    def route(self, customer_id: str, card_id: str, **kw: Any) -> dict[str, Any]:
        return self.add("routes", customer_id=customer_id, card_id=card_id, **kw)

    def auth(self, customer_id: str, kind: str, value: str, **kw: Any) -> dict[str, Any]:
        return self.add("auth", customer_id=customer_id, kind=kind, value=value, **kw)

    def package(self, package_id: str, seconds: int, frequency: str, **kw: Any) -> None:
        fields = {"name": package_id, "retail": "1", **kw}
        self.add("packages", package_id=package_id, seconds=seconds, frequency=frequency, **fields)

    def assign(self, customer_id: str, package_id: str, start_date: str, **kw: Any) -> None:
        self.add(
            "customer_packages",
            customer_id=customer_id,
            package_id=package_id,
            start_date=start_date,
            **kw,
        )

    def run(self, cdrs: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
        return rate_reference(snapshot_of(self.catalog), cdrs, **kw)

    def one(self, **kw: Any) -> dict[str, Any]:
        return self.run([cdr(**kw)])[0]


def cdr(
    callid: str = "call-1",
    dt: str = "2026-05-04T10:00:00Z",  # a Monday
    dest: str = "4420",
    duration: str | None = "60",
    sip_code: int = 200,
    customer_id: str | None = "c1",
    **extra: Any,
) -> dict[str, Any]:
    record = {
        "callid": callid,
        "dt": datetime.fromisoformat(dt),
        "dest_number": dest,
        "duration": None if duration is None else Decimal(duration),
        "sip_code": sip_code,
        "customer_id": customer_id,
        "source_ip": None,
        "sip_user": None,
        "provider_id": None,
        "provider_card_id": None,
        "direction": None,
    }
    record.update(extra)
    return record


def rated(result: dict[str, Any]) -> dict[str, Any]:
    assert result["reject_reason"] is None, result
    return result


def reasons(results: list[dict[str, Any]]) -> list[str | None]:
    return [r["reject_reason"] for r in results]


@pytest.fixture
def book(catalog: Catalog) -> Book:
    """Customer c1 (USD, no tax) routed to card 'card' (USD, precision 4, half_up, up)."""
    b = Book(catalog)
    b.customer("c1")
    b.card("card")
    b.route("c1", "card")
    return b


def with_customers(book: Book, *customer_ids: str, **route: Any) -> None:
    """More USD customers, each routed to 'card'."""
    for customer_id in customer_ids:
        book.customer(customer_id)
        book.route(customer_id, "card", **route)


# -- SPEC worked examples ------------------------------------------------------------------------


def test_spec_mcd_30_pulse_6(book: Book) -> None:
    book.rate("card", "44", "0.6", mcd=30, pulse=6)
    durations = ["1", "30", "31", "37"]
    results = book.run([cdr(callid=f"c{i}", duration=d) for i, d in enumerate(durations)])
    assert [rated(r)["billed_duration"] for r in results] == [30, 30, 36, 42]


def test_spec_seven_seconds_at_0_015(book: Book) -> None:
    book.rate("card", "1", "0.015", mcd=6, pulse=6)
    book.rate("card", "2", "0.015", mcd=30, pulse=6)
    book.rate("card", "3", "0.015", mcd=60, pulse=60)
    results = book.run([cdr(callid=p, dest=p + "00", duration="7") for p in "123"])
    # 12 s × 0.015 / 60 = 0.003; 30 s → 0.0075; 60 s → 0.015.
    assert [(r["billed_duration"], r["charge"]) for r in results] == [
        (12, D("0.0030")),
        (30, D("0.0075")),
        (60, D("0.0150")),
    ]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("half_up", "0.0018"), ("half_down", "0.0017"), ("down", "0.0017"), ("up", "0.0018")],
)
def test_spec_exact_0_00175(book: Book, mode: str, expected: str) -> None:
    book.edit("rate_cards", "card", rounding=mode)
    book.rate("card", "44", "0.015")
    # 7 s × 0.015 / 60 = 0.00175 exactly.
    result = rated(book.one(duration="7"))
    assert result["billed_duration"] == 7
    assert result["charge"] == D(expected)


# -- R1 duplicates and the reject reasons --------------------------------------------------------


def test_duplicate_in_input(book: Book) -> None:
    book.rate("card", "44", "0.6")
    results = book.run([cdr(callid="a"), cdr(callid="a", duration="99"), cdr(callid="b")])
    assert reasons(results) == [None, "duplicate", None]
    assert results[1] == {"callid": "a", "reject_reason": "duplicate"}


def test_duplicate_is_decided_in_input_order_not_dt_order(book: Book) -> None:
    book.rate("card", "44", "0.6")
    late = cdr(callid="a", dt="2026-05-04T12:00:00Z", duration="10")
    early = cdr(callid="a", dt="2026-05-04T08:00:00Z", duration="20")
    results = book.run([late, early])
    assert reasons(results) == [None, "duplicate"]
    assert results[0]["billed_duration"] == 10


def test_duplicate_against_the_lake(book: Book) -> None:
    book.rate("card", "44", "0.6")
    results = book.run([cdr(callid="old"), cdr(callid="new")], lake_callids={"old"})
    assert reasons(results) == ["duplicate", None]


def test_rejected_then_valid_repeat_is_rated(book: Book) -> None:
    book.rate("card", "44", "0.6")
    results = book.run(
        [
            cdr(callid="a", customer_id="nobody"),
            cdr(callid="a", dest="3320"),  # no rate for 33
            cdr(callid="a"),
            cdr(callid="a"),
        ]
    )
    assert reasons(results) == ["unknown_customer", "no_rate", None, "duplicate"]


def test_unknown_customer(book: Book) -> None:
    book.rate("card", "44", "0.6")
    book.customer("c2")
    book.route("c2", "card")
    book.auth("c2", "ip", "10.0.0.7")
    results = book.run(
        [
            cdr(callid="a", customer_id="nobody"),
            # A customer_id that names no customer does not fall back to auth.
            cdr(callid="b", customer_id="nobody", source_ip="10.0.0.7"),
            cdr(callid="c", customer_id=None),
            cdr(callid="d", customer_id=None, source_ip="10.0.0.8", sip_user="someone"),
        ]
    )
    assert results == [{"callid": c, "reject_reason": "unknown_customer"} for c in "abcd"]


def test_no_route(book: Book) -> None:
    book.rate("card", "44", "0.6")
    book.customer("lonely")  # no routes at all
    book.customer("picky")
    book.route("picky", "card", dial_string="1|33")
    results = book.run(
        [cdr(callid="a", customer_id="lonely"), cdr(callid="b", customer_id="picky")]
    )
    assert results == [{"callid": c, "reject_reason": "no_route"} for c in "ab"]


def test_no_rate_even_when_not_answered(book: Book) -> None:
    book.rate("card", "44", "0.6")
    book.rate("card", "33", "0.6", effective_from="2026-06-01T00:00:00Z")
    results = book.run(
        [
            cdr(callid="a", dest="4920"),
            cdr(callid="b", dest="4920", sip_code=486, duration=None),
            cdr(callid="c", dest="3320"),  # its only row starts later
            cdr(callid="d", dest="3320", dt="2026-06-01T00:00:00Z"),
        ]
    )
    assert reasons(results) == ["no_rate", "no_rate", "no_rate", None]


# -- R2 customer and card ------------------------------------------------------------------------


def test_customer_id_wins_over_auth(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "c2")
    book.auth("c2", "ip", "10.0.0.7")
    book.auth("c2", "user", "pbx")
    result = rated(book.one(customer_id="c1", source_ip="10.0.0.7", sip_user="pbx"))
    assert result["customer_id"] == "c1"
    assert result["customer_status"] == "active"


def test_empty_customer_id_uses_auth(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "c2")
    book.auth("c2", "ip", "10.0.0.7")
    assert rated(book.one(customer_id="", source_ip="10.0.0.7"))["customer_id"] == "c2"


def test_ip_exact_address_beats_cidr(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "net", "host")
    book.auth("net", "ip", "10.0.0.0/24")
    book.auth("host", "ip", "10.0.0.7")
    results = book.run(
        [
            cdr(callid="a", customer_id=None, source_ip="10.0.0.7"),
            cdr(callid="b", customer_id=None, source_ip="10.0.0.8"),
            cdr(callid="c", customer_id=None, source_ip="10.0.1.7"),
        ]
    )
    assert [r.get("customer_id") for r in results] == ["host", "net", None]
    assert reasons(results) == [None, None, "unknown_customer"]


def test_ip_most_specific_network(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "wide", "narrow")
    book.auth("wide", "ip", "10.0.0.0/16")
    book.auth("narrow", "ip", "10.0.0.0/24")
    results = book.run(
        [
            cdr(callid="a", customer_id=None, source_ip="10.0.0.5"),
            cdr(callid="b", customer_id=None, source_ip="10.0.5.5"),
        ]
    )
    assert [r["customer_id"] for r in results] == ["narrow", "wide"]


def test_ipv6(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "six", "host6")
    book.auth("six", "ip", "2001:db8::/32")
    book.auth("host6", "ip", "2001:db8::1")
    results = book.run(
        [
            cdr(callid="a", customer_id=None, source_ip="2001:db8::1"),
            cdr(callid="b", customer_id=None, source_ip="2001:db8:0:0::2"),
            cdr(callid="c", customer_id=None, source_ip="2001:db9::1"),
            # An IPv4 address is never inside an IPv6 network.
            cdr(callid="d", customer_id=None, source_ip="32.1.13.184"),
        ]
    )
    assert [r.get("customer_id") for r in results] == ["host6", "six", None, None]


def test_ip_longest_tech_prefix_beats_a_more_specific_network(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "host")
    book.customer("premium")
    book.route("premium", "card", tech_prefix="9901#")
    book.auth("host", "ip", "10.0.0.7")
    book.auth("premium", "ip", "10.0.0.0/24", tech_prefix="9901#")
    results = book.run(
        [
            cdr(callid="a", customer_id=None, source_ip="10.0.0.7", dest="9901#4420"),
            cdr(callid="b", customer_id=None, source_ip="10.0.0.7", dest="4420"),
            # The tech prefix must start the number: 10.0.0.9 with no prefix matches nothing.
            cdr(callid="c", customer_id=None, source_ip="10.0.0.9", dest="4420"),
        ]
    )
    assert [r.get("customer_id") for r in results] == ["premium", "host", None]
    assert results[0]["number"] == "4420"


def test_ip_longer_tech_prefix_wins(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "one", "two")
    book.auth("one", "ip", "10.0.0.7", tech_prefix="1")
    book.auth("two", "ip", "10.0.0.0/8", tech_prefix="12")
    book.rate("card", "1", "0.6")  # their routes have no tech prefix: numbers 1234, 1334
    results = book.run(
        [
            cdr(callid="a", customer_id=None, source_ip="10.0.0.7", dest="1234"),
            cdr(callid="b", customer_id=None, source_ip="10.0.0.7", dest="1334"),
        ]
    )
    assert [r["customer_id"] for r in results] == ["two", "one"]


def test_ip_tie_goes_to_the_smallest_auth_id(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "first", "second")
    first = book.auth("first", "ip", "10.0.0.9")
    second = book.auth("second", "ip", "10.0.0.9/32")  # also a /32, another spelling
    assert first["id"] < second["id"]
    assert rated(book.one(customer_id=None, source_ip="10.0.0.9"))["customer_id"] == "first"


def test_unparseable_source_ip_matches_nothing(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "net", "user")
    book.auth("net", "ip", "0.0.0.0/0")
    book.auth("user", "user", "pbx")
    results = book.run(
        [
            cdr(callid="a", customer_id=None, source_ip="not-an-ip"),
            cdr(callid="b", customer_id=None, source_ip="10.0.0.300", sip_user="pbx"),
            cdr(callid="c", customer_id=None, source_ip="10.1.2.3", sip_user="pbx"),
        ]
    )
    assert [r.get("customer_id") for r in results] == [None, "user", "net"]


def test_user_auth(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "plain")
    book.customer("prefixed")
    book.route("prefixed", "card", tech_prefix="77")
    book.auth("plain", "user", "pbx")
    book.auth("prefixed", "user", "pbx", tech_prefix="77")
    results = book.run(
        [
            cdr(callid="a", customer_id=None, sip_user="pbx", dest="774420"),
            cdr(callid="b", customer_id=None, sip_user="pbx", dest="4420"),
            cdr(callid="c", customer_id=None, sip_user="PBX", dest="4420"),
            cdr(callid="d", customer_id=None, sip_user="pbx", source_ip="10.9.9.9"),
        ]
    )
    assert [r.get("customer_id") for r in results] == ["prefixed", "plain", None, "plain"]
    assert results[0]["number"] == "4420"


def test_ip_auth_comes_before_user_auth(book: Book) -> None:
    book.rate("card", "44", "0.6")
    with_customers(book, "by-ip", "by-user")
    book.auth("by-ip", "ip", "10.0.0.0/8")
    book.auth("by-user", "user", "pbx")
    result = rated(book.one(customer_id=None, source_ip="10.1.1.1", sip_user="pbx"))
    assert result["customer_id"] == "by-ip"


@pytest.fixture
def did_book(book: Book) -> Book:
    """c1 owns DID 18005550000 (card did-card; provider p1, card buy-1); c2 exists too."""
    book.card("did-card", direction="origination")
    book.rate("did-card", "1", "0.6")  # 0.01 a second
    book.rate("card", "1", "1.2")  # the outbound card: 0.02 a second
    book.add("providers", provider_id="p1", name="P1", currency="USD")
    book.card("buy-1", precision=6)
    book.rate("buy-1", "1", "0.3")  # 0.005 a second
    book.card("buy-2", precision=6)
    book.rate("buy-2", "1", "0.18")  # 0.003 a second
    book.add(
        "dids",
        number="18005550000",
        customer_id="c1",
        customer_card_id="did-card",
        provider_id="p1",
        provider_card_id="buy-1",
    )
    book.add("dids", number="18005550001", customer_id="c1", customer_card_id="did-card")
    with_customers(book, "c2")
    return book


def test_inbound_did(did_book: Book) -> None:
    results = did_book.run(
        [
            cdr(callid="a", dest="+18005550000", customer_id=None, direction="inbound"),
            cdr(callid="b", dest="18005550000", customer_id=None, direction="inbound"),
        ]
    )
    for result in results:
        # 60 s × 0.6 / 60 = 0.6; provider 60 s × 0.3 / 60 = 0.3.
        assert rated(result)["customer_id"] == "c1"
        assert result["card_id"] == "did-card"
        assert result["number"] == "18005550000"
        assert result["charge"] == D("0.6")
        assert result["provider_charge"] == D("0.3")
        assert result["provider_currency"] == "USD"
        assert result["profit"] == D("0.3")


def test_inbound_did_needs_no_route_and_overrides_the_cdr_customer(did_book: Book) -> None:
    did_book.customer("no-routes")
    did_book.add("dids", number="15550001", customer_id="no-routes", customer_card_id="did-card")
    result = rated(did_book.one(dest="15550001", customer_id="c2", direction="inbound"))
    assert result["customer_id"] == "no-routes"
    assert result["card_id"] == "did-card"


def test_inbound_did_provider_card_from_the_cdr_wins(did_book: Book) -> None:
    result = rated(
        did_book.one(
            dest="18005550000", customer_id=None, direction="inbound", provider_card_id="buy-2"
        )
    )
    assert result["provider_charge"] == D("0.18")  # 60 s × 0.18 / 60
    # A DID without a provider card and a CDR without one: no provider leg.
    result = rated(did_book.one(dest="18005550001", customer_id=None, direction="inbound"))
    assert (result["provider_charge"], result["provider_currency"], result["profit"]) == (
        None,
        None,
        None,
    )


def test_a_did_number_called_outbound_or_a_non_did_inbound_is_routed(did_book: Book) -> None:
    results = did_book.run(
        [
            cdr(callid="a", dest="18005550000"),
            cdr(callid="b", dest="18005550000", direction="outbound"),
            cdr(callid="c", dest="18005559999", direction="inbound"),
            cdr(callid="d", dest="18005559999", direction="inbound", customer_id=None),
        ]
    )
    assert [r.get("card_id") for r in results] == ["card", "card", "card", None]
    assert results[0]["charge"] == D("1.2")
    assert results[0]["provider_charge"] is None
    assert results[3]["reject_reason"] == "unknown_customer"


# -- R3 routes -----------------------------------------------------------------------------------


@pytest.fixture
def routing(book: Book) -> Book:
    """Customer r without routes; cards A and B with rows for 1, 2, 3, 4, 9."""
    book.customer("r")
    for card in ("A", "B"):
        book.card(card)
        for prefix in "12349":
            book.rate(card, prefix, "0.6")
    return book


def route_of(book: Book, dest: str) -> tuple[str | None, str | None] | str:
    result = book.one(customer_id="r", dest=dest)
    reason: str | None = result["reject_reason"]
    if reason is not None:
        return reason
    return result["card_id"], result["number"]


def test_route_priority_before_tech_prefix_length(routing: Book) -> None:
    routing.route("r", "A", priority=5, tech_prefix="99")
    routing.route("r", "B", priority=1)
    assert route_of(routing, "994420") == ("B", "994420")


def test_route_longest_tech_prefix_first_at_equal_priority(routing: Book) -> None:
    routing.route("r", "A", tech_prefix="9")
    routing.route("r", "B", tech_prefix="99")
    assert route_of(routing, "994420") == ("B", "4420")
    assert route_of(routing, "914420") == ("A", "14420")


def test_route_smallest_id_breaks_a_tie(routing: Book) -> None:
    routing.route("r", "B")
    routing.route("r", "A")
    assert route_of(routing, "4420") == ("B", "4420")


def test_route_tech_prefix_removed(routing: Book) -> None:
    routing.route("r", "A", tech_prefix="123#")
    assert route_of(routing, "123#4420") == ("A", "4420")
    assert route_of(routing, "4420") == "no_route"


def test_route_one_plus_removed_after_the_tech_prefix(routing: Book) -> None:
    routing.route("r", "A")
    routing.route("r", "B", tech_prefix="77", priority=1)
    assert route_of(routing, "+4420") == ("A", "4420")
    assert route_of(routing, "++4420") == "no_route"
    # 77+4420: A's rest '77+4420' has a '+' inside; B takes 77 off, then the '+'.
    assert route_of(routing, "77+4420") == ("B", "4420")


def test_route_strip_digits(routing: Book) -> None:
    routing.route("r", "A", strip_digits=2)
    assert route_of(routing, "004420") == ("A", "4420")
    assert route_of(routing, "+004420") == ("A", "4420")
    assert route_of(routing, "00") == "no_route"  # nothing left


def test_route_number_must_be_digits(routing: Book) -> None:
    routing.route("r", "A")
    assert route_of(routing, "4420*1") == "no_route"
    assert route_of(routing, "#4420") == "no_route"


def test_route_dial_string_prefixes(routing: Book) -> None:
    routing.route("r", "A", dial_string="1|44")
    routing.route("r", "B", priority=1)
    assert route_of(routing, "4420") == ("A", "4420")
    assert route_of(routing, "120") == ("A", "120")
    assert route_of(routing, "4320") == ("B", "4320")


def test_route_dial_string_regex(routing: Book) -> None:
    routing.route("r", "A", dial_string="^(33|49)[0-9]+$")
    routing.route("r", "A", dial_string="^44", strip_digits=2, priority=1)
    routing.route("r", "B", priority=2)
    assert route_of(routing, "3320") == ("A", "3320")
    assert route_of(routing, "4920") == ("A", "4920")
    # The regex sees the number after strip_digits.
    assert route_of(routing, "004420") == ("A", "4420")
    assert route_of(routing, "2320") == ("B", "2320")


# -- R4 effective dates --------------------------------------------------------------------------


def test_a_new_version_takes_over_at_effective_from(book: Book) -> None:
    book.rate("card", "447", "0.025", effective_to="2026-12-01T00:00:00Z")
    book.rate("card", "447", "0.021", effective_from="2026-12-01T00:00:00Z")
    before = rated(book.one(dest="4479", dt="2026-11-30T23:59:59Z"))
    at = rated(book.one(dest="4479", dt="2026-12-01T00:00:00Z"))
    assert (before["rate"], at["rate"]) == (D("0.025"), D("0.021"))
    assert before["dest_code"] == at["dest_code"] == "447"


def test_open_rows_of_one_prefix_the_latest_effective_from_wins(book: Book) -> None:
    book.rate("card", "44", "0.01")
    book.rate("card", "44", "0.02", effective_from="2026-03-01T00:00:00Z")
    book.rate("card", "44", "0.03", effective_from="2026-04-01T00:00:00Z")
    rates = [
        rated(book.one(dt=dt))["rate"]
        for dt in ("2026-02-28T23:59:59Z", "2026-03-01T00:00:00Z", "2026-05-01T00:00:00Z")
    ]
    assert rates == [D("0.01"), D("0.02"), D("0.03")]


def test_an_expired_longest_prefix_falls_back_to_a_shorter_one(book: Book) -> None:
    book.rate("card", "447", "0.02", name="UK mobile")
    book.rate("card", "4474", "0.03", name="Vodafone", effective_to="2026-06-01T00:00:00Z")
    book.rate("card", "44745", "0.04", effective_from="2027-01-01T00:00:00Z")  # not yet
    before = rated(book.one(dest="447451", dt="2026-05-31T23:59:59Z"))
    after = rated(book.one(dest="447451", dt="2026-06-01T00:00:00Z"))
    assert (before["dest_code"], before["dest_name"], before["rate"]) == (
        "4474",
        "Vodafone",
        D("0.03"),
    )
    assert (after["dest_code"], after["dest_name"], after["rate"]) == (
        "447",
        "UK mobile",
        D("0.02"),
    )


def test_effective_times_with_fractions_of_a_second(book: Book) -> None:
    book.rate("card", "44", "0.01", effective_to="2026-12-01T00:00:00.5Z")
    book.rate("card", "44", "0.02", effective_from="2026-12-01T00:00:00.5Z")
    assert rated(book.one(dt="2026-12-01T00:00:00.499999Z"))["rate"] == D("0.01")
    assert rated(book.one(dt="2026-12-01T00:00:00.500000Z"))["rate"] == D("0.02")


# -- R5 billed seconds: grace, mcd/pulse, duration rounding -------------------------------------


def test_grace_bills_nothing_and_takes_no_connect_fee(book: Book) -> None:
    book.rate("card", "44", "0.6", connect_fee="0.05", grace=5)
    results = book.run(
        [
            cdr(callid="a", duration="5"),
            cdr(callid="b", duration="6"),
            cdr(callid="c", duration="0"),
            cdr(callid="d", duration="100", sip_code=486),
            cdr(callid="e", duration=None),
        ]
    )
    # b: 6 s × 0.6 / 60 + 0.05 = 0.06 + 0.05 = 0.11.
    assert [(r["billed_duration"], r["charge"]) for r in results] == [
        (0, 0),
        (6, D("0.11")),
        (0, 0),
        (0, 0),
        (0, 0),
    ]


def test_grace_before_mcd(book: Book) -> None:
    book.rate("card", "44", "0.6", mcd=30, pulse=6, grace=5)
    results = book.run([cdr(callid="a", duration="4"), cdr(callid="b", duration="6")])
    assert [r["billed_duration"] for r in results] == [0, 30]


def test_mcd_and_pulse(book: Book) -> None:
    book.rate("card", "44", "0.6", mcd=60, pulse=60)
    book.rate("card", "33", "0.6", mcd=0, pulse=10)
    book.rate("card", "49", "0.6", mcd=7, pulse=1)
    durations = [("44", "1"), ("44", "60"), ("44", "61"), ("33", "1"), ("33", "21")]
    durations += [("49", "3"), ("49", "8")]
    results = book.run(
        [cdr(callid=str(i), dest=p + "20", duration=d) for i, (p, d) in enumerate(durations)]
    )
    assert [r["billed_duration"] for r in results] == [60, 60, 120, 10, 30, 7, 8]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        #          7.4 7.5 7.6 0.4 0.5
        ("up", [8, 8, 8, 1, 1]),
        ("down", [7, 7, 7, 0, 0]),
        ("half_up", [7, 8, 8, 0, 1]),
        ("half_down", [7, 7, 8, 0, 0]),
    ],
)
def test_duration_rounding(book: Book, mode: str, expected: list[int]) -> None:
    book.edit("rate_cards", "card", duration_rounding=mode)
    book.rate("card", "44", "0.6")  # 0.01 a second
    durations = ["7.4", "7.5", "7.6", "0.4", "0.5"]
    results = book.run([cdr(callid=d, duration=d) for d in durations])
    assert [r["billed_duration"] for r in results] == expected
    assert [r["charge"] for r in results] == [D(s) / 100 for s in expected]


def test_duration_is_rounded_before_grace(book: Book) -> None:
    book.edit("rate_cards", "card", duration_rounding="down")
    book.rate("card", "44", "0.6", grace=7)
    results = book.run([cdr(callid="a", duration="7.9"), cdr(callid="b", duration="8")])
    assert [r["billed_duration"] for r in results] == [0, 8]


# -- R7 charge, connect fee, rounding, tax -------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("up", ["0.0018", "0.0018", "0.0019", "0.0002"]),
        ("down", ["0.0017", "0.0017", "0.0018", "0.0001"]),
        ("half_up", ["0.0018", "0.0017", "0.0019", "0.0002"]),
        ("half_down", ["0.0017", "0.0017", "0.0018", "0.0002"]),
    ],
)
def test_charge_rounding(book: Book, mode: str, expected: list[str]) -> None:
    book.edit("rate_cards", "card", rounding=mode)
    book.rate("card", "1", "0.015")  # 7 s → 0.00175 exactly
    book.rate("card", "2", "0.0103")  # 10 s → 0.103 / 60 = 0.0017166…
    book.rate("card", "3", "0.0111")  # 10 s → 0.111 / 60 = 0.00185 exactly
    book.rate("card", "4", "0.01")  # 1 s → 0.01 / 60 = 0.0001666…
    calls = [("1", "7"), ("2", "10"), ("3", "10"), ("4", "1")]
    results = book.run([cdr(callid=p, dest=p + "0", duration=d) for p, d in calls])
    assert [r["charge"] for r in results] == [D(e) for e in expected]


@pytest.mark.parametrize(
    ("precision", "mode", "expected"),
    [
        (0, "half_up", "2"),  # 1 s × 90 / 60 = 1.5
        (0, "half_down", "1"),
        (0, "down", "1"),
        (2, "up", "1.50"),
        (6, "half_up", "1.500000"),
    ],
)
def test_charge_precision(book: Book, precision: int, mode: str, expected: str) -> None:
    book.edit("rate_cards", "card", precision=precision, rounding=mode)
    book.rate("card", "44", "90")
    result = rated(book.one(duration="1"))
    assert result["charge"] == D(expected)


def test_charge_at_precision_6_of_a_repeating_amount(book: Book) -> None:
    book.edit("rate_cards", "card", precision=6)
    book.rate("card", "44", "0.0001")
    # 1 s × 0.0001 / 60 = 0.0000016666… → 0.000002.
    assert rated(book.one(duration="1"))["charge"] == D("0.000002")


def test_connect_fee(book: Book) -> None:
    book.rate("card", "44", "0.6", connect_fee="0.025")
    book.package("all", 100, "daily")
    book.assign("c1", "all", "2026-05-04")
    results = book.run(
        [
            cdr(callid="a", dt="2026-05-03T10:00:00Z", duration="10"),  # no package yet
            cdr(callid="b", duration="90"),  # all in the package
            cdr(callid="c", duration="30"),  # 10 s in the package, 20 charged
        ]
    )
    # a: 10 × 0.01 + 0.025 = 0.125; b: 0, no fee; c: 20 × 0.01 + 0.025 = 0.225.
    assert [r["charge"] for r in results] == [D("0.125"), D(0), D("0.225")]
    assert [r["connect_fee"] for r in results] == [D("0.025")] * 3
    assert [r["package_seconds"] for r in results] == [0, 90, 10]


def test_tax_is_half_up_whatever_the_card_rounding(book: Book) -> None:
    book.edit("customers", "c1", tax_percent="10")
    book.edit("rate_cards", "card", rounding="half_down")
    book.rate("card", "44", "0.045")
    result = rated(book.one(duration="10"))
    # charge 10 × 0.045 / 60 = 0.0075; tax 0.00075 → half_up 0.0008 (half_down: 0.0007).
    assert (result["charge"], result["tax"]) == (D("0.0075"), D("0.0008"))


def test_tax_fractional_percent_and_currency(book: Book) -> None:
    book.edit("customers", "c1", tax_percent="7.5")
    book.rate("card", "44", "0.6")
    result = rated(book.one(duration="10"))
    # 0.1 × 7.5 / 100 = 0.0075.
    assert (result["charge"], result["tax"], result["currency"]) == (
        D("0.1"),
        D("0.0075"),
        "USD",
    )


# -- R6 packages ---------------------------------------------------------------------------------


@pytest.fixture
def pkg(book: Book) -> Book:
    """Card rows 44 and 1 at 0.6 a minute (0.01 a second), 1/1."""
    book.rate("card", "44", "0.6")
    book.rate("card", "1", "0.6")
    return book


def test_package_daily(pkg: Book) -> None:
    pkg.package("day", 60, "daily")
    pkg.assign("c1", "day", "2026-05-01")
    results = pkg.run(
        [
            cdr(callid="a", dt="2026-05-04T10:00:00Z", duration="40"),
            cdr(callid="b", dt="2026-05-04T11:00:00Z", duration="40"),
            cdr(callid="c", dt="2026-05-05T09:00:00Z", duration="40"),
        ]
    )
    assert [r["package_draws"] for r in results] == [
        [("day", "2026-05-01", "2026-05-04", 40)],
        [("day", "2026-05-01", "2026-05-04", 20)],
        [("day", "2026-05-01", "2026-05-05", 40)],
    ]
    assert [r["package_id"] for r in results] == ["day"] * 3
    assert [r["charge"] for r in results] == [D(0), D("0.2"), D(0)]


def test_package_weekly_periods_start_on_monday(pkg: Book) -> None:
    pkg.package("week", 60, "weekly")
    pkg.assign("c1", "week", "2026-04-01")
    results = pkg.run(
        [
            cdr(callid="sun", dt="2026-05-03T23:59:59Z"),  # week of Monday 2026-04-27
            cdr(callid="mon", dt="2026-05-04T00:00:00Z"),  # week of Monday 2026-05-04
            cdr(callid="next-sun", dt="2026-05-10T12:00:00Z", duration="30"),  # same week
            cdr(callid="next-mon", dt="2026-05-11T12:00:00Z", duration="30"),
        ]
    )
    assert [r["package_draws"] for r in results] == [
        [("week", "2026-04-01", "2026-04-27", 60)],
        [("week", "2026-04-01", "2026-05-04", 60)],
        [],
        [("week", "2026-04-01", "2026-05-11", 30)],
    ]
    assert [r["package_id"] for r in results] == ["week", "week", None, "week"]
    assert results[2]["charge"] == D("0.3")


def test_package_monthly(pkg: Book) -> None:
    pkg.package("month", 100, "monthly")
    pkg.assign("c1", "month", "2026-05-15")
    results = pkg.run(
        [
            cdr(callid="a", dt="2026-05-31T10:00:00Z", duration="80"),
            cdr(callid="b", dt="2026-06-01T10:00:00Z", duration="80"),
            cdr(callid="c", dt="2026-06-30T10:00:00Z", duration="80"),
            cdr(callid="d", dt="2026-05-14T10:00:00Z", duration="80"),  # before start_date
        ]
    )
    assert [r["package_draws"] for r in results] == [
        [("month", "2026-05-15", "2026-05-01", 80)],
        [("month", "2026-05-15", "2026-06-01", 80)],
        [("month", "2026-05-15", "2026-06-01", 20)],
        [],
    ]
    assert [r["charge"] for r in results] == [D(0), D(0), D("0.6"), D("0.8")]


def test_package_once_over_its_whole_validity(pkg: Book) -> None:
    pkg.package("once", 100, "once")
    pkg.assign("c1", "once", "2026-05-02", end_date="2026-06-30")
    results = pkg.run(
        [
            cdr(callid="a", dt="2026-05-02T00:00:00Z"),
            cdr(callid="b", dt="2026-06-30T23:59:59Z"),  # end_date is included
            cdr(callid="c", dt="2026-07-01T00:00:00Z"),  # after end_date
            cdr(callid="d", dt="2026-05-01T23:59:59Z"),  # before start_date
        ]
    )
    assert [r["package_draws"] for r in results] == [
        [("once", "2026-05-02", "2026-05-02", 60)],
        [("once", "2026-05-02", "2026-05-02", 40)],
        [],
        [],
    ]
    assert [r["package_seconds"] for r in results] == [60, 40, 0, 0]


def test_package_quantity(pkg: Book) -> None:
    pkg.package("day", 60, "daily")
    pkg.assign("c1", "day", "2026-05-01", quantity=3)
    results = pkg.run([cdr(callid="a", duration="100"), cdr(callid="b", duration="100")])
    assert [r["package_seconds"] for r in results] == [100, 80]  # 180 a day


def test_package_prefixes(pkg: Book) -> None:
    pkg.package("uk-mob-us", 1000, "daily", prefixes="447|1")
    pkg.assign("c1", "uk-mob-us", "2026-05-01")
    results = pkg.run(
        [
            cdr(callid="a", dest="4420"),
            cdr(callid="b", dest="4471"),
            cdr(callid="c", dest="120"),
        ]
    )
    assert [r["package_seconds"] for r in results] == [0, 60, 60]


def test_packages_in_package_id_order_and_one_call_draws_on_two(pkg: Book) -> None:
    pkg.package("p-b", 100, "daily")
    pkg.package("p-a", 30, "daily")
    pkg.assign("c1", "p-b", "2026-05-01")
    pkg.assign("c1", "p-a", "2026-05-01")
    results = pkg.run([cdr(callid="a", duration="50"), cdr(callid="b", duration="100")])
    assert results[0]["package_draws"] == [
        ("p-a", "2026-05-01", "2026-05-04", 30),
        ("p-b", "2026-05-01", "2026-05-04", 20),
    ]
    assert (results[0]["package_id"], results[0]["package_seconds"]) == ("p-a", 50)
    assert results[0]["charge"] == D(0)
    # p-a is used up: b draws on p-b only, 80 s left of it, and pays for 20 s.
    assert results[1]["package_draws"] == [("p-b", "2026-05-01", "2026-05-04", 80)]
    assert (results[1]["package_id"], results[1]["charge"]) == ("p-b", D("0.2"))


def test_one_package_assigned_twice_by_start_date(pkg: Book) -> None:
    pkg.package("welcome", 30, "once")
    pkg.assign("c1", "welcome", "2026-05-01")
    pkg.assign("c1", "welcome", "2026-04-01")
    result = rated(pkg.one(duration="50"))
    assert result["package_draws"] == [
        ("welcome", "2026-04-01", "2026-04-01", 30),
        ("welcome", "2026-05-01", "2026-05-01", 20),
    ]


def test_packages_are_consumed_in_dt_then_callid_order(pkg: Book) -> None:
    pkg.package("day", 60, "daily")
    pkg.assign("c1", "day", "2026-05-01")
    results = pkg.run(
        [
            cdr(callid="late", dt="2026-05-04T12:00:00Z"),
            cdr(callid="b", dt="2026-05-04T11:00:00Z"),
            cdr(callid="a", dt="2026-05-04T11:00:00Z"),
        ]
    )
    assert [r["package_seconds"] for r in results] == [0, 0, 60]
    assert [r["charge"] for r in results] == [D("0.6"), D("0.6"), D(0)]


def test_prior_usage_continues_and_is_not_changed(pkg: Book) -> None:
    pkg.package("day", 60, "daily")
    pkg.package("week", 60, "weekly")
    pkg.assign("c1", "day", "2026-05-01")
    pkg.assign("c1", "week", "2026-05-01")
    usage = {
        ("c1", "day", "2026-05-01", "2026-05-04"): 50,
        ("c1", "day", "2026-05-01", "2026-05-03"): 60,  # another day: no effect
        ("c1", "week", "2026-05-01", "2026-05-04"): 80,  # more than the allowance
    }
    before = dict(usage)
    result = rated(pkg.run([cdr(duration="30")], usage=usage)[0])
    assert result["package_draws"] == [("day", "2026-05-01", "2026-05-04", 10)]
    assert result["charge"] == D("0.2")
    assert usage == before


def test_no_package_draw_without_billed_seconds_or_for_rejected_calls(pkg: Book) -> None:
    pkg.rate("card", "33", "0.6", grace=10)
    pkg.package("day", 60, "daily")
    pkg.assign("c1", "day", "2026-05-01")
    results = pkg.run(
        [
            cdr(callid="a", sip_code=486, duration="30", dt="2026-05-04T08:00:00Z"),
            cdr(callid="b", dest="3320", duration="10", dt="2026-05-04T08:00:01Z"),
            cdr(callid="c", dest="4920", dt="2026-05-04T08:00:02Z"),  # no_rate
            cdr(callid="d", dt="2026-05-04T08:00:03Z", duration="30"),
            cdr(callid="d", dt="2026-05-04T08:00:04Z", duration="30"),  # duplicate
            cdr(callid="e", dt="2026-05-04T09:00:00Z", duration="30"),
        ]
    )
    assert reasons(results) == [None, None, "no_rate", None, "duplicate", None]
    assert [r.get("package_seconds") for r in results] == [0, 0, None, 30, None, 30]
    assert results[0]["package_id"] is None and results[0]["package_draws"] == []


def test_packages_draw_billed_seconds_and_belong_to_their_customer(pkg: Book) -> None:
    pkg.rate("card", "33", "0.6", mcd=30, pulse=6)
    with_customers(pkg, "c2")
    pkg.package("day", 100, "daily")
    pkg.assign("c2", "day", "2026-05-01")
    results = pkg.run(
        [
            cdr(callid="a", dest="3320", duration="31", customer_id="c2"),
            cdr(callid="b", dest="3320", duration="31"),  # c1 has no package
        ]
    )
    assert [r["package_seconds"] for r in results] == [36, 0]


# -- R8 provider leg and profit ------------------------------------------------------------------


@pytest.fixture
def prov(book: Book) -> Book:
    """Customer card: 44 and 33 at 0.6 (0.01 a second). Provider cards: 'buy' (USD,
    precision 6, duration rounding down; 44 at 0.3 plus 0.001 connect fee) and 'buy-eur'."""
    book.rate("card", "44", "0.6")
    book.rate("card", "33", "0.6")
    book.add("providers", provider_id="p1", name="P1", currency="USD")
    book.card("buy", precision=6, duration_rounding="down")
    book.rate("buy", "44", "0.3", connect_fee="0.001")
    book.rate("buy", "4421", "0.3", effective_to="2026-01-01T00:00:00Z")
    book.card("buy-eur", currency="EUR", precision=6)
    book.rate("buy-eur", "44", "0.3")
    return book


def test_provider_leg_and_profit(prov: Book) -> None:
    result = rated(prov.one(duration="10.7", provider_card_id="buy", provider_id="p1"))
    # Customer: up → 11 s × 0.01 = 0.11. Provider: down → 10 s × 0.3 / 60 + 0.001 = 0.051.
    assert (result["billed_duration"], result["charge"]) == (11, D("0.11"))
    assert (result["provider_charge"], result["provider_currency"]) == (D("0.051"), "USD")
    assert result["profit"] == D("0.059")


def test_profit_is_null_when_currencies_differ(prov: Book) -> None:
    result = rated(prov.one(provider_card_id="buy-eur"))
    assert (result["provider_charge"], result["provider_currency"]) == (D("0.3"), "EUR")
    assert result["profit"] is None


@pytest.mark.parametrize(
    ("dest", "card"),
    [
        ("3320", "buy"),  # the provider card has no row for 33
        ("4420", "nope"),  # no such card
        ("4420", None),
        ("4420", ""),
    ],
)
def test_no_provider_leg(prov: Book, dest: str, card: str | None) -> None:
    result = rated(prov.one(dest=dest, provider_card_id=card))
    assert (result["provider_charge"], result["provider_currency"], result["profit"]) == (
        None,
        None,
        None,
    )
    assert result["charge"] == D("0.6")


def test_provider_leg_expired_row_falls_back_to_a_shorter_prefix(prov: Book) -> None:
    prov.card("buy-old", precision=6)
    prov.rate("buy-old", "4421", "0.3", effective_to="2026-01-01T00:00:00Z")
    results = prov.run(
        [
            cdr(callid="a", dest="4421", provider_card_id="buy"),
            cdr(callid="b", dest="4421", provider_card_id="buy-old"),
        ]
    )
    # a: 4421 expired, row 44: 60 × 0.3 / 60 + 0.001 = 0.301. b: no effective row at all.
    assert [r["provider_charge"] for r in results] == [D("0.301"), None]
    assert [r["profit"] for r in results] == [D("0.299"), None]


def test_provider_leg_takes_no_packages_and_no_tax(prov: Book) -> None:
    prov.edit("customers", "c1", tax_percent="20")
    prov.package("all", 1000, "daily")
    prov.assign("c1", "all", "2026-05-01")
    result = rated(prov.one(provider_card_id="buy"))
    # The customer pays nothing (package); the provider leg is 60 s × 0.3 / 60 + 0.001.
    assert (result["charge"], result["tax"]) == (D(0), D(0))
    assert result["provider_charge"] == D("0.301")
    assert result["profit"] == D("-0.301")


def test_provider_leg_of_an_unanswered_call_is_zero(prov: Book) -> None:
    result = rated(prov.one(sip_code=503, duration="12", provider_card_id="buy"))
    assert (result["charge"], result["provider_charge"], result["profit"]) == (0, 0, 0)


def test_provider_leg_uses_its_own_row_rules(prov: Book) -> None:
    prov.card("buy-grace", precision=6)
    prov.rate("buy-grace", "44", "0.3", grace=20, mcd=60, pulse=60)
    results = prov.run(
        [
            cdr(callid="a", duration="15", provider_card_id="buy-grace"),
            cdr(callid="b", duration="21", provider_card_id="buy-grace"),
        ]
    )
    # a: customer 15 s = 0.15, provider within grace = 0. b: provider mcd 60 → 0.3.
    assert [(r["charge"], r["provider_charge"]) for r in results] == [
        (D("0.15"), D(0)),
        (D("0.21"), D("0.3")),
    ]


# -- the record, and no changes to the inputs -----------------------------------------------------


def test_rated_record_fields(book: Book) -> None:
    book.edit("customers", "c1", status="penalty", tax_percent="20")
    book.rate("card", "44", "0.6", name="United Kingdom", connect_fee="0.01")
    result = book.one(duration="30")
    # 30 × 0.01 + 0.01 = 0.31; tax 0.062.
    assert result == {
        "callid": "call-1",
        "reject_reason": None,
        "customer_id": "c1",
        "customer_status": "penalty",
        "card_id": "card",
        "number": "4420",
        "dest_code": "44",
        "dest_name": "United Kingdom",
        "billed_duration": 30,
        "rate": D("0.6"),
        "connect_fee": D("0.01"),
        "package_seconds": 0,
        "package_id": None,
        "package_draws": [],
        "charge": D("0.31"),
        "tax": D("0.062"),
        "currency": "USD",
        "provider_charge": None,
        "provider_currency": None,
        "profit": None,
    }


def test_inputs_are_not_changed(sample: Catalog) -> None:
    snapshot = snapshot_of(sample)
    cdrs = [
        cdr(callid="a", customer_id="acme", dest="447400123456", dt="2026-05-10T09:00:00Z"),
        cdr(callid="b", customer_id="acme", dest="447400123456", dt="2026-05-10T08:00:00Z"),
        cdr(callid="a", customer_id="acme", dest="447400123456"),
    ]
    usage = {("acme", "pkg-uk-mob-1000", "2026-01-01", "2026-05-01"): 119_990}
    lake = {"zzz"}
    copies = copy.deepcopy((snapshot, cdrs, usage, lake))
    results = rate_reference(snapshot, cdrs, lake_callids=lake, usage=usage)
    assert reasons(results) == [None, None, "duplicate"]
    assert (snapshot, cdrs, usage, lake) == copies


# -- exactness, against fractions ----------------------------------------------------------------


def _round_fraction(value: Fraction, precision: int, mode: str) -> Fraction:
    """Round a non-negative fraction to ``precision`` places, the slow way."""
    scaled = value * 10**precision
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    if rest == 0:
        whole = floor
    elif mode == "up":
        whole = floor + 1
    elif mode == "down":
        whole = floor
    elif mode == "half_up":
        whole = floor + 1 if rest >= Fraction(1, 2) else floor
    else:
        whole = floor + 1 if rest > Fraction(1, 2) else floor
    return Fraction(whole, 10**precision)


def _money(units: int) -> Decimal:
    return Decimal(units).scaleb(-6)


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.integers(1, 200_000),
    rate_units=st.integers(0, 10**9),
    fee_units=st.integers(0, 10**6),
    precision=st.integers(0, 6),
    mode=st.sampled_from(MODES),
)
def test_charge_equals_the_exact_fraction_rounded(
    seconds: int, rate_units: int, fee_units: int, precision: int, mode: str
) -> None:
    rate, fee = _money(rate_units), _money(fee_units)
    snapshot = {
        "customers": [{"customer_id": "c1", "status": "active", "tax_percent": D(0)}],
        "rate_cards": [
            {
                "card_id": "card",
                "currency": "USD",
                "precision": precision,
                "rounding": mode,
                "duration_rounding": "up",
            }
        ],
        "rates": [
            {
                "id": 1,
                "card_id": "card",
                "prefix": "4",
                "name": "x",
                "rate": rate,
                "connect_fee": fee,
                "mcd": 0,
                "pulse": 1,
                "grace": 0,
                "effective_from": None,
                "effective_to": None,
            }
        ],
        "routes": [
            {
                "id": 1,
                "customer_id": "c1",
                "card_id": "card",
                "tech_prefix": None,
                "strip_digits": 0,
                "dial_string": None,
                "priority": 0,
            }
        ],
    }
    result = rate_reference(snapshot, [cdr(dest="44", duration=str(seconds))])[0]
    exact = Fraction(seconds) * Fraction(rate) / 60 + Fraction(fee)
    assert Fraction(result["charge"]) == _round_fraction(exact, precision, mode)


# -- the sample catalog, end to end --------------------------------------------------------------


def test_sample_acme_uk_mobile_by_ip_inside_its_package(sample: Catalog) -> None:
    call = cdr(
        customer_id=None,
        source_ip="203.0.113.10",
        dest="447400123456",
        duration="65",
        dt="2026-05-10T08:00:00Z",
        provider_card_id="cost-mobnet",
    )
    result = rated(rate_reference(snapshot_of(sample), [call])[0])
    # 203.0.113.10 is acme's exact address (the /28 entry needs tech prefix 9901#).
    # acme's routes: premium-usd (priority 1) needs 9901#; retail-usd (priority 10) matches.
    # retail-usd 4474 Vodafone 0.023, 30/6, grace 3: 65 s → 30 + ceil(35/6)·6 = 66 s.
    # pkg-uk-mob-1000 (447, monthly, 60000 s × 2) takes all 66 s: charge 0, tax 0.
    # cost-mobnet 4474 at 0.0131, 1/1: 65 × 0.0131 / 60 = 0.0141916… → 0.014192.
    assert (result["customer_id"], result["card_id"], result["dest_code"]) == (
        "acme",
        "retail-usd",
        "4474",
    )
    assert result["billed_duration"] == 66
    assert result["package_draws"] == [("pkg-uk-mob-1000", "2026-01-01", "2026-05-01", 66)]
    assert (result["charge"], result["tax"]) == (D(0), D(0))
    assert result["provider_charge"] == D("0.014192")
    assert result["profit"] == D("-0.014192")


def test_sample_acme_premium_route_by_cidr_and_tech_prefix(sample: Catalog) -> None:
    calls = [
        cdr(callid="a", customer_id=None, source_ip="203.0.113.5", dest="9901#4915123"),
        cdr(callid="b", customer_id=None, source_ip="203.0.113.10", dest="9901#4915123"),
        cdr(callid="c", customer_id=None, source_ip="203.0.113.5", dest="4915123"),
    ]
    for call in calls:
        call.update(duration=D("10.2"), dt=datetime.fromisoformat("2026-05-10T09:00:00Z"))
    results = rate_reference(snapshot_of(sample), calls)
    # a, b: the /28 entry with tech prefix 9901# → acme; route premium-usd (priority 1)
    # takes 9901# off: number 4915123 → row 491 at 0.049, 1/1; 10.2 s up → 11 s;
    # 11 × 0.049 / 60 = 0.0089833… → up (premium-usd rounds up) 0.0090; tax 20% 0.0018.
    # c: 203.0.113.5 without the tech prefix matches no entry.
    for result in results[:2]:
        assert (result["customer_id"], result["card_id"], result["number"]) == (
            "acme",
            "premium-usd",
            "4915123",
        )
        assert (result["billed_duration"], result["charge"], result["tax"]) == (
            11,
            D("0.0090"),
            D("0.0018"),
        )
    assert results[2]["reject_reason"] == "unknown_customer"


def test_sample_initech_by_sip_user_with_dial_string_and_weekly_package(sample: Catalog) -> None:
    def call(callid: str, dt: str, dest: str = "5215512345678") -> dict[str, Any]:
        return cdr(
            callid=callid,
            customer_id=None,
            sip_user="initech-pbx1",
            dest=dest,
            duration="61",
            dt=dt,
            provider_card_id="cost-tier1",
        )

    results = rate_reference(
        snapshot_of(sample),
        [
            call("feb", "2026-02-20T12:00:00Z"),
            call("mar", "2026-03-04T12:00:00Z"),
            call("fr", "2026-03-04T12:00:00Z", dest="33123456"),
        ],
    )
    # initech's route (dial string 1|44|52) → retail-usd row 521 Mexico Mobile 0.026, 60/60:
    # 61 s → 120 s. feb: before pkg-all-weekly starts (2026-03-02): 120 × 0.026 / 60 = 0.052,
    # tax 0%. Provider cost-tier1 521 at 0.019, 60/60: 120 s → 0.038; profit 0.014.
    feb, mar, fr = results
    assert (feb["card_id"], feb["dest_code"], feb["billed_duration"]) == ("retail-usd", "521", 120)
    assert (feb["charge"], feb["tax"]) == (D("0.0520"), D(0))
    assert (feb["provider_charge"], feb["profit"]) == (D("0.038"), D("0.014"))
    # mar (a Wednesday): the weekly package of the week from Monday 2026-03-02 takes 120 s.
    assert mar["package_draws"] == [("pkg-all-weekly", "2026-03-02", "2026-03-02", 120)]
    assert (mar["charge"], mar["profit"]) == (D(0), D("-0.038"))
    # 33… is not in the dial string.
    assert fr["reject_reason"] == "no_route"


def test_sample_inbound_did(sample: Catalog) -> None:
    call = cdr(
        customer_id=None,
        dest="+18005550199",
        direction="inbound",
        duration="100",
        dt="2026-02-25T12:00:00Z",
    )
    result = rated(rate_reference(snapshot_of(sample), [call])[0])
    # DID 18005550199 → initech on did-in-usd: row 18 toll-free 0.015, 6/6:
    # 100 s → 6 + ceil(94/6)·6 = 102 s; 102 × 0.015 / 60 = 0.0255; no package before March.
    # The DID's provider card cost-tier1: row 1 at 0.0042, 6/6: 102 × 0.0042 / 60 = 0.00714.
    assert (result["customer_id"], result["card_id"], result["number"]) == (
        "initech",
        "did-in-usd",
        "18005550199",
    )
    assert (result["dest_code"], result["billed_duration"], result["charge"]) == (
        "18",
        102,
        D("0.0255"),
    )
    assert (result["provider_charge"], result["provider_currency"]) == (D("0.00714"), "USD")
    assert result["profit"] == D("0.01836")


def test_sample_acme_uk_mobile_rate_change_with_package_used_up(sample: Catalog) -> None:
    usage = {
        ("acme", "pkg-uk-mob-1000", "2026-01-01", "2026-11-01"): 120_000,
        ("acme", "pkg-uk-mob-1000", "2026-01-01", "2026-12-01"): 120_000,
    }
    calls = [
        cdr(callid="nov", customer_id="acme", dest="447912345678", dt="2026-11-30T23:59:59Z"),
        cdr(callid="dec", customer_id="acme", dest="447912345678", dt="2026-12-01T00:00:00Z"),
    ]
    for call in calls:
        call["duration"] = D(61)
    nov, dec = rate_reference(snapshot_of(sample), calls, usage=usage)
    # retail-usd 447, 30/6: 61 s → 66 s. Until 2026-12-01 at 0.025: 66 × 0.025 / 60 = 0.0275,
    # tax 20% 0.0055; from then at 0.021: 0.0231, tax 0.00462 → 0.0046.
    assert (nov["rate"], nov["charge"], nov["tax"]) == (D("0.025"), D("0.0275"), D("0.0055"))
    assert (dec["rate"], dec["charge"], dec["tax"]) == (D("0.021"), D("0.0231"), D("0.0046"))
    assert nov["package_id"] is dec["package_id"] is None


def test_sample_acme_daily_us_package_in_dt_order(sample: Catalog) -> None:
    calls = [
        cdr(callid="b", customer_id="acme", dest="12125550123", duration="20"),
        cdr(callid="a", customer_id="acme", dest="12125550123", duration="3590"),
    ]
    calls[0]["dt"] = datetime.fromisoformat("2026-06-15T14:00:00Z")
    calls[1]["dt"] = datetime.fromisoformat("2026-06-15T09:00:00Z")
    b, a = rate_reference(snapshot_of(sample), calls)
    # retail-usd 1212 at 0.0065, 6/6. a (earlier): 6 + ceil(3584/6)·6 = 3594 s, all in
    # pkg-us-daily-60 (3600 s). b: 6 + ceil(14/6)·6 = 24 s, 6 s left in the package,
    # 18 × 0.0065 / 60 = 0.00195 → half_up 0.0020; tax 20% 0.0004.
    assert (a["billed_duration"], a["package_seconds"], a["charge"]) == (3594, 3594, D(0))
    assert (b["billed_duration"], b["package_seconds"], b["package_id"]) == (
        24,
        6,
        "pkg-us-daily-60",
    )
    assert (b["charge"], b["tax"]) == (D("0.0020"), D("0.0004"))


def test_sample_hooli_regex_route_half_down_card(sample: Catalog) -> None:
    def call(callid: str, dest: str) -> dict[str, Any]:
        return cdr(
            callid=callid,
            customer_id=None,
            sip_user="hooli-sbc",
            dest=dest,
            duration="45",
            dt="2026-05-10T10:00:00Z",
            provider_card_id="cost-eurotrans",
        )

    de, uk = rate_reference(snapshot_of(sample), [call("de", "4930123456"), call("uk", "4412")])
    # hooli (penalty, EUR, 19%) → wholesale-eur by ^(33|49)[0-9]+$: row 49 at 0.0082, 1/1,
    # precision 5: 45 × 0.0082 / 60 = 0.00615; tax 0.0011685 → 0.00117.
    # cost-eurotrans 49 at 0.0049: 45 × 0.0049 / 60 = 0.003675 (EUR); profit 0.002475.
    assert (de["customer_id"], de["customer_status"], de["currency"]) == ("hooli", "penalty", "EUR")
    assert (de["charge"], de["tax"]) == (D("0.00615"), D("0.00117"))
    assert (de["provider_charge"], de["provider_currency"]) == (D("0.003675"), "EUR")
    assert de["profit"] == D("0.002475")
    assert uk["reject_reason"] == "no_route"


def test_sample_umbrella_tech_prefix_and_once_package(sample: Catalog) -> None:
    def call(callid: str, dest: str) -> dict[str, Any]:
        return cdr(
            callid=callid,
            customer_id=None,
            source_ip="192.0.2.44",
            dest=dest,
            duration="100",
            dt="2026-11-05T10:00:00Z",
        )

    usage = {("umbrella", "pkg-welcome", "2026-11-01", "2026-11-01"): 1750}
    ok, no_prefix = rate_reference(
        snapshot_of(sample), [call("a", "7712125551234"), call("b", "12125551234")], usage=usage
    )
    # umbrella (pending, 7.5%): auth 192.0.2.44 with tech prefix 77, route retail-usd taking
    # 77 off: row 1212 at 0.0065, 6/6: 100 s → 102 s. pkg-welcome (once, 1800 s) has 50 s
    # left: 52 s charged: 52 × 0.0065 / 60 = 0.0056333… → 0.0056; tax 0.00042 → 0.0004.
    assert (ok["customer_id"], ok["customer_status"], ok["number"]) == (
        "umbrella",
        "pending",
        "12125551234",
    )
    assert ok["package_draws"] == [("pkg-welcome", "2026-11-01", "2026-11-01", 50)]
    assert (ok["charge"], ok["tax"]) == (D("0.0056"), D("0.0004"))
    assert no_prefix["reject_reason"] == "unknown_customer"


def test_sample_provider_currency_and_missing_rows(sample: Catalog) -> None:
    def call(callid: str, customer: str, card: str) -> dict[str, Any]:
        return cdr(
            callid=callid,
            customer_id=customer,
            dest="+33612345678",
            duration="20",
            dt="2026-05-10T10:00:00Z",
            provider_card_id=card,
        )

    globex_eur, globex_usd, acme_eur = rate_reference(
        snapshot_of(sample),
        [
            call("a", "globex", "cost-eurotrans"),
            call("b", "globex", "cost-mobnet"),
            call("c", "acme", "cost-eurotrans"),
        ],
    )
    # globex → wholesale-eur 336 at 0.028, 6/6: 20 s → 24 s → 0.0112; tax 19% 0.002128 →
    # 0.00213. cost-eurotrans 336 at 0.0188, 1/1: 20 s → 0.0062666… → 0.006267; profit 0.004933.
    assert (globex_eur["charge"], globex_eur["tax"]) == (D("0.0112"), D("0.00213"))
    assert globex_eur["provider_charge"] == D("0.006267")
    assert globex_eur["profit"] == D("0.004933")
    # cost-mobnet has no row for 33: no provider leg, still rated.
    assert rated(globex_usd)["provider_charge"] is None
    # acme (USD) → retail-usd 336 at 0.031, 30/6: 20 s → 30 s → 0.93 / 60 = 0.0155; the
    # EUR provider leg (0.006267 as above) is known, the profit is not.
    assert (acme_eur["charge"], acme_eur["provider_charge"]) == (D("0.0155"), D("0.006267"))
    assert (acme_eur["provider_currency"], acme_eur["profit"]) == ("EUR", None)
