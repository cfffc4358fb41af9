"""The slow, obviously correct reference of the rating rules (/tmp/rules.md, SPEC §5).

Property tests compare the numba engine in ``rating/`` with this module, so it is written for
reading, not for speed: plain loops over the catalog rows, one small function per rule step,
each citing the rule it implements ("R2c" is rule 2, item c). Money is ``Decimal`` in a
local context of ample precision; nothing here imports numpy, numba, pyarrow or ``rating/``.

Why 80 digits are "exact": every amount is ``N / 60`` where ``N`` (seconds × rate plus 60 ×
fee) has at most six decimal places, so the only inexact step is the division by 60. A
rounding boundary at ≤ 6 places (a multiple of 10^-p, or the half-way point between two)
has at most seven places; when ``N / 60`` is not such a point it lies at least
1 / (60 × 10^7) away from it, far more than the 10^-60 error of an 80-digit quotient of an
amount below 10^18. So a rounding decided on the 80-digit value is the exact one.
"""

from __future__ import annotations

import decimal
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

Row = Mapping[str, Any]
Snapshot = Mapping[str, Sequence[Row]]
UsageKey = tuple[str, str, str, str]

ENTITIES = (
    "customers",
    "rate_cards",
    "rates",
    "routes",
    "auth",
    "packages",
    "customer_packages",
    "dids",
    "providers",
)

# R5: how a duration becomes whole seconds (durations are never negative).
DURATION_ROUNDING = {
    "up": decimal.ROUND_CEILING,
    "down": decimal.ROUND_FLOOR,
    "half_up": decimal.ROUND_HALF_UP,
    "half_down": decimal.ROUND_HALF_DOWN,
}

# R7: how an exact amount becomes a card's precision.
MONEY_ROUNDING = {
    "up": decimal.ROUND_UP,
    "down": decimal.ROUND_DOWN,
    "half_up": decimal.ROUND_HALF_UP,
    "half_down": decimal.ROUND_HALF_DOWN,
}

PRECISION_DIGITS = 80


def snapshot_of(catalog: Any) -> dict[str, list[dict[str, Any]]]:
    """The rows rating reads, as ``Catalog.list`` returns them, one list per entity."""
    return {name: catalog.list(name) for name in ENTITIES}


# -- small helpers ------------------------------------------------------------------------------


def _rows(snapshot: Snapshot, entity: str) -> list[Row]:
    return list(snapshot.get(entity, []))


def _find_row(snapshot: Snapshot, entity: str, column: str, value: Any) -> Row | None:
    """The first row of ``entity`` whose ``column`` equals ``value`` (keys are unique)."""
    for row in _rows(snapshot, entity):
        if row[column] == value:
            return row
    return None


def _given(value: Any) -> bool:
    """A CDR field is given when it is neither None nor empty text."""
    return value is not None and value != ""


def _utc(moment: datetime) -> datetime:
    """A CDR's dt as an aware UTC datetime (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _timestamp(text: str) -> datetime:
    """A catalog timestamp ('YYYY-MM-DDTHH:MM:SS[.ffffff]Z') as an aware UTC datetime."""
    return _utc(datetime.fromisoformat(text))


def _as_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


# -- R1 duplicates ------------------------------------------------------------------------------


def _is_duplicate(callid: str, lake_callids: Iterable[str], rated_callids: set[str]) -> bool:
    """R1: a callid already in the lake, or billed by an earlier CDR of this input."""
    return callid in lake_callids or callid in rated_callids


# -- R2 customer and card -----------------------------------------------------------------------


def _inbound_did(snapshot: Snapshot, cdr: Row) -> Row | None:
    """R2a: the DID an inbound CDR calls (dest_number without one leading '+')."""
    if cdr.get("direction") != "inbound":
        return None
    number = cdr["dest_number"]
    if number.startswith("+"):
        number = number[1:]
    return _find_row(snapshot, "dids", "number", number)


def _customer_by_id(snapshot: Snapshot, customer_id: str) -> str | None:
    """R2b: the CDR's own customer_id, when it names a customer."""
    row = _find_row(snapshot, "customers", "customer_id", customer_id)
    return None if row is None else row["customer_id"]


def _tech_prefix_fits(tech_prefix: str | None, dest_number: str) -> bool:
    """R2c/R2d: an auth entry's tech prefix (None matches all) starts the dialled number."""
    return tech_prefix is None or dest_number.startswith(tech_prefix)


