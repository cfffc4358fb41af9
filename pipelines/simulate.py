"""A softswitch in a box: CDR files (SPEC §4) with the traffic a catalog's customers would send.

``simulate`` writes ``count`` CDRs to a JSON Lines, CSV or Parquet file (by extension). The
catalog is first turned into flat arrays (``_Plan``: who can call, over which route, to
which prefixes, how popular each is). Records are then built a chunk at a time, a column at
a time: numpy draws every choice as an index, Arrow ``take`` turns indices into texts from
small pools (one entry per outcome, per address, per pdd in milliseconds…) and
``binary_join_element_wise`` joins them into lines; callids and times are byte matrices.
Memory stays bounded by the chunk; only the few duplicate and malformed records pass
through Python one by one. On one core of the (shared, 2-vCPU) development VM that is 2 to
2.5 µs a record: 1M CDRs at 400k-550k/s in each format (a 300,000-prefix catalog adds
1.3-1.7 s of planning once); 20 million took 49 s as Parquet and 55 s as JSON Lines (8.4 GB,
a third of that time in the kernel writing it).

How the traffic is made (the decisions the brief leaves open):

- **Who calls.** Customers with a route (or a DID) send traffic, weighted by a seeded
  lognormal factor and their status (pending, penalty and inactive customers send little).
  For each of a customer's routes, in the order the rater tries them (ascending priority,
  longest tech prefix first), the customer is identified as a switch would: by ``source_ip``
  (75 %: an address inside one of its ``kind=ip`` entries whose tech prefix fits the route,
  checked against every other entry so that the rater's longest-tech-prefix match finds this
  customer), by ``sip_user`` (20 %: a ``kind=user`` entry; the call then comes from a
  registration address outside every IP entry), or by an explicit ``customer_id`` (5 %, or
  always when the customer has no auth; the call still comes from one of its trunks). The
  shares are renormalised over what a customer has. About 3 % of calls are inbound to the
  catalog's DIDs (``direction`` inbound, ``dest_number`` the DID, one in five with a ``+``),
  from an address of the DID's carrier.
- **What is dialled.** A number starts with a prefix of the card of the route: all of the
  card's prefixes when the route has no dial string; for a dial string of prefixes, the card
  prefixes under it (or the dial prefix itself when a card prefix is shorter); for a regex
  dial string, the card prefixes whose numbers of 10, 11 and 13 digits (padded with 0s, then
  with 9s) all match it (a route where none do is skipped, counted in ``skipped_routes``).
  Prefixes that a route earlier in the rater's order would capture are left out. Popularity
  is heavy-tailed: each prefix gets a lognormal weight (sigma 2) from a hash of the prefix
  and the seed, so the same destinations are hot for every customer. The prefix is followed
  by random digits up to 10-13 digits (11 for NANP), taken from a pool of 4,096 tails per
  length (callers dial the same numbers again), and the dialled number is ``tech prefix +
  the digits the route strips ("00", "011") + number``; 5 % of the calls of routes with
  neither carry a ``+``. About 2 % of calls go to numbers under no prefix of any card
  (``unknown_destinations``): the rater rejects them, as it would a real switch's. Calling
  numbers are E.164 (30 % with ``+``, 2 % withheld) from a pool of 131,072 per file.
- **Outcome.** Each customer's answer ratio is drawn around 50 % (0.45-0.55); failures are a
  weighted mix of 487, 486, 480, 503, 404, 408, 603, 403, 502, 484 and 302 with the phrase
  the switch reports and a Q.850 ``release_reason`` (missing on 5 % of calls). Durations are
  lognormal (median 60 s, sigma 1.2, so about 3 in 10,000 calls last over an hour), at least
  0.1 s and at most 4 h, written with 3 decimals; an unanswered call has ``duration`` 0.
  ``pdd_ms`` is lognormal around 1.5 s (missing on 3 %); ``ring_duration`` depends on the
  outcome (0 for a busy or a routing failure, near the 30 s timer for 480).
- **Carrier.** Provider cards are the termination cards no route and no DID customer card
  uses; each is linked to a provider by a DID that names both, else by a provider id or name
  that appears in the card's id or name, else to the first provider of the card's currency.
  A call gets a provider whose card has a prefix of the number (picked at random among
  those), none when no card covers it or the switch refused the call itself (403, 484); an
  inbound call gets the DID's provider.
- **When.** ``dt`` follows a diurnal curve over ``[start, start + days)`` (weekends at 70 %),
  stratified so records come out in time order, then jittered by ~0.4 s as a switch's
  writers interleave; ISO 8601 UTC with milliseconds and ``Z``. ``callid`` is uuid-like: 64
  random bits, then a 64-bit bijective mix of the seed and the record's position, so callids
  are unique by construction. The same arguments give the same file, byte for byte.
- **Duplicates and malformed records.** Each record is, with probability ``duplicate_rate``,
  an exact repeat of a sound record a few dozen records before it in the same chunk (same
  callid and text; the first records of a chunk are never repeats), and with probability
  ``malformed_rate`` a broken one. JSON Lines breaks the raw line: truncated, ``duration``
  "abc", no ``callid``, ``sip_code`` 999, letters in ``dest_number``, or an impossible
  ``dt``. CSV breaks the same ways except truncation (pyarrow writes whole rows). Parquet
  columns are typed, so neither a wrong type nor a bad ``dt`` can be written: its broken
  records have a negative duration, no callid, ``sip_code`` 999 or letters in the number.
- **Formats.** ``.jsonl``/``.ndjson``: one compact object per line, keys in SPEC order,
  absent fields omitted, ``sip_code``, ``duration``, ``pdd_ms`` and ``ring_duration`` as
  JSON numbers, ``dt`` ISO text. ``.csv``: header of the SPEC field names, every field as
  text (pyarrow quotes every text field), absent fields empty. ``.parquet``: the types of
  ``schemas.cdr`` (``dt`` a UTC timestamp, decimal seconds, int16 ``sip_code``), every
  column nullable (a broken record may lack its callid); zstd, with dictionaries only on the
  columns of few values; a row group per chunk. Typed columns are what a switch exporting
  Parquet writes, and a timestamp costs a third less to write than its text. The file is
  written next to its destination and renamed when complete.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.cdr import INPUT_FIELDS, INPUT_NAMES, SECONDS
from schemas.errors import CdrflowError

if TYPE_CHECKING:
    from pipelines.catalog import Catalog

DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# Arrow's string offsets are 32-bit: a chunk of JSON lines must stay well under 2 GiB.
MAX_CHUNK = 2_000_000

SWITCHES = ("sbc-lon-01", "sbc-lon-02", "sbc-fra-01", "sbc-ams-01", "sbc-nyc-01", "sbc-sgp-01")
DIRECTIONS = ("outbound", "inbound")

# Final responses: (sip_code, reason phrase, Q.850 cause, cause name, share of failures).
ANSWERED = (200, "OK", 16, "NORMAL_CLEARING", 0.0)
FAILURES = (
    (487, "Request Terminated", 487, "ORIGINATOR_CANCEL", 0.24),
    (486, "Busy Here", 17, "USER_BUSY", 0.20),
    (480, "Temporarily Unavailable", 19, "NO_ANSWER", 0.16),
    (503, "Service Unavailable", 34, "NORMAL_CIRCUIT_CONGESTION", 0.09),
    (404, "Not Found", 1, "UNALLOCATED_NUMBER", 0.08),
    (408, "Request Timeout", 102, "RECOVERY_ON_TIMER_EXPIRE", 0.06),
    (603, "Decline", 21, "CALL_REJECTED", 0.06),
    (403, "Forbidden", 21, "CALL_REJECTED", 0.03),
    (502, "Bad Gateway", 38, "NETWORK_OUT_OF_ORDER", 0.03),
    (484, "Address Incomplete", 28, "INVALID_NUMBER_FORMAT", 0.03),
    (302, "Moved Temporarily", 23, "REDIRECTION_TO_NEW_DESTINATION", 0.02),
)
OUTCOMES = (ANSWERED, *FAILURES)
# Refused by the switch itself: no carrier was tried.
NO_CARRIER_CODES = (403, 484)

MODE_SHARES = {"ip": 0.75, "user": 0.20, "explicit": 0.05}
MODES = ("ip", "user", "explicit", "did")
STATUS_WEIGHT = {"active": 1.0, "pending": 0.3, "penalty": 0.1, "inactive": 0.02}
INBOUND_SHARE = 0.03
UNKNOWN_SHARE = 0.02
PLUS_SHARE = 0.05
DID_PLUS_SHARE = 0.2
SAME_SWITCH_SHARE = 0.85
NO_CLI_SHARE = 0.02
CLI_PLUS_SHARE = 0.3
CLI_POOL = 1 << 17
# Numbers are a stem (a card prefix) and a tail of random digits from a pool; callers
# dial the same numbers again, so a pool is realistic as well as fast.
TAIL_POOL = 1 << 12
MAX_TAIL = 12
NO_PDD_SHARE = 0.03
NO_RELEASE_SHARE = 0.05
MIN_DURATION_MS = 100
MAX_DURATION_MS = 4 * 3600 * 1000
MAX_RING_MS = 30_000
MAX_PDD_MS = 30_000
# Traffic by UTC hour, as an international wholesale switch sees it.
HOURLY = (
    0.30, 0.25, 0.20, 0.20, 0.25, 0.35, 0.50, 0.70, 0.90, 1.00, 1.05, 1.05,
    1.00, 1.00, 1.05, 1.05, 1.00, 0.95, 0.90, 0.85, 0.75, 0.60, 0.50, 0.40,
)  # fmt: skip
WEEKEND = 0.7
# Calling numbers: (country code, share, national digits).
CLI_COUNTRIES = (
    ("1", 0.30, 10), ("44", 0.14, 10), ("49", 0.10, 10), ("33", 0.08, 9), ("34", 0.06, 9),
    ("39", 0.05, 10), ("91", 0.08, 10), ("52", 0.05, 10), ("55", 0.04, 11), ("234", 0.03, 10),
    ("880", 0.02, 10), ("61", 0.03, 9), ("86", 0.02, 11),
)  # fmt: skip
# Addresses calls come from when not from a customer's IP entry (SIP registrations, carriers).
OUTSIDE_NETS = ("100.64.0.0/10", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")

MALFORMED_KINDS = {
    "jsonl": ("truncated", "wrong_type", "missing_callid", "bad_sip_code", "letters", "bad_dt"),
    "csv": ("wrong_type", "missing_callid", "bad_sip_code", "letters", "bad_dt"),
    "parquet": ("negative_duration", "missing_callid", "bad_sip_code", "letters"),
}
BAD_DTS = ("2026-13-45T25:61:00Z", "yesterday", "02/11/2026 10:15:00", "0000-00-00T00:00:00Z")
BAD_DURATIONS = ("abc", "n/a", "1m20s")

# Parquet: the types of schemas.cdr; every column nullable (a broken record may lack one).
PARQUET_SCHEMA = pa.schema([f.with_nullable(True) for f in INPUT_FIELDS])
CSV_SCHEMA = pa.schema([pa.field(name, pa.string()) for name in INPUT_NAMES])

Progress = Callable[[int], None]


class LineSink(Protocol):
    """Where JSON lines go instead of a file: a stream such as a Kafka topic
    (``pipelines.kafka_out``). Lines arrive a chunk at a time, in order, ``\\n``-terminated, with
    each record's key beside it (customer_id, else source_ip: the partitioning of SPEC §8)."""

    def write(self, lines: pa.Array, keys: pa.Array) -> None: ...


