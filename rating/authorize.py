"""Call authorization (SPEC §9, §9.1): may a switch connect this call, and for how long.

Pure: the compiled tables and catalog rows of one version, the calls, the time and each
customer's funds in; a ``Decision`` per call out. Who pays, the route and the rate row are
the engine's own (``rating.engine.find``, what ``price`` does to a batch, on the calls'
columns made at once, with the auth entry that identified each), so authorization never
disagrees with rating. The authorizer keeps those answers by the fields the engine reads
(customer_id, source_ip, sip_user, dest_number, direction) while the time stays between two
adjacent effective_from/effective_to boundaries of the rate rows, the only part of routing
that depends on the time: a call whose fields were seen in that window is not priced again,
and the rate in effect now is always the answer.
The reasons are checked in the order of §9: ``unknown_customer``, ``not_active``,
``cli_denied``, ``no_route``, ``no_rate``, then the live limits ``channels`` and ``cps``
(state: the caller applies them, ``Decision.limited``), then ``credit``.

``max_seconds`` is exact: the billed durations a call longer than grace can have are the
first billed step ``b0`` (the engine's billing of a call of grace + 1 seconds) and then
``b0 + k × pulse``; its charge + tax (SPEC §5.2, after the package seconds left this period,
which are free) never falls as k grows, so the largest k whose cost is within ``available``
is found by binary search over whole pulses, in integers, through the engine's own charge.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from rating import kernels
from rating.cli_rules import first_match
from rating.engine import DAY_US, Columns, Usage, _charge_exact, draw, find
from rating.modes import Rounding, round_ratio
from rating.tables import NEVER_AFTER, NEVER_BEFORE, Tables
from schemas.errors import CdrflowError

Row = Mapping[str, Any]
Rows = Mapping[str, Sequence[Row]]
I64 = npt.NDArray[np.int64]

REASONS = (
    "unknown_customer",
    "not_active",
    "cli_denied",
    "no_route",
    "no_rate",
    "channels",
    "cps",
    "credit",
)
LIMITS = ("channels", "cps")
# SPEC §9: max_seconds is capped by a setting, 10,800 s (three hours) unless set.
DEFAULT_CAP = 10_800
# The fields of a request that authorization reads (any other SPEC §4 field is ignored).
TEXT_FIELDS = ("callid", "dest_number", "source_cli", "customer_id", "source_ip", "sip_user")
WHO = ("customer_id", "source_ip", "sip_user")
# The fields of a call that routing reads (``rating.engine.Columns``).
ROUTED = ("dest_number", "direction", *WHO)
MAX_TEXT = 256
_NUMBER = re.compile(r"[0-9+*#]{1,64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# "All the package seconds there are": a draw asked for this many takes everything left.
_ALL = 2**40


@dataclass(frozen=True)
class Funds:
    """What a customer can spend now: ``available`` (SPEC §7.2) in millionths of its
    currency, and the package seconds drawn so far (``None``: none)."""

    available: int
    drawn: Usage | None = None


@dataclass(frozen=True)
class Decision:
    """The answer to one call, and what the caller's live state needs to apply it.

    ``reason`` is the first of §9's reasons that applies, the live limits aside: a call
    whose reason is None or ``credit`` is still subject to them (``limited``). ``customer``
    and ``auth_entry`` are indexes into the compiled tables (-1: none); ``rate`` is in
    millionths per minute; ``first_step`` the billed seconds of the shortest billed call and
    ``package_seconds`` the package seconds left for it (what ``max_seconds`` rests on)."""

    callid: str
    allow: bool
    reason: str | None
    customer_id: str | None = None
    card_id: str | None = None
    dest_code: str | None = None
    rate: int | None = None
    max_seconds: int = 0
    customer: int = -1
    auth_entry: int = -1
    first_step: int = 0
    package_seconds: int = 0

    @property
    def open_to_limits(self) -> bool:
        """Whether ``channels`` or ``cps`` would be the answer when reached: every earlier
        check passed."""
        return self.reason is None or self.reason == "credit"

    def limited(self, reason: str) -> Decision:
        """This decision after a live limit (``channels`` or ``cps``) was found reached."""
        if reason not in LIMITS:
            raise ValueError(f"{reason!r} is not a live limit")
        if not self.open_to_limits:
            return self
        return replace(self, allow=False, reason=reason, max_seconds=0)

    def answer(self) -> dict[str, Any]:
        """The JSON answer of SPEC §9 (money as a string)."""
        return {
            "allow": self.allow,
            "reason": self.reason,
            "customer_id": self.customer_id,
            "card_id": self.card_id,
            "dest_code": self.dest_code,
            "rate": None if self.rate is None else money_text(self.rate),
            "max_seconds": self.max_seconds,
        }


@dataclass(frozen=True)
class Limit:
    """Channels and CPS of a customer or an auth entry: None unlimited, 0 none."""

    channels: int | None = None
    cps: int | None = None


# A call's fields that the engine reads (with the time): the routing cache's key.
RouteKey = tuple[str | None, str | None, str | None, str, str | None]
ROUTES_MAX = 100_000  # entries of the routing cache; emptied when it reaches that
# What decides which allotments a call may draw on: its customer (index), the start of its
# rated number as far as the customer's longest allotment prefix reaches (``reach``), and
# its UTC day (days since the epoch).
DrawKey = tuple[int, str, int]
# The allotments a call may draw on, in the engine's order: (``Usage``'s key of the
# allotment's period: allotment × 2^32 + period start day, the allotment's seconds).
Drawable = tuple[tuple[int, int], ...]
DRAWABLE_MAX = 100_000  # entries ``Authorizer.drawables`` keeps; emptied when full


# The engine's answer for one call's routing fields (``find``; indexes into the compiled
# tables, -1 none) and the first billed step of its rate row: (customer, card, row, where
# the rated number starts, auth entry, first step). A plain tuple of ints, which Python's
# collector stops tracking: with every number new the cache holds up to ROUTES_MAX of them,
# and full collections scanning that many objects stalled the worker.
Route = tuple[int, int, int, int, int, int]


def route_key(call: Mapping[str, Any]) -> RouteKey:
    return (
        call.get("customer_id"),
        call.get("source_ip"),
        call.get("sip_user"),
        call["dest_number"],
        call.get("direction"),
    )


class Authorizer:
    """One catalog version made ready for authorization: the compiled tables, each
    customer's and auth entry's limits, and each customer's CLI rules in catalog order.
    Made once per version (``of``)."""

    def __init__(self, tables: Tables, rows: Rows) -> None:
        self.tables = tables
        index = tables.customer_index
        self.customer_limits = [Limit() for _ in tables.customer_ids]
        for row in rows["customers"]:
            if row["customer_id"] in index:
                self.customer_limits[index[row["customer_id"]]] = _limit(row)
        self.entry_keys, self.entry_limits = _entries(tables, rows["auth"])
        rules: dict[int, list[Row]] = {}
        # Catalog order: by id where the rows carry one, else as given (a snapshot's order).
        for rule in sorted(rows.get("cli_rules", ()), key=lambda r: r.get("id") or 0):
            if rule["customer_id"] in index:
                rules.setdefault(index[rule["customer_id"]], []).append(rule)
        self.cli_rules = rules

        # The routing cache: the engine's own answer for a call's routing fields, kept
        # while the time stays between two adjacent effective_from/effective_to boundaries
        # of the rate rows (the only part of routing that depends on the time).
        bounds = tables.versions[:, :2].ravel() if tables.versions.size else np.empty(0, np.int64)
        inner = bounds[bounds < NEVER_AFTER]
        self._bounds = np.unique(np.concatenate([bounds, inner + 1]))
        self._routes: dict[RouteKey, Route] = {}
        self._routes_from, self._routes_until = 0, -1  # an empty window: filled on first use
        # The allotments a call may draw on, by ``DrawKey`` (``packages_left``).
        self.drawables: dict[DrawKey, Drawable] = {}

    def routes(self, at: int) -> dict[RouteKey, Route]:
        """The routing cache at ``at`` (µs since the epoch): emptied when ``at`` leaves the
        window between the rate rows' boundaries it was filled in, or when it is full. A
        rate row effective from (or to) ``t`` is thus never answered past ``t``."""
        if not self._routes_from <= at < self._routes_until or len(self._routes) >= ROUTES_MAX:
            k = int(np.searchsorted(self._bounds, at, side="right"))
            self._routes_from = int(self._bounds[k - 1]) if k else NEVER_BEFORE
            self._routes_until = int(self._bounds[k]) if k < self._bounds.size else NEVER_AFTER
            self._routes = {}
        return self._routes

    @staticmethod
    def of(tables: Tables, rows: Rows) -> Authorizer:
        """The authorizer of this version, made on first use and kept with the tables."""
        made = tables.extra.get("authorizer")
        if made is None:
            made = tables.extra["authorizer"] = Authorizer(tables, rows)
        return made


def _limit(row: Row) -> Limit:
    return Limit(channels=row.get("channels"), cps=row.get("cps"))


def _entries(tables: Tables, auth: Sequence[Row]) -> tuple[list[str], list[Limit]]:
    """Each compiled auth entry's key (kind|value|tech prefix: what makes an entry unique,
    and names it across catalog versions) and limits, from its catalog row, matched on the
    key so that the rows may come in any order."""
    tech = tables.auth_tech_prefix
    n = tables.auth_customer.size

    def tech_of(e: int) -> str:
        return bytes(tech.data[tech.offsets[e] : tech.offsets[e + 1]]).decode()

    keys: list[tuple[str, Any, str] | None] = [None] * n
    for networks in tables.ip_networks.values():
        for network, entries in networks.items():
            for e in entries:
                keys[e] = ("ip", network, tech_of(e))
    for name, entries in tables.user_entries.items():
        for e in entries:
            keys[e] = ("user", name, tech_of(e))
    by_key: dict[tuple[str, Any, str], Row] = {}
    for given in auth:
        value = ipaddress.ip_network(given["value"]) if given["kind"] == "ip" else given["value"]
        by_key[(given["kind"], value, given.get("tech_prefix") or "")] = given
    names, limits = [], []
    for e, key in enumerate(keys):
        row = None if key is None else by_key.get(key)
        if (
            key is None
            or row is None
            or tables.customer_index.get(row["customer_id"]) != int(tables.auth_customer[e])
        ):
            raise CdrflowError(
                "the auth rows are not those the rate tables were compiled from; "
                "read both from one catalog version"
            )
        names.append(f"{key[0]}|{key[1]}|{key[2]}")
        limits.append(_limit(row))
    return names, limits


def problem(call: Any) -> str | None:
    """What makes a request body no call to authorize (SPEC §9: ``callid``, ``dest_number``,
    ``source_cli``?, and ``customer_id`` or ``source_ip`` or ``sip_user``), or None."""
    if not isinstance(call, dict):
        return "the body must be a JSON object (a call)"
    for name in TEXT_FIELDS:
        value = call.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name}: must be a string"
        if value is not None and len(value) > MAX_TEXT:
            return f"{name}: longer than {MAX_TEXT} characters"
    for name in ("callid", "dest_number"):
        if not call.get(name):
            return f"{name}: missing"
    if not _NUMBER.fullmatch(call["dest_number"]):
        return f"dest_number: {call['dest_number']!r} may hold only digits, +, * and # (1-64)"
    if not any(call.get(name) for name in WHO):
        return "one of customer_id, source_ip or sip_user is required"
    if call.get("direction") not in (None, "outbound", "inbound"):
        return "direction: must be outbound or inbound"
    return None


def decide(
    authorizer: Authorizer,
    call: Mapping[str, Any],
    now: datetime,
    funds: Callable[[str], Funds],
    cap: int = DEFAULT_CAP,
) -> Decision:
    """``decide_many`` of one call."""
    [decision] = decide_many(authorizer, [call], now, funds, cap)
    return decision


def decide_many(
    authorizer: Authorizer,
    calls: Sequence[Mapping[str, Any]],
    now: datetime,
    funds: Callable[[str], Funds],
    cap: int = DEFAULT_CAP,
) -> list[Decision]:
    """Decide valid calls (``problem`` None) at ``now``, each on its own (credit and
    package seconds are not reserved between them): one engine call for those whose routing
    fields the authorizer has not seen since the last rate boundary (``Authorizer.routes``),
    then each call's checks in §9 order. ``funds`` gives a customer's funds by customer_id; it is
    asked once per customer, and only for customers with a call that reaches the credit
    check. The live limits are left to the caller (``Decision.limited``)."""
    if not calls:
        return []
    tables = authorizer.tables
    at = (now.astimezone(UTC) - _EPOCH) // _US
    routes = authorizer.routes(at)
    keys = [route_key(call) for call in calls]
    missing: dict[RouteKey, int] = {}
    for i, key in enumerate(keys):
        if key not in routes and key not in missing:
            missing[key] = i
    if missing:  # the engine's own answers, for the routing fields not seen in this window
        asked = [calls[i] for i in missing.values()]
        identified = np.empty(len(asked), np.int64)
        priced = find(tables, _columns(asked, at), identified)
        steps = _first_steps(tables, priced.row, priced.card).tolist()
        for j, (key, c, card, row, start, entry) in enumerate(
            zip(missing, priced.customer.tolist(), priced.card.tolist(), priced.row.tolist(),
                priced.start.tolist(), identified.tolist(), strict=True)
        ):  # fmt: skip
            routes[key] = (c, card, row, start, entry, steps[j])
    found = [routes[key] for key in keys]
    customers, cards, rows, starts, entries, first = (list(c) for c in zip(*found, strict=True))
    reasons: list[str | None] = []
    for i, call in enumerate(calls):
        c = customers[i]
        if c < 0:
            reasons.append("unknown_customer")
        elif tables.customer_status[c] != "active":
            reasons.append("not_active")
        elif _cli_denied(authorizer, c, call.get("source_cli")):
            reasons.append("cli_denied")
        elif cards[i] < 0:
            reasons.append("no_route")
        elif rows[i] < 0:
            reasons.append("no_rate")
        else:
            reasons.append(None)
    priceable = [i for i, reason in enumerate(reasons) if reason is None]
    money = {c: funds(tables.customer_ids[c]) for c in {customers[i] for i in priceable}}
    drawn = {c: f.drawn for c, f in money.items()}
    free: dict[int, int] = {}
    if priceable:
        free = packages_left(
            tables,
            customers,
            [at // DAY_US] * len(calls),
            [call["dest_number"] for call in calls],
            starts,
            priceable,
            drawn,
            authorizer.drawables,
        )
    out = []
    for i, call in enumerate(calls):
        c, card, row, reason = customers[i], cards[i], rows[i], reasons[i]
        seconds = 0
        if reason is None:
            seconds = max_seconds(
                tables, c, card, row, int(first[i]), free[i], money[c].available, cap
            )
            reason = None if seconds else "credit"
        out.append(
            Decision(
                callid=call["callid"],
                allow=reason is None,
                reason=reason,
                customer_id=tables.customer_ids[c] if c >= 0 else None,
                card_id=tables.card_ids[card] if card >= 0 and c >= 0 else None,
                dest_code=tables.row_prefix[row] if row >= 0 and c >= 0 else None,
                rate=int(tables.row_rate[row]) if row >= 0 and c >= 0 else None,
                max_seconds=seconds,
                customer=c,
                auth_entry=entries[i],
                first_step=int(first[i]),
                package_seconds=free.get(i, 0),
            )
        )
    return out


def _cli_denied(authorizer: Authorizer, customer: int, cli: str | None) -> bool:
    rules = authorizer.cli_rules.get(customer)
    if not rules:
        return False
    rule = first_match(rules, cli)
    return rule is not None and rule["action"] == "deny"


def _columns(calls: Sequence[Mapping[str, Any]], at: int) -> Columns:
    """What the engine reads of the calls (``Columns``), as answered calls at ``at``: the
    fields ``problem`` checked, and no provider card (authorization prices the customer's
    leg alone)."""
    n = len(calls)
    texts = {name: [call.get(name) for call in calls] for name in ROUTED}
    return Columns(
        **texts,
        provider_card_id=[None] * n,
        times=np.full(n, at, np.int64),
        answered=np.ones(n, np.bool_),
        duration=np.zeros(n, np.int64),
    )


def _first_steps(tables: Tables, rows: I64, cards: I64) -> I64:
    """The engine's billed seconds of a call of grace + 1 seconds on each rate row (0 where
    there is none): the first billed step (SPEC §9.1)."""
    n = rows.size
    billed = np.zeros(n, np.int64)
    if not tables.row_grace.size:
        return billed
    valid = rows >= 0
    seconds = np.where(valid, tables.row_grace[np.maximum(rows, 0)] + 1, 0)
    kernels.bill(
        valid,
        seconds * kernels.MICRO,
        rows,
        tables.card_duration_rounding[np.maximum(cards, 0)],
        tables.row_mcd,
        tables.row_pulse,
        tables.row_grace,
        billed,
    )
    return billed


def packages_left(
    tables: Tables,
    customer: Sequence[int],
    days: Sequence[int],
    numbers: Sequence[str],
    start: Sequence[int],
    calls: Sequence[int],
    drawn: Mapping[int, Usage | None],
    known: dict[DrawKey, Drawable] | None = None,
) -> dict[int, int]:
    """The package seconds each of ``calls`` (indexes into the sequences: customer, UTC day,
    dialled number and where the rated number starts in it) could still draw (SPEC §5.3),
    after what each customer has ``drawn``: what the engine's own ``draw`` of every second
    there is would give it alone. Nothing is reserved between the calls.

    Which allotments a call may draw on, and in which period (``drawable``), depends only on
    the catalog version, the customer, the day and as much of the rated number as the
    customer's longest allotment prefix (``reach``), so ``known`` (an ``Authorizer``'s)
    keeps them between batches, for every number that starts alike; what is left is then
    each allotment's seconds less what ``drawn`` holds for its period, as
    ``kernels.draw_packages`` takes it."""
    known = {} if known is None else known
    left = dict.fromkeys(calls, 0)
    far = reach(tables)
    keys = {}
    for i in calls:
        c = int(customer[i])
        if tables.allot_count[c] > 0:
            begin = int(start[i])
            keys[i] = (c, numbers[i][begin : begin + far[c]], int(days[i]))
    new = list(dict.fromkeys(key for key in keys.values() if key not in known))
    if new:
        if len(known) + len(new) > DRAWABLE_MAX:
            known.clear()
        known.update(zip(new, drawable(tables, new), strict=True))
    spent: dict[int, dict[int, int]] = {}
    for i, key in keys.items():
        used = drawn.get(key[0])
        if used is None:
            left[i] = sum(seconds for _, seconds in known[key])
            continue
        table = spent.get(key[0])
        if table is None:
            table = spent[key[0]] = _as_dict(used)
        left[i] = sum(max(0, seconds - table.get(period, 0)) for period, seconds in known[key])
    return left


def drawable(tables: Tables, calls: Sequence[DrawKey]) -> list[Drawable]:
    """The allotments each call (``DrawKey``) may draw on (SPEC §5.3: valid on its day, a
    prefix matching its rated number), found by the engine's own ``draw`` of every second
    there is on a fresh usage: each call gets its own copy of its customer's allotments (as
    if it were a customer of its own), so one draw serves them all and each call draws on
    every allotment open to it (those with no seconds give nothing and are left out)."""
    customer = np.array([c for c, _, _ in calls], np.int64)
    counts = tables.allot_count[customer]
    firsts = tables.allot_first[customer]
    # Copy v of the allotments is real allotment real[v]; call k owns copies from first[k].
    real = np.concatenate([np.arange(f, f + c) for f, c in zip(firsts, counts, strict=True)])
    first = np.zeros(len(calls), np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    view = replace(
        tables,
        allot_first=first,
        allot_count=counts,
        **{name: getattr(tables, name)[real] for name in _ALLOT_ARRAYS},
    )
    own = np.arange(len(calls), dtype=np.int64)
    draws = draw(
        view,
        own,
        np.array([day for _, _, day in calls], np.int64),
        pa.array([number for _, number, _ in calls], pa.string()),
        np.zeros(len(calls), np.int64),
        np.full(len(calls), _ALL, np.int64),
        None,
        Usage(),
    )
    out: list[list[tuple[int, int]]] = [[] for _ in calls]
    found = zip(draws.row.tolist(), real[draws.allot].tolist(), draws.period.tolist(),
                draws.drawn.tolist(), strict=True)  # fmt: skip
    for k, a, period, seconds in found:
        out[k].append((a * _KEY + period, seconds))
    return [tuple(allotments) for allotments in out]


def reach(tables: Tables) -> list[int]:
    """Per customer, the length of its allotments' longest prefix (0: none has one): how
    much of a rated number decides which of them it may draw on. Kept with the tables."""
    found: list[int] | None = tables.extra.get("allotment_reach")
    if found is None:
        lengths = np.diff(tables.allot_prefixes.offsets).tolist()
        longest = [
            max(lengths[f : f + n], default=0)
            for f, n in zip(tables.allot_pfx_first.tolist(), tables.allot_pfx_count.tolist(),
                            strict=True)
        ]  # fmt: skip
        found = tables.extra["allotment_reach"] = [
            max(longest[f : f + n], default=0)
            for f, n in zip(tables.allot_first.tolist(), tables.allot_count.tolist(), strict=True)
        ]
    return found


# The per-allotment arrays of ``Tables`` that ``draw`` reads, and ``Usage``'s key: allotment
# × 2^32 + period start day.
_ALLOT_ARRAYS = ("allot_start", "allot_end", "allot_freq", "allot_seconds", "allot_pfx_first",
                 "allot_pfx_count")  # fmt: skip
_KEY = 4294967296


def _as_dict(usage: Usage) -> dict[int, int]:
    """``usage`` as a dict: seconds by key."""
    held = usage.keys != -1
    return dict(zip(usage.keys[held].tolist(), usage.values[held].tolist(), strict=True))


def cost(tables: Tables, customer: int, card: int, row: int, billed: int, free: int) -> int:
    """Charge + tax of a call billed ``billed`` seconds with ``free`` package seconds left
    (SPEC §5.2: the package covers what it can), in millionths, exactly."""
    charge = _charge_exact(tables, card, row, billed, min(free, billed))
    unit: int = 10 ** (6 - int(tables.card_precision[card]))
    percent = int(tables.customer_tax[customer])
    tax = round_ratio(charge * percent, 100 * 10**6 * unit, Rounding.HALF_UP) * unit
    return charge + tax


def max_seconds(
    tables: Tables,
    customer: int,
    card: int,
    row: int,
    first_step: int,
    free: int,
    available: int,
    cap: int = DEFAULT_CAP,
) -> int:
    """SPEC §9.1: 0 when the first billed step costs more than ``available`` (``credit``),
    else min(``cap``, the largest billed duration ``first_step + k × pulse`` whose charge +
    tax, after ``free`` package seconds, is at most ``available``). Money in millionths.

    The cost never falls as k grows, so the answer is a search over k; it starts from
    where the unrounded arithmetic puts it (rounding moves it by a few pulses at most,
    except at a coarse precision), gallops outward and bisects: about four charges a call."""

    def affordable(k: int) -> bool:
        return cost(tables, customer, card, row, first_step + k * pulse, free) <= available

    pulse = int(tables.row_pulse[row])
    if not affordable(0):
        return 0
    top = max(0, -(-(cap - first_step) // pulse))  # the first step at or beyond the cap
    if affordable(top):
        return cap
    low, high = 0, top  # affordable(low), not affordable(high)
    guess = min(max(_estimate(tables, customer, row, first_step, free, available, pulse), 1),
                top - 1)  # fmt: skip
    step = 1
    if guess > low and affordable(guess):
        low = guess
        while low + step < high and affordable(low + step):
            low, step = low + step, 2 * step
        high = min(high, low + step)
    elif guess > low:
        high = guess
        while high - step > low and not affordable(high - step):
            high, step = high - step, 2 * step
        low = max(low, high - step)
    while high - low > 1:
        middle = (low + high) // 2
        if affordable(middle):
            low = middle
        else:
            high = middle
    return min(cap, first_step + low * pulse)


def _estimate(
    tables: Tables, customer: int, row: int, first_step: int, free: int, available: int, pulse: int
) -> int:
    """Where the largest affordable pulse count lies without rounding (a starting point of
    the search, never its answer): available less tax, less the connect fee, bought at the
    rate, beyond the free seconds."""
    rate, fee = int(tables.row_rate[row]), int(tables.row_connect_fee[row])
    if rate <= 0:
        return 0
    before_tax = available * 100_000_000 // (100_000_000 + int(tables.customer_tax[customer]))
    seconds = free + max(0, before_tax - fee) * 60 // rate
    return (seconds - first_step) // pulse


def money_text(value: int) -> str:
    """Millionths as a plain decimal string (0.015, 12, -3.5)."""
    return format(Decimal(value).scaleb(-6).normalize(), "f")


def micro_of(value: Decimal | int | str) -> int:
    """An amount as millionths, exactly; more than 6 places are cut toward minus infinity
    (what a customer may spend is never rounded up)."""
    scaled = Decimal(value).scaleb(6)
    return int(scaled.to_integral_value(rounding=ROUND_FLOOR))


__all__ = [
    "DEFAULT_CAP",
    "LIMITS",
    "REASONS",
    "Authorizer",
    "Decision",
    "Funds",
    "Limit",
    "Route",
    "cost",
    "decide",
    "decide_many",
    "drawable",
    "max_seconds",
    "micro_of",
    "money_text",
    "packages_left",
    "problem",
    "reach",
]
