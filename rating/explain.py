"""Why one call is rated as it is: each step of SPEC §5.1-§5.2, in words (ConnexCS "Simulate").

The numbers (billed seconds, package draw, charge, tax, provider charge, profit) are the
engine's own: the call goes through ``price`` and ``finish`` as a one-row batch, so what is
shown is what rating does. The choices (who pays and by which auth entry, each route tried,
the number after manipulation, the rate row, the billing arithmetic, each package) are
worked out alongside in plain Python over the catalog rows, which is what lets them say
*why*; where both name something they are compared, and a disagreement is raised as a bug
rather than shown. Nothing here reads a file or the store: the caller passes the rows
(``ENTITIES``), the compiled tables and the package usage.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import numpy as np
import pyarrow as pa

from rating.cli_rules import matches as cli_matches
from rating.engine import Priced, Usage, finish, price
from rating.kernels import MAX_DIGITS
from rating.modes import Rounding, round_ratio
from rating.tables import NEVER_AFTER, NEVER_BEFORE, Tables, micro
from schemas.cdr import FIRST_YEAR, INPUT, INPUT_NAMES, LAST_YEAR, MAX_DURATION
from schemas.errors import CdrflowError

Row = Mapping[str, Any]
Rows = Mapping[str, Sequence[Row]]

# The catalog rows an explanation reads (rate rows and cards come from the compiled tables).
ENTITIES = ("customers", "routes", "auth", "cli_rules", "dids", "packages", "customer_packages")
INFORMATIONAL = "informational: SPEC §5 does not make rating depend on CLI rules"
_NUMBER = re.compile(r"[0-9+*#]{1,64}")
_US = timedelta(microseconds=1)
_EPOCH_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class ExplainMismatch(CdrflowError):
    """The explanation and the engine disagree: a bug, never something to show."""


@dataclass(frozen=True)
class Step:
    """One step of rating a call: whether it passed, a short result, why (one clause a
    line, for people), and the same facts as values (for machines and tests)."""

    name: str
    ok: bool
    result: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "ok" if self.ok else "failed"


@dataclass(frozen=True)
class Explanation:
    """The steps of one call up to the end or to the step that failed, the reject reason
    (None when rated), and the rated values as the engine computed them."""

    steps: list[Step]
    reject_reason: str | None
    result: dict[str, Any]

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if not s.ok), None)

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)


# -- small helpers ------------------------------------------------------------------------------


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros (1E+2 reads as 100)."""
    return format(value.normalize(), "f")


def _money(value_micro: int, precision: int | None = None) -> Decimal:
    """Millionths as a decimal; at a card's precision it keeps its places (0.0150)."""
    value = Decimal(int(value_micro)).scaleb(-6)
    return value if precision is None else value.quantize(Decimal(1).scaleb(-precision))


def _exact(value: Fraction) -> str:
    """A rational as a decimal: whole when it ends within 12 places, else cut with '…'
    (an amount like 7 × 0.0137 / 60 never ends)."""
    scaled = value * 10**12
    if scaled.denominator == 1:
        return _plain(Decimal(scaled.numerator).scaleb(-12))
    return format(Decimal(int(scaled)).scaleb(-12), "f") + "…"


def _time(us: int) -> str:
    return (_EPOCH_TIME + int(us) * _US).strftime("%Y-%m-%dT%H:%M:%SZ")


def _us(moment: datetime) -> int:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - _EPOCH_TIME) // _US


def _mode(value: int) -> str:
    return Rounding(int(value)).name.lower()


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _agree(what: str, explained: Any, engine: Any) -> None:
    """Both paths name the same thing, or the explanation would mislead: stop."""
    if explained != engine:
        raise ExplainMismatch(
            f"the explanation of {what} ({explained!r}) disagrees with the engine "
            f"({engine!r}); this is a bug in cdrflow: please report it with the command line"
        )


# -- the CDR ------------------------------------------------------------------------------------


def cdr_problem(cdr: Row) -> str | None:
    """The first SPEC §4 rule the CDR breaks (as ``cdrflow rate`` words it), or None. A
    duration with more than 6 places is refused here, where a file's would be rounded:
    what is simulated is exactly what was typed."""
    number = cdr.get("dest_number")
    if not _given(number):
        return "dest_number: missing"
    if not _NUMBER.fullmatch(str(number)):
        return f"dest_number: {number!r} may hold only digits, +, * and #"
    when = cdr.get("dt")
    if when is None:
        return "dt: missing"
    if not FIRST_YEAR <= (when.astimezone(UTC) if when.tzinfo else when).year <= LAST_YEAR:
        return f"dt: {when.isoformat()!r} is not in the years {FIRST_YEAR} to {LAST_YEAR}"
    code = cdr.get("sip_code")
    if code is None:
        return "sip_code: missing"
    if not isinstance(code, int) or not 100 <= code <= 699:
        return f"sip_code: {str(code)!r} is not a SIP response code (100-699)"
    duration = cdr.get("duration")
    if duration is not None:
        try:
            seconds = Decimal(str(duration))
        except InvalidOperation:
            return f"duration: {str(duration)!r} is not a number of seconds >= 0"
        if not seconds.is_finite() or seconds < 0 or seconds >= 10**12:
            return f"duration: {str(duration)!r} is not a number of seconds >= 0"
        if seconds > MAX_DURATION:
            return (
                f"duration: {str(duration)!r} is more than {MAX_DURATION} seconds, "
                "longer than any call"
            )
        if seconds != seconds.quantize(Decimal("0.000001")):
            return f"duration: {str(duration)!r} has more than 6 decimal places"
    if cdr.get("direction") not in (None, "outbound", "inbound"):
        return f"direction: {cdr.get('direction')!r} is neither outbound nor inbound"
    return None