def read_catalog(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """The catalog rows ``simulate`` needs; of the rate rows only card and prefix.

    Rate rows are read with one narrow query: a benchmark catalog holds hundreds of
    thousands, and their prices do not change the traffic.
    """
    import sqlalchemy as sa  # the store's, imported with it (``pipelines.cli.context``)

    from pipelines.catalog.tables import TABLES

    rows = {
        name: catalog.list(name)
        for name in ("customers", "providers", "rate_cards", "routes", "auth", "dids")
    }
    rates = TABLES["rates"]
    with catalog.transaction() as conn:
        result = conn.execute(sa.select(rates.c.card_id, rates.c.prefix))
        rows["rates"] = [{"card_id": c, "prefix": p} for c, p in result]
    return rows


def simulate(
    catalog_rows: Mapping[str, Sequence[Mapping[str, Any]]],
    count: int,
    out_path: Path | str | LineSink,
    seed: int = 0,
    duplicate_rate: float = 0.001,
    malformed_rate: float = 0.001,
    start: datetime = DEFAULT_START,
    days: int = 1,
    chunk: int = 500_000,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Write ``count`` simulated CDRs to ``out_path`` (.jsonl, .csv or .parquet); return counts.

    ``catalog_rows`` maps entity names to rows as ``Catalog.list`` (or ``read_catalog``)
    gives them. The same arguments always give the same bytes. ``progress`` is called with
    the number of records written after each chunk. ``out_path`` may instead be a
    ``LineSink``, which gets the JSON lines a .jsonl file would hold (``bytes`` then counts
    what was handed to it). The counts: ``records`` (lines or rows),
    ``duplicates``, ``malformed`` (and ``malformed_<kind>``), then over the remaining sound
    records ``answered``, ``inbound``, ``unknown_destinations``, ``by_ip``, ``by_user``,
    ``explicit_customer``, ``with_provider``; ``skipped_routes`` and ``bytes``.
    """
    path, sink = (Path(out_path), None) if isinstance(out_path, str | Path) else (None, out_path)
    fmt = FORMATS.get(path.suffix.lower()) if path is not None else "jsonl"
    if fmt is None:
        raise CdrflowError(
            f"{out_path}: cannot tell the format from the name; use .jsonl, .csv or .parquet"
        )
    if count < 0:
        raise CdrflowError(f"the count must be 0 or more, not {count}")
    for name, rate in (("duplicate", duplicate_rate), ("malformed", malformed_rate)):
        if not 0 <= rate <= 0.5:
            raise CdrflowError(f"the {name} rate must be between 0 and 0.5, not {rate}")
    if days < 1:
        raise CdrflowError(f"days must be 1 or more, not {days}")
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    chunk = max(1, min(chunk, MAX_CHUNK))
    kinds = MALFORMED_KINDS[fmt]

    plan = _build_plan(catalog_rows, seed)
    clock = _Clock(start, days, count)
    counts = dict.fromkeys(
        (
            *("records", "duplicates", "malformed", "answered", "inbound"),
            *("unknown_destinations", "by_ip", "by_user", "explicit_customer", "with_provider"),
        ),
        0,
    )
    counts.update({f"malformed_{k}": 0 for k in kinds})
    counts["records"] = count
    counts["skipped_routes"] = len(plan.skipped_routes)

    def write_all(writer: _Writer) -> None:
        for first in range(0, count, chunk):
            n = min(chunk, count - first)
            rng = np.random.default_rng([seed, first // chunk, 1])
            batch = _make_batch(plan, rng, first, n, clock, text_times=fmt != "parquet")
            broken, sources = _faults(rng, n, duplicate_rate, malformed_rate, kinds)
            _tally(counts, batch, broken, sources)
            writer.write(batch, plan, broken, sources, random.Random(int(rng.integers(2**62))))
            if progress is not None:
                progress(first + n)

    if path is None:
        with _Writer(fmt, None, sink) as writer:
            write_all(writer)
        counts["bytes"] = writer.bytes
        return counts
    out_path = path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    try:
        with _Writer(fmt, partial) as writer:
            write_all(writer)
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    counts["bytes"] = out_path.stat().st_size
    return counts


# -- the plan: everything decided once per catalog ---------------------------------------------


@dataclass
class _Combo:
    """One way traffic enters: a customer, a route (or a DID), and how the switch knows it."""

    weight: float
    mode: int  # index into MODES
    customer: int  # index into plan.customers
    stem_set: int  # the route's (or DID's) numbers
    ips: list[int]  # indices into plan.ips; may be empty
    user: int = -1  # index into plan.users
    switch: int = 0
    asr: float = 0.5
    plus_share: float = 0.0
    provider: int = -1  # fixed provider card (inbound to a DID), index into plan.provider_cards


@dataclass
class _StemSet:
    """The numbers one route (or DID) carries: beginnings, and their cumulative popularity."""

    head: str  # tech prefix and the digits the route strips
    digits: list[str]
    cumulative: np.ndarray
    exact: bool = False  # a DID: the number is the digits


@dataclass
class _Plan:
    """The catalog turned into flat arrays that a batch indexes with whole columns."""

    seed: int
    customers: list[str]
    users: list[str]
    ips: list[str]
    provider_cards: list[tuple[str, str]]  # (provider_id, card_id)
    skipped_routes: list[str]
    # Per combo.
    combo_alias: tuple[np.ndarray, np.ndarray]
    combo_set: np.ndarray
    combo_mode: np.ndarray
    combo_switch: np.ndarray
    combo_asr: np.ndarray
    combo_plus: np.ndarray
    combo_provider: np.ndarray
    combo_who_start: np.ndarray
    combo_who_count: np.ndarray
    # Who the switch says called: explicit customer, source address, SIP user (-1: absent).
    who_customer: np.ndarray
    who_ip: np.ndarray
    who_user: np.ndarray
    # Per stem set (a route's numbers, or a DID): positions in set_digits, and a guide table.
    set_exact: np.ndarray  # a DID: the number is the digits, nothing follows
    set_guide_start: np.ndarray
    set_guide_count: np.ndarray
    guide: np.ndarray  # where in set_digits to start looking, per slice of [0, 1)
    cumulative: np.ndarray  # per position: the set's number plus the cumulative popularity
    set_digits: np.ndarray  # per position: index into digit_text
    unknown: np.ndarray  # indices into digit_text of numbers under no card
    # Per distinct digit string that numbers start with.
    digit_text: pa.Array
    digit_length: np.ndarray
    digit_nanp: np.ndarray
    digit_unknown: np.ndarray
    digit_cover: np.ndarray  # (digits, provider cards) provider card indices, -1 padded
    digit_cover_count: np.ndarray
    # What comes before the digits: a tech prefix and stripped digits, or "+" (the last).
    heads: pa.Array
    combo_head: np.ndarray
    cli: pa.Array  # CLI_POOL calling numbers
    tails: pa.Array  # TAIL_POOL random digit strings of each length 0..MAX_TAIL


def _route_order(routes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(routes, key=lambda r: (r.get("priority") or 0, -len(r.get("tech_prefix") or "")))


def _route_number(route: Mapping[str, Any], dest: str) -> str | None:
    """The number ``route`` rates for ``dest`` (SPEC §5.1 step 2), or None if it does not match."""
    tech = route.get("tech_prefix") or ""
    if not dest.startswith(tech):
        return None
    rest = dest[len(tech) :]
    rest = rest[1:] if rest.startswith("+") else rest
    rest = rest[route.get("strip_digits") or 0 :]
    if not rest.isdigit():
        return None
    dial = route.get("dial_string") or ""
    if not dial:
        return rest
    if dial.startswith("^"):
        return rest if re.fullmatch(dial, rest) else None
    return rest if rest.startswith(tuple(dial.split("|"))) else None


def _may_capture(route: Mapping[str, Any], head: str) -> bool:
    """Whether ``route`` could match a number dialled as ``head`` + digits at all."""
    tech = route.get("tech_prefix") or ""
    return head.startswith(tech) or (tech.startswith(head) and tech[len(head) :].isdigit())


def _strip_fill(strip: int) -> str:
    # What customers put in front of international numbers: 00, 011, else zeros.
    return {2: "00", 3: "011"}.get(strip, "0" * strip)


def _route_stems(route: Mapping[str, Any], card_prefixes: list[str]) -> list[str]:
    """Number prefixes this route can carry that land on a prefix of its card."""
    dial = route.get("dial_string") or ""
    if not dial:
        return card_prefixes
    if dial.startswith("^"):
        pattern = re.compile(dial)
        kept = []
        for p in card_prefixes:
            if len(p) > 10:
                continue
            probes = (p + fill * (n - len(p)) for fill in "09" for n in (10, 11, 13))
            if all(pattern.fullmatch(x) for x in probes):
                kept.append(p)
        return kept
    wanted = tuple(dial.split("|"))
    known = set(card_prefixes)
    under = [p for p in card_prefixes if p.startswith(wanted)]
    # A dial prefix longer than the card's prefix of it: numbers start with the dial prefix.
    above = [d for d in wanted if d not in known and any(d[:k] in known for k in range(1, len(d)))]
    return sorted(set(under) | set(above))


def _popularity(digits: Sequence[str], seed: int) -> np.ndarray:
    """A heavy-tailed popularity per prefix: lognormal (sigma 2) from a hash of it and the seed,
    so that the same destinations are popular on every route."""
    texts = np.array(digits, dtype="U18")  # a longer prefix is as popular as its first 18 digits
    lengths = np.array([len(d) for d in digits], dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = texts.astype(np.uint64) * np.uint64(64) + lengths + np.uint64(seed % 2**32) * _GAMMA
        h1 = _mix64(key)
        h2 = _mix64(h1 + _GAMMA)
    u1 = ((h1 >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (h2 >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.exp(2.0 * np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2))


def _unknown_stems(prefixes: set[str], rnd: np.random.Generator, wanted: int = 24) -> list[str]:
    """Stems of 4 digits with no card prefix above or below them: numbers nobody rates."""
    below = {p[:k] for p in prefixes for k in range(1, min(len(p), 4) + 1)}
    found: list[str] = []
    for _ in range(4000):
        stem = "".join(str(d) for d in rnd.integers(0, 10, 4))
        if stem[0] == "0" or stem in found or stem in below:
            continue
        if any(stem[:k] in prefixes for k in range(1, 5)):
            continue
        found.append(stem)
        if len(found) == wanted:
            break
    return found


def _address_pool(network: str, rnd: np.random.Generator, size: int = 8) -> list[Any]:
    net = ipaddress.ip_network(network, strict=False)
    if net.num_addresses <= 2:
        return list(net)
    picks = sorted({int(x) for x in rnd.integers(1, net.num_addresses - 1, size=size)})
    return [net.network_address + p for p in picks]


def _provider_of(
    card: Mapping[str, Any],
    providers: Sequence[Mapping[str, Any]],
    dids: Sequence[Mapping[str, Any]],
) -> str | None:
    """The provider a cost card belongs to: a DID says so, else its id or name, else currency."""
    for d in dids:
        if d.get("provider_card_id") == card["card_id"] and d.get("provider_id"):
            return str(d["provider_id"])
    text = f"{card['card_id']} {card.get('name') or ''}".lower()
    for p in providers:
        if p["provider_id"].lower() in text or p["name"].lower() in text:
            return str(p["provider_id"])
    for p in providers:
        if p["currency"] == card.get("currency"):
            return str(p["provider_id"])
    return None


def _build_plan(rows: Mapping[str, Sequence[Mapping[str, Any]]], seed: int) -> _Plan:
    rnd = np.random.default_rng([seed, 0, 0])
    customer_rows = sorted(rows.get("customers", ()), key=lambda r: r["customer_id"])
    customers = [c["customer_id"] for c in customer_rows]
    cards = {r["card_id"]: r for r in rows.get("rate_cards", ())}
    prefix_sets: dict[str, set[str]] = {}
    for r in rows.get("rates", ()):
        prefix_sets.setdefault(r["card_id"], set()).add(r["prefix"])
    prefix_lists = {card: sorted(ps) for card, ps in prefix_sets.items()}
    routes = rows.get("routes", ())
    auth = rows.get("auth", ())
    dids = sorted(rows.get("dids", ()), key=lambda r: r["number"])
    providers = sorted(rows.get("providers", ()), key=lambda r: r["provider_id"])

    # Provider cards: the termination cards no route and no DID customer card uses.
    used = {r["card_id"] for r in routes} | {d["customer_card_id"] for d in dids}
    provider_cards: list[tuple[str, str]] = []
    for card_id in sorted(cards):
        if card_id in used or cards[card_id].get("direction") != "termination":
            continue
        provider = _provider_of(cards[card_id], providers, dids)
        if provider is not None:
            provider_cards.append((provider, card_id))
    for d in dids:
        if d.get("provider_id") and d.get("provider_card_id"):
            pair = (d["provider_id"], d["provider_card_id"])
            if pair not in provider_cards:
                provider_cards.append(pair)

    unknown = _unknown_stems(set().union(*prefix_sets.values()), rnd)
    ip_entries = [
        (a, ipaddress.ip_network(a["value"], strict=False)) for a in auth if a["kind"] == "ip"
    ]
    outside = [
        x
        for net in OUTSIDE_NETS
        for x in _address_pool(net, rnd, 48)
        if not any(x.version == n.version and x in n for _, n in ip_entries)
    ]
    ips: list[str] = []
    ip_index: dict[str, int] = {}

    def ip_ids(addresses: Sequence[Any]) -> list[int]:
        for address in addresses:
            if str(address) not in ip_index:
                ip_index[str(address)] = len(ips)
                ips.append(str(address))
        return [ip_index[str(a)] for a in addresses]

    def owners(address: Any, head: str) -> set[str]:
        """Customers the rater's IP match gives for a call from ``address`` dialling ``head``."""
        found = [
            (len(a.get("tech_prefix") or ""), a["customer_id"])
            for a, net in ip_entries
            if address.version == net.version
            and address in net
            and head.startswith(a.get("tech_prefix") or "")
        ]
        best = max((length for length, _ in found), default=-1)
        return {c for length, c in found if length == best}

    users = sorted({a["value"] for a in auth if a["kind"] == "user"})
    sets: list[_StemSet] = []
    combos: list[_Combo] = []
    skipped: list[str] = []
    carried: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}

    for ci, customer in enumerate(customer_rows):
        cid = customer["customer_id"]
        weight = float(rnd.lognormal(0.0, 1.0)) * STATUS_WEIGHT.get(customer["status"], 0.1)
        asr = float(np.clip(rnd.normal(0.5, 0.03), 0.45, 0.55))
        switch = int(rnd.integers(len(SWITCHES)))
        ordered = _route_order([r for r in routes if r["customer_id"] == cid])
        usable = []
        for k, route in enumerate(ordered):
            head = (route.get("tech_prefix") or "") + _strip_fill(route.get("strip_digits") or 0)
            # Routes of many customers share a card and a dial string: work them out once.
            shared = (route["card_id"], route.get("dial_string") or "")
            if shared not in carried:
                digits = _route_stems(route, prefix_lists.get(route["card_id"], []))
                popularity = _popularity(digits, seed) if digits else np.ones(0)
                carried[shared] = digits, np.cumsum(popularity) / max(popularity.sum(), 1e-300)
            digits, cumulative = carried[shared]
            rivals = [r for r in ordered[:k] if _may_capture(r, head)]
            if rivals:
                # Numbers that a route the rater tries first would take are not this route's.
                digits = [
                    d
                    for d in digits
                    if not any(
                        _route_number(r, head + d + "0" * max(0, 11 - len(d))) is not None
                        for r in rivals
                    )
                ]
                popularity = _popularity(digits, seed) if digits else np.ones(0)
                cumulative = np.cumsum(popularity) / max(popularity.sum(), 1e-300)
            if not digits:
                dial = route.get("dial_string") or "no dial string"
                skipped.append(f"{cid} -> {route['card_id']} ({dial})")
                continue
            sets.append(_StemSet(head, digits, cumulative))
            usable.append((route, head, len(sets) - 1))
        own_users = sorted(
            a["value"] for a in auth if a["kind"] == "user" and a["customer_id"] == cid
        )
        shares = rnd.uniform(0.5, 1.5, size=len(usable))
        for (route, head, stem_set), route_share in zip(usable, shares / shares.sum(), strict=True):
            tech = route.get("tech_prefix") or ""
            options: list[tuple[str, list[int], int]] = []
            for a, _ in ip_entries:
                entry_tech = a.get("tech_prefix") or ""
                if a["customer_id"] != cid or (entry_tech and not tech.startswith(entry_tech)):
                    continue
                pool = [x for x in _address_pool(a["value"], rnd) if owners(x, head) == {cid}]
                if pool:
                    options.append(("ip", ip_ids(pool), -1))
            for u in own_users:
                registration = [outside[int(i)] for i in rnd.integers(len(outside), size=2)]
                options.append(("user", ip_ids(registration), users.index(u)))
            # A switch that names the customer still received the call on one of its trunks.
            trunks = sorted({i for mode, pool_ids, _ in options if mode == "ip" for i in pool_ids})
            options.append(("explicit", trunks, -1))
            modes = {mode for mode, _, _ in options}
            total = sum(MODE_SHARES[m] for m in modes)
            for mode, pool_ids, user in options:
                alike = sum(1 for m, _, _ in options if m == mode)
                combos.append(
                    _Combo(
                        weight=weight * route_share * MODE_SHARES[mode] / total / alike,
                        mode=MODES.index(mode),
                        customer=ci,
                        stem_set=stem_set,
                        ips=pool_ids,
                        user=user,
                        switch=switch,
                        asr=asr,
                        plus_share=0.0 if head else PLUS_SHARE,
                    )
                )

    # Inbound calls to DIDs, from the DID carrier's addresses.
    inbound: list[_Combo] = []
    for d in dids:
        if d["customer_id"] not in customers:
            continue
        pair = (d.get("provider_id") or "", d.get("provider_card_id") or "")
        sets.append(_StemSet("", [d["number"]], np.ones(1), exact=True))
        carrier = [outside[int(i)] for i in rnd.integers(len(outside), size=2)]
        inbound.append(
            _Combo(
                weight=float(rnd.lognormal(0.0, 0.7)),
                mode=MODES.index("did"),
                customer=customers.index(d["customer_id"]),
                stem_set=len(sets) - 1,
                ips=ip_ids(carrier),
                switch=int(rnd.integers(len(SWITCHES))),
                asr=float(np.clip(rnd.normal(0.5, 0.03), 0.45, 0.55)),
                plus_share=DID_PLUS_SHARE,
                provider=provider_cards.index(pair) if pair in provider_cards else -1,
            )
        )
    if not combos and not inbound:
        raise CdrflowError(
            "the catalog has no customer with a route to a card that has rates, nor a DID, so "
            "there is no traffic to simulate; import a catalog first (cdrflow catalog import DIR)"
        )
    if inbound:
        # Scale the DIDs' weights so that they draw INBOUND_SHARE of all calls.
        outbound = sum(c.weight for c in combos)
        share = INBOUND_SHARE if combos else 1.0
        scale = (outbound / (1 - share) * share if combos else 1.0) / sum(c.weight for c in inbound)
        for c in inbound:
            c.weight *= scale
        combos += inbound

    cards_of_providers = [prefix_sets.get(card, set()) for _, card in provider_cards]
    stems = _stem_arrays(sets, unknown, cards_of_providers)
    set_head = stems.pop("set_head")
    return _Plan(
        seed=seed,
        customers=customers,
        users=users,
        ips=ips,
        provider_cards=provider_cards,
        skipped_routes=skipped,
        **_combo_arrays(combos),
        **stems,
        combo_head=set_head[[c.stem_set for c in combos]],
        cli=_cli_pool(rnd),
        tails=_tail_pool(rnd),
    )


def _combo_arrays(combos: Sequence[_Combo]) -> dict[str, Any]:
    weights = np.array([c.weight for c in combos])
    who = [
        (c.customer if MODES[c.mode] == "explicit" else -1, ip, c.user)
        for c in combos
        for ip in (c.ips or [-1])
    ]
    who_count = np.array([max(len(c.ips), 1) for c in combos], dtype=np.int64)
    return {
        "combo_alias": _alias(weights),
        "combo_set": np.array([c.stem_set for c in combos], dtype=np.int64),
        "combo_mode": np.array([c.mode for c in combos], dtype=np.int8),
        "combo_switch": np.array([c.switch for c in combos], dtype=np.int64),
        "combo_asr": np.array([c.asr for c in combos]),
        "combo_plus": np.array([c.plus_share for c in combos]),
        "combo_provider": np.array([c.provider for c in combos], dtype=np.int64),
        "combo_who_start": np.cumsum(who_count) - who_count,
        "combo_who_count": who_count,
        "who_customer": np.array([w[0] for w in who], dtype=np.int64),
        "who_ip": np.array([w[1] for w in who], dtype=np.int64),
        "who_user": np.array([w[2] for w in who], dtype=np.int64),
    }


def _stem_arrays(
    sets: Sequence[_StemSet], unknown: Sequence[str], cards: Sequence[set[str]]
) -> dict[str, Any]:
    """The sets back to back, over one table of distinct digit strings."""
    distinct: dict[str, int] = {}
    positions: list[np.ndarray] = []
    cumulative: list[np.ndarray] = []
    guides: list[np.ndarray] = []
    guide_start: list[int] = []
    guide_count: list[int] = []
    start = 0
    seen: dict[int, np.ndarray] = {}  # routes that share a card share their list of digits
    for k, stem_set in enumerate(sets):
        ids = seen.get(id(stem_set.digits))
        if ids is None:
            ids = np.array([distinct.setdefault(d, len(distinct)) for d in stem_set.digits])
            seen[id(stem_set.digits)] = ids
        positions.append(ids.astype(np.int64))
        cum = stem_set.cumulative.copy()
        cum[-1] = 1.0  # so that a search never runs past its own set
        cumulative.append(cum + k)
        # A guide table: where to start looking for each 1/size-wide slice of u.
        size = 4 * len(cum)
        guide_start.append(sum(guide_count))
        guide_count.append(size)
        guides.append(start + np.searchsorted(cum, np.arange(size) / size, side="right"))
        start += len(cum)
    unknown_ids = np.array([distinct.setdefault(d, len(distinct)) for d in unknown], np.int64)
    texts = list(distinct)
    is_unknown = np.zeros(len(texts), dtype=bool)
    is_unknown[unknown_ids] = True

    # Which provider cards have a prefix of each digit string.
    memos: list[dict[str, bool]] = [{} for _ in cards]

    def covered(j: int, d: str) -> bool:
        memo = memos[j]
        hit = memo.get(d)
        if hit is None:
            hit = memo[d] = d in cards[j] or (len(d) > 1 and covered(j, d[:-1]))
        return hit

    width = max(len(cards), 1)
    found = [
        [] if is_unknown[i] else [j for j in range(len(cards)) if covered(j, d)]
        for i, d in enumerate(texts)
    ]
    cover = np.array([f + [-1] * (width - len(f)) for f in found], dtype=np.int32)

    heads = sorted({s.head for s in sets})
    return {
        "set_exact": np.array([s.exact for s in sets], dtype=bool),
        "set_guide_start": np.array(guide_start, dtype=np.int64),
        "set_guide_count": np.array(guide_count, dtype=np.int64),
        "guide": np.concatenate(guides).astype(np.int64),
        "cumulative": np.concatenate(cumulative),
        "set_digits": np.concatenate(positions),
        "unknown": unknown_ids,
        "digit_text": pa.array(texts, pa.string()),
        "digit_length": np.array([len(t) for t in texts], dtype=np.int64),
        "digit_nanp": np.array([t.startswith("1") for t in texts], dtype=bool),
        "digit_unknown": is_unknown,
        "digit_cover": cover.reshape(len(texts), width),
        "digit_cover_count": np.array([len(f) for f in found], dtype=np.int64),
        "heads": pa.array([*heads, "+"], pa.string()),
        "set_head": np.array([heads.index(s.head) for s in sets], dtype=np.int64),
    }


def _tail_pool(rnd: np.random.Generator) -> pa.Array:
    """Random digit strings that complete numbers: TAIL_POOL of each length 0..MAX_TAIL."""
    length = np.repeat(np.arange(MAX_TAIL + 1), TAIL_POOL)
    matrix = rnd.integers(48, 58, size=(len(length), max(MAX_TAIL, 1)), dtype=np.uint8)
    return _spans(matrix, np.zeros_like(length), length)


def _cli_pool(rnd: np.random.Generator) -> pa.Array:
    """Calling numbers in E.164, some written with '+'."""
    codes = [c for c, _, _ in CLI_COUNTRIES]
    shares = np.array([s for _, s, _ in CLI_COUNTRIES])
    country = rnd.choice(len(codes), size=CLI_POOL, p=shares / shares.sum())
    width = 1 + max(len(c) + d for c, _, d in CLI_COUNTRIES)
    matrix = rnd.integers(48, 58, size=(CLI_POOL, width), dtype=np.uint8)
    matrix[:, 0] = ord("+")
    for k, code in enumerate(codes):
        rows = country == k
        matrix[np.ix_(rows, np.arange(1, 1 + len(code)))] = np.frombuffer(code.encode(), np.uint8)
        # No national number starts with 0 after the country code.
        matrix[rows, 1 + len(code)] = rnd.integers(49, 58, size=int(rows.sum()), dtype=np.uint8)
    lengths = np.array([len(c) + d for c, _, d in CLI_COUNTRIES])[country]
    start = np.where(rnd.random(CLI_POOL) < CLI_PLUS_SHARE, 0, 1)
    return _spans(matrix, start, 1 + lengths)


# -- byte-matrix strings -----------------------------------------------------------------------


def _fixed_strings(matrix: np.ndarray) -> pa.Array:
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(matrix))
    )


