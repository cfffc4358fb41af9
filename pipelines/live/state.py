"""What the live app keeps per customer, and how a usage message moves it (SPEC §9, §9.1).

Pure computation: a customer's record is a JSON object (a changelog-backed table's value),
moved by the usage messages of committed batches (``pipelines.usage``), each counted once:
a stream batch's message when its (``first`` offset, ``part``) is past the record's mark for
its partition, a lake entry's when its (``seq``, ``part``) is past the record's lake mark.
The marks live in the record itself, so the usage and the batches it covers change in one
changelog message: a worker killed between two customers' writes counts each batch once for
each.

The record::

    {"usage": "12.345678",                    # Σ (charge + tax) of the rated calls counted
     "counted": {"3": [100, 0], ...},         # stream partition → (first, part) counted
     "lake": [17, 0],                         # commit-log (seq, part) counted
     "minutes": {"2026-12-07T10:15:00Z": [attempts, answered, "duration", pdd_sum,
                                          pdd_count], ...},  # the ASR/ACD/PDD window
     "draws": {"P1|2026-12-01|2026-12-01": 60, ...}}  # package seconds drawn

The balance is computed when asked: payments - fees due - usage (SPEC §7.2), from the
catalog as it is then (``customer_state``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from billing.money import ZERO
from pipelines.usage import UsageMessage

Record = dict[str, Any]
# The ASR/ACD/PDD window: the minutes of the 15 before the newest dt seen (its own included).
WINDOW_MINUTES = 15
RATIO = Decimal("0.01")  # asr (%), acd (s) and pdd (ms) are shown to two places
# A mark's part number that says every part of its batch (or entry) is counted.
ALL_PARTS = 1 << 31
NONE_COUNTED = [-1, ALL_PARTS]  # a stream partition of which nothing is counted


@dataclass(frozen=True)
class Seed:
    """Where counting starts for a customer the app has no record of: the lake's stream
    positions (partition → last offset in the lake) and commit-log head, read with the
    lake's usage at the same moment."""

    positions: dict[str, int]
    head: int

    def json(self) -> dict[str, Any]:
        return {"positions": self.positions, "head": self.head}

    @staticmethod
    def of(data: Mapping[str, Any]) -> Seed:
        return Seed({str(k): int(v) for k, v in data["positions"].items()}, int(data["head"]))


def new_record(seed: Seed, usage: Decimal = ZERO, draws: Mapping[str, int] | None = None) -> Record:
    """A customer's record as the lake left it at ``seed``: every part of every batch up to
    the seed's positions counted."""
    return {
        "usage": str(usage),
        "counted": {p: [last, ALL_PARTS] for p, last in seed.positions.items()},
        "lake": [seed.head, ALL_PARTS],
        "minutes": {},
        "draws": dict(draws or {}),
    }


def copied(record: Record) -> Record:
    """A copy of ``record`` to change (a table's value changes only when written back)."""
    return {
        "usage": record["usage"],
        "counted": {p: list(mark) for p, mark in record["counted"].items()},
        "lake": list(record["lake"]),
        "minutes": {k: list(v) for k, v in record["minutes"].items()},
        "draws": dict(record["draws"]),
    }


