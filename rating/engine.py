"""The rating engine's wrappers: Arrow columns in, kernels run, Arrow columns out.

Rating is two steps so that packages can be drawn in (dt, callid) order across a whole run:
``price`` resolves who pays, the route, the rate row, billed seconds and the provider leg of
one batch; ``finish`` draws packages over any number of priced batches (concatenated) and
computes charge, tax and profit exactly, producing rated CDRs (``schemas.cdr.RATED``).
``price`` reads a batch through its ``Columns`` (``find`` does the work): Arrow's, or for a
batch of a few calls their values as Python lists, Arrow's fixed cost per compute call
being most of the time there; authorization makes a handful of calls into ``Columns``
without Arrow at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from rating import kernels
from rating.modes import Rounding, round_ratio
from rating.tables import EPOCH, Tables, Texts
from schemas.cdr import INPUT_NAMES, MONEY, PACKAGE_DRAW, RATED, TIME
from schemas.errors import CdrflowError

I64 = npt.NDArray[np.int64]
DAY_US = 86_400_000_000  # microseconds in a day


@dataclass
class Priced:
    """One or more batches after ``price``: the validated input and what rating found."""

    batch: pa.Table  # validated input columns (schemas.cdr.INPUT)
    reason: npt.NDArray[np.object_]  # None, or the reject reason
    customer: I64
    card: I64
    start: I64  # where the rated number starts in dest_number
    row: I64  # rate row, -1 none
    billed: I64
    provider_card: I64
    provider_row: I64
    provider_billed: I64
    days: I64  # UTC day of dt, days since 1970-01-01

    def __len__(self) -> int:
        return int(self.batch.num_rows)

    def select(self, mask: npt.NDArray[np.bool_]) -> Priced:
        """The rows where ``mask`` is true, in their order (Arrow's filter copies a third
        less than a take of their indices)."""
        arrays = {f.name: getattr(self, f.name)[mask] for f in fields(self) if f.name != "batch"}
        return Priced(batch=self.batch.filter(pa.array(mask)), **arrays)


def texts(tables: Tables, name: str) -> pa.Array:
    """A list of names of the compiled tables as an Arrow array, built once per catalog
    version (rate rows number in the hundreds of thousands)."""
    cached = tables.extra.get(name)
    if cached is None:
        values = getattr(tables, name)
        if isinstance(values, Texts) and len(values):  # the bytes as they are, not decoded
            offsets, data = pa.py_buffer(values.strings.offsets), pa.py_buffer(values.strings.data)
            large = pa.LargeStringArray.from_buffers(len(values), offsets, data)
            cached = large.cast(pa.string())
        else:
            cached = pa.array(list(values) or [""], pa.string())
        tables.extra[name] = cached
    return cached


# A column this short is read through a Python list: for a few values (an authorization
# batch) Arrow's cost per call, tens of microseconds, is most of the time. The same values
# either way (tests/rating/test_engine_small.py).
SMALL = 64

# A text column as ``price`` reads it: Arrow's, or a short batch's values as a Python list.
Column: TypeAlias = pa.ChunkedArray | pa.Array | list[str | None]


def _strings(column: Column) -> tuple[I64, npt.NDArray[np.uint8]]:
    """Strings as (int64 offsets, uint8 data) (Arrow's buffers), nulls as empty strings."""
    if isinstance(column, list) or len(column) <= SMALL:
        values = column if isinstance(column, list) else column.to_pylist()
        encoded = [(v or "").encode() for v in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(v) for v in encoded], out=offsets[1:])
        joined = bytearray(b"".join(encoded))  # writable, as Arrow's are: one compiled kernel
        return offsets, np.frombuffer(joined, np.uint8) if joined else np.zeros(1, np.uint8)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    array = pc.fill_null(array, "").cast(pa.large_string())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[array.offset : array.offset + len(array) + 1]
    data = (
        np.frombuffer(data_buf, np.uint8)
        if data_buf is not None and data_buf.size
        else np.zeros(1, np.uint8)
    )
    return offsets, data


def _micro(column: pa.ChunkedArray) -> I64:
    """A decimal(18,6) column as int64 millionths (nulls as 0), without a float in between."""
    array = pc.fill_null(column, Decimal(0)).combine_chunks()
    words = np.frombuffer(array.buffers()[1], np.int64)
    # A decimal128 is two little-endian words; values below 2^63 live in the low one.
    return words[2 * array.offset : 2 * (array.offset + len(array)) : 2].copy()


def _times(column: pa.ChunkedArray) -> I64:
    times: I64 = column.cast(pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64)
    return times


