"""The compact ``<topic>.usage`` messages (SPEC §9.1): what the live app reads instead of
each rated CDR.

One committed batch (a stream worker's batch, or a lake run such as ``cdrflow rate``) gives
one message per customer, keyed by its ``customer_id`` ("" for rejections that name none),
with the batch's sums per UTC minute of ``dt`` and the customer's package draws and callids::

    {"batch": "<run name>",
     "source": {"kind": "stream", "topic": "cdrs", "partition": 3, "first": 100, "last": 199}
             | {"kind": "lake", "seq": 123},
     "customer_id": "C1" | null, "currency": "USD" | null,
     "minutes": [{"minute": "2026-12-07T10:15:00Z", "attempts": 12, "answered": 7,
                  "duration": "321.5", "pdd_sum": 12345, "pdd_count": 11,
                  "money": "1.234567", "package_seconds": 60}, ...],
     "draws": [{"package_id": "P1", "start_date": "2026-12-01",
                "period_start": "2026-12-01", "seconds": 60}, ...],
     "callids": ["c1", ...],
     "part": 0, "parts": 1}

Rated rows count in ``minutes`` (attempts = rows; answered = ``sip_code`` 200; duration = Σ
``duration`` of answered calls, as the stats count talk time; PDD over the rows that have
one; money = Σ (``charge`` + ``tax``), exact) and ``draws`` (Σ seconds of ``package_draws``
per package, start date and period, as ``pipelines.rate.package_usage`` keys them). Every
callid of the batch, rated or rejected, is in ``callids`` of its customer's message.

``part`` and ``parts``: a message is kept under ``MESSAGE_BYTES`` (Kafka's default limit is
about 1 MB), so a customer with very many calls in one batch (tens of thousands of callids,
or a ``cdrflow rate`` run over a month of minutes) gets several messages, ``part`` 0 …
``parts - 1``, in that order on one partition. Their contents are disjoint and additive: a
reader counts every part. Exactly once: a reader counts a (batch, customer, part) once, e.g.
for a stream source when (``first``, ``part``) is past what it counted for that customer and
source partition; for a lake source when ``seq`` is past its lake cursor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.commitlog import Entry
from pipelines.lakefiles import lake_root
from schemas.cdr import MONEY, PACKAGE_DRAW, SECONDS, TIME

# The most bytes of one message's value; larger ones are split into parts.
MESSAGE_BYTES = 512_000

MINUTE_US = 60_000_000
# The rated columns a summary reads, with their lake types (missing ones are read as null).
RATED_COLUMNS = pa.schema(
    [
        pa.field("callid", pa.string()),
        pa.field("customer_id", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("dt", TIME),
        pa.field("sip_code", pa.int16()),
        pa.field("duration", SECONDS),
        pa.field("pdd_ms", pa.int64()),
        pa.field("charge", MONEY),
        pa.field("tax", MONEY),
        pa.field("package_seconds", pa.int32()),
        pa.field("package_draws", pa.list_(PACKAGE_DRAW)),
    ]
)
REJECTED_COLUMNS = pa.schema(
    [pa.field("callid", pa.string()), pa.field("customer_id", pa.string())]
)


@dataclass(frozen=True)
class Minute:
    """One UTC minute of one customer's rated calls in a batch."""

    minute: datetime
    attempts: int
    answered: int
    duration: Decimal
    pdd_sum: int
    pdd_count: int
    money: Decimal
    package_seconds: int


@dataclass(frozen=True)
class Draw:
    """Seconds one customer's calls of a batch drew on one package period."""

    package_id: str
    start_date: date
    period_start: date
    seconds: int


@dataclass(frozen=True)
class UsageMessage:
    batch: str
    source: dict[str, Any]
    customer_id: str | None
    currency: str | None
    minutes: tuple[Minute, ...]
    draws: tuple[Draw, ...]
    callids: tuple[str, ...]
    part: int = 0
    parts: int = 1

    @property
    def key(self) -> str:
        """The message's Kafka key (as text): the customer, "" when none."""
        return self.customer_id or ""

    @property
    def money(self) -> Decimal:
        return sum((m.money for m in self.minutes), Decimal(0))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns of ``schema``, in its types; a missing one is all null."""
    n = table.num_rows
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _concat(tables: Iterable[pa.Table], schema: pa.Schema) -> pa.Table:
    parts = [_conform(t, schema) for t in tables if t.num_rows]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _texts(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Decimals as exact text without trailing zeros (``"1.5"``, ``"10"``, ``"0"``): a
    decimal of scale > 0 always has its point."""
    return pc.replace_substring_regex(pc.cast(pc.fill_null(column, 0), pa.string()), r"\.?0+$", "")