def _ip_entry_prefixlen(value: str, source: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """R2c: how specific an ip entry that holds ``source`` is; -1 when it does not hold it.

    A CIDR network holds the addresses inside it; a plain address holds only itself and
    counts as /32 (IPv4) or /128 (IPv6).
    """
    if "/" in value:
        network = ipaddress.ip_network(value, strict=False)
        if network.version == source.version and source in network:
            return network.prefixlen
        return -1
    address = ipaddress.ip_address(value)
    if address == source:
        return address.max_prefixlen
    return -1


def _customer_by_ip(snapshot: Snapshot, source_ip: Any, dest_number: str) -> str | None:
    """R2c: the best kind=ip auth entry holding source_ip whose tech prefix fits.

    Best = longest tech prefix, then the most specific network, then the smallest id.
    """
    if not _given(source_ip):
        return None
    try:
        source = ipaddress.ip_address(source_ip)
    except ValueError:
        return None
    candidates = []
    for entry in _rows(snapshot, "auth"):
        if entry["kind"] != "ip":
            continue
        if not _tech_prefix_fits(entry["tech_prefix"], dest_number):
            continue
        prefixlen = _ip_entry_prefixlen(entry["value"], source)
        if prefixlen < 0:
            continue
        tech_length = len(entry["tech_prefix"] or "")
        candidates.append(((-tech_length, -prefixlen, entry["id"]), entry))
    if not candidates:
        return None
    candidates.sort(key=lambda pair: pair[0])
    best: str = candidates[0][1]["customer_id"]
    return best


def _customer_by_user(snapshot: Snapshot, sip_user: Any, dest_number: str) -> str | None:
    """R2d: the best kind=user auth entry for sip_user: longest tech prefix, then smallest id."""
    if not _given(sip_user):
        return None
    candidates = []
    for entry in _rows(snapshot, "auth"):
        if entry["kind"] != "user" or entry["value"] != sip_user:
            continue
        if not _tech_prefix_fits(entry["tech_prefix"], dest_number):
            continue
        tech_length = len(entry["tech_prefix"] or "")
        candidates.append(((-tech_length, entry["id"]), entry))
    if not candidates:
        return None
    candidates.sort(key=lambda pair: pair[0])
    best: str = candidates[0][1]["customer_id"]
    return best


def _resolve_customer(snapshot: Snapshot, cdr: Row) -> tuple[str | None, Row | None]:
    """R2: (customer_id, the inbound DID or None); customer None means unknown_customer (R2e)."""
    did = _inbound_did(snapshot, cdr)
    if did is not None:
        return did["customer_id"], did
    if _given(cdr.get("customer_id")):
        return _customer_by_id(snapshot, cdr["customer_id"]), None
    dest_number = cdr["dest_number"]
    by_ip = _customer_by_ip(snapshot, cdr.get("source_ip"), dest_number)
    if by_ip is not None:
        return by_ip, None
    return _customer_by_user(snapshot, cdr.get("sip_user"), dest_number), None


# -- R3 route -----------------------------------------------------------------------------------


def _number_after_route(route: Row, dest_number: str) -> str | None:
    """R3: the number left once the route's tech prefix, one '+' and strip_digits are removed;
    None when the tech prefix does not start dest_number or what is left is not all digits."""
    tech_prefix = route["tech_prefix"] or ""
    if not dest_number.startswith(tech_prefix):
        return None
    rest = dest_number[len(tech_prefix) :]
    if rest.startswith("+"):
        rest = rest[1:]
    rest = rest[route["strip_digits"] :]
    if rest == "":
        return None
    for char in rest:
        if char not in "0123456789":
            return None
    return rest


def _dial_string_matches(dial_string: str | None, number: str) -> bool:
    """R3: None matches all; '^…' is a regex (re.search); else '|'-separated prefixes."""
    if dial_string is None:
        return True
    if dial_string.startswith("^"):
        return re.search(dial_string, number) is not None
    return any(number.startswith(prefix) for prefix in dial_string.split("|"))


def _route(snapshot: Snapshot, customer_id: str, dest_number: str) -> tuple[str, str] | None:
    """R3: (card_id, number) of the customer's first matching route; None is no_route.

    Routes are tried by priority ascending, then longest tech prefix, then smallest id.
    """
    routes = [r for r in _rows(snapshot, "routes") if r["customer_id"] == customer_id]
    routes.sort(key=lambda r: (r["priority"], -len(r["tech_prefix"] or ""), r["id"]))
    for route in routes:
        number = _number_after_route(route, dest_number)
        if number is None:
            continue
        if _dial_string_matches(route["dial_string"], number):
            return route["card_id"], number
    return None


# -- R4 rate ------------------------------------------------------------------------------------


def _is_effective(row: Row, moment: datetime) -> bool:
    """R4: effective_from None or <= dt, and effective_to None or dt < effective_to."""
    if row["effective_from"] is not None and _timestamp(row["effective_from"]) > moment:
        return False
    return not (row["effective_to"] is not None and moment >= _timestamp(row["effective_to"]))


def _effective_from_order(row: Row) -> datetime:
    """R4: effective_from as a sort key, None being the earliest."""
    if row["effective_from"] is None:
        return datetime.min.replace(tzinfo=UTC)
    return _timestamp(row["effective_from"])


def _find_rate(snapshot: Snapshot, card_id: str, number: str, moment: datetime) -> Row | None:
    """R4: the card's row effective at dt with the longest prefix of number, and for that
    prefix the latest effective_from; None is no_rate."""
    candidates = []
    for row in _rows(snapshot, "rates"):
        if row["card_id"] != card_id:
            continue
        if not number.startswith(row["prefix"]):
            continue
        if not _is_effective(row, moment):
            continue
        candidates.append(row)
    if not candidates:
        return None
    longest = max(len(row["prefix"]) for row in candidates)
    of_longest = [row for row in candidates if len(row["prefix"]) == longest]
    return max(of_longest, key=_effective_from_order)


# -- R5 billed seconds --------------------------------------------------------------------------


def _whole_seconds(cdr: Row, duration_rounding: str) -> int:
    """R5: the duration in whole seconds by the card's duration_rounding; 0 when the call was
    not answered (sip_code != 200) or has no duration."""
    if cdr["sip_code"] != 200 or cdr.get("duration") is None:
        return 0
    duration = _as_decimal(cdr["duration"])
    whole = duration.quantize(Decimal(1), rounding=DURATION_ROUNDING[duration_rounding])
    return int(whole)


def _billed_seconds(seconds: int, rate_row: Row) -> int:
    """R5: 0 for d == 0 or d <= grace; else mcd, or mcd plus whole pulses beyond it."""
    mcd: int = rate_row["mcd"]
    pulse: int = rate_row["pulse"]
    grace: int = rate_row["grace"]
    if seconds == 0 or seconds <= grace:
        return 0
    if seconds <= mcd:
        return mcd
    pulses = -(-(seconds - mcd) // pulse)  # ceil((d - mcd) / pulse) in whole numbers
    return mcd + pulses * pulse


# -- R6 packages --------------------------------------------------------------------------------


def _period_start(frequency: str, day: date, start_date: str) -> str:
    """R6: the start of the package period holding ``day`` ('YYYY-MM-DD')."""
    if frequency == "daily":
        return day.isoformat()
    if frequency == "weekly":
        return (day - timedelta(days=day.weekday())).isoformat()
    if frequency == "monthly":
        return day.replace(day=1).isoformat()
    if frequency == "once":
        return start_date
    raise ValueError(f"unknown package frequency {frequency!r}")


def _package_covers_number(package: Row, number: str) -> bool:
    """R6: a package's prefixes (None = all; else '|'-separated) has one starting number."""
    if package["prefixes"] is None:
        return True
    return any(number.startswith(prefix) for prefix in package["prefixes"].split("|"))


def _customer_package_valid(customer_package: Row, day: date) -> bool:
    """R6: start_date <= day <= end_date, both included, end_date None = open."""
    iso = day.isoformat()
    if customer_package["start_date"] > iso:
        return False
    end_date = customer_package["end_date"]
    return end_date is None or iso <= end_date


def _matching_packages(
    snapshot: Snapshot, customer_id: str, number: str, day: date
) -> list[tuple[Row, Row]]:
    """R6: (customer_package, package) pairs usable by this call, by (package_id, start_date)."""
    pairs = []
    for customer_package in _rows(snapshot, "customer_packages"):
        if customer_package["customer_id"] != customer_id:
            continue
        if not _customer_package_valid(customer_package, day):
            continue
        package = _find_row(snapshot, "packages", "package_id", customer_package["package_id"])
        if package is None or not _package_covers_number(package, number):
            continue
        pairs.append((customer_package, package))
    pairs.sort(key=lambda pair: (pair[0]["package_id"], pair[0]["start_date"]))
    return pairs


def _draw_packages(
    snapshot: Snapshot,
    used: dict[UsageKey, int],
    customer_id: str,
    number: str,
    moment: datetime,
    billed: int,
) -> list[tuple[str, str, str, int]]:
    """R6: take up to ``billed`` seconds from the matching packages in order, updating
    ``used``; returns the draws (package_id, start_date, period_start, seconds)."""
    day = moment.date()
    draws = []
    need = billed
    for customer_package, package in _matching_packages(snapshot, customer_id, number, day):
        start_date = customer_package["start_date"]
        period = _period_start(package["frequency"], day, start_date)
        key = (customer_id, package["package_id"], start_date, period)
        allowance = package["seconds"] * customer_package["quantity"]
        available = allowance - used.get(key, 0)
        take = min(available, need) if available > 0 else 0
        if take > 0:
            draws.append((package["package_id"], start_date, period, take))
            used[key] = used.get(key, 0) + take
            need -= take
    return draws


# -- R7 charge and tax --------------------------------------------------------------------------


def _round_money(value: Decimal, precision: int, rounding: str) -> Decimal:
    """R7: an exact amount rounded to ``precision`` places by a card rounding word."""
    return value.quantize(Decimal(1).scaleb(-precision), rounding=MONEY_ROUNDING[rounding])


def _charge(billed: int, package_seconds: int, rate_row: Row, card: Row) -> Decimal:
    """R7: 0 when nothing is billed; else charged seconds at the rate per minute, plus the
    connect fee when some seconds are charged, rounded by the card."""
    if billed == 0:
        return _round_money(Decimal(0), card["precision"], card["rounding"])
    charged = billed - package_seconds
    amount = Decimal(charged) * rate_row["rate"] / Decimal(60)
    if charged > 0:
        amount = amount + rate_row["connect_fee"]
    return _round_money(amount, card["precision"], card["rounding"])


def _tax(charge: Decimal, customer: Row, card: Row) -> Decimal:
    """R7: charge × tax_percent / 100 at the card's precision, always half_up."""
    tax_percent = customer["tax_percent"] or Decimal(0)
    return _round_money(charge * tax_percent / Decimal(100), card["precision"], "half_up")


# -- R8 provider leg ----------------------------------------------------------------------------


def _provider_card_id(cdr: Row, did: Row | None) -> str | None:
    """R8 (and R2a): the CDR's provider_card_id, else the inbound DID's."""
    card_id: str | None = None
    if _given(cdr.get("provider_card_id")):
        card_id = cdr["provider_card_id"]
    elif did is not None:
        card_id = did["provider_card_id"]
    return card_id


def _provider_leg(
    snapshot: Snapshot, card_id: str | None, cdr: Row, number: str, moment: datetime
) -> tuple[Decimal | None, str | None]:
    """R8: (provider_charge, provider_currency), rated like R5 and R7 with the provider card
    (no packages, no tax); (None, None) for no card, an unknown card, or no effective row."""
    if card_id is None:
        return None, None
    card = _find_row(snapshot, "rate_cards", "card_id", card_id)
    if card is None:
        return None, None
    rate_row = _find_rate(snapshot, card_id, number, moment)
    if rate_row is None:
        return None, None
    billed = _billed_seconds(_whole_seconds(cdr, card["duration_rounding"]), rate_row)
    return _charge(billed, 0, rate_row, card), card["currency"]


def _profit(
    charge: Decimal, currency: str, provider_charge: Decimal | None, provider_currency: str | None
) -> Decimal | None:
    """R8: charge - provider_charge when that is known and in the same currency, else None."""
    if provider_charge is None or provider_currency != currency:
        return None
    return charge - provider_charge


# -- the whole run ------------------------------------------------------------------------------


@dataclass
class _Call:
    """One CDR that passed R1-R5, waiting for its packages (R6) and money (R7, R8)."""

    index: int
    cdr: Row
    moment: datetime
    customer: Row
    card: Row
    number: str
    rate_row: Row
    billed: int
    provider_card_id: str | None
    draws: list[tuple[str, str, str, int]] = field(default_factory=list)


def _reject(cdr: Row, reason: str) -> dict[str, Any]:
    return {"callid": cdr["callid"], "reject_reason": reason}


def _price(snapshot: Snapshot, index: int, cdr: Row) -> _Call | str:
    """R2-R5 for one CDR: a call to rate, or the reject reason."""
    moment = _utc(cdr["dt"])
    customer_id, did = _resolve_customer(snapshot, cdr)
    if customer_id is None:
        return "unknown_customer"
    customer = _find_row(snapshot, "customers", "customer_id", customer_id)
    if customer is None:
        return "unknown_customer"
    if did is not None:
        card_id, number = did["customer_card_id"], did["number"]
    else:
        routed = _route(snapshot, customer_id, cdr["dest_number"])
        if routed is None:
            return "no_route"
        card_id, number = routed
    card = _find_row(snapshot, "rate_cards", "card_id", card_id)
    rate_row = None if card is None else _find_rate(snapshot, card_id, number, moment)
    if card is None or rate_row is None:
        return "no_rate"
    billed = _billed_seconds(_whole_seconds(cdr, card["duration_rounding"]), rate_row)
    return _Call(
        index=index,
        cdr=cdr,
        moment=moment,
        customer=customer,
        card=card,
        number=number,
        rate_row=rate_row,
        billed=billed,
        provider_card_id=_provider_card_id(cdr, did),
    )


def _rated(snapshot: Snapshot, call: _Call) -> dict[str, Any]:
    """R7 and R8 for one call whose packages are drawn: the rated record."""
    package_seconds = sum(draw[3] for draw in call.draws)
    charge = _charge(call.billed, package_seconds, call.rate_row, call.card)
    currency = call.card["currency"]
    provider_charge, provider_currency = _provider_leg(
        snapshot, call.provider_card_id, call.cdr, call.number, call.moment
    )
    return {
        "callid": call.cdr["callid"],
        "reject_reason": None,
        "customer_id": call.customer["customer_id"],
        "customer_status": call.customer["status"],
        "card_id": call.card["card_id"],
        "number": call.number,
        "dest_code": call.rate_row["prefix"],
        "dest_name": call.rate_row["name"],
        "billed_duration": call.billed,
        "rate": call.rate_row["rate"],
        "connect_fee": call.rate_row["connect_fee"],
        "package_seconds": package_seconds,
        "package_id": call.draws[0][0] if call.draws else None,
        "package_draws": list(call.draws),
        "charge": charge,
        "tax": _tax(charge, call.customer, call.card),
        "currency": currency,
        "provider_charge": provider_charge,
        "provider_currency": provider_currency,
        "profit": _profit(charge, currency, provider_charge, provider_currency),
    }


def rate_reference(
    snapshot: Snapshot,
    cdrs: Sequence[Row],
    lake_callids: Iterable[str] = frozenset(),
    usage: Mapping[UsageKey, int] | None = None,
) -> list[dict[str, Any]]:
    """Rate ``cdrs`` (in input order) against a catalog snapshot; one result per CDR, in order.

    ``usage`` (customer_id, package_id, start_date, period_start) -> seconds already used is
    copied, never changed; no input is changed.
    """
    lake = set(lake_callids)
    used: dict[UsageKey, int] = dict(usage or {})
    results: list[dict[str, Any] | None] = [None] * len(cdrs)
    calls: list[_Call] = []
    rated_callids: set[str] = set()
    with decimal.localcontext() as context:
        context.prec = PRECISION_DIGITS
        # R1-R5 in input order: whether a CDR is rated never depends on packages.
        for index, cdr in enumerate(cdrs):
            if _is_duplicate(cdr["callid"], lake, rated_callids):
                results[index] = _reject(cdr, "duplicate")
                continue
            priced = _price(snapshot, index, cdr)
            if isinstance(priced, str):
                results[index] = _reject(cdr, priced)
                continue
            rated_callids.add(cdr["callid"])
            calls.append(priced)
        # R6 in (dt, callid) order, whatever the input order.
        for call in sorted(calls, key=lambda c: (c.moment, c.cdr["callid"], c.index)):
            if call.billed > 0:
                call.draws = _draw_packages(
                    snapshot,
                    used,
                    call.customer["customer_id"],
                    call.number,
                    call.moment,
                    call.billed,
                )
        # R7, R8.
        for call in calls:
            results[call.index] = _rated(snapshot, call)
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]