def utc_days(column: pa.ChunkedArray) -> I64:
    """The UTC day of each time (``schemas.cdr.TIME``), in days since 1970-01-01."""
    return np.floor_divide(_times(column), DAY_US)


TEXT_COLUMNS = ("dest_number", "direction", "customer_id", "source_ip", "sip_user",
                "provider_card_id")  # fmt: skip


@dataclass(frozen=True)
class Columns:
    """What ``price`` reads of a batch of calls: its text columns (``TEXT_COLUMNS``, nulls
    as None), each Arrow's or, for a batch of at most ``SMALL`` calls, a Python list; each
    call's time in µs since the epoch, whether it was answered (sip_code 200) and its
    duration in millionths of a second. Authorization makes them from its requests at once
    (no Arrow at all: most of the cost of pricing a handful of calls)."""

    dest_number: Column
    direction: Column
    customer_id: Column
    source_ip: Column
    sip_user: Column
    provider_card_id: Column
    times: I64
    answered: npt.NDArray[np.bool_]
    duration: I64

    def __len__(self) -> int:
        return int(self.times.size)

    @staticmethod
    def of(batch: pa.Table) -> Columns:
        """The columns of a validated batch (``schemas.cdr.INPUT``)."""
        if batch.num_rows > SMALL:
            return Columns(
                **{name: batch[name] for name in TEXT_COLUMNS},
                times=_times(batch["dt"]),
                answered=pc.fill_null(pc.equal(batch["sip_code"], 200), False).to_numpy(
                    zero_copy_only=False
                ),
                duration=_micro(batch["duration"]),
            )
        durations = batch["duration"].to_pylist()
        return Columns(
            **{name: batch[name].to_pylist() for name in TEXT_COLUMNS},
            times=_times(batch["dt"]),
            answered=np.array([code == 200 for code in batch["sip_code"].to_pylist()], np.bool_),
            duration=np.array(  # decimal(18,6): exact in millionths
                [0 if d is None else int(d.scaleb(6)) for d in durations], np.int64
            ),
        )


class Found(NamedTuple):
    """What ``price`` finds for each call (``Priced``'s arrays, in its order)."""

    reason: npt.NDArray[np.object_]
    customer: I64
    card: I64
    start: I64
    row: I64
    billed: I64
    provider_card: I64
    provider_row: I64
    provider_billed: I64
    days: I64


def price(tables: Tables, batch: pa.Table, auth_entry: I64 | None = None) -> Priced:
    """Resolve, route and bill every CDR of a validated batch (SPEC §5.1-§5.2 without packages).
    ``auth_entry``, when given (n int64), is filled with the auth entry that identified each
    call (its index in the compiled tables), or -1: what authorization's per-entry limits
    need, found by the same resolution that finds the customer."""
    return Priced(batch, *find(tables, Columns.of(batch), auth_entry))