def _input(cdr: Row) -> dict[str, Any]:
    """The CDR with every SPEC §4 field, as a validated batch holds it."""
    row: dict[str, Any] = {name: cdr.get(name) for name in INPUT_NAMES}
    row["callid"] = row["callid"] or "simulated"
    row["direction"] = row["direction"] or "outbound"
    if row["duration"] is not None:
        row["duration"] = Decimal(str(row["duration"]))
    dt = row["dt"]
    row["dt"] = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    return row


def _cdr_step(cdr: Row, problem: str | None) -> Step:
    if problem is not None:
        return Step("cdr", False, "invalid", problem, {"problem": problem})
    answered = "answered" if cdr["sip_code"] == 200 else "not answered"
    duration = "none" if cdr["duration"] is None else f"{_plain(cdr['duration'])} s"
    detail = (
        f"dest_number {cdr['dest_number']}, {cdr['direction']}, "
        f"at {_time(_us(cdr['dt']))}, sip_code {cdr['sip_code']} ({answered}), "
        f"duration {duration}"
    )
    values = {
        "dest_number": cdr["dest_number"],
        "direction": cdr["direction"],
        "dt": _time(_us(cdr["dt"])),
        "sip_code": cdr["sip_code"],
        "duration": cdr["duration"],
    }
    return Step("cdr", True, "valid", detail, values)


# -- step 1: who pays ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Payer:
    customer_id: str
    did: Row | None


def _inbound_did(rows: Rows, cdr: Row) -> tuple[Row | None, str | None]:
    """The DID an inbound call is to, and a note when an inbound call is to no DID."""
    if cdr["direction"] != "inbound":
        return None, None
    number = cdr["dest_number"].removeprefix("+")
    for did in rows["dids"]:
        if did["number"] == number:
            return did, None
    return None, f"inbound, but {number} is no DID: the call is resolved like an outbound one"


def _ip_candidates(rows: Rows, address: Any) -> list[tuple[Row, Any]]:
    """The ip auth entries holding ``address``, in the order SPEC §5.1 and docs/rating.md try
    them: longest tech prefix, then the most specific network, then the oldest entry."""
    found = []
    for entry in rows["auth"]:
        if entry["kind"] != "ip":
            continue
        network = ipaddress.ip_network(entry["value"])
        if network.version == address.version and address in network:
            found.append((entry, network))
    found.sort(key=lambda p: (-len(p[0]["tech_prefix"] or ""), -p[1].prefixlen, p[0]["id"]))
    return found


def _first_fitting(entries: Sequence[Row], dest: str, holds: str) -> tuple[Row | None, list[str]]:
    """The first entry whose tech prefix starts the number, with a line per entry tried."""
    lines = []
    for entry in entries:
        tech = entry["tech_prefix"] or ""
        label = f"auth #{entry['id']} {entry['kind']} {entry['value']} of {entry['customer_id']}"
        if not dest.startswith(tech):
            lines.append(f"{label}: {holds}, but its tech prefix {tech} does not start {dest}")
            continue
        fits = f"its tech prefix {tech} starts {dest}" if tech else "no tech prefix"
        lines.append(f"{label}: {holds}, {fits} → matches")
        return entry, lines
    return None, lines


def _by_ip(rows: Rows, source_ip: Any, dest: str) -> tuple[Row | None, list[str]]:
    if not _given(source_ip):
        return None, ["no source_ip"]
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return None, [f"source_ip {source_ip!r} is not an IP address"]
    entries = [entry for entry, _ in _ip_candidates(rows, address)]
    if not entries:
        return None, [f"source_ip {address}: no ip auth entry holds it"]
    return _first_fitting(entries, dest, f"holds {address}")


def _by_user(rows: Rows, sip_user: Any, dest: str) -> tuple[Row | None, list[str]]:
    if not _given(sip_user):
        return None, ["no sip_user"]
    entries = sorted(
        (e for e in rows["auth"] if e["kind"] == "user" and e["value"] == sip_user),
        key=lambda e: (-len(e["tech_prefix"] or ""), e["id"]),
    )
    if not entries:
        return None, [f"sip_user {sip_user}: no user auth entry has it"]
    return _first_fitting(entries, dest, f"is {sip_user}")


def _customer_label(rows: Rows, customer_id: str) -> str:
    row = next(r for r in rows["customers"] if r["customer_id"] == customer_id)
    note = "" if row["status"] == "active" else " (rating does not stop on status)"
    return f"{customer_id} ({row['name']}, {row['status']}{note})"