def _spans(matrix: np.ndarray, start: np.ndarray, end: np.ndarray) -> pa.Array:
    """Bytes ``start[i]:end[i]`` of row i of ``matrix``, as one string array."""
    columns = np.arange(matrix.shape[1])
    keep = (columns >= start[:, None]) & (columns < end[:, None])
    offsets = np.zeros(len(start) + 1, dtype=np.int32)
    np.cumsum(end - start, out=offsets[1:])
    return pa.StringArray.from_buffers(
        len(start), pa.py_buffer(offsets), pa.py_buffer(matrix[keep])
    )


def _table(texts: Sequence[str]) -> np.ndarray:
    """Equal-length texts as a byte matrix, one row each, for gathering by index."""
    return np.frombuffer("".join(texts).encode(), dtype=np.uint8).reshape(len(texts), -1)


_HEX = np.array([int.from_bytes(f"{b:02x}".encode(), "little") for b in range(256)], np.uint16)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Each value as ``width`` ASCII digits, zero-padded, one row each."""
    powers = 10 ** np.arange(width - 1, -1, -1)
    return (48 + values[:, None] // powers % 10).astype(np.uint8)


def _clock() -> np.ndarray:
    """'HH:MM:SS.' of every second of a day, one row each (built as numbers: formatting
    86,400 strings took a tenth of a second at every start of the command line)."""
    second = np.arange(86_400)
    colon, dot = (
        np.full((second.size, 1), ord(":"), np.uint8),
        np.full((second.size, 1), ord("."), np.uint8),
    )
    parts = [_digits(second // 3600, 2), colon, _digits(second // 60 % 60, 2), colon,
             _digits(second % 60, 2), dot]  # fmt: skip
    return np.ascontiguousarray(np.hstack(parts))


_CLOCK = _clock()
_MILLIS = _table([f"{ms:03d}Z" for ms in range(1000)])


def _alias(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table of ``weights`` (Vose's construction): O(1) draws of an index."""
    k = len(weights)
    scaled = np.asarray(weights, dtype=np.float64) * k / np.sum(weights)
    keep = np.ones(k)
    alias = np.arange(k)
    small = [i for i in range(k) if scaled[i] < 1.0]
    large = [i for i in range(k) if scaled[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        keep[s], alias[s] = scaled[s], g
        scaled[g] -= 1.0 - scaled[s]
        (small if scaled[g] < 1.0 else large).append(g)
    return keep, alias


def _draw(table: tuple[np.ndarray, np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
    keep, alias = table
    pick = (rng.random(n) * len(keep)).astype(np.int64)
    return np.where(rng.random(n) < keep[pick], pick, alias[pick])


def _mix64(z: np.ndarray) -> np.ndarray:
    # splitmix64's finaliser: a bijection of 64-bit integers that scatters its input.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    out: np.ndarray = z ^ (z >> np.uint64(31))
    return out


def _callids(rng: np.random.Generator, first: int, n: int, seed: int) -> np.ndarray:
    """uuid-like (n, 36) bytes: 64 random bits, then a bijective mix of (seed, position)."""
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed % 2**64], dtype=np.uint64) + _GAMMA)
        # Adding a key and multiplying by an odd constant are bijections too (mod 2**64).
        unique = _mix64((np.arange(first, first + n, dtype=np.uint64) + key) * _GAMMA)
    raw = np.empty((n, 16), dtype=np.uint8)
    raw[:, :8] = np.frombuffer(rng.bytes(8 * n), dtype=np.uint8).reshape(n, 8)
    raw[:, 8:] = unique.view(np.uint8).reshape(n, 8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # the version nibble of a uuid4
    hexed = _HEX[raw].view(np.uint8)
    out = np.empty((n, 36), dtype=np.uint8)
    out[:, 0:8] = hexed[:, 0:8]
    out[:, 9:13] = hexed[:, 8:12]
    out[:, 14:18] = hexed[:, 12:16]
    out[:, 19:23] = hexed[:, 16:20]
    out[:, 24:36] = hexed[:, 20:32]
    out[:, [8, 13, 18, 23]] = ord("-")
    return out


def _decimals(ms: np.ndarray) -> pa.Array:
    """Milliseconds as ``schemas.cdr.SECONDS`` decimals, from their 128-bit integers."""
    words = np.empty((len(ms), 2), dtype=np.int64)
    words[:, 0] = ms * 10 ** (SECONDS.scale - 3)
    words[:, 1] = np.where(ms < 0, -1, 0)
    return pa.Array.from_buffers(SECONDS, len(ms), [None, pa.py_buffer(words)])


# -- the clock ---------------------------------------------------------------------------------


class _Clock:
    """Start times of the ``count`` records: a diurnal curve, stratified so they come in order."""

    def __init__(self, start: datetime, days: int, count: int) -> None:
        self.start_ms = int(start.timestamp() * 1000)
        self.end_ms = self.start_ms + days * 86_400_000
        self.count = max(count, 1)
        hours = days * 24
        weights = np.empty(hours)
        for h in range(hours):
            moment = start + timedelta(hours=h)
            weights[h] = HOURLY[moment.hour] * (WEEKEND if moment.weekday() >= 5 else 1.0)
        self.cdf = np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        self.edges = self.start_ms + np.arange(hours + 1) * 3_600_000.0
        self.day0 = self.start_ms // 86_400_000
        first_day = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=self.day0)
        self.dates = _table(
            [(first_day + timedelta(days=d)).strftime("%Y-%m-%dT") for d in range(days + 2)]
        )

    def times(self, rng: np.random.Generator, first: int, n: int) -> np.ndarray:
        q = (np.arange(first, first + n) + rng.random(n)) / self.count
        ms = np.interp(q, self.cdf, self.edges) + rng.normal(0.0, 400.0, n)
        out: np.ndarray = np.clip(ms, self.start_ms, self.end_ms - 1).astype(np.int64)
        return out

    def text(self, ms: np.ndarray) -> np.ndarray:
        """``YYYY-MM-DDTHH:MM:SS.mmmZ`` for each time, as (n, 24) bytes."""
        out = np.empty((len(ms), 24), dtype=np.uint8)
        out[:, :11] = self.dates[ms // 86_400_000 - self.day0]
        out[:, 11:20] = _CLOCK[ms % 86_400_000 // 1000]
        out[:, 20:24] = _MILLIS[ms % 1000]
        return out


# -- one chunk of records ----------------------------------------------------------------------


@dataclass
class _Batch:
    callid: np.ndarray  # (n, 36) bytes
    ms: np.ndarray  # dt in epoch milliseconds
    dt: np.ndarray  # dt as (n, 24) bytes of ISO text; empty for Parquet, which needs none
    head: np.ndarray  # index into plan.heads: what is dialled before the number
    digit: np.ndarray  # index into plan.digit_text: how the number starts
    tail: np.ndarray  # index into plan.tails: how it ends
    cli: np.ndarray  # index into plan.cli, -1: withheld
    answered: np.ndarray
    duration_ms: np.ndarray  # 0 when not answered
    outcome: np.ndarray  # index into OUTCOMES
    release: np.ndarray  # bool: release_reason present
    pdd_ms: np.ndarray  # -1: absent
    ring_ms: np.ndarray
    who: np.ndarray  # index into plan.who_*
    customer: np.ndarray  # explicit customer_id, -1: absent
    ip: np.ndarray  # -1: absent
    user: np.ndarray  # -1: absent
    provider: np.ndarray  # provider card, -1: absent
    switch: np.ndarray
    mode: np.ndarray  # index into MODES
    unknown: np.ndarray


_FAILURE_ALIAS = _alias(np.array([f[4] for f in FAILURES]))
# Ring time by outcome, in ms: lognormal (median, sigma) or uniform (low, high); 0: no ringing.
_RING = {
    200: ("lognormal", 7_000.0, 0.6),
    480: ("uniform", 20_000.0, 30_000.0),
    487: ("lognormal", 10_000.0, 0.5),
    603: ("uniform", 2_000.0, 15_000.0),
}
_RING_LOG = np.array([_RING.get(o[0], ("", 0, 0))[0] == "lognormal" for o in OUTCOMES])
_RING_A = np.array([_RING.get(o[0], ("", 0.0, 0.0))[1] for o in OUTCOMES])
_RING_B = np.array([_RING.get(o[0], ("", 0.0, 0.0))[2] for o in OUTCOMES])
_CODES = np.array([o[0] for o in OUTCOMES], dtype=np.int64)


def _make_batch(
    plan: _Plan, rng: np.random.Generator, first: int, n: int, clock: _Clock, text_times: bool
) -> _Batch:
    combo = _draw(plan.combo_alias, rng, n)
    mode = plan.combo_mode[combo]

    # What was dialled: a stem of the route's set by popularity, or one nobody rates.
    stem_set = plan.combo_set[combo]
    u = rng.random(n)
    guide = plan.set_guide_start[stem_set] + (u * plan.set_guide_count[stem_set]).astype(np.int64)
    pos = plan.guide[guide]
    key = stem_set + u
    todo = np.flatnonzero(plan.cumulative[pos] <= key)
    while len(todo):
        pos[todo] += 1
        todo = todo[plan.cumulative[pos[todo]] <= key[todo]]
    digit = plan.set_digits[pos]
    exact = plan.set_exact[stem_set]
    lost = np.flatnonzero((rng.random(n) < UNKNOWN_SHARE) & ~exact)
    if len(plan.unknown):
        digit[lost] = plan.unknown[rng.integers(len(plan.unknown), size=len(lost))]
    digits = plan.digit_length[digit]
    length = rng.integers(10, 14, size=n)
    length = np.where(plan.digit_nanp[digit] & (digits <= 9), 11, length)
    length = np.where(exact, digits, np.maximum(length, digits + 2))
    tail = np.minimum(length - digits, MAX_TAIL) * TAIL_POOL + rng.integers(TAIL_POOL, size=n)
    plus = rng.random(n) < plan.combo_plus[combo]
    head = np.where(plus, len(plan.heads) - 1, plan.combo_head[combo])

    # Who called, and from where.
    cli = np.where(rng.random(n) < NO_CLI_SHARE, -1, rng.integers(CLI_POOL, size=n))
    who_count = plan.combo_who_count[combo]
    who = plan.combo_who_start[combo] + (rng.random(n) * who_count).astype(np.int64)
    switch = np.where(
        rng.random(n) < SAME_SWITCH_SHARE,
        plan.combo_switch[combo],
        rng.integers(len(SWITCHES), size=n),
    )

    # How it ended.
    answered = rng.random(n) < plan.combo_asr[combo]
    outcome = np.where(answered, 0, 1 + _draw(_FAILURE_ALIAS, rng, n))
    code = _CODES[outcome]
    talk = np.exp(rng.normal(math.log(60_000.0), 1.2, n))
    duration_ms = np.where(answered, np.clip(talk, MIN_DURATION_MS, MAX_DURATION_MS), 0)
    a, b, log = _RING_A[outcome], _RING_B[outcome], _RING_LOG[outcome]
    spread = np.exp(np.where(log, b, 0.0) * rng.standard_normal(n))
    ring = np.where(log, a * spread, a + (b - a) * rng.random(n))
    pdd = np.clip(np.exp(rng.normal(math.log(1500.0), 0.5, n)), 50, MAX_PDD_MS)

    # Which carrier took it: one whose card has a prefix of the number.
    options = plan.digit_cover_count[digit]
    choice = (rng.random(n) * options).astype(np.int64)
    provider = np.where(options > 0, plan.digit_cover[digit, choice], -1)
    provider = np.where(mode == MODES.index("did"), plan.combo_provider[combo], provider)
    provider = np.where(np.isin(code, NO_CARRIER_CODES), -1, provider)

    ms = clock.times(rng, first, n)
    return _Batch(
        callid=_callids(rng, first, n, plan.seed),
        ms=ms,
        dt=clock.text(ms) if text_times else np.zeros((0, 24), np.uint8),
        head=head,
        digit=digit,
        tail=tail,
        cli=cli,
        answered=answered,
        duration_ms=duration_ms.astype(np.int64),
        outcome=outcome,
        release=rng.random(n) >= NO_RELEASE_SHARE,
        pdd_ms=np.where(rng.random(n) < NO_PDD_SHARE, -1, pdd.astype(np.int64)),
        ring_ms=np.minimum(ring, MAX_RING_MS).astype(np.int64),
        who=who,
        customer=plan.who_customer[who],
        ip=plan.who_ip[who],
        user=plan.who_user[who],
        provider=provider,
        switch=switch,
        mode=mode,
        unknown=plan.digit_unknown[digit],
    )


# -- duplicates and malformed records ----------------------------------------------------------


def _faults(
    rng: np.random.Generator,
    n: int,
    duplicate_rate: float,
    malformed_rate: float,
    kinds: Sequence[str],
) -> tuple[dict[int, str], np.ndarray]:
    """Which records break (position -> kind) and where each record's text comes from.

    ``sources[i] != i`` makes record ``i`` an exact repeat of a sound record a few dozen
    records before it (a switch re-sending after a lost acknowledgement); the first records
    of a chunk have nothing before them and stay themselves.
    """
    draw = rng.random(n)
    malformed = np.flatnonzero(draw < malformed_rate)
    repeats = np.flatnonzero((draw >= malformed_rate) & (draw < malformed_rate + duplicate_rate))
    kind = rng.integers(len(kinds), size=len(malformed))
    broken = {int(i): kinds[k] for i, k in zip(malformed, kind, strict=True)}
    sources = np.arange(n)
    for i, back in zip(repeats, rng.geometric(1 / 40, size=len(repeats)), strict=True):
        j = int(i - back)
        while j >= 0 and j in broken:
            j -= 1
        if j >= 0:
            sources[i] = sources[j]
    return broken, sources


def _tally(
    counts: dict[str, int], batch: _Batch, broken: Mapping[int, str], sources: np.ndarray
) -> None:
    sound = sources == np.arange(len(sources))
    counts["duplicates"] += int(len(sources) - sound.sum())
    sound[list(broken)] = False
    counts["malformed"] += len(broken)
    for kind in broken.values():
        counts[f"malformed_{kind}"] += 1
    counts["answered"] += int(batch.answered[sound].sum())
    counts["inbound"] += int((batch.mode[sound] == MODES.index("did")).sum())
    counts["unknown_destinations"] += int(batch.unknown[sound].sum())
    for key, mode in (("by_ip", "ip"), ("by_user", "user"), ("explicit_customer", "explicit")):
        counts[key] += int((batch.mode[sound] == MODES.index(mode)).sum())
    counts["with_provider"] += int((batch.provider[sound] >= 0).sum())


def _with_letters(number: str, rnd: random.Random) -> str:
    """A number as a careless system spells it: a digit read as a letter, or a SIP URI."""
    if rnd.random() < 0.3:
        return f"sip:{number}@{rnd.choice(('pbx', 'gw1', 'sbc'))}.example.net"
    pos = rnd.randrange(max(len(number) - 8, 0), len(number))
    return number[:pos] + rnd.choice("OIlSBZ") + number[pos + 1 :]


def _break_json(line: str, kind: str, rnd: random.Random) -> str:
    if kind == "truncated":
        # The writer died mid-line: no closing brace, often mid-string.
        return line[: rnd.randrange(10, max(len(line) - 2, 11))] + "\n"
    record = json.loads(line)
    if kind == "wrong_type":
        record[_F.duration] = rnd.choice(BAD_DURATIONS)
    elif kind == "missing_callid":
        del record[_F.callid]
    elif kind == "bad_sip_code":
        record[_F.sip_code] = 999
    elif kind == "letters":
        record[_F.dest_number] = _with_letters(record[_F.dest_number], rnd)
    else:
        record[_F.dt] = rnd.choice(BAD_DTS)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"


def _break_columns(
    columns: dict[str, pa.Array], broken: Mapping[int, str], rnd: random.Random
) -> dict[str, pa.Array]:
    edits: dict[str, list[tuple[int, Any]]] = {}
    for i in sorted(broken):
        kind = broken[i]
        if kind == "wrong_type":
            edits.setdefault(_F.duration, []).append((i, rnd.choice(BAD_DURATIONS)))
        elif kind == "negative_duration":
            value = -Decimal(rnd.randrange(1000, 120_000)) / 1000
            edits.setdefault(_F.duration, []).append((i, value))
        elif kind == "missing_callid":
            edits.setdefault(_F.callid, []).append((i, None))
        elif kind == "bad_sip_code":
            text = pa.types.is_string(columns[_F.sip_code].type)
            edits.setdefault(_F.sip_code, []).append((i, "999" if text else 999))
        elif kind == "letters":
            number = columns[_F.dest_number][i].as_py()
            edits.setdefault(_F.dest_number, []).append((i, _with_letters(number, rnd)))
        else:
            edits.setdefault(_F.dt, []).append((i, rnd.choice(BAD_DTS)))
    out = dict(columns)
    for name, changes in edits.items():
        mask = np.zeros(len(columns[name]), dtype=bool)
        mask[[i for i, _ in changes]] = True
        values = pa.array([v for _, v in changes], columns[name].type)
        out[name] = pc.replace_with_mask(columns[name], pa.array(mask), values)
    return out


# -- output ------------------------------------------------------------------------------------


class _Names:
    """Field names, looked up in ``schemas.cdr`` so that a renamed field fails at import."""

    def __getattr__(self, name: str) -> str:
        if name not in INPUT_NAMES:
            raise AttributeError(f"{name} is not a CDR field of schemas.cdr")
        return name


_F = _Names()
# JSON pieces, in SPEC order: fields that come from one pool are written by one take.
_JSON_GROUPS = (
    (_F.callid, _F.dt, _F.dest_number),
    (_F.source_cli,),
    (_F.duration,),
    (_F.sip_code, _F.sip_reason, _F.release_reason),
    (_F.pdd_ms,),
    (_F.ring_duration,),
    (_F.customer_id,),
    (_F.source_ip,),
    (_F.sip_user,),
    (_F.provider_id, _F.provider_card_id),
    (_F.switch, _F.direction),
)
if tuple(name for group in _JSON_GROUPS for name in group) != INPUT_NAMES:
    raise RuntimeError("pipelines.simulate writes JSON fields out of the order of schemas.cdr")


def _member(name: str, value: Any, raw: bool = False) -> str:
    return f"{json.dumps(name)}:{value if raw else json.dumps(value, ensure_ascii=False)}"


def _object_part(names: Sequence[str], values: Sequence[Any], raw: Sequence[str] = ()) -> str:
    """``,"a":1,"b":"x"`` for the values that are present."""
    return "".join(
        "," + _member(k, v, k in raw) for k, v in zip(names, values, strict=True) if v is not None
    )


def _take(pool: pa.Array, idx: np.ndarray) -> pa.Array:
    """``pool[idx]``, null where ``idx`` is negative."""
    if len(pool) == 0:
        return pa.nulls(len(idx), pool.type)
    return pool.take(pa.array(np.maximum(idx, 0), mask=idx < 0))


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


class _Pools:
    """Every text a record can hold but its callid, time and numbers, made once per file."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.sip_code = pa.array([str(o[0]) for o in OUTCOMES])
        self.sip_reason = pa.array([o[1] for o in OUTCOMES])
        self.release_reason = pa.array([_outcome_values(o, True)[2] for o in range(len(OUTCOMES))])
        self.ms = pa.array([_seconds(ms) for ms in range(max(MAX_RING_MS, MAX_PDD_MS) + 1)])
        self.whole = pa.array([str(s) for s in range(MAX_DURATION_MS // 1000 + 1)])
        self.fraction = pa.array([f".{ms:03d}" for ms in range(1000)])
        self.integers = pa.array([str(i) for i in range(MAX_PDD_MS + 1)])
        self.customers = pa.array(plan.customers, pa.string())
        self.ips = pa.array(plan.ips, pa.string())
        self.users = pa.array(plan.users, pa.string())
        self.providers = pa.array([p for p, _ in plan.provider_cards], pa.string())
        self.provider_cards = pa.array([c for _, c in plan.provider_cards], pa.string())
        self.switches = pa.array(SWITCHES)
        self.directions = pa.array(DIRECTIONS)

    def keys(self, batch: _Batch) -> pa.Array:
        """Each record's stream key (SPEC §8): its customer_id when the switch names the
        customer, else its source_ip, so that one customer's calls stay in one partition."""
        return pc.coalesce(_take(self.customers, batch.customer), _take(self.ips, batch.ip))

    def columns(self, batch: _Batch, typed: bool) -> dict[str, pa.Array]:
        """One array per field: texts for CSV, or the types of ``PARQUET_SCHEMA``."""
        plan = self.plan
        release = np.where(batch.release, batch.outcome, -1)
        inbound = (batch.mode == MODES.index("did")).astype(np.int64)
        columns = {
            _F.callid: _fixed_strings(batch.callid),
            _F.dest_number: pc.binary_join_element_wise(
                plan.heads.take(pa.array(batch.head)),
                plan.digit_text.take(pa.array(batch.digit)),
                plan.tails.take(pa.array(batch.tail)),
                "",
            ),
            _F.source_cli: _take(plan.cli, batch.cli),
            _F.sip_reason: _take(self.sip_reason, batch.outcome),
            _F.release_reason: _take(self.release_reason, release),
            _F.customer_id: _take(self.customers, batch.customer),
            _F.source_ip: _take(self.ips, batch.ip),
            _F.sip_user: _take(self.users, batch.user),
            _F.provider_id: _take(self.providers, batch.provider),
            _F.provider_card_id: _take(self.provider_cards, batch.provider),
            _F.switch: _take(self.switches, batch.switch),
            _F.direction: _take(self.directions, inbound),
        }
        if typed:
            columns[_F.dt] = pa.array(batch.ms * 1000, PARQUET_SCHEMA.field(_F.dt).type)
            columns[_F.duration] = _decimals(batch.duration_ms)
            columns[_F.sip_code] = pa.array(
                _CODES[batch.outcome], PARQUET_SCHEMA.field(_F.sip_code).type
            )
            columns[_F.pdd_ms] = pa.array(
                batch.pdd_ms, PARQUET_SCHEMA.field(_F.pdd_ms).type, mask=batch.pdd_ms < 0
            )
            columns[_F.ring_duration] = _decimals(batch.ring_ms)
        else:
            columns[_F.dt] = _fixed_strings(batch.dt)
            fraction = np.where(batch.answered, batch.duration_ms % 1000, -1)
            columns[_F.duration] = pc.binary_join_element_wise(
                _take(self.whole, batch.duration_ms // 1000),
                _take(self.fraction, fraction),
                "",
                null_handling="skip",
            )
            columns[_F.sip_code] = _take(self.sip_code, batch.outcome)
            columns[_F.pdd_ms] = _take(self.integers, batch.pdd_ms)
            columns[_F.ring_duration] = _take(self.ms, batch.ring_ms)
        return {name: columns[name] for name in INPUT_NAMES}


class _JsonPools(_Pools):
    """The same texts as JSON members, in pieces joined without a separator.

    Fields next to each other that come from one small pool are one piece (who called:
    customer_id, source_ip and sip_user; the carrier, switch and direction; the milliseconds
    of the duration and the outcome), since every piece costs a ``take`` and a join pass.
    """

    def __init__(self, plan: _Plan) -> None:
        super().__init__(plan)
        # The CLI piece also closes dest_number's string, so that it is never empty.
        self.cli_pieces = pa.concat_arrays(
            [
                pc.binary_join_element_wise(f'","{_F.source_cli}":"', plan.cli, '"', ""),
                pa.array(['"']),
            ]
        )
        self.durations = pa.array([f',"{_F.duration}":{s}' for s in range(len(self.whole))])
        outcome = (_F.sip_code, _F.sip_reason, _F.release_reason)
        # Answered: the milliseconds, then the outcome; not answered: a duration of 0 first.
        self.endings = pa.array(
            [
                f".{ms:03d}" + _object_part(outcome, _outcome_values(0, release), (_F.sip_code,))
                for ms in range(1000)
                for release in (False, True)
            ]
            + [
                f',"{_F.duration}":0'
                + _object_part(outcome, _outcome_values(o, release), (_F.sip_code,))
                for o in range(len(OUTCOMES))
                for release in (False, True)
            ]
        )
        self.pdds = pa.array([f',"{_F.pdd_ms}":{i}' for i in range(MAX_PDD_MS + 1)])
        self.rings = pa.array(
            [f',"{_F.ring_duration}":{_seconds(ms)}' for ms in range(len(self.ms))]
        )
        self.who = pa.array(
            [
                _object_part(
                    (_F.customer_id, _F.source_ip, _F.sip_user),
                    (
                        plan.customers[c] if c >= 0 else None,
                        plan.ips[i] if i >= 0 else None,
                        plan.users[u] if u >= 0 else None,
                    ),
                )
                for c, i, u in zip(plan.who_customer, plan.who_ip, plan.who_user, strict=True)
            ],
            pa.string(),
        )
        self.closings = pa.array(
            [
                _object_part(
                    (_F.provider_id, _F.provider_card_id, _F.switch, _F.direction),
                    (*(pair or (None, None)), s, d),
                )
                + "}\n"
                for pair in [None, *plan.provider_cards]
                for s in SWITCHES
                for d in DIRECTIONS
            ]
        )
        texts = f'{{"{_F.callid}":"', f'","{_F.dt}":"', f'","{_F.dest_number}":"'
        self.opening = [np.frombuffer(t.encode(), dtype=np.uint8) for t in texts]

    def lines(self, batch: _Batch) -> pa.Array:
        """One compact JSON object per record, ``\n``-terminated; absent fields left out."""
        n = len(batch.tail)
        # The fixed-width start of every line, callid and dt included, as one byte matrix.
        a, b, c = self.opening
        opening = np.empty((n, len(a) + 36 + len(b) + 24 + len(c)), dtype=np.uint8)
        at = 0
        for part in (a, batch.callid, b, batch.dt, c):
            width = part.shape[-1]
            opening[:, at : at + width] = part
            at += width
        cli = np.where(batch.cli < 0, len(self.plan.cli), batch.cli)
        ending = (
            np.where(
                batch.answered,
                (batch.duration_ms % 1000) * 2,
                2000 + batch.outcome * 2,
            )
            + batch.release
        )
        inbound = (batch.mode == MODES.index("did")).astype(np.int64)
        closing = ((batch.provider + 1) * len(SWITCHES) + batch.switch) * 2 + inbound
        pieces = [
            _fixed_strings(opening),
            self.plan.heads.take(pa.array(batch.head)),
            self.plan.digit_text.take(pa.array(batch.digit)),
            self.plan.tails.take(pa.array(batch.tail)),
            self.cli_pieces.take(pa.array(cli)),
            _take(self.durations, np.where(batch.answered, batch.duration_ms // 1000, -1)),
            self.endings.take(pa.array(ending)),
            _take(self.pdds, batch.pdd_ms),
            self.rings.take(pa.array(batch.ring_ms)),
            self.who.take(pa.array(batch.who)),
            self.closings.take(pa.array(closing)),
        ]
        return pc.binary_join_element_wise(*pieces, "", null_handling="skip")


def _outcome_values(outcome: int, release: bool) -> tuple[Any, ...]:
    code, phrase, cause, name, _ = OUTCOMES[outcome]
    return code, phrase, f'Q.850;cause={cause};text="{name}"' if release else None


_FEW_VALUES = [
    *(_F.sip_code, _F.sip_reason, _F.release_reason, _F.customer_id, _F.source_ip, _F.sip_user),
    *(_F.provider_id, _F.provider_card_id, _F.switch, _F.direction),
]


class _Writer:
    """Writes chunks in one format to a file (the caller renames it when complete), or JSON
    lines to a sink."""

    def __init__(self, fmt: str, path: Path | None, sink: LineSink | None = None) -> None:
        self.fmt = fmt
        self.path = path
        self.sink = sink
        self.bytes = 0
        self._pools: _Pools | None = None
        self._file: Any = None
        self._csv: pacsv.CSVWriter | None = None
        self._parquet: pq.ParquetWriter | None = None

    def __enter__(self) -> _Writer:
        if self.sink is not None:
            return self
        assert self.path is not None
        if self.fmt == "parquet":
            # Dictionaries only where values repeat: on callids and numbers they cost time.
            self._parquet = pq.ParquetWriter(
                self.path, PARQUET_SCHEMA, use_dictionary=_FEW_VALUES, compression="zstd"
            )
        else:
            self._file = self.path.open("wb")
            if self.fmt == "csv":
                self._csv = pacsv.CSVWriter(self._file, CSV_SCHEMA)
        return self

    def __exit__(self, *exc: object) -> None:
        for closing in (self._parquet, self._csv, self._file):
            if closing is not None:
                closing.close()

    def write(
        self,
        batch: _Batch,
        plan: _Plan,
        broken: Mapping[int, str],
        sources: np.ndarray,
        rnd: random.Random,
    ) -> None:
        repeats = bool((sources != np.arange(len(sources))).any())
        if self.fmt == "jsonl":
            if self._pools is None:
                self._pools = _JsonPools(plan)
            assert isinstance(self._pools, _JsonPools)
            lines = self._pools.lines(batch)
            if broken:
                mask = np.zeros(len(lines), dtype=bool)
                mask[list(broken)] = True
                fixed = [_break_json(lines[i].as_py(), broken[i], rnd) for i in sorted(broken)]
                lines = pc.replace_with_mask(lines, pa.array(mask), pa.array(fixed, pa.string()))
            if repeats:
                lines = lines.take(pa.array(sources))
            if self.sink is not None:
                self.bytes += len(_joined(lines))
                self.sink.write(lines, self._pools.keys(batch).take(pa.array(sources)))
                return
            self._file.write(_joined(lines))
            return
        if self._pools is None:
            self._pools = _Pools(plan)
        columns = self._pools.columns(batch, typed=self.fmt == "parquet")
        columns = _break_columns(columns, broken, rnd)
        schema = PARQUET_SCHEMA if self.fmt == "parquet" else CSV_SCHEMA
        table = pa.Table.from_arrays([columns[n] for n in INPUT_NAMES], schema=schema)
        if repeats:
            table = table.take(pa.array(sources))
        if self._parquet is not None:
            self._parquet.write_table(table)
        else:
            assert self._csv is not None
            self._csv.write_table(table)


def _joined(lines: pa.Array) -> memoryview:
    """The bytes of all strings of ``lines`` back to back, without copying them."""
    _, offsets, data = lines.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return memoryview(data)[int(bounds[0]) : int(bounds[-1])]