def find(tables: Tables, columns: Columns, auth_entry: I64 | None = None) -> Found:
    """``price`` of the calls' ``Columns``."""
    n = len(columns)
    dest = columns.dest_number
    offsets, data = _strings(dest)
    customer = np.full(n, -1, np.int64)
    card = np.full(n, -1, np.int64)
    start = np.zeros(n, np.int64)
    provider_card = np.full(n, -1, np.int64)
    # 1a. Inbound calls to a DID: the DID's customer and card, the number as it is.
    hit = np.zeros(n, bool)
    inbound = _equals(columns.direction, "inbound") if tables.did_numbers else hit
    if inbound.any():
        rows = np.flatnonzero(inbound)
        did_np, plus = _dids(tables, dest, rows)
        found = did_np >= 0
        rows, did_np = rows[found], did_np[found]
        hit[rows] = True
        customer[rows] = tables.did_customer[did_np]
        card[rows] = tables.did_card[did_np]
        start[rows] = plus[found]
        provider_card[rows] = tables.did_provider_card[did_np]
    # 1b. An explicit customer_id must name a customer.
    given = _index_of(columns.customer_id, tables.customer_index)
    named = (given != -1) & ~hit
    customer[named] = given[named]  # -2, an unknown customer, stays unresolved
    # 1c-d. Auth by source IP, then by SIP user.
    pending = ~hit & ~named
    if auth_entry is not None:
        auth_entry[:] = -1
    if pending.any():
        out = np.where(pending, -1, customer)
        if auth_entry is None:
            _resolve_auth(tables, columns, offsets, data, tables.auth_customer, out)
        else:  # the entries themselves (an identity), then their customers
            _resolve_auth(tables, columns, offsets, data, _entry_ids(tables), out)
            auth_entry[pending] = out[pending]
            found = pending & (out >= 0)
            out[found] = tables.auth_customer[out[found]]
        customer = np.where(pending, out, customer)
    reason = np.full(n, None, dtype=object)
    reason[customer < 0] = "unknown_customer"
    # 2. Routes, for calls that are not to a DID.
    routed = (customer >= 0) & ~hit
    if routed.any():
        route_customers = np.where(routed, customer, -1)
        regex_ok = _regex_matches(tables, dest, route_customers)
        rt, dial = tables.route_tech_prefix, tables.dial_prefixes
        route_card = np.full(n, -1, np.int64)
        route_start = np.zeros(n, np.int64)
        kernels.choose_route(
            offsets,
            data,
            route_customers,
            tables.route_first,
            tables.route_count,
            tables.route_card,
            rt.offsets,
            rt.data,
            tables.route_strip,
            tables.route_dial_kind,
            tables.route_dial_first,
            tables.route_dial_count,
            dial.offsets,
            dial.data,
            tables.route_regex_col,
            regex_ok,
            route_card,
            route_start,
        )
        card = np.where(routed, route_card, card)
        start = np.where(routed, route_start, start)
        reason[routed & (route_card < 0)] = "no_route"
    # 3. The rate row (longest prefix effective at dt) and billed seconds.
    times, answered, duration = columns.times, columns.answered, columns.duration
    row, billed = leg(tables, offsets, data, start, card, times, answered, duration)
    reason[(reason == None) & (row < 0)] = "no_rate"  # noqa: E711 - numpy elementwise
    # The provider leg: the CDR's provider card (else a DID's), same number, own rules.
    named_card = _index_of(columns.provider_card_id, tables.card_index)
    provider_card = np.where(
        named_card >= 0, named_card, np.where(named_card == -2, -1, provider_card)
    )
    provider_card = np.where(reason == None, provider_card, -1)  # noqa: E711
    provider_row, provider_billed = leg(
        tables, offsets, data, start, provider_card, times, answered, duration
    )
    days = np.floor_divide(times, DAY_US)
    return Found(
        reason,
        customer,
        card,
        start,
        row,
        billed,
        provider_card,
        provider_row,
        provider_billed,
        days,
    )


def _equals(column: Column, value: str) -> npt.NDArray[np.bool_]:
    """Which values equal ``value`` (nulls do not)."""
    if isinstance(column, list):
        return np.array([v == value for v in column], np.bool_)
    equal: npt.NDArray[np.bool_] = pc.fill_null(pc.equal(column, value), False).to_numpy(
        zero_copy_only=False
    )
    return equal