def _customer_step(rows: Rows, tables: Tables, cdr: Row) -> tuple[Step, _Payer | None]:
    """SPEC §5.1 step 1 and docs/rating.md's order: a DID, then customer_id, then auth."""
    dest, given = cdr["dest_number"], cdr["customer_id"]
    did, note = _inbound_did(rows, cdr)
    lines = [note] if note else []
    if did is not None:
        line = (
            f"inbound call to DID {did['number']}: its customer pays, "
            f"with the DID's card {did['customer_card_id']} (no route is tried)"
        )
        if _given(given) and given != did["customer_id"]:
            line += f"; the DID's customer comes before the CDR's customer_id {given}"
        return _payer(rows, did["customer_id"], did, "did", [*lines, line])
    if _given(given):
        if given not in tables.customer_index:
            why = f"customer_id {given!r} names no customer (auth is not tried when it is given)"
            return _unknown([*lines, why], given=given), None
        return _payer(rows, given, None, "customer_id", [*lines, "customer_id given in the CDR"])
    entry, ip_lines = _by_ip(rows, cdr["source_ip"], dest)
    lines += ip_lines
    if entry is None:
        entry, user_lines = _by_user(rows, cdr["sip_user"], dest)
        lines += user_lines
    if entry is None:
        return _unknown([*lines, "no customer_id, and no auth entry matches"]), None
    return _payer(rows, entry["customer_id"], None, entry["kind"], lines, entry["id"])


def _payer(
    rows: Rows,
    customer_id: str,
    did: Row | None,
    via: str,
    lines: list[str],
    auth_id: int | None = None,
) -> tuple[Step, _Payer]:
    detail = "\n".join([*lines, f"pays: {_customer_label(rows, customer_id)}"])
    values = {
        "customer_id": customer_id,
        "via": via,
        "auth_id": auth_id,
        "did": did["number"] if did else None,
    }
    return Step("customer", True, customer_id, detail, values), _Payer(customer_id, did)


def _unknown(lines: list[str], given: str | None = None) -> Step:
    values = {"customer_id": given, "reject_reason": "unknown_customer"}
    return Step("customer", False, "unknown_customer", "\n".join(lines), values)


# -- CLI rules (informational) ------------------------------------------------------------------


def _cli_step(rows: Rows, customer_id: str, cli: Any) -> Step:
    """The first of the customer's CLI rules (in the catalog's order) that the calling
    number matches. Shown, never applied: SPEC §5 rates a call whatever its CLI."""
    rules = sorted(
        (r for r in rows.get("cli_rules", ()) if r["customer_id"] == customer_id),
        key=lambda r: r["id"],
    )
    values: dict[str, Any] = {"cli": cli, "action": None, "rule_id": None, "informational": True}
    if not rules:
        return Step(
            "cli", True, "no rules", f"{customer_id} has no CLI rules; {INFORMATIONAL}", values
        )
    if not _given(cli):
        detail = f"the call has no source_cli: no rule can match; {INFORMATIONAL}"
        return Step("cli", True, "no CLI", detail, values)
    lines = []
    for rule in rules:
        label = f"rule #{rule['id']} {rule['pattern']} {rule['action']}"
        if cli_matches(rule["pattern"], cli):
            lines.append(f"{label}: matches {cli} (the first that does)")
            values.update(action=rule["action"], rule_id=rule["id"], pattern=rule["pattern"])
            detail = "\n".join([*lines, INFORMATIONAL])
            return Step("cli", True, f"{rule['action']} (rule #{rule['id']})", detail, values)
        lines.append(f"{label}: does not match {cli}")
    return Step("cli", True, "no rule matches", "\n".join([*lines, INFORMATIONAL]), values)


# -- step 2: route and number -------------------------------------------------------------------


@dataclass(frozen=True)
class _Manipulated:
    """A dialled number taken apart as a route does: tech prefix, one '+', stripped digits."""

    tech_prefix: str
    plus: bool
    stripped: str
    number: str


def _manipulate(route: Row, dest: str) -> tuple[_Manipulated | None, str | None]:
    """What a route makes of the dialled number, and why it does not take it (None: it does)."""
    tech = route["tech_prefix"] or ""
    if not dest.startswith(tech):
        return None, f"its tech prefix {tech} does not start {dest}"
    rest = dest[len(tech) :]
    plus = rest.startswith("+")
    rest = rest[1:] if plus else rest
    strip = int(route["strip_digits"])
    done = _Manipulated(tech, plus, rest[:strip], rest[strip:])
    if not done.number:
        return done, "nothing is left of the number after its tech prefix, '+' and strip_digits"
    if any(c not in "0123456789" for c in done.number):
        return done, f"what is left, {done.number}, is not all digits"
    dial = route["dial_string"]
    if dial and dial.startswith("^") and re.search(dial, done.number) is None:
        return done, f"{done.number} does not match its dial string regex {dial}"
    if dial and not dial.startswith("^") and not any(map(done.number.startswith, dial.split("|"))):
        return done, f"{done.number} starts with none of its dial string's prefixes {dial}"
    return done, None


def _route_label(route: Row) -> str:
    return (
        f"route #{route['id']} (priority {route['priority']}, "
        f"tech prefix {route['tech_prefix'] or 'none'}, strip {route['strip_digits']}, "
        f"dial string {route['dial_string'] or 'any'}) → card {route['card_id']}"
    )