def minute_key(moment: datetime) -> str:
    """A minute bucket's name: its start, ISO 8601 UTC (``2026-12-07T10:15:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00Z")


def parse_minute(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(second=0, microsecond=0)


def window_floor(newest: str | None) -> str | None:
    """The oldest minute bucket inside the window that ends at the ``newest`` minute."""
    if newest is None:
        return None
    return minute_key(parse_minute(newest) - timedelta(minutes=WINDOW_MINUTES - 1))


def draw_key(package_id: str, start_date: str, period_start: str) -> str:
    return f"{package_id}|{start_date}|{period_start}"


def _after(mark: list[int], at: int, part: int) -> bool:
    return (at, part) > (mark[0], mark[1])


def is_new(record: Record, message: UsageMessage) -> bool:
    """Whether ``message`` (one part of a batch's message for the record's customer) is not
    yet counted in ``record``: its batch's (``first`` offset, part) past the counted mark of
    its stream partition, or its (commit-log ``seq``, part) past the lake mark."""
    source = message.source
    if source["kind"] == "stream":
        mark = record["counted"].get(str(source["partition"]), NONE_COUNTED)
        return _after(mark, int(source["first"]), message.part)
    return _after(record["lake"], int(source["seq"]), message.part)


def count(record: Record, message: UsageMessage, floor: str | None) -> bool:
    """Add one usage message to ``record`` unless it is counted already; minutes older than
    ``floor`` are left out of the window (their money counts). True when it was counted."""
    source = message.source
    if not is_new(record, message):
        return False
    if source["kind"] == "stream":
        record["counted"][str(source["partition"])] = [int(source["first"]), message.part]
    else:
        record["lake"] = [int(source["seq"]), message.part]
    usage = Decimal(record["usage"])
    minutes: dict[str, list[Any]] = record["minutes"]
    for m in message.minutes:
        usage += m.money
        key = minute_key(m.minute)
        if floor is not None and key < floor:
            continue
        bucket = minutes.setdefault(key, [0, 0, "0", 0, 0])
        bucket[0] += m.attempts
        bucket[1] += m.answered
        bucket[2] = str(Decimal(bucket[2]) + m.duration)
        bucket[3] += m.pdd_sum
        bucket[4] += m.pdd_count
    record["usage"] = str(usage)
    draws: dict[str, int] = record["draws"]
    for d in message.draws:
        key = draw_key(d.package_id, d.start_date.isoformat(), d.period_start.isoformat())
        draws[key] = draws.get(key, 0) + d.seconds
    prune(record, floor)
    return True


def prune(record: Record, floor: str | None) -> None:
    """Drop the minute buckets that fell out of the window."""
    if floor is None:
        return
    minutes: dict[str, Any] = record["minutes"]
    for key in [k for k in minutes if k < floor]:
        del minutes[key]


def newest_minute(messages: Iterable[UsageMessage], newest: str | None) -> str | None:
    """The newest minute of ``messages``' rated calls, or ``newest`` if that is later."""
    for message in messages:
        for m in message.minutes:
            key = minute_key(m.minute)
            if newest is None or key > newest:
                newest = key
    return newest


@dataclass(frozen=True)
class Window:
    """The counts of the ASR/ACD/PDD window and the values they give (None: no call to
    give one: ASR without attempts, ACD without answered calls, PDD without a PDD)."""

    attempts: int
    answered: int
    asr: Decimal | None
    acd: Decimal | None
    pdd: Decimal | None


def window(record: Record | None, floor: str | None) -> Window:
    """ASR (answered / attempts, %), ACD (duration / answered, s) and PDD (mean, ms) over
    the minute buckets from ``floor`` on."""
    attempts = answered = pdd_sum = pdd_count = 0
    duration = ZERO
    for key, (a, b, d, ps, pc) in (record or {}).get("minutes", {}).items():
        if floor is not None and key < floor:
            continue
        attempts += a
        answered += b
        duration += Decimal(d)
        pdd_sum += ps
        pdd_count += pc
    asr = _ratio(Decimal(answered * 100), attempts)
    acd = _ratio(duration, answered)
    pdd = _ratio(Decimal(pdd_sum), pdd_count)
    return Window(attempts, answered, asr, acd, pdd)


def _ratio(total: Decimal, count: int) -> Decimal | None:
    if count == 0:
        return None
    return (total / count).quantize(RATIO, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class CustomerState:
    """One customer's live state: the catalog's row, the money (SPEC §7.2, in the columns of
    ``cdrflow balance``) and the ASR/ACD/PDD window."""

    customer_id: str
    name: str
    status: str
    currency: str
    payments: Decimal
    usage: Decimal
    fees: Decimal
    balance: Decimal
    debit_limit: Decimal
    available: Decimal
    attempts: int
    answered: int
    asr: Decimal | None
    acd: Decimal | None
    pdd: Decimal | None


def customer_state(
    row: Mapping[str, Any],
    record: Record | None,
    paid: Decimal,
    fees: Decimal,
    floor: str | None,
) -> CustomerState:
    """A catalog customer's state from its record (None: nothing counted for it)."""
    usage = Decimal(record["usage"]) if record else ZERO
    limit = row.get("debit_limit") or ZERO
    balance = paid - usage - fees
    w = window(record, floor)
    return CustomerState(
        customer_id=row["customer_id"],
        name=row.get("name") or "",
        status=row.get("status") or "",
        currency=row.get("currency") or "",
        payments=paid,
        usage=usage,
        fees=fees,
        balance=balance,
        debit_limit=limit,
        available=balance + limit,
        attempts=w.attempts,
        answered=w.answered,
        asr=w.asr,
        acd=w.acd,
        pdd=w.pdd,
    )


def draws_until(record: Record | None, day: date) -> list[tuple[str, str, date, int]]:
    """(package_id, start_date, period_start, seconds) of the record's draws in periods
    that started on or before ``day``."""
    out = []
    for key, seconds in (record or {}).get("draws", {}).items():
        package, start, period = key.split("|")
        period_start = date.fromisoformat(period)
        if period_start <= day:
            out.append((package, start, period_start, int(seconds)))
    return out
