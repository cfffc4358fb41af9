"""Compiled rate tables: the catalog turned into flat numpy arrays once per catalog version.

The input is a catalog snapshot (entity name → rows as ``Catalog.list`` returns them); the
output, ``Tables``, is what the kernels read: an open-addressing hash of (card, prefix) →
effective-date versions, per-card attributes, routes and auth entries in the order SPEC §5.1
tries them, DIDs, and package allotments. Nothing here reads a file or the store.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from rating import kernels
from rating.modes import BY_WORD

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]

NEVER_BEFORE = np.iinfo(np.int64).min
NEVER_AFTER = np.iinfo(np.int64).max
FREQUENCY = {"daily": 0, "weekly": 1, "monthly": 2, "once": 3}
EPOCH = date(1970, 1, 1)

Snapshot = Mapping[str, Sequence[Mapping[str, Any]]]


def micro(value: Decimal | None) -> int:
    return 0 if value is None else int(Decimal(value).scaleb(6))


def time_us(text: str | None, default: int) -> int:
    """A stored catalog time ('…Z') as microseconds since the epoch."""
    if text is None:
        return default
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _US


_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def day_number(text: str | None, default: int) -> int:
    return default if text is None else (date.fromisoformat(text) - EPOCH).days


@dataclass(frozen=True)
class Strings:
    """Byte strings as one offsets array and one data array, as Arrow keeps them."""

    offsets: I64
    data: U8

    @staticmethod
    def of(values: Sequence[str | None]) -> Strings:
        encoded = [(v or "").encode() for v in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)
        return Strings(offsets, data.copy() if data.size else np.zeros(1, np.uint8))


class Texts(Sequence[str]):
    """Texts kept as ``Strings`` (offsets and UTF-8 bytes), each decoded when it is read: the
    rate rows' prefixes and names of a cache file, of which a run reads a few, without a
    Python string made for each of hundreds of thousands (the engine hands Arrow the bytes
    as they are, ``rating.engine.texts``)."""

    def __init__(self, strings: Strings) -> None:
        self.strings = strings

    def __len__(self) -> int:
        return int(self.strings.offsets.size) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        begin, end = self.strings.offsets[index], self.strings.offsets[index + 1]
        return bytes(self.strings.data[begin:end]).decode()


@dataclass
class Tables:
    """Everything the engine needs of one catalog version, as arrays and small lookups."""

    version: int
    # Customers.
    customer_ids: list[str]
    customer_index: dict[str, int]
    customer_status: list[str]
    customer_currency: list[str]
    customer_tax: I64  # tax_percent in millionths
    # Cards.
    card_ids: list[str]
    card_index: dict[str, int]
    card_currency: list[str]
    card_precision: I64
    card_rounding: I64
    card_duration_rounding: I64
    # Rate rows and the (card, prefix) hash.
    row_prefix: Sequence[str]  # a list, or Texts when loaded from a cache file
    row_name: Sequence[str]
    row_rate: I64
    row_connect_fee: I64
    row_mcd: I64
    row_pulse: I64
    row_grace: I64
    slots: I64  # (2^bits, SLOT_WIDTH) aligned rows, as in rating.kernels; key -1 is empty
    bits: int
    bloom: npt.NDArray[np.uint64]  # 2^bloom_bits bits: which (card, key) may be in slots
    bloom_bits: int
    len_top: I64  # (cards, MAX_DIGITS + 1): a card's longest prefix length ≤ n
    len_mask: I64  # per card, bit n set when it has a prefix of length n (n ≤ MAX_DIGITS)
    versions: I64  # (rows, 3): effective_from, effective_to, rate row; newest first per group
    # Auth: IP entries by network, user entries by name, each candidate list in SPEC order.
    auth_customer: I64
    auth_tech_prefix: Strings
    ip_networks: dict[int, dict[Any, list[int]]]  # prefix length → network → entry indexes
    user_entries: dict[str, list[int]]
    auth_order: dict[int, tuple[int, int, int]]  # entry → sort key within one candidate list
    # Routes, per customer, in the order they are tried.
    route_first: I64
    route_count: I64
    route_card: I64
    route_tech_prefix: Strings
    route_strip: I64
    route_dial_kind: I64  # 0 all, 1 prefixes, 2 regex
    route_dial_first: I64
    route_dial_count: I64
    dial_prefixes: Strings
    route_regex: list[str | None]
    route_regex_col: I64
    route_customer: I64
    regex_width: int
    # DIDs.
    did_numbers: list[str]
    did_customer: I64
    did_card: I64
    did_provider_card: I64
    # Package allotments (customer packages), per customer in package_id order.
    allot_first: I64
    allot_count: I64
    allot_start: I64
    allot_end: I64
    allot_freq: I64
    allot_seconds: I64
    allot_pfx_first: I64
    allot_pfx_count: I64
    allot_prefixes: Strings
    allot_package: list[str]
    allot_start_date: list[str]
    allot_customer: I64
    extra: dict[str, Any] = field(default_factory=dict)


def aligned_rows(count: int, width: int) -> I64:
    """An int64 array of ``count`` rows of ``width`` starting on a 64-byte boundary, so that a
    row of 8 is one cache line."""
    raw = np.empty(count * width + 8, np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + count * width].reshape(count, width)


def check(t: Tables) -> None:
    """Raise ValueError naming the first bound that the kernels and the engine rely on and
    ``t`` breaks: every index within the array it indexes, every (first, count) span within
    its rows, string offsets rising within their data, shapes, dtypes and modes as compiled,
    and an empty slot in the hash. The kernels check none of it (a bad index reads or writes
    outside an array), so tables that ``compile_tables`` did not just make (a cache file's)
    are checked once before use; compiled ones always pass."""
    for f in fields(Tables):
        value = getattr(t, f.name)
        if isinstance(value, np.ndarray):
            dtype = np.uint64 if f.name == "bloom" else np.int64
            if value.dtype != dtype or value.ndim != (2 if f.name in _MATRICES else 1):
                raise ValueError(f"{f.name} is a {value.ndim}-D {value.dtype} array")
    customers, cards, rows = len(t.customer_ids), len(t.card_ids), len(t.row_prefix)
    routes, dids, allots = len(t.route_regex), len(t.did_numbers), len(t.allot_package)
    auth = t.auth_customer.size
    for n, names in (
        (customers, ("customer_status", "customer_currency", "customer_tax", "route_first",
                     "route_count", "allot_first", "allot_count")),
        (cards, ("card_currency", "card_precision", "card_rounding", "card_duration_rounding")),
        (rows, ("row_name", "row_rate", "row_connect_fee", "row_mcd", "row_pulse", "row_grace")),
        (routes, ("route_card", "route_strip", "route_dial_kind", "route_dial_first",
                  "route_dial_count", "route_regex_col", "route_customer")),
        (dids, ("did_customer", "did_card", "did_provider_card")),
        (allots, ("allot_start", "allot_end", "allot_freq", "allot_seconds", "allot_pfx_first",
                  "allot_pfx_count", "allot_start_date", "allot_customer")),
    ):  # fmt: skip
        for name in names:
            if len(getattr(t, name)) != n:
                raise ValueError(f"{name} has {len(getattr(t, name))} entries, not {n}")
    _check_strings("auth_tech_prefix", t.auth_tech_prefix, auth)
    _check_strings("route_tech_prefix", t.route_tech_prefix, routes)
    _check_strings("dial_prefixes", t.dial_prefixes)
    for name in ("row_prefix", "row_name"):
        texts = getattr(t, name)
        if isinstance(texts, Texts):
            _check_strings(name, texts.strings, rows)
    _check_strings("allot_prefixes", t.allot_prefixes)
    if not 4 <= t.bits <= 40:
        raise ValueError(f"the rate hash has {t.bits} bits")
    _check_shape("slots", t.slots, (1 << t.bits, kernels.SLOT_WIDTH))
    _check_shape("versions", t.versions, (rows, 3))
    _check_shape("len_top", t.len_top, (max(cards, 1), kernels.MAX_DIGITS + 1))
    _check_shape("len_mask", t.len_mask, (max(cards, 1),))
    if not 6 <= t.bloom_bits <= 32 or t.bloom.shape != (1 << (t.bloom_bits - 6),):
        raise ValueError(f"bloom has {t.bloom.size} words for {t.bloom_bits} bits")
    if not 1 <= t.regex_width <= max(routes, 1):  # the engine allocates calls × width
        raise ValueError(f"regex_width is {t.regex_width} for {routes} routes")
    for name, low, high in (
        ("card_precision", 0, 6), ("card_rounding", 0, 3), ("card_duration_rounding", 0, 3),
        ("row_pulse", 1, None), ("route_card", 0, cards - 1), ("route_strip", 0, None),
        ("route_dial_kind", 0, 2), ("route_regex_col", 0, t.regex_width - 1),
        ("route_customer", 0, customers - 1), ("auth_customer", 0, customers - 1),
        ("did_customer", 0, customers - 1), ("did_card", 0, cards - 1),
        ("did_provider_card", -1, cards - 1), ("allot_freq", 0, 3),
        ("allot_customer", 0, customers - 1),
    ):  # fmt: skip
        _check_range(name, getattr(t, name), low, high)
    _check_range("versions' rate row", t.versions[:, 2], 0, rows - 1)
    if [p is not None for p in t.route_regex] != (t.route_dial_kind == 2).tolist():
        raise ValueError("route_regex and route_dial_kind disagree on which routes are regexes")
    if ((t.len_top < 0) | (t.len_top > np.arange(kernels.MAX_DIGITS + 1))).any():
        raise ValueError("len_top has a prefix length longer than the digits it is for")
    for name, first, count, n in (
        ("route", t.route_first, t.route_count, routes),
        ("allot", t.allot_first, t.allot_count, allots),
        ("route_dial", t.route_dial_first, t.route_dial_count, len(t.dial_prefixes.offsets) - 1),
        ("allot_pfx", t.allot_pfx_first, t.allot_pfx_count, len(t.allot_prefixes.offsets) - 1),
    ):
        # Written so that no sum can overflow: n - count cannot where count >= 0.
        if ((count < 0) | (first < 0) | (first > n - count)).any():
            raise ValueError(f"{name}_first and {name}_count reach past {n} rows")
    entries = [e for g in t.ip_networks.values() for es in g.values() for e in es]
    entries += [e for es in t.user_entries.values() for e in es]
    if any(not 0 <= e < auth for e in entries) or set(t.auth_order) != set(range(auth)):
        raise ValueError(f"an auth candidate list or auth_order is not of the {auth} entries")
    slot = kernels.bad_slot(t.slots, t.versions.shape[0], rows)
    if slot == -2:
        raise ValueError("the rate hash has no empty slot")
    if slot >= 0:
        raise ValueError(f"slot {slot} of the rate hash points past its versions or rate rows")


# The 2-D arrays of Tables; every other array is 1-D.
_MATRICES = frozenset({"slots", "versions", "len_top"})


def _check_shape(name: str, array: npt.NDArray[Any], shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} has the shape {array.shape}, not {shape}")


def _check_range(name: str, values: I64, low: int | None, high: int | None) -> None:
    if (low is not None and (values < low).any()) or (high is not None and (values > high).any()):
        raise ValueError(f"{name} has a value outside {low}..{high}")


def _check_strings(name: str, strings: Strings, count: int | None = None) -> None:
    offsets = strings.offsets
    if count is not None and offsets.size != count + 1:
        raise ValueError(f"{name} has {offsets.size - 1} strings, not {count}")
    if (
        offsets.dtype != np.int64
        or strings.data.dtype != np.uint8
        or offsets.ndim != 1
        or strings.data.ndim != 1
        or not offsets.size
        or offsets[0] != 0
        or (offsets[1:] < offsets[:-1]).any()
        or offsets[-1] > strings.data.size
    ):
        raise ValueError(f"{name}: its offsets do not rise within its {strings.data.size} bytes")


def compile_tables(snapshot: Snapshot, version: int = 0) -> Tables:
    """Compile a catalog snapshot (entity → rows) into ``Tables``."""
    customers = sorted(snapshot["customers"], key=lambda r: r["customer_id"])
    customer_index = {r["customer_id"]: i for i, r in enumerate(customers)}
    cards = sorted(snapshot["rate_cards"], key=lambda r: r["card_id"])
    card_index = {r["card_id"]: i for i, r in enumerate(cards)}
    given = snapshot["rates"]
    columns = given if isinstance(given, RateColumns) else RateColumns.of_rows(given)
    rates = _rates(columns, card_index)
    auth = _auth(snapshot["auth"], customer_index)
    routes = _routes(snapshot["routes"], customer_index, card_index, len(customers))
    dids = sorted(snapshot["dids"], key=lambda r: r["number"])
    allots = _allotments(snapshot, customer_index)
    return Tables(
        version=version,
        customer_ids=[r["customer_id"] for r in customers],
        customer_index=customer_index,
        customer_status=[r["status"] for r in customers],
        customer_currency=[r["currency"] for r in customers],
        customer_tax=np.array([micro(r["tax_percent"]) for r in customers], np.int64),
        card_ids=[r["card_id"] for r in cards],
        card_index=card_index,
        card_currency=[r["currency"] for r in cards],
        card_precision=np.array([r["precision"] for r in cards], np.int64),
        card_rounding=np.array([BY_WORD[r["rounding"]] for r in cards], np.int64),
        card_duration_rounding=np.array([BY_WORD[r["duration_rounding"]] for r in cards], np.int64),
        **rates,
        **auth,
        **routes,
        did_numbers=[r["number"] for r in dids],
        did_customer=np.array([customer_index[r["customer_id"]] for r in dids], np.int64),
        did_card=np.array([card_index[r["customer_card_id"]] for r in dids], np.int64),
        did_provider_card=np.array(
            [card_index.get(r["provider_card_id"] or "", -1) for r in dids], np.int64
        ),
        **allots,
    )


@dataclass(frozen=True)
class RateColumns:
    """A catalog's rate rows column by column: money in millionths, times in microseconds
    (``NEVER_BEFORE`` / ``NEVER_AFTER`` for none), as the store keeps them."""

    card_id: list[str]
    prefix: list[str]
    name: list[str]
    rate: I64
    connect_fee: I64
    mcd: I64
    pulse: I64
    grace: I64
    effective_from: I64
    effective_to: I64

    @staticmethod
    def of_rows(rows: Sequence[Mapping[str, Any]]) -> RateColumns:
        """From rows as ``Catalog.list("rates")`` gives them (decimals, ISO times)."""
        return RateColumns(
            card_id=[r["card_id"] for r in rows],
            prefix=[r["prefix"] for r in rows],
            name=[r["name"] for r in rows],
            rate=np.array([micro(r["rate"]) for r in rows], np.int64),
            connect_fee=np.array([micro(r["connect_fee"]) for r in rows], np.int64),
            mcd=np.array([r["mcd"] for r in rows], np.int64),
            pulse=np.array([r["pulse"] for r in rows], np.int64),
            grace=np.array([r["grace"] for r in rows], np.int64),
            effective_from=np.array(
                [time_us(r["effective_from"], NEVER_BEFORE) for r in rows], np.int64
            ),
            effective_to=np.array(
                [time_us(r["effective_to"], NEVER_AFTER) for r in rows], np.int64
            ),
        )


def _rates(columns: RateColumns, card_index: Mapping[str, int]) -> dict[str, Any]:
    card = np.array([card_index[c] for c in columns.card_id], np.int64)
    length = np.array([len(p) for p in columns.prefix], np.int64)
    key = np.array([int(p) for p in columns.prefix], np.int64) * 16 + length
    # Rows by card, prefix, then effective_from; each (card, prefix) is one group.
    order = np.lexsort((columns.effective_from, key, card))
    card, key, length = card[order], key[order], length[order]
    n = int(order.size)
    changes = np.ones(n, np.bool_)
    changes[1:] = (card[1:] != card[:-1]) | (key[1:] != key[:-1])
    first = np.flatnonzero(changes)
    count = np.diff(np.append(first, n))
    # Versions newest effective_from first: each group read backwards.
    group = np.repeat(np.arange(first.size), count)
    ver_row = first[group] + count[group] - 1 - (np.arange(n) - first[group])
    versions = np.stack(
        [
            columns.effective_from[order][ver_row],
            columns.effective_to[order][ver_row],
            ver_row.astype(np.int64),
        ],
        axis=1,
    )
    bits = max(4, int(2 * max(first.size, 1) - 1).bit_length())  # load factor ≤ 1/2
    slots = aligned_rows(1 << bits, kernels.SLOT_WIDTH)
    slots[:] = 0
    slots[:, kernels.SLOT_KEY] = -1
    # About 16 bits a group, at most 1 MiB (it must stay in the core's cache to pay off).
    bloom_bits = min(23, max(12, int(16 * first.size).bit_length()))
    bloom = np.zeros(1 << (bloom_bits - 6), np.uint64)
    kernels.build_rate_hash(
        card[first], key[first], first, count, versions, bits, slots, bloom, bloom_bits
    )
    # len_top[card, n]: the card's longest prefix length ≤ n (0: none).
    has = np.zeros((max(len(card_index), 1), kernels.MAX_DIGITS + 1), np.bool_)
    short = length[first] <= kernels.MAX_DIGITS
    has[card[first][short], length[first][short]] = True
    has[:, 0] = True
    lengths = np.where(has, np.arange(kernels.MAX_DIGITS + 1), 0)
    len_top = np.maximum.accumulate(lengths, axis=1).astype(np.int64)
    len_mask = (has[:, 1:] << np.arange(1, kernels.MAX_DIGITS + 1)).sum(axis=1).astype(np.int64)
    return {
        "row_prefix": [columns.prefix[i] for i in order],
        "row_name": [columns.name[i] for i in order],
        "row_rate": columns.rate[order],
        "row_connect_fee": columns.connect_fee[order],
        "row_mcd": columns.mcd[order],
        "row_pulse": columns.pulse[order],
        "row_grace": columns.grace[order],
        "slots": slots,
        "bits": bits,
        "bloom": bloom,
        "bloom_bits": bloom_bits,
        "len_top": len_top,
        "len_mask": len_mask,
        "versions": versions,
    }


def _auth(rows: Sequence[Mapping[str, Any]], customer_index: Mapping[str, int]) -> dict[str, Any]:
    ip_networks: dict[int, dict[Any, list[int]]] = {}
    user_entries: dict[str, list[int]] = {}
    order: dict[int, tuple[int, int, int]] = {}
    for e, r in enumerate(rows):
        tech = r["tech_prefix"] or ""
        if r["kind"] == "ip":
            network = ipaddress.ip_network(r["value"])
            ip_networks.setdefault(network.prefixlen, {}).setdefault(network, []).append(e)
            # Longest tech prefix, then the most specific network, then the oldest entry.
            order[e] = (-len(tech), -network.prefixlen, r["id"])
        else:
            user_entries.setdefault(r["value"], []).append(e)
            order[e] = (-len(tech), 0, r["id"])
    return {
        "auth_customer": np.array([customer_index[r["customer_id"]] for r in rows], np.int64),
        "auth_tech_prefix": Strings.of([r["tech_prefix"] for r in rows]),
        "ip_networks": ip_networks,
        "user_entries": user_entries,
        "auth_order": order,
    }


def _routes(
    rows: Sequence[Mapping[str, Any]],
    customer_index: Mapping[str, int],
    card_index: Mapping[str, int],
    n_customers: int,
) -> dict[str, Any]:
    ordered = sorted(
        rows,
        key=lambda r: (
            customer_index[r["customer_id"]],
            r["priority"],
            -len(r["tech_prefix"] or ""),
            r["id"],
        ),
    )
    first = np.zeros(n_customers, np.int64)
    count = np.zeros(n_customers, np.int64)
    for i, r in enumerate(ordered):
        c = customer_index[r["customer_id"]]
        if count[c] == 0:
            first[c] = i
        count[c] += 1
    dial_kind: list[int] = []
    dial_first: list[int] = []
    dial_count: list[int] = []
    prefixes: list[str] = []
    regex: list[str | None] = []
    regex_col: list[int] = []
    per_customer: dict[int, int] = {}
    for r in ordered:
        dial = r["dial_string"]
        dial_first.append(len(prefixes))
        if dial is None:
            dial_kind.append(0)
            dial_count.append(0)
            regex.append(None)
            regex_col.append(0)
        elif dial.startswith("^"):
            dial_kind.append(2)
            dial_count.append(0)
            regex.append(dial)
            c = customer_index[r["customer_id"]]
            regex_col.append(per_customer.get(c, 0))
            per_customer[c] = per_customer.get(c, 0) + 1
        else:
            parts = dial.split("|")
            dial_kind.append(1)
            dial_count.append(len(parts))
            prefixes += parts
            regex.append(None)
            regex_col.append(0)
    return {
        "route_first": first,
        "route_count": count,
        "route_card": np.array([card_index[r["card_id"]] for r in ordered], np.int64),
        "route_tech_prefix": Strings.of([r["tech_prefix"] for r in ordered]),
        "route_strip": np.array([r["strip_digits"] for r in ordered], np.int64),
        "route_dial_kind": np.array(dial_kind, np.int64),
        "route_dial_first": np.array(dial_first, np.int64),
        "route_dial_count": np.array(dial_count, np.int64),
        "dial_prefixes": Strings.of(prefixes),
        "route_regex": regex,
        "route_regex_col": np.array(regex_col, np.int64),
        "route_customer": np.array([customer_index[r["customer_id"]] for r in ordered], np.int64),
        "regex_width": max(per_customer.values(), default=0) or 1,
    }


def _allotments(snapshot: Snapshot, customer_index: Mapping[str, int]) -> dict[str, Any]:
    packages = {r["package_id"]: r for r in snapshot["packages"]}
    rows = sorted(
        snapshot["customer_packages"],
        key=lambda r: (customer_index[r["customer_id"]], r["package_id"], r["start_date"]),
    )
    n_customers = len(customer_index)
    first = np.zeros(n_customers, np.int64)
    count = np.zeros(n_customers, np.int64)
    prefixes: list[str] = []
    pfx_first, pfx_count = [], []
    for i, r in enumerate(rows):
        c = customer_index[r["customer_id"]]
        if count[c] == 0:
            first[c] = i
        count[c] += 1
        parts = (
            (packages[r["package_id"]]["prefixes"] or "").split("|")
            if packages[r["package_id"]]["prefixes"]
            else []
        )
        pfx_first.append(len(prefixes))
        pfx_count.append(len(parts))
        prefixes += parts
    return {
        "allot_first": first,
        "allot_count": count,
        "allot_start": np.array([day_number(r["start_date"], 0) for r in rows], np.int64),
        "allot_end": np.array([day_number(r["end_date"], 2**40) for r in rows], np.int64),
        "allot_freq": np.array(
            [FREQUENCY[packages[r["package_id"]]["frequency"]] for r in rows], np.int64
        ),
        "allot_seconds": np.array(
            [packages[r["package_id"]]["seconds"] * (r["quantity"] or 1) for r in rows], np.int64
        ),
        "allot_pfx_first": np.array(pfx_first, np.int64),
        "allot_pfx_count": np.array(pfx_count, np.int64),
        "allot_prefixes": Strings.of(prefixes),
        "allot_package": [r["package_id"] for r in rows],
        "allot_start_date": [r["start_date"] for r in rows],
        "allot_customer": np.array([customer_index[r["customer_id"]] for r in rows], np.int64),
    }
