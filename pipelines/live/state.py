"""What the live app keeps per customer, and how a usage message moves it (SPEC §9, §9.1).

Pure computation: a customer's record is a JSON object (a changelog-backed table's value),
moved by the usage messages of committed batches (``pipelines.usage``), each counted once:
a stream batch when its ``first`` offset is past the record's counted offset of its
partition, a lake entry when its ``seq`` is past the record's lake cursor. Both positions
live in the record itself, so the usage and the positions it covers change in one changelog
message: a worker killed between two customers' writes counts each batch once for each.

The record::

    {"usage": "12.345678",                    # Σ (charge + tax) of the rated calls counted
     "counted": {"3": 199, ...},              # stream partition → last offset counted
     "lake": 17,                              # newest commit-log entry counted
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

Record = dict[str, Any]
# The ASR/ACD/PDD window: the minutes of the 15 before the newest dt seen (its own included).
WINDOW_MINUTES = 15
RATIO = Decimal("0.01")  # asr (%), acd (s) and pdd (ms) are shown to two places


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
    """A customer's record as the lake left it at ``seed``."""
    return {
        "usage": str(usage),
        "counted": dict(seed.positions),
        "lake": seed.head,
        "minutes": {},
        "draws": dict(draws or {}),
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


def is_new(record: Record, source: Mapping[str, Any]) -> bool:
    """Whether a message of batch ``source`` is not yet counted in ``record``."""
    if source["kind"] == "stream":
        counted = record["counted"].get(str(source["partition"]), -1)
        return int(source["first"]) > int(counted)
    return int(source["seq"]) > int(record["lake"])


def count(record: Record, message: Mapping[str, Any], floor: str | None) -> bool:
    """Add one usage message to ``record`` unless its batch is counted already; minutes
    older than ``floor`` are left out (and dropped). True when the record changed."""
    source = message["source"]
    if not is_new(record, source):
        return False
    if source["kind"] == "stream":
        record["counted"][str(source["partition"])] = int(source["last"])
    else:
        record["lake"] = int(source["seq"])
    usage = Decimal(record["usage"])
    minutes: dict[str, list[Any]] = record["minutes"]
    for m in message.get("minutes") or ():
        usage += Decimal(str(m.get("money") or "0"))
        key = minute_key(parse_minute(m["minute"]))
        if floor is not None and key < floor:
            continue
        bucket = minutes.setdefault(key, [0, 0, "0", 0, 0])
        bucket[0] += int(m.get("attempts") or 0)
        bucket[1] += int(m.get("answered") or 0)
        bucket[2] = str(Decimal(bucket[2]) + Decimal(str(m.get("duration") or "0")))
        bucket[3] += int(m.get("pdd_sum") or 0)
        bucket[4] += int(m.get("pdd_count") or 0)
    record["usage"] = str(usage)
    draws: dict[str, int] = record["draws"]
    for d in message.get("draws") or ():
        key = draw_key(d["package_id"], d["start_date"], d["period_start"])
        draws[key] = draws.get(key, 0) + int(d["seconds"])
    prune(record, floor)
    return True


def prune(record: Record, floor: str | None) -> None:
    """Drop the minute buckets that fell out of the window."""
    if floor is None:
        return
    minutes: dict[str, Any] = record["minutes"]
    for key in [k for k in minutes if k < floor]:
        del minutes[key]


def newest_minute(messages: Iterable[Mapping[str, Any]], newest: str | None) -> str | None:
    """The newest minute of ``messages``' rated calls, or ``newest`` if that is later."""
    for message in messages:
        for m in message.get("minutes") or ():
            key = minute_key(parse_minute(m["minute"]))
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