def _route_step(
    rows: Rows, customer_id: str, dest: str
) -> tuple[Step, Row | None, _Manipulated | None]:
    """SPEC §5.1 step 2: routes by ascending priority, longest tech prefix first (then the
    oldest); the first that takes the number wins."""
    routes = sorted(
        (r for r in rows["routes"] if r["customer_id"] == customer_id),
        key=lambda r: (r["priority"], -len(r["tech_prefix"] or ""), r["id"]),
    )
    lines, tried = [], []
    winner: tuple[Row, _Manipulated] | None = None
    for route in routes:
        label = _route_label(route)
        if winner is not None:
            lines.append(f"{label}: not tried (an earlier route matched)")
            tried.append({"route_id": route["id"], "verdict": "not tried", "why": None})
            continue
        done, why = _manipulate(route, dest)
        if why is None and done is not None:
            lines.append(f"{label}: takes {dest} as {done.number} → the first route that matches")
        else:
            lines.append(f"{label}: {why}")
        tried.append({"route_id": route["id"], "verdict": "no" if why else "matched", "why": why})
        if why is None and done is not None:
            winner = (route, done)
    if not routes:
        lines.append(f"{customer_id} has no routes")
    values: dict[str, Any] = {"routes": tried}
    if winner is None:
        values["reject_reason"] = "no_route"
        lines.append(f"no route of {customer_id} takes {dest}")
        return Step("route", False, "no_route", "\n".join(lines), values), None, None
    route, done = winner
    values.update(route_id=route["id"], card_id=route["card_id"])
    result = f"#{route['id']} → {route['card_id']}"
    return Step("route", True, result, "\n".join(lines), values), route, done


def _did_route_step(did: Row) -> Step:
    detail = f"an inbound call to a DID takes no route: card {did['customer_card_id']} of the DID"
    values = {"route_id": None, "card_id": did["customer_card_id"], "routes": []}
    return Step("route", True, f"DID → {did['customer_card_id']}", detail, values)


def _number_step(dest: str, done: _Manipulated | None) -> tuple[Step, str]:
    """The number rated: after the route's manipulation, or a DID as dialled without '+'."""
    if done is None:
        number = dest.removeprefix("+")
        plus = number != dest
        detail = f"{dest} is the DID" + (", its '+' removed" if plus else "") + f": {number}"
        values = {"dialled": dest, "tech_prefix": "", "plus_removed": plus, "stripped": ""}
        return Step("number", True, number, detail, {**values, "number": number}), number
    parts = [dest]
    if done.tech_prefix:
        parts.append(f"tech prefix {done.tech_prefix} removed")
    if done.plus:
        parts.append("'+' removed")
    if done.stripped:
        parts.append(f"{len(done.stripped)} digits stripped ({done.stripped})")
    if len(parts) == 1:
        detail = f"{dest}: no tech prefix, '+' or digits to remove"
        return Step("number", True, done.number, detail, _number_values(dest, done)), done.number
    detail = " → ".join(parts) + f" → {done.number}"
    return Step("number", True, done.number, detail, _number_values(dest, done)), done.number


def _number_values(dest: str, done: _Manipulated) -> dict[str, Any]:
    return {
        "dialled": dest,
        "tech_prefix": done.tech_prefix,
        "plus_removed": done.plus,
        "stripped": done.stripped,
        "number": done.number,
    }


# -- step 3: the rate row -----------------------------------------------------------------------


def _card_label(tables: Tables, card: int) -> str:
    return (
        f"card {tables.card_ids[card]} ({tables.card_currency[card]}, precision "
        f"{int(tables.card_precision[card])}, rounding {_mode(tables.card_rounding[card])}, "
        f"durations rounded {_mode(tables.card_duration_rounding[card])})"
    )


def _versions(tables: Tables, card: int, number: str) -> dict[str, list[tuple[int, int, int]]]:
    """The card's rate rows whose prefix starts the number (its first ``MAX_DIGITS``
    digits, as the engine reads it): prefix → (effective_from, effective_to, row)."""
    digits = number[:MAX_DIGITS]
    keys = [int(digits[:k]) * 16 + k for k in range(1, len(digits) + 1)]
    slots = tables.slots
    hits = np.flatnonzero((slots[:, 1] == card) & np.isin(slots[:, 0], keys))
    found: dict[str, list[tuple[int, int, int]]] = {}
    for s in hits:
        first, count = int(slots[s, 2]), int(slots[s, 3])
        versions = [tuple(int(x) for x in tables.versions[j]) for j in range(first, first + count)]
        found[tables.row_prefix[versions[0][2]]] = [(v[0], v[1], v[2]) for v in versions]
    return found


def _span(start: int, end: int) -> str:
    if start == NEVER_BEFORE and end == NEVER_AFTER:
        return "always in effect"
    text = "" if start == NEVER_BEFORE else f"from {_time(start)}"
    return (text + ("" if end == NEVER_AFTER else f" until {_time(end)}")).strip()


def _row_label(tables: Tables, row: int) -> str:
    fee = _money(int(tables.row_connect_fee[row]))
    fee_text = f", connect fee {_plain(fee)}" if fee else ""
    grace = int(tables.row_grace[row])
    return (
        f"{tables.row_prefix[row]} {tables.row_name[row]}: "
        f"{_plain(_money(int(tables.row_rate[row])))}/min{fee_text}, "
        f"{int(tables.row_mcd[row])}/{int(tables.row_pulse[row])}"
        + (f", grace {grace} s" if grace else "")
    )