def _keys(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.fill_null(column, "")


def summarise(rated: Sequence[pa.Table], rejected: Sequence[pa.Table]) -> dict[str, dict[str, Any]]:
    """Each customer's message body (without batch, source and parts) by its key, in
    ascending key order: the JSON fields of the module docstring, money as text."""
    r = _concat(rated, RATED_COLUMNS)
    x = _concat(rejected, REJECTED_COLUMNS)
    out: dict[str, dict[str, Any]] = {}

    def body(key: str) -> dict[str, Any]:
        if key not in out:
            out[key] = {
                "customer_id": key or None,
                "currency": None,
                "minutes": [],
                "draws": [],
                "callids": [],
            }
        return out[key]

    if r.num_rows:
        keys = _keys(r["customer_id"])
        answered = pc.equal(pc.fill_null(r["sip_code"], 0), 200)
        zero_seconds = pa.scalar(Decimal(0), SECONDS)
        zero_money = pa.scalar(Decimal(0), MONEY)
        frame = pa.table(
            {
                "key": keys,
                # The minute's first µs: integer division, as pc.strftime costs ~1 µs a row.
                "minute": pc.multiply(
                    pc.divide(pc.fill_null(r["dt"].cast(pa.int64()), 0), MINUTE_US), MINUTE_US
                ),
                "answered": pc.cast(answered, pa.int64()),
                "duration": pc.if_else(
                    answered, pc.fill_null(r["duration"], zero_seconds), zero_seconds
                ),
                "pdd": r["pdd_ms"],
                "money": pc.add(
                    pc.fill_null(r["charge"], zero_money), pc.fill_null(r["tax"], zero_money)
                ),
                "package_seconds": pc.cast(pc.fill_null(r["package_seconds"], 0), pa.int64()),
                "currency": r["currency"],
            }
        )
        minutes = (
            frame.group_by(["key", "minute"], use_threads=False)
            .aggregate(
                [
                    ([], "count_all"),
                    ("answered", "sum"),
                    ("duration", "sum"),
                    ("pdd", "sum", pc.ScalarAggregateOptions(min_count=0)),
                    ("pdd", "count"),
                    ("money", "sum"),
                    ("package_seconds", "sum"),
                ]
            )
            .sort_by([("key", "ascending"), ("minute", "ascending")])
        )
        # The text of the groups' minutes and sums, made by Arrow (a month's run has tens
        # of thousands of them), then each row as its dict.
        shown = pa.table(
            {
                "minute": pc.strftime(minutes["minute"].cast(TIME), "%Y-%m-%dT%H:%M:00Z"),
                "attempts": minutes["count_all"],
                "answered": minutes["answered_sum"],
                "duration": _texts(minutes["duration_sum"]),
                "pdd_sum": pc.fill_null(minutes["pdd_sum"], 0),
                "pdd_count": minutes["pdd_count"],
                "money": _texts(minutes["money_sum"]),
                "package_seconds": minutes["package_seconds_sum"],
            }
        )
        for key, row in zip(minutes["key"].to_pylist(), shown.to_pylist(), strict=True):
            body(key)["minutes"].append(row)
        currencies = frame.group_by("key", use_threads=False).aggregate([("currency", "min")])
        for key, currency in zip(
            currencies["key"].to_pylist(), currencies["currency_min"].to_pylist(), strict=True
        ):
            body(key)["currency"] = currency
        draws = r["package_draws"].combine_chunks()
        if len(pc.list_flatten(draws)):
            flat = pc.list_flatten(draws)
            owners = pc.take(keys, pc.list_parent_indices(draws))
            summed = (
                pa.table(
                    {
                        "key": owners,
                        "package_id": flat.field("package_id"),
                        "start_date": flat.field("start_date"),
                        "period_start": flat.field("period_start"),
                        "seconds": pc.cast(flat.field("seconds"), pa.int64()),
                    }
                )
                .group_by(["key", "package_id", "start_date", "period_start"], use_threads=False)
                .aggregate([("seconds", "sum")])
                .sort_by(
                    [(k, "ascending") for k in ("key", "package_id", "start_date", "period_start")]
                )
            )
            for row in summed.to_pylist():
                body(row["key"])["draws"].append(
                    {
                        "package_id": row["package_id"],
                        "start_date": row["start_date"].isoformat(),
                        "period_start": row["period_start"].isoformat(),
                        "seconds": row["seconds_sum"],
                    }
                )
    calls = pa.concat_tables(
        [
            pa.table({"key": _keys(t["customer_id"]), "callid": t["callid"]})
            for t in (r, x)
            if t.num_rows
        ]
        or [pa.table({"key": pa.array([], pa.string()), "callid": pa.array([], pa.string())})]
    )
    calls = calls.filter(pc.is_valid(calls["callid"]))
    if calls.num_rows:
        listed = calls.group_by("key", use_threads=False).aggregate([("callid", "list")])
        for key, callids in zip(
            listed["key"].to_pylist(), listed["callid_list"].to_pylist(), strict=True
        ):
            body(key)["callids"] = callids
    return dict(sorted(out.items()))


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


_LISTS = ("minutes", "draws", "callids")
_PART = b',"part":'


def _numbered(value: bytes, part: int, parts: int) -> bytes:
    """A message's JSON with its part numbers (its last two fields) set."""
    return value[: value.rindex(_PART)] + b',"part":%d,"parts":%d}' % (part, parts)


def _estimate(name: str, item: Any) -> int:
    """About the bytes an item adds to its list, without encoding it (a callid's exact
    unless JSON escapes some of it; a minute's about 170 with large sums)."""
    if name == "callids":
        return len(item.encode()) + 3
    if name == "draws":
        return 90 + len(item["package_id"].encode())
    return 200


def _pack(record: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """``record``'s list items shared out in order among records of about ``limit`` bytes."""
    empty = {**record, **{name: [] for name in _LISTS}}
    budget = max(limit - len(_dumps(empty)), 1)
    out: list[dict[str, Any]] = []
    current: dict[str, list[Any]] = {name: [] for name in _LISTS}
    size = 0
    for name in _LISTS:
        for item in record[name]:
            n = _estimate(name, item)
            if size + n > budget and size:
                out.append({**record, **current})
                current, size = {name: [] for name in _LISTS}, 0
            current[name].append(item)
            size += n
    out.append({**record, **current})
    return out


def _halves(record: dict[str, Any]) -> list[dict[str, Any]]:
    items = [(name, item) for name in _LISTS for item in record[name]]
    if len(items) <= 1:
        return [record]
    half = len(items) // 2
    return [
        {**record, **{name: [i for n, i in chunk if n == name] for name in _LISTS}}
        for chunk in (items[:half], items[half:])
    ]


def _split(record: dict[str, Any], limit: int) -> list[bytes]:
    """``record`` (part 0 of 1) as one or more JSON values of at most ``limit`` bytes each
    (when one minute, draw or callid alone fits), numbered as parts, its lists' items shared
    out in order."""
    room = limit - 40  # for the part numbers
    callids = record["callids"]
    guess = 200 * len(record["minutes"]) + 120 * len(record["draws"])
    guess += sum(map(len, callids)) + 3 * len(callids) + 400
    if guess <= 2 * room:  # the guess is generous: a record far larger is not tried whole
        value = _dumps(record)
        if len(value) <= limit:
            return [value]
    chunks = _pack(record, room)
    while True:
        values = [_dumps(chunk) for chunk in chunks]
        over = {i for i, v in enumerate(values) if len(v) > room}
        if not over or all(len(_halves(chunks[i])) == 1 for i in over):
            return [_numbered(v, i, len(values)) for i, v in enumerate(values)]
        # A callid with characters JSON escapes was larger than estimated: halve its part.
        chunks = [h for i, c in enumerate(chunks) for h in (_halves(c) if i in over else [c])]


def batch_messages(
    batch: str,
    source: dict[str, Any],
    rated: Sequence[pa.Table],
    rejected: Sequence[pa.Table],
    limit: int = MESSAGE_BYTES,
) -> list[tuple[bytes, bytes]]:
    """The usage messages (key, value) of one committed batch: its run name, its source
    (``{"kind": "stream", "topic", "partition", "first", "last"}`` or ``{"kind": "lake",
    "seq"}``) and the rated and rejected tables it committed. Customers in ascending order;
    a customer's parts in order."""
    out: list[tuple[bytes, bytes]] = []
    for key, body in summarise(rated, rejected).items():
        head = {"batch": batch, "source": source}
        record = {**head, **body, "part": 0, "parts": 1}
        out += [(key.encode(), v) for v in _split(record, limit)]
    return out


def _date(text: Any) -> date:
    return date.fromisoformat(str(text))


def parse(value: bytes) -> UsageMessage:
    """A usage message from its JSON value; ``ValueError`` (one line) when it is not one."""
    try:
        data = json.loads(value)
        source = data["source"]
        if not isinstance(source, dict) or source.get("kind") not in ("stream", "lake"):
            raise ValueError(f"unknown source {source!r}")
        minutes = tuple(
            Minute(
                minute=datetime.strptime(m["minute"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                attempts=int(m["attempts"]),
                answered=int(m["answered"]),
                duration=Decimal(m["duration"]),
                pdd_sum=int(m["pdd_sum"]),
                pdd_count=int(m["pdd_count"]),
                money=Decimal(m["money"]),
                package_seconds=int(m["package_seconds"]),
            )
            for m in data["minutes"]
        )
        draws = tuple(
            Draw(
                package_id=str(d["package_id"]),
                start_date=_date(d["start_date"]),
                period_start=_date(d["period_start"]),
                seconds=int(d["seconds"]),
            )
            for d in data["draws"]
        )
        customer = data["customer_id"]
        currency = data.get("currency")
        return UsageMessage(
            batch=str(data["batch"]),
            source=source,
            customer_id=None if customer is None else str(customer),
            currency=None if currency is None else str(currency),
            minutes=minutes,
            draws=draws,
            callids=tuple(str(c) for c in data["callids"]),
            part=int(data.get("part", 0)),
            parts=int(data.get("parts", 1)),
        )
    except (KeyError, TypeError, ArithmeticError, AttributeError) as exc:
        raise ValueError(f"not a usage message: {type(exc).__name__} {exc}") from None
    except ValueError as exc:
        raise ValueError(f"not a usage message: {exc}") from None


# -- lake runs that are not stream batches ---------------------------------------------


def is_stream_entry(entry: Entry, topic: str | None = None) -> bool:
    """Whether a commit-log entry is a stream worker's batch (of ``topic`` when given):
    its usage reaches ``<topic>.usage`` through Kafka, not through the lake."""
    prefix = "stream-" if topic is None else f"stream-{topic}-p"
    return entry.run.startswith(prefix)


def replaces_rows(entry: Entry) -> bool:
    """Whether an entry is of a run that rewrote lake rows (``cdrflow rerate`` or
    ``recalc``): its rated files hold calls counted before, so its usage is not additive; a
    reader reads the affected customers from the lake again instead."""
    return bool(entry.replaces)


def messages_of_entry(home: Path, entry: Entry) -> list[tuple[bytes, bytes]]:
    """The usage messages of a committed lake run that is not a stream batch (such as
    ``cdrflow rate``), with source ``{"kind": "lake", "seq": entry.seq}``: its rated files
    (from the entry) and its rejected files (from the run's manifest, ``_runs/<run>.json``;
    rated only when the manifest is gone or lists none). A file no longer in the lake (a
    later re-rate replaced it) is left out. Read one file at a time, so a run of millions of
    rows may give a customer several parts. ``ValueError`` for an entry that rewrote lake
    rows (``replaces_rows``)."""
    if replaces_rows(entry):
        raise ValueError(
            f"commit {entry.seq} ({entry.run}) rewrote lake rows: read the lake again instead"
        )
    root = lake_root(home)
    rejected: list[str] = []
    try:
        manifest = json.loads((root / "_runs" / f"{entry.run}.json").read_text())
        rejected = [f for f in manifest.get("files", []) if f.startswith("rejected/")]
    except (OSError, ValueError):
        pass
    source = {"kind": "lake", "seq": entry.seq}
    files = [("rated", f) for f in entry.rated] + [("rejected", f) for f in rejected]
    pieces: list[tuple[bytes, bytes]] = []
    for kind, name in files:
        path = root / name
        if not path.is_file():
            continue
        schema = RATED_COLUMNS if kind == "rated" else REJECTED_COLUMNS
        have = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[n for n in schema.names if n in have])
        tables = ([table], []) if kind == "rated" else ([], [table])
        pieces += batch_messages(entry.run, source, *tables)
    return _renumbered(pieces)


def _renumbered(pieces: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Messages of several pieces of one batch, each customer's numbered as its parts
    (customers in ascending order, each one's parts in the order made)."""
    by_key: dict[bytes, list[bytes]] = {}
    for key, value in pieces:
        by_key.setdefault(key, []).append(value)
    out: list[tuple[bytes, bytes]] = []
    for key in sorted(by_key):
        values = by_key[key]
        if len(values) == 1:
            out.append((key, values[0]))
            continue
        out += [(key, _numbered(value, i, len(values))) for i, value in enumerate(values)]
    return out