def _dids(tables: Tables, dest: Column, rows: I64) -> tuple[I64, I64]:
    """For the numbers at ``rows``: the DID each is, without a leading "+" (-1: none), and
    whether it had the "+" (1) or not (0): where the rated number starts."""
    if isinstance(dest, list):
        index = _did_index(tables)
        plus = [1 if (dest[r] or "").startswith("+") else 0 for r in rows.tolist()]
        dids = [index.get((dest[r] or "")[p:], -1) if dest[r] is not None else -1
                for r, p in zip(rows.tolist(), plus, strict=True)]  # fmt: skip
        return np.array(dids, np.int64), np.array(plus, np.int64)
    numbers = dest.take(pa.array(rows))
    has_plus = pc.fill_null(pc.starts_with(numbers, "+"), False)
    bare = pc.if_else(has_plus, pc.utf8_slice_codeunits(numbers, 1), numbers)
    did = pc.index_in(bare, value_set=texts(tables, "did_numbers"))
    did_np = pc.fill_null(did, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return did_np, has_plus.to_numpy(zero_copy_only=False).astype(np.int64)


def _did_index(tables: Tables) -> dict[str, int]:
    """Each DID number's index (its first, as Arrow's ``index_in`` finds it); kept with
    the tables."""
    index: dict[str, int] | None = tables.extra.get("did_index")
    if index is None:
        index = {}
        for i, number in enumerate(tables.did_numbers):
            index.setdefault(number, i)
        tables.extra["did_index"] = index
    return index


def _resolve_auth(
    tables: Tables, columns: Columns, offsets: I64, data: Any, values: I64, out: I64
) -> None:
    """SPEC §5.1 step 1 by auth: for each call with ``out[i] < 0``, ``values[e]`` of the
    first auth entry e that takes it, by source IP, then by SIP user."""
    for column, candidates in (("source_ip", _ip_candidates), ("sip_user", _user_candidates)):
        if not (out < 0).any():
            return
        keys, lists = candidates(tables, getattr(columns, column))
        if lists:
            cand_first, cand_count, cand_entry = _csr(lists)
            keys = np.where(out < 0, keys, -1)
            tp = tables.auth_tech_prefix
            kernels.resolve_auth(
                offsets,
                data,
                keys,
                cand_first,
                cand_count,
                cand_entry,
                tp.offsets,
                tp.data,
                values,
                out,
            )


def _entry_ids(tables: Tables) -> I64:
    ids = tables.extra.get("auth_entry_ids")
    if ids is None:
        ids = tables.extra["auth_entry_ids"] = np.arange(tables.auth_customer.size, dtype=np.int64)
    return ids


def leg(
    tables: Tables,
    offsets: I64,
    data: Any,
    start: I64,
    card: I64,
    times: I64,
    answered: npt.NDArray[np.bool_],
    duration: I64,
) -> tuple[I64, I64]:
    """One leg of each call on ``card`` (-1: none): the rate row of the longest prefix of
    its number (``data[offsets[i] + start[i]:offsets[i + 1]]``) effective at its time, or
    -1; and its billed seconds (SPEC §5.2)."""
    n = card.size
    row = np.full(n, -1, np.int64)
    billed = np.zeros(n, np.int64)
    if not tables.card_duration_rounding.size or not (card >= 0).any():
        return row, billed  # no card (a catalog without cards): nothing to look up
    _lookup(tables, offsets, data, start, card, times, row)
    kernels.bill(
        answered,
        duration,
        row,
        tables.card_duration_rounding[np.maximum(card, 0)],
        tables.row_mcd,
        tables.row_pulse,
        tables.row_grace,
        billed,
    )
    return row, billed


def _lookup(
    tables: Tables, offsets: I64, data: Any, start: I64, card: I64, times: I64, out: I64
) -> None:
    kernels.longest_prefix(
        offsets,
        data,
        start,
        card,
        times,
        tables.slots,
        tables.bits,
        tables.bloom,
        tables.bloom_bits,
        tables.len_top,
        tables.len_mask,
        tables.versions,
        out,
    )


def _index_of(column: Column, index: dict[str, int]) -> I64:
    """Each value's index in ``index``: -1 when null or empty, -2 when unknown."""
    if isinstance(column, list) or len(column) <= SMALL:
        values = column if isinstance(column, list) else column.to_pylist()
        return np.array([index.get(v, -2) if v else -1 for v in values], np.int64)
    encoded = pc.fill_null(column, "").combine_chunks().dictionary_encode()
    lookup = np.array(
        [index.get(v, -2) if v else -1 for v in encoded.dictionary.to_pylist()] or [-1], np.int64
    )
    found: I64 = lookup[encoded.indices.to_numpy(zero_copy_only=False)]
    return found


def _encoded(column: Column) -> tuple[I64, list[str]]:
    """Each value's index among the distinct values (nulls as empty), in order of first
    appearance, and those values."""
    if isinstance(column, list) or len(column) <= SMALL:
        values = column if isinstance(column, list) else column.to_pylist()
        seen: dict[str, int] = {}
        keys = [seen.setdefault(v or "", len(seen)) for v in values]
        return np.array(keys, np.int64), list(seen)
    encoded = pc.fill_null(column, "").combine_chunks().dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(
        np.int64
    ), encoded.dictionary.to_pylist()


def _ip_candidates(tables: Tables, column: Column) -> tuple[I64, list[list[int]]]:
    """Per distinct source IP, the auth entries whose network holds it, best first; kept
    with the tables by the IP's text (a carrier's switches send from a few addresses, and
    finding an address's networks costs a parse per prefix length of the auth rows)."""
    keys, values = _encoded(column)
    known: dict[str, list[int]] = tables.extra.setdefault("ip_candidates", {})
    lists: list[list[int]] = []
    for value in values:
        found = known.get(value)
        if found is None:
            if len(known) >= IP_CANDIDATES_MAX:
                known.clear()
            found = known[value] = _ip_entries(tables, value)
        lists.append(found)
    return keys, lists


IP_CANDIDATES_MAX = 100_000  # source IPs whose candidates the tables keep; emptied when full


def _ip_entries(tables: Tables, value: str) -> list[int]:
    """The auth entries whose network holds the address ``value``, best first."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return []
    found: list[int] = []
    for length, networks in tables.ip_networks.items():
        if length > address.max_prefixlen:
            continue
        network = ipaddress.ip_network(f"{address}/{length}", strict=False)
        found += networks.get(network, [])
    return sorted(found, key=tables.auth_order.__getitem__)


def _user_candidates(tables: Tables, column: Column) -> tuple[I64, list[list[int]]]:
    keys, values = _encoded(column)
    lists = [
        sorted(tables.user_entries.get(v, []), key=tables.auth_order.__getitem__) if v else []
        for v in values
    ]
    return keys, lists


def _csr(lists: list[list[int]]) -> tuple[I64, I64, I64]:
    counts = np.array([len(x) for x in lists], np.int64)
    first = np.zeros(len(lists), np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    flat = np.array([e for x in lists for e in x] or [0], np.int64)
    return first, counts, flat


def _regex_matches(tables: Tables, dest: Column, customers: I64) -> npt.NDArray[np.bool_]:
    """For regex dial strings: does the number left after each route's manipulation match?"""
    n = len(customers)
    out = np.zeros((n, tables.regex_width), np.bool_)
    by_customer = _regex_routes(tables)
    if not by_customer:
        return out
    tp = tables.route_tech_prefix
    wanted = set(customers.tolist()) & by_customer.keys() if n <= SMALL else by_customer.keys()
    for r in sorted(r for c in wanted for r in by_customer[c]):
        rows = np.flatnonzero(customers == tables.route_customer[r])
        if rows.size == 0:
            continue
        numbers = (  # Arrow's regular expressions (RE2) either way
            pa.array([dest[i] for i in rows.tolist()], pa.string())
            if isinstance(dest, list)
            else dest.take(pa.array(rows))
        )
        rest = pc.utf8_slice_codeunits(numbers, int(tp.offsets[r + 1] - tp.offsets[r]))
        rest = pc.if_else(pc.starts_with(rest, "+"), pc.utf8_slice_codeunits(rest, 1), rest)
        rest = pc.utf8_slice_codeunits(rest, int(tables.route_strip[r]))
        ok = pc.fill_null(pc.match_substring_regex(rest, tables.route_regex[r]), False)
        out[rows, tables.route_regex_col[r]] = ok.to_numpy(zero_copy_only=False)
    return out


def _regex_routes(tables: Tables) -> dict[int, list[int]]:
    """The routes whose dial string is a regular expression, by customer; kept with the
    tables."""
    found: dict[int, list[int]] | None = tables.extra.get("regex_routes")
    if found is None:
        found = {}
        for r, pattern in enumerate(tables.route_regex):
            if pattern is not None:
                found.setdefault(int(tables.route_customer[r]), []).append(r)
        tables.extra["regex_routes"] = found
    return found


class Usage:
    """Package seconds used, by allotment × 2^32 + period start day: an open-addressing
    table of two numpy arrays that ``kernels.draw_packages`` reads and updates."""

    def __init__(self, capacity: int = 1024) -> None:
        self.keys = np.full(capacity, -1, np.int64)
        self.values = np.zeros(capacity, np.int64)

    def __len__(self) -> int:
        return int(np.count_nonzero(self.keys != -1))

    def reserve(self, more: int) -> None:
        """Room for ``more`` new keys at a load of at most one half."""
        size = self.keys.size
        while 2 * (len(self) + more) > size:
            size *= 2
        if size != self.keys.size:
            old_keys, old_values = self.keys[self.keys != -1], self.values[self.keys != -1]
            self.keys = np.full(size, -1, np.int64)
            self.values = np.zeros(size, np.int64)
            for key, value in zip(old_keys, old_values, strict=True):
                self.add(int(key), int(value))

    @staticmethod
    def key(allotment: int, period: date) -> int:
        """The key of an allotment's period (its first day)."""
        return allotment * 4294967296 + (period - EPOCH).days

    def used(self, allotment: int, period: date) -> int:
        """Seconds of an allotment's period drawn so far."""
        hit = np.flatnonzero(self.keys == self.key(allotment, period))
        return int(self.values[hit[0]]) if hit.size else 0

    def add(self, key: int, seconds: int) -> None:
        self.reserve(1)
        slot = kernels.usage_slot(self.keys, key)
        self.keys[slot] = key
        self.values[slot] += seconds


def may_draw(tables: Tables, priced: Priced) -> npt.NDArray[np.bool_]:
    """The priced calls that could draw on a package: the ones to rate in (dt, callid) order
    at the end of a run; all others can be finished at once."""
    out = np.zeros(len(priced), np.bool_)
    if not tables.allot_package:
        return out
    offsets, data = _strings(priced.batch["dest_number"])
    ap = tables.allot_prefixes
    customers = np.where(priced.reason == None, priced.customer, -1)  # noqa: E711
    kernels.may_draw(
        customers,
        priced.days,
        offsets,
        data,
        priced.start,
        priced.billed,
        tables.allot_first,
        tables.allot_count,
        tables.allot_start,
        tables.allot_end,
        tables.allot_pfx_first,
        tables.allot_pfx_count,
        ap.offsets,
        ap.data,
        out,
    )
    return out


def usage_from(
    tables: Tables,
    draws: Iterable[tuple[str, str, str, date, int]],
    usage: Usage | None = None,
) -> Usage:
    """Package usage from draws recorded earlier: (customer_id, package_id, start_date,
    period_start, seconds), added to ``usage`` (or to none). Draws on allotments no longer
    in the catalog are ignored."""
    allotments = {
        (tables.customer_ids[c], p, s): a
        for a, (c, p, s) in enumerate(
            zip(tables.allot_customer, tables.allot_package, tables.allot_start_date, strict=True)
        )
    }
    usage = Usage() if usage is None else usage
    for customer, package, start, period, seconds in draws:
        a = allotments.get((customer, package, start))
        if a is not None:
            usage.add(Usage.key(a, period), int(seconds))
    return usage


@dataclass
class Draws:
    """Package draws of n calls: seconds and first allotment per call, and every draw."""

    seconds: I64
    first: I64
    row: I64
    allot: I64
    period: I64
    drawn: I64

    @staticmethod
    def none(n: int) -> Draws:
        empty = np.zeros(0, np.int64)
        return Draws(np.zeros(n, np.int64), np.full(n, -1, np.int64), empty, empty, empty, empty)

    def slice(self, lo: int, hi: int) -> Draws:
        """The draws of calls lo … hi - 1, renumbered from 0."""
        keep = (self.row >= lo) & (self.row < hi)
        return Draws(
            self.seconds[lo:hi],
            self.first[lo:hi],
            self.row[keep] - lo,
            self.allot[keep],
            self.period[keep],
            self.drawn[keep],
        )


def draw(
    tables: Tables,
    customer: I64,
    days: I64,
    dest_number: Column,
    start: I64,
    billed: I64,
    order_keys: pa.Table | None,
    usage: Usage,
) -> Draws:
    """Draw packages for calls taken in (dt, callid) order (``order_keys`` holds dt and
    callid), or in the order given (``order_keys`` None: a stream's arrival order),
    updating ``usage`` (SPEC §5.3)."""
    n = customer.size
    result = Draws.none(n)
    eligible = billed > 0
    if not eligible.any():  # also a catalog without customers, whose arrays are empty
        return result
    eligible &= tables.allot_count[np.maximum(customer, 0)] > 0
    if not eligible.any():
        return result
    rows = np.flatnonzero(eligible)
    order = rows
    if order_keys is not None:
        keys = order_keys.take(pa.array(rows))
        by = [("dt", "ascending"), ("callid", "ascending")]
        order = rows[pc.sort_indices(keys, sort_keys=by).to_numpy()]
    capacity = int(tables.allot_count[customer[rows]].sum())
    row, allot, period, drawn = (np.empty(capacity, np.int64) for _ in range(4))
    offsets, data = _strings(dest_number)
    ap = tables.allot_prefixes
    usage.reserve(capacity)
    count = kernels.draw_packages(
        order,
        customer,
        days,
        offsets,
        data,
        start,
        billed,
        tables.allot_first,
        tables.allot_count,
        tables.allot_start,
        tables.allot_end,
        tables.allot_freq,
        tables.allot_seconds,
        tables.allot_pfx_first,
        tables.allot_pfx_count,
        ap.offsets,
        ap.data,
        usage.keys,
        usage.values,
        result.seconds,
        result.first,
        row,
        allot,
        period,
        drawn,
    )
    return Draws(
        result.seconds, result.first, row[:count], allot[:count], period[:count], drawn[:count]
    )


def finish(
    tables: Tables, priced: Priced, usage: Usage, rated_at: int, draws: Draws | None = None
) -> pa.Table:
    """Draw packages in (dt, callid) order (unless ``draws`` already holds them), then
    charge, tax and profit: the rated table of the rows of ``priced`` that have no reject
    reason, in their original order."""
    ok = priced.reason == None  # noqa: E711 - elementwise
    p = priced if ok.all() else priced.select(ok)
    if draws is None:
        draws = draw(
            tables,
            p.customer,
            p.days,
            p.batch["dest_number"],
            p.start,
            p.billed,
            p.batch.select(["dt", "callid"]),
            usage,
        )
    return _rated_table(tables, p, draws, charges(tables, p, draws.seconds), rated_at)


@dataclass
class Charges:
    """The money of n priced calls, exact in int64 millionths."""

    charge: I64
    tax: I64
    provider_charge: I64  # meaningful where ``known``
    known: npt.NDArray[np.bool_]  # the provider leg has a rate row
    same: npt.NDArray[np.bool_]  # known, and both legs in one currency: profit is defined

    @property
    def profit(self) -> I64:
        profit: I64 = self.charge - self.provider_charge
        return profit


def charges(tables: Tables, p: Priced, package_seconds: I64) -> Charges:
    """Charge, tax and the provider leg's charge of rated calls (no reject reason) that drew
    ``package_seconds`` (SPEC §5.2-§5.4)."""
    n = len(p)
    precision = tables.card_precision[p.card]
    charge = np.zeros(n, np.int64)
    flags = np.zeros(n, np.bool_)
    kernels.charge(
        p.billed,
        package_seconds,
        p.row,
        tables.row_rate,
        tables.row_connect_fee,
        precision,
        tables.card_rounding[p.card],
        charge,
        flags,
    )
    tax = np.zeros(n, np.int64)
    tax_flags = np.zeros(n, np.bool_)
    kernels.tax(charge, tables.customer_tax[p.customer], precision, tax, tax_flags)
    pc_card = np.maximum(p.provider_card, 0)
    provider_charge = np.zeros(n, np.int64)
    provider_flags = np.zeros(n, np.bool_)
    kernels.charge(
        p.provider_billed,
        np.zeros(n, np.int64),
        p.provider_row,
        tables.row_rate,
        tables.row_connect_fee,
        tables.card_precision[pc_card],
        tables.card_rounding[pc_card],
        provider_charge,
        provider_flags,
    )
    _exact_fallback(
        tables, p, package_seconds, charge, tax, provider_charge, flags | tax_flags | provider_flags
    )
    known = p.provider_row >= 0
    codes = _currency_codes(tables)
    same = known & (codes[p.card] == codes[pc_card])
    return Charges(charge, tax, provider_charge, known, same)


def _exact_fallback(
    tables: Tables,
    p: Priced,
    package_seconds: I64,
    charge: I64,
    tax: I64,
    provider_charge: I64,
    flags: npt.NDArray[np.bool_],
) -> None:
    """Rows whose numbers would overflow int64 are computed with Python integers."""
    for i in np.flatnonzero(flags):
        charge[i] = _charge_exact(tables, p.card[i], p.row[i], p.billed[i], package_seconds[i])
        unit = 10 ** (6 - int(tables.card_precision[p.card[i]]))
        num = int(charge[i]) * int(tables.customer_tax[p.customer[i]])
        tax[i] = round_ratio(num, 100 * 10**6 * unit, Rounding.HALF_UP) * unit
        if p.provider_row[i] >= 0:
            provider_charge[i] = _charge_exact(
                tables, p.provider_card[i], p.provider_row[i], p.provider_billed[i], 0
            )


def _charge_exact(tables: Tables, card: int, row: int, billed: int, package_seconds: int) -> int:
    if row < 0 or billed == 0:
        return 0
    charged = int(billed) - int(package_seconds)
    unit = 10 ** (6 - int(tables.card_precision[card]))
    num = charged * int(tables.row_rate[row]) + (
        60 * int(tables.row_connect_fee[row]) if charged > 0 else 0
    )
    value: int = round_ratio(num, 60 * unit, int(tables.card_rounding[card])) * unit
    if value >= 10**18:
        raise CdrflowError(
            f"a charge of {Decimal(value).scaleb(-6)} is beyond DECIMAL(18,6); "
            "check the rate and the duration"
        )
    return value


def _money(values: I64, valid: npt.NDArray[np.bool_] | None = None) -> pa.Array:
    """int64 millionths as DECIMAL(18,6), exactly: the integers are the decimals' unscaled
    values, so the buffer is written directly (two little-endian words, sign-extended)."""
    words = np.empty((len(values), 2), np.int64)
    words[:, 0] = values
    words[:, 1] = values >> 63
    validity = None if valid is None else pa.array(valid).buffers()[1]
    nulls = -1 if valid is None else int(len(valid) - np.count_nonzero(valid))
    return pa.Array.from_buffers(
        MONEY, len(values), [validity, pa.py_buffer(words)], null_count=nulls
    )


def _rated_table(
    tables: Tables,
    p: Priced,
    draws: Draws,
    money: Charges,
    rated_at: int,
) -> pa.Table:
    n = len(p)
    offsets, data = _strings(p.batch["dest_number"])
    columns: dict[str, Any] = {name: p.batch[name] for name in INPUT_NAMES}
    customer_ids = texts(tables, "customer_ids")
    columns["customer_id"] = customer_ids.take(pa.array(p.customer))
    columns["customer_status"] = texts(tables, "customer_status").take(pa.array(p.customer))
    columns["card_id"] = texts(tables, "card_ids").take(pa.array(p.card))
    columns["number"] = _suffixes(p.batch["dest_number"], offsets, data, p.start)
    columns["dest_code"] = texts(tables, "row_prefix").take(pa.array(p.row))
    columns["dest_name"] = texts(tables, "row_name").take(pa.array(p.row))
    columns["billed_duration"] = pa.array(p.billed, pa.int32())
    columns["rate"] = _money(tables.row_rate[p.row])
    columns["connect_fee"] = _money(tables.row_connect_fee[p.row])
    columns["package_seconds"] = pa.array(draws.seconds, pa.int32())
    columns["package_id"] = _names_or_null(tables, "allot_package", draws.first)
    columns["package_draws"] = _draws(tables, n, draws)
    columns["charge"] = _money(money.charge)
    columns["tax"] = _money(money.tax)
    columns["currency"] = texts(tables, "card_currency").take(pa.array(p.card))
    known = money.known
    columns["provider_charge"] = _money(money.provider_charge, known)
    columns["provider_currency"] = _names_or_null(
        tables, "card_currency", np.where(known, p.provider_card, -1)
    )
    columns["profit"] = _money(money.profit, money.same)
    columns["rated_at"] = pa.array(np.full(n, rated_at, np.int64), pa.int64()).cast(TIME)
    for name in ("source", "line"):
        columns[name] = (
            p.batch[name] if name in p.batch.column_names else pa.nulls(n, RATED.field(name).type)
        )
    columns["original_duration"] = pa.nulls(n, RATED.field("original_duration").type)
    return pa.table([columns[f.name] for f in RATED], schema=RATED)


def _names_or_null(tables: Tables, name: str, index: I64) -> pa.Array:
    """``texts(tables, name)[index]``, null where ``index`` is negative."""
    missing = index < 0
    return texts(tables, name).take(pa.array(np.maximum(index, 0), mask=missing))


def _currency_codes(tables: Tables) -> I64:
    """Each card's currency as a small integer, to compare two legs' currencies."""
    codes = tables.extra.get("currency_codes")
    if codes is None:
        codes = np.unique(np.array(tables.card_currency or [""]), return_inverse=True)[1]
        codes = tables.extra["currency_codes"] = codes.astype(np.int64)
    return codes


def _suffixes(dest: pa.ChunkedArray | pa.Array, offsets: I64, data: Any, start: I64) -> pa.Array:
    """The rated numbers: each dest_number from its ``start`` on."""
    if not start.any():
        return dest  # no route changed a number: the dialled numbers are the rated ones
    begin = offsets[:-1] + start
    new_offsets = np.zeros(len(start) + 1, np.int64)
    np.cumsum(offsets[1:] - begin, out=new_offsets[1:])
    buffer = np.empty(int(new_offsets[-1]), np.uint8)
    kernels.copy_spans(data, begin, offsets[1:], new_offsets, buffer)
    return pa.LargeStringArray.from_buffers(
        len(start), pa.py_buffer(new_offsets), pa.py_buffer(buffer)
    ).cast(pa.string())


def _draws(tables: Tables, n: int, draws: Draws) -> pa.Array:
    rows, allots, periods, seconds = draws.row, draws.allot, draws.period, draws.drawn
    order = np.argsort(rows, kind="stable")  # draws of one call stay in drawing order
    rows, allots, periods, seconds = rows[order], allots[order], periods[order], seconds[order]
    offsets = np.searchsorted(rows, np.arange(n + 1)).astype(np.int32)
    starts = [(date.fromisoformat(d) - EPOCH).days for d in tables.allot_start_date] or [0]
    values = pa.StructArray.from_arrays(
        [
            texts(tables, "allot_package").take(pa.array(allots)),
            pa.array(np.array(starts, np.int32)[allots], pa.int32()).cast(pa.date32()),
            pa.array(periods.astype(np.int32), pa.int32()).cast(pa.date32()),
            pa.array(seconds, pa.int32()),
        ],
        fields=list(PACKAGE_DRAW),
    )
    return pa.ListArray.from_arrays(
        pa.array(offsets), values, type=RATED.field("package_draws").type
    )


__all__ = [
    "Charges",
    "Columns",
    "Draws",
    "Found",
    "Priced",
    "Usage",
    "charges",
    "draw",
    "find",
    "finish",
    "leg",
    "may_draw",
    "price",
    "usage_from",
    "utc_days",
]