def _choose_row(tables: Tables, card: int, number: str, at: int) -> tuple[int, list[str]]:
    """SPEC §5.1 step 3: the longest prefix with a row in effect at ``at``; for one prefix
    the latest effective_from. Returns the row (-1 none) and a line per row considered."""
    chosen, lines = -1, []
    found = _versions(tables, card, number)
    for prefix in sorted(found, key=len, reverse=True):
        versions = sorted(found[prefix], key=lambda v: v[0], reverse=True)
        in_effect = [v for v in versions if v[0] <= at < v[1]]
        for start, end, row in versions:
            label = f"{_row_label(tables, row)}, {_span(start, end)}"
            if not start <= at < end:
                lines.append(f"{label}: not in effect at {_time(at)}")
            elif chosen >= 0:
                why = "a longer prefix" if tables.row_prefix[chosen] != prefix else "a later row"
                lines.append(f"{label}: in effect, but {why} matched")
            else:
                chosen = row
                later = " (the latest effective_from in effect)" if len(in_effect) > 1 else ""
                lines.append(f"{label}: the longest prefix in effect → this row{later}")
    if not found:
        lines.append(f"no row of the card has a prefix of {number}")
    return chosen, lines


def _rate_step(tables: Tables, card: int, number: str, at: int) -> tuple[Step, int]:
    row, lines = _choose_row(tables, card, number, at)
    head = f"{_card_label(tables, card)}, number {number} at {_time(at)}"
    if row >= 0:
        values = _row_values(tables, card, row)
        return Step("rate", True, _row_result(tables, row), "\n".join([head, *lines]), values), row
    why = f"card {tables.card_ids[card]} has no rate for {number} at {_time(at)}"
    values = {"card_id": tables.card_ids[card], "reject_reason": "no_rate"}
    return Step("rate", False, "no_rate", "\n".join([head, *lines, why]), values), row


def _row_result(tables: Tables, row: int) -> str:
    rate = _plain(_money(int(tables.row_rate[row])))
    return f"{tables.row_prefix[row]} {tables.row_name[row]} @ {rate}/min"


def _row_values(tables: Tables, card: int, row: int) -> dict[str, Any]:
    start, end = _effective(tables, card, row)
    return {
        "card_id": tables.card_ids[card],
        "prefix": tables.row_prefix[row],
        "name": tables.row_name[row],
        "rate": _money(int(tables.row_rate[row])).normalize(),
        "connect_fee": _money(int(tables.row_connect_fee[row])).normalize(),
        "mcd": int(tables.row_mcd[row]),
        "pulse": int(tables.row_pulse[row]),
        "grace": int(tables.row_grace[row]),
        "effective_from": None if start == NEVER_BEFORE else _time(start),
        "effective_to": None if end == NEVER_AFTER else _time(end),
    }


def _effective(tables: Tables, card: int, row: int) -> tuple[int, int]:
    for versions in _versions(tables, card, tables.row_prefix[row]).values():
        for start, end, r in versions:
            if r == row:
                return start, end
    raise ExplainMismatch(f"rate row {row} is not in the compiled tables")


# -- billing, packages, charge, tax ----------------------------------------------------------


def _bill(tables: Tables, card: int, row: int, cdr: Row) -> tuple[int, list[str], dict[str, Any]]:
    """SPEC §5.2: whole seconds by the card's duration rounding, then grace, mcd, pulses."""
    mcd, pulse, grace = (int(a[row]) for a in (tables.row_mcd, tables.row_pulse, tables.row_grace))
    values: dict[str, Any] = {"mcd": mcd, "pulse": pulse, "grace": grace, "seconds": 0}
    if cdr["sip_code"] != 200:
        return 0, [f"sip_code {cdr['sip_code']}: not answered → nothing billed"], values
    duration = cdr["duration"] or Decimal(0)
    mode = int(tables.card_duration_rounding[card])
    d = round_ratio(micro(duration), 10**6, mode)
    values["seconds"] = d
    lines = [f"duration {_plain(duration)} s → {d} s (rounded {_mode(mode)})"]
    if d == 0:
        return 0, [*lines, "no talk time → nothing billed"], values
    if d <= grace:
        return 0, [*lines, f"{d} s ≤ grace {grace} s → nothing billed, no connect fee"], values
    if grace:
        lines.append(f"{d} s > grace {grace} s")
    if d <= mcd:
        return mcd, [*lines, f"{d} s ≤ minimum (mcd) {mcd} s → billed {mcd} s"], values
    pulses = -(-(d - mcd) // pulse)
    billed = mcd + pulses * pulse
    lines.append(
        f"{d} s > mcd {mcd} s: {mcd} + ceil(({d} - {mcd}) / {pulse}) × {pulse} "
        f"= {mcd} + {pulses} × {pulse} = {billed} s"
    )
    return billed, lines, {**values, "pulses": pulses}


def _billing_step(tables: Tables, card: int, row: int, cdr: Row, billed: int) -> Step:
    explained, lines, values = _bill(tables, card, row, cdr)
    _agree("the billed seconds", explained, billed)
    mcd, pulse = values["mcd"], values["pulse"]
    return Step(
        "billing",
        True,
        f"{billed} s ({mcd}/{pulse})",
        "\n".join(lines),
        {**values, "billed": billed},
    )


def _period_start(frequency: str, day: date, start_date: str) -> date:
    """SPEC §5.3: UTC day, ISO week from Monday, calendar month, or the whole validity."""
    if frequency == "daily":
        return day
    if frequency == "weekly":
        return day - timedelta(days=day.weekday())
    if frequency == "monthly":
        return day.replace(day=1)
    return date.fromisoformat(start_date)


def _used(usage: Usage, allotment: int, period: date) -> int:
    """Seconds of an allotment's period already drawn (the lake's draws, as the caller
    loaded them)."""
    return usage.used(allotment, period)


def _allotments(rows: Rows, tables: Tables, customer_id: str) -> list[tuple[int, Row, Row]]:
    """The customer's packages as (allotment index, customer package, package), in the
    order they are drawn (package_id, then start_date)."""
    packages = {p["package_id"]: p for p in rows["packages"]}
    index = {
        (tables.customer_ids[c], p, s): a
        for a, (c, p, s) in enumerate(
            zip(tables.allot_customer, tables.allot_package, tables.allot_start_date, strict=True)
        )
    }
    mine = [cp for cp in rows["customer_packages"] if cp["customer_id"] == customer_id]
    mine.sort(key=lambda cp: (cp["package_id"], cp["start_date"]))
    return [
        (index[(customer_id, cp["package_id"], cp["start_date"])], cp, packages[cp["package_id"]])
        for cp in mine
    ]


@dataclass(frozen=True)
class _Draw:
    package_id: str
    start_date: str
    period_start: str
    allowance: int
    used: int
    seconds: int


def _draw_one(
    cp: Row, package: Row, used: int, period: date, need: int, day: date, number: str
) -> tuple[_Draw | None, str]:
    """One package for one call: its draw (None: none) and why."""
    prefixes = package["prefixes"]
    end = cp["end_date"]
    label = (
        f"{package['package_id']} ({package['name']}; {package['frequency']}; "
        f"prefixes {prefixes or 'all'}; valid {cp['start_date']} … {end or 'open'})"
    )
    if not cp["start_date"] <= day.isoformat() <= (end or "9999-12-31"):
        return None, f"{label}: not valid on {day}"
    if prefixes and not any(number.startswith(p) for p in prefixes.split("|")):
        return None, f"{label}: does not cover {number}"
    allowance = int(package["seconds"]) * int(cp["quantity"] or 1)
    available = allowance - used
    state = f"{label}: period from {period}, {allowance} s, {used} s used"
    if need == 0:
        return None, f"{state}: not needed (the call is covered)"
    if available <= 0:
        return None, f"{state}: nothing left"
    take = min(available, need)
    draw = _Draw(package["package_id"], cp["start_date"], period.isoformat(), allowance, used, take)
    return draw, f"{state}, {available} s left → draws {take} s"


def _draw_packages(
    rows: Rows, tables: Tables, payer: str, number: str, day: date, billed: int, usage: Usage
) -> tuple[list[_Draw], list[str]]:
    """SPEC §5.3 for this call, as if it were rated next: after every draw the lake holds."""
    allotments = _allotments(rows, tables, payer)
    if not allotments:
        return [], [f"{payer} has no packages"]
    if billed == 0:
        return [], ["nothing billed: no package is drawn"]
    draws, lines, need = [], [], billed
    for a, cp, package in allotments:
        period = _period_start(package["frequency"], day, cp["start_date"])
        draw, line = _draw_one(cp, package, _used(usage, a, period), period, need, day, number)
        lines.append(line)
        if draw is not None:
            draws.append(draw)
            need -= draw.seconds
    return draws, lines


def _packages_step(c: _Call, payer: str, number: str, billed: int, rated: Row) -> tuple[Step, int]:
    day = c.cdr["dt"].astimezone(UTC).date()
    draws, lines = _draw_packages(c.rows, c.tables, payer, number, day, billed, c.usage)
    engine = [
        (d["package_id"], d["start_date"].isoformat(), d["period_start"].isoformat(), d["seconds"])
        for d in rated["package_draws"]
    ]
    explained = [(d.package_id, d.start_date, d.period_start, d.seconds) for d in draws]
    _agree("the package draws", explained, engine)
    seconds = sum(d.seconds for d in draws)
    lines.append("usage already in the lake counts: this is what the call would draw if rated now")
    result = f"{seconds} s" + (f" ({', '.join(d.package_id for d in draws)})" if draws else "")
    values = {"package_seconds": seconds, "draws": [vars(d) for d in draws]}
    return Step("packages", True, result, "\n".join(lines), values), seconds


def _charge_of(tables: Tables, card: int, row: int, billed: int, free: int) -> tuple[int, Fraction]:
    """SPEC §5.2 in Python integers: the rounded charge in millionths and the exact amount."""
    if billed == 0:
        return 0, Fraction(0)
    charged = billed - free
    num = charged * int(tables.row_rate[row]) + (
        60 * int(tables.row_connect_fee[row]) if charged > 0 else 0
    )
    unit = 10 ** (6 - int(tables.card_precision[card]))
    rounded = round_ratio(num, 60 * unit, int(tables.card_rounding[card])) * unit
    return rounded, Fraction(num, 60 * 10**6)


def _charge_lines(
    tables: Tables, card: int, row: int, billed: int, free: int
) -> tuple[int, list[str]]:
    charge, exact = _charge_of(tables, card, row, billed, free)
    precision, mode = int(tables.card_precision[card]), _mode(tables.card_rounding[card])
    if billed == 0:
        return charge, ["nothing billed → 0"]
    charged = billed - free
    rate = _plain(_money(int(tables.row_rate[row])))
    fee = _money(int(tables.row_connect_fee[row]))
    seconds = f"{charged} s charged" + (
        f" ({billed} billed - {free} from packages)" if free else ""
    )
    fee_text = f" + connect fee {_plain(fee)}" if fee and charged > 0 else ""
    if fee and charged == 0:
        fee_text = " (no connect fee: packages cover the call)"
    return charge, [
        f"{seconds} × {rate}/min ÷ 60{fee_text} = {_exact(exact)} exactly",
        f"rounded {mode} to {precision} places → {_money(charge, precision)}",
    ]


def _charge_step(tables: Tables, card: int, row: int, billed: int, free: int, charge: int) -> Step:
    explained, lines = _charge_lines(tables, card, row, billed, free)
    _agree("the charge", explained, charge)
    precision, currency = int(tables.card_precision[card]), tables.card_currency[card]
    amount = _money(charge, precision)
    values = {"charge": amount, "currency": currency, "charged_seconds": billed - free}
    return Step("charge", True, f"{amount} {currency}", "\n".join(lines), values)


def _tax_step(tables: Tables, customer: int, card: int, charge: int, tax: int) -> Step:
    """SPEC §5.2: the customer's tax_percent of the charge, at the card's precision, half_up."""
    percent, precision = int(tables.customer_tax[customer]), int(tables.card_precision[card])
    unit = 10 ** (6 - precision)
    _agree(
        "the tax", round_ratio(charge * percent, 100 * 10**6 * unit, Rounding.HALF_UP) * unit, tax
    )
    currency = tables.card_currency[card]
    amount = _money(tax, precision)
    detail = (
        f"{_money(charge, precision)} × {_plain(_money(percent))} % "
        f"= {_exact(Fraction(charge * percent, 100 * 10**12))} exactly\n"
        f"rounded half_up to {precision} places → {amount}"
    )
    values = {"tax_percent": _money(percent).normalize(), "tax": amount, "currency": currency}
    return Step("tax", True, f"{amount} {currency}", detail, values)


# -- the provider leg ---------------------------------------------------------------------------


def _provider_card(tables: Tables, cdr: Row, did: Row | None) -> tuple[int, str]:
    """The card that prices the carrier leg (-1: none) and where it came from: the CDR's
    provider_card_id, else an inbound DID's provider card (docs/rating.md)."""
    named = cdr["provider_card_id"]
    if _given(named):
        if named not in tables.card_index:
            return -1, f"provider_card_id {named!r} is no card: provider_charge stays empty"
        return tables.card_index[named], f"provider_card_id {named} of the CDR"
    if did is not None and did["provider_card_id"]:
        return tables.card_index[
            did["provider_card_id"]
        ], f"the DID's provider card {did['provider_card_id']}"
    return -1, "no provider_card_id: provider_charge stays empty"


def _provider_step(c: _Call, did: Row | None, number: str, rated: Row) -> Step:
    """SPEC §5.2: the carrier leg, priced the same way with its own card (no packages, no
    tax); a missing card or row leaves it empty and the call rated."""
    tables = c.tables
    card, source = _provider_card(tables, c.cdr, did)
    _agree("the provider card", card, int(c.priced.provider_card[0]))
    values: dict[str, Any] = {"card_id": None, "provider_charge": None, "profit": None}
    if card < 0:
        _agree("the provider charge", None, rated["provider_charge"])
        return Step("provider", True, "none", f"{source}; profit stays empty", values)
    row, lines = _choose_row(tables, card, number, c.at)
    _agree("the provider's rate row", row, int(c.priced.provider_row[0]))
    lines = [f"{source}: {_card_label(tables, card)}", *lines]
    values["card_id"] = tables.card_ids[card]
    if row < 0:
        _agree("the provider charge", None, rated["provider_charge"])
        lines.append("no row for the number: provider_charge stays empty, the call is rated")
        return Step("provider", True, "none (no rate)", "\n".join(lines), values)
    return _provider_charge(c, card, row, lines, values, rated)


def _provider_charge(
    c: _Call, card: int, row: int, lines: list[str], values: dict[str, Any], rated: Row
) -> Step:
    tables = c.tables
    billed, bill_lines, _ = _bill(tables, card, row, c.cdr)
    _agree("the provider's billed seconds", billed, int(c.priced.provider_billed[0]))
    charge, charge_lines = _charge_lines(tables, card, row, billed, 0)
    _agree("the provider charge", _money(charge), rated["provider_charge"])
    precision, currency = int(tables.card_precision[card]), tables.card_currency[card]
    amount = _money(charge, precision)
    profit_line, profit = _profit(tables, card, precision, rated)
    values.update(prefix=tables.row_prefix[row], billed=billed, provider_charge=amount)
    values.update(currency=currency, profit=profit)
    detail = "\n".join([*lines, *bill_lines, *charge_lines, profit_line])
    return Step("provider", True, f"{amount} {currency}", detail, values)


def _profit(tables: Tables, card: int, precision: int, rated: Row) -> tuple[str, Decimal | None]:
    if rated["profit"] is None:
        theirs, ours = tables.card_currency[card], rated["currency"]
        return f"profit stays empty: the provider is paid in {theirs}, the customer in {ours}", None
    places = max(precision, int(tables.card_precision[tables.card_index[rated["card_id"]]]))
    profit = rated["profit"].quantize(Decimal(1).scaleb(-places))
    return f"profit = charge - provider charge = {profit} {rated['currency']}", profit


# -- the whole call -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One call being explained: the catalog, the CDR as the engine got it, and what the
    engine's ``price`` made of it."""

    rows: Rows
    tables: Tables
    cdr: dict[str, Any]
    priced: Priced
    usage: Usage
    rated_at: int

    @property
    def at(self) -> int:
        return _us(self.cdr["dt"])


RESULT_FIELDS = (
    "customer_id", "customer_status", "card_id", "number", "dest_code", "dest_name",
    "billed_duration", "rate", "connect_fee", "package_seconds", "package_id", "charge", "tax",
    "currency", "provider_charge", "provider_currency", "profit",
)  # fmt: skip


def _result(tables: Tables, rated: Row) -> dict[str, Any]:
    """The rated values for display: charge and tax at the card's precision (0.0150, as
    the SPEC writes them), the other amounts as they are."""
    out = {name: rated[name] for name in RESULT_FIELDS}
    precision = int(tables.card_precision[tables.card_index[rated["card_id"]]])
    for name in ("charge", "tax"):
        out[name] = rated[name].quantize(Decimal(1).scaleb(-precision))
    for name in ("rate", "connect_fee", "provider_charge", "profit"):
        if rated[name] is not None:
            out[name] = rated[name].normalize()
    return {"reject_reason": None, **out}


def _failed(steps: list[Step], reason: str, priced: Priced | None = None) -> Explanation:
    if priced is not None:
        _agree("the reject reason", reason, priced.reason[0])
    return Explanation(steps, reason, {"reject_reason": reason})


def explain(rows: Rows, tables: Tables, cdr: Row, usage: Usage, rated_at: int = 0) -> Explanation:
    """Rate one CDR as the engine does, and say why at each step (SPEC §5.1-§5.2, and §5.3
    as if the call were rated now, after what ``usage`` holds). ``rows`` are the catalog
    rows of ``ENTITIES`` of the version ``tables`` was compiled from; ``usage`` is not
    changed."""
    problem = cdr_problem(cdr)
    if problem is not None:
        return _failed([_cdr_step(cdr, problem)], "invalid")
    call = _input(cdr)
    priced = price(tables, pa.Table.from_pylist([call], schema=INPUT))
    c = _Call(rows, tables, call, priced, usage, rated_at)
    steps = [_cdr_step(call, None)]
    step, payer = _customer_step(rows, tables, call)
    steps.append(step)
    if payer is None:
        return _failed(steps, "unknown_customer", priced)
    _agree("the customer", tables.customer_index[payer.customer_id], int(priced.customer[0]))
    steps.append(_cli_step(rows, payer.customer_id, call["source_cli"]))
    return _route_onwards(c, payer, steps)


def _route_onwards(c: _Call, payer: _Payer, steps: list[Step]) -> Explanation:
    """Steps 2 and 3 (route, number, rate row), then the money."""
    dest = c.cdr["dest_number"]
    if payer.did is not None:
        steps.append(_did_route_step(payer.did))
        card, done = c.tables.card_index[payer.did["customer_card_id"]], None
    else:
        step, route, done = _route_step(c.rows, payer.customer_id, dest)
        steps.append(step)
        if route is None:
            return _failed(steps, "no_route", c.priced)
        card = c.tables.card_index[route["card_id"]]
    _agree("the card", card, int(c.priced.card[0]))
    step, number = _number_step(dest, done)
    steps.append(step)
    _agree("the number rated", number, dest[int(c.priced.start[0]) :])
    step, row = _rate_step(c.tables, card, number, c.at)
    steps.append(step)
    if row < 0:
        return _failed(steps, "no_rate", c.priced)
    _agree("the rate row", row, int(c.priced.row[0]))
    return _money_steps(c, payer, number, steps)


def _money_steps(c: _Call, payer: _Payer, number: str, steps: list[Step]) -> Explanation:
    """Billing, packages, charge, tax and the provider leg: the engine's figures (``finish``
    on a copy of the usage) beside the arithmetic that gives them."""
    mine = Usage(c.usage.keys.size)
    mine.keys, mine.values = c.usage.keys.copy(), c.usage.values.copy()
    [rated] = finish(c.tables, c.priced, mine, c.rated_at).to_pylist()
    card, row = int(c.priced.card[0]), int(c.priced.row[0])
    billed = int(rated["billed_duration"])
    steps.append(_billing_step(c.tables, card, row, c.cdr, billed))
    step, free = _packages_step(c, payer.customer_id, number, billed, rated)
    steps.append(step)
    charge, tax = micro(rated["charge"]), micro(rated["tax"])
    steps.append(_charge_step(c.tables, card, row, billed, free, charge))
    steps.append(_tax_step(c.tables, int(c.priced.customer[0]), card, charge, tax))
    steps.append(_provider_step(c, payer.did, number, rated))
    return Explanation(steps, None, _result(c.tables, rated))


__all__ = ["ENTITIES", "ExplainMismatch", "Explanation", "Step", "cdr_problem", "explain"]
