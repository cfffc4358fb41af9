"""Two baselines of the rating rules, for the benchmark: DuckDB SQL, and a plain Python loop.

Scope (the same for both, so that they rate exactly what the engine rates after ``price``):
customer resolution (DIDs, auth), routes and number manipulation, and duplicate marking are
done by the engine (``rating.engine.price`` and ``pipelines.dedupe.BilledCallids``). The
baselines take each priced CDR that reached the rate lookup — the calls ``CALLS`` describes:
resolved customer_id and card_id, the rated ``number``, the resolved provider card (the CDR's
or a DID's; null when none or unknown), ``dt``, ``callid``, ``duration`` and whether the call
was answered — and implement everything after that from the catalog rows (``catalog_rows``:
entity name → rows as ``Catalog.list`` returns them), exactly as /tmp/rules.md says:

- the rate row: the longest prefix of ``number`` among the card's rows effective at ``dt``
  (``effective_from ≤ dt < effective_to``), the latest ``effective_from`` for one prefix; a
  call without one is ``no_rate`` and left out of the result;
- billed seconds: duration rounded to whole seconds by the card's ``duration_rounding``, then
  grace, minimum charge duration and pulse; 0 when not answered;
- packages: calls with billed seconds draw in (dt, callid) order on their customer's
  allotments (customer_packages rows) in (package_id, start_date) order, when the UTC date of
  ``dt`` lies in start_date … end_date and the number starts with one of the package's
  prefixes; periods daily, ISO weekly, calendar monthly or once (the whole validity); the
  allowance per period is seconds × quantity. Usage starts from nothing (an empty lake);
- charge, exact: ``round(charged × rate / 60 + connect fee if charged > 0, precision, mode)``,
  0 when nothing is billed; tax ``round(charge × tax_percent / 100, precision, half_up)``;
- the provider leg: the same lookup and billing on the provider card (no packages, no tax);
  ``provider_charge`` is null without a provider row; ``profit = charge - provider_charge``
  when both are known and in one currency, else null.

Both return, per rated call, ``RESULT``: callid, billed_duration, package_seconds, and money
as int64 **millionths** (exact; the lake's DECIMAL(18,6) unscaled): charge, tax,
provider_charge, profit. ``rate_sql`` is the best DuckDB formulation we could write: the
longest prefix by one equi-join per prefix length (``left(number, L) = prefix``, never
``starts_with``) then the longest match per call, integer arithmetic only (a DOUBLE never
decides a rounding; an overflow is an error in DuckDB, not a wrap), and packages by window
functions: one pass per allotment rank, where a call's take from a period's allowance is
``min(A, S) - min(A, S - need)`` for the running sum ``S`` of the needs, in (dt, callid)
order, of the calls drawing on that allotment and period; what a call still needs after
rank k feeds rank k + 1. ``rate_python`` is a plain loop over dicts: per card a dict prefix →
versions, probed longest length first; Python integers in millionths; rounding by divmod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CatalogRows = Mapping[str, Sequence[Mapping[str, Any]]]

# What the baselines take: one row per priced call that reached the rate lookup.
CALLS = pa.schema(
    [
        pa.field("callid", pa.string()),
        pa.field("dt", pa.timestamp("us", tz="UTC")),
        pa.field("customer_id", pa.string()),
        pa.field("card_id", pa.string()),
        pa.field("number", pa.string()),
        pa.field("provider_card_id", pa.string()),
        pa.field("duration", pa.decimal128(18, 6)),
        pa.field("answered", pa.bool_()),
    ]
)
# What they return: one row per rated call; money in int64 millionths.
RESULT = pa.schema(
    [
        pa.field("callid", pa.string()),
        pa.field("billed_duration", pa.int64()),
        pa.field("package_seconds", pa.int64()),
        pa.field("charge", pa.int64()),
        pa.field("tax", pa.int64()),
        pa.field("provider_charge", pa.int64()),
        pa.field("profit", pa.int64()),
    ]
)
COMPARED = tuple(RESULT.names[1:])

MICRO = 1_000_000
DAY_US = 86_400_000_000
MODES = {"up": 0, "down": 1, "half_up": 2, "half_down": 3}
FREQUENCIES = {"daily": 0, "weekly": 1, "monthly": 2, "once": 3}
EPOCH = date(1970, 1, 1)
NEVER_BEFORE = -(2**62)
NEVER_AFTER = 2**62


# -- the catalog, read the same way by both -------------------------------------------------


def _micro(value: Decimal | None) -> int:
    """A catalog money value (at most six places) as integer millionths."""
    return 0 if value is None else int(Decimal(value).scaleb(6))


def _time_us(text: str | None, default: int) -> int:
    """A catalog time ('YYYY-MM-DDTHH:MM:SSZ') as microseconds since the epoch."""
    if text is None:
        return default
    moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * MICRO + delta.microseconds


def _day(text: str | None, default: int) -> int:
    return default if text is None else (date.fromisoformat(text) - EPOCH).days


@dataclass(frozen=True)
class Allotment:
    """A customer package as the rules use it."""

    customer_id: str
    package_id: str
    start_date: str
    start: int  # days since 1970-01-01
    end: int
    frequency: int
    allowance: int  # seconds per period: package seconds × quantity
    prefixes: tuple[str, ...]  # empty: every number


def allotments(catalog_rows: CatalogRows) -> dict[str, list[Allotment]]:
    """Each customer's allotments, in the order calls draw on them (package_id, start_date)."""
    packages = {p["package_id"]: p for p in catalog_rows["packages"]}
    out: dict[str, list[Allotment]] = {}
    rows = sorted(
        catalog_rows["customer_packages"],
        key=lambda r: (r["customer_id"], r["package_id"], r["start_date"]),
    )
    for r in rows:
        package = packages[r["package_id"]]
        out.setdefault(r["customer_id"], []).append(
            Allotment(
                customer_id=r["customer_id"],
                package_id=r["package_id"],
                start_date=r["start_date"],
                start=_day(r["start_date"], 0),
                end=_day(r["end_date"], 2**40),
                frequency=FREQUENCIES[package["frequency"]],
                allowance=int(package["seconds"]) * int(r["quantity"] or 1),
                prefixes=tuple(package["prefixes"].split("|")) if package["prefixes"] else (),
            )
        )
    return out


def _decimal_micro(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A DECIMAL(18,6) column as int64 millionths (nulls as 0), exactly."""
    array = pc.fill_null(column, Decimal(0))
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    words = np.frombuffer(array.buffers()[1], np.int64)
    return words[2 * array.offset : 2 * (array.offset + len(array)) : 2].copy()


# -- DuckDB SQL -----------------------------------------------------------------------------


def load_catalog(con: duckdb.DuckDBPyConnection, catalog_rows: CatalogRows) -> None:
    """The catalog as DuckDB tables (``b_cards``, ``b_rates``, ``b_customers``, ``b_allot``):
    the SQL formulation's equivalent of compiling the tables, done once per catalog."""
    cards = sorted(catalog_rows["rate_cards"], key=lambda r: r["card_id"])
    card_of = {r["card_id"]: i for i, r in enumerate(cards)}
    rates = catalog_rows["rates"]
    customers = catalog_rows["customers"]
    by_customer = allotments(catalog_rows)
    allots = [a for group in by_customer.values() for a in group]
    inputs = {
        "cards_in": pa.table(
            {
                "card": pa.array(range(len(cards)), pa.int32()),
                "card_id": pa.array([r["card_id"] for r in cards], pa.string()),
                "currency": pa.array([r["currency"] for r in cards], pa.string()),
                "unit": pa.array([10 ** (6 - int(r["precision"])) for r in cards], pa.int64()),
                "rnd": pa.array([MODES[r["rounding"]] for r in cards], pa.int8()),
                "dround": pa.array([MODES[r["duration_rounding"]] for r in cards], pa.int8()),
            }
        ),
        "rates_in": pa.table(
            {
                "rid": pa.array(range(len(rates)), pa.int64()),
                "card": pa.array([card_of[r["card_id"]] for r in rates], pa.int32()),
                "prefix": pa.array([r["prefix"] for r in rates], pa.string()),
                "eff_from": pa.array(
                    [_time_us(r["effective_from"], NEVER_BEFORE) for r in rates], pa.int64()
                ),
                "eff_to": pa.array(
                    [_time_us(r["effective_to"], NEVER_AFTER) for r in rates], pa.int64()
                ),
                "rate": pa.array([_micro(r["rate"]) for r in rates], pa.int64()),
                "fee": pa.array([_micro(r["connect_fee"]) for r in rates], pa.int64()),
                "mcd": pa.array([r["mcd"] for r in rates], pa.int64()),
                "pulse": pa.array([r["pulse"] for r in rates], pa.int64()),
                "grace": pa.array([r["grace"] for r in rates], pa.int64()),
            }
        ),
        "customers_in": pa.table(
            {
                "customer_id": pa.array([r["customer_id"] for r in customers], pa.string()),
                "tax": pa.array([_micro(r["tax_percent"]) for r in customers], pa.int64()),
            }
        ),
        "allot_in": pa.table(
            {
                "allot": pa.array(range(len(allots)), pa.int64()),
                "customer_id": pa.array([a.customer_id for a in allots], pa.string()),
                "rank": pa.array(
                    [k for group in by_customer.values() for k in range(1, len(group) + 1)],
                    pa.int32(),
                ),
                "start_day": pa.array([a.start for a in allots], pa.int64()),
                "end_day": pa.array([a.end for a in allots], pa.int64()),
                "freq": pa.array([a.frequency for a in allots], pa.int8()),
                "allowance": pa.array([a.allowance for a in allots], pa.int64()),
                "prefixes": pa.array([list(a.prefixes) for a in allots], pa.list_(pa.string())),
            }
        ),
    }
    for name, table in inputs.items():
        con.register(name, table)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE b_cards AS SELECT * FROM cards_in")
        # pk orders a call's candidate rows: the longest prefix, then the latest
        # effective_from (its rank among the prefix's versions); its low 32 bits are the row.
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE b_rates AS
            SELECT *, length(prefix) AS plen,
                   (length(prefix)::BIGINT << 56)
                   + (row_number() OVER (PARTITION BY card, prefix ORDER BY eff_from) << 32)
                   + rid AS pk
            FROM rates_in
            """
        )
        con.execute("CREATE OR REPLACE TEMP TABLE b_customers AS SELECT * FROM customers_in")
        con.execute("CREATE OR REPLACE TEMP TABLE b_allot AS SELECT * FROM allot_in")
    finally:
        for name in inputs:
            con.unregister(name)


def rate_sql(
    con: duckdb.DuckDBPyConnection,
    catalog_rows: CatalogRows,
    calls: pa.Table,
    *,
    loaded: bool = False,
) -> pa.Table:
    """Rate ``calls`` (schema ``CALLS``) in DuckDB; returns ``RESULT`` rows of the rated calls.

    ``loaded``: ``load_catalog(con, catalog_rows)`` was already run on ``con``."""
    if not loaded:
        load_catalog(con, catalog_rows)
    lengths = [int(n) for (n,) in con.execute("SELECT DISTINCT plen FROM b_rates").fetchall()]
    ranks = int(con.execute("SELECT coalesce(max(rank), 0) FROM b_allot").fetchall()[0][0])
    table = calls.append_column("i", pa.array(np.arange(calls.num_rows, dtype=np.int64)))
    con.register("calls", table)
    try:
        return con.sql(rate_query(sorted(lengths), ranks)).to_arrow_table().cast(RESULT)
    finally:
        con.unregister("calls")


def _round(num: str, den: str, mode: str) -> str:
    """SQL: the non-negative integer ``num / den`` rounded to a whole number by ``mode``."""
    q, r = f"(({num}) // ({den}))", f"(({num}) % ({den}))"
    return f"""(CASE {mode}
            WHEN 0 THEN {q} + ({r} > 0)::BIGINT
            WHEN 1 THEN {q}
            WHEN 2 THEN {q} + (2 * {r} >= ({den}))::BIGINT
            ELSE {q} + (2 * {r} > ({den}))::BIGINT END)"""


def _whole(us: str, mode: str) -> str:
    """SQL: a duration in microseconds as whole seconds, rounded by ``mode``."""
    return f"""(CASE {mode}
            WHEN 0 THEN ({us} + {MICRO - 1}) // {MICRO}
            WHEN 1 THEN {us} // {MICRO}
            WHEN 2 THEN ({us} + {MICRO // 2}) // {MICRO}
            ELSE ({us} + {MICRO // 2 - 1}) // {MICRO} END)"""


def _billed(d: str, mcd: str, pulse: str, grace: str) -> str:
    """SQL: billed seconds from whole seconds ``d`` (0 when not answered)."""
    return f"""(CASE WHEN {d} = 0 OR {d} <= {grace} THEN 0
            WHEN {d} <= {mcd} THEN {mcd}
            ELSE {mcd} + ({d} - {mcd} + {pulse} - 1) // {pulse} * {pulse} END)"""


def _charge(billed: str, package: str, rate: str, fee: str, unit: str, mode: str) -> str:
    """SQL: the exact charge in millionths, rounded to the card's unit by its mode."""
    charged = f"({billed} - {package})"
    num = f"{charged} * {rate} + CASE WHEN {charged} > 0 THEN 60 * {fee} ELSE 0 END"
    rounded = _round(num, f"60 * {unit}", mode)
    return f"(CASE WHEN {billed} = 0 THEN 0 ELSE {rounded} * {unit} END)"


def rate_query(lengths: Sequence[int], ranks: int) -> str:
    """The SQL over a registered ``calls`` (``CALLS`` plus a row number ``i``)."""
    # One equi-join per prefix length, over both legs (0: the customer's, 1: the provider's).
    matches = "\n        UNION ALL\n".join(
        f"""        SELECT g.i, g.leg, r.pk
        FROM legs g JOIN b_rates r
          ON r.card = g.card AND r.plen = {n} AND r.prefix = left(g.number, {n})
        WHERE r.eff_from <= g.t AND g.t < r.eff_to"""
        for n in lengths
    )
    # Packages: one window pass per allotment rank; the need left after rank k feeds k + 1.
    passes = "".join(
        f"""
    e{k} AS (
        SELECT p.i, p.t, p.callid, p.need{k - 1} AS need, a.allowance, a.allot,
               CASE a.freq WHEN 0 THEN p.day
                           WHEN 1 THEN p.day - (p.day + 3) % 7
                           WHEN 2 THEN p.day - dayofmonth(p.date) + 1
                           ELSE a.start_day END AS period
        FROM p{k - 1} p JOIN b_allot a ON a.customer_id = p.customer_id AND a.rank = {k}
        WHERE p.need{k - 1} > 0 AND p.day BETWEEN a.start_day AND a.end_day
          AND (len(a.prefixes) = 0
               OR list_bool_or([starts_with(p.number, x) FOR x IN a.prefixes]))
    ),
    w{k} AS (
        SELECT i, least(allowance, s) - least(allowance, s - need) AS take
        FROM (SELECT *, CAST(sum(need) OVER (PARTITION BY allot, period ORDER BY t, callid
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                             AS BIGINT) AS s
              FROM e{k})
    ),
    p{k} AS (
        SELECT p.*, p.need{k - 1} - coalesce(w.take, 0) AS need{k}
        FROM p{k - 1} p LEFT JOIN w{k} w ON w.i = p.i
    ),"""
        for k in range(1, ranks + 1)
    )
    provider_charge = _charge("billed1", "0", "rate1", "fee1", "unit1", "rnd1")
    return f"""
    WITH c AS (
        SELECT i, callid, epoch_us(dt) AS t, customer_id, card_id, number, provider_card_id,
               CASE WHEN answered THEN CAST(coalesce(duration, 0) * {MICRO} AS BIGINT)
                    ELSE 0 END AS us
        FROM calls
    ),
    legs AS (
        SELECT c.i, 0 AS leg, k.card, c.number, c.t
        FROM c JOIN b_cards k ON k.card_id = c.card_id
        UNION ALL
        SELECT c.i, 1 AS leg, k.card, c.number, c.t
        FROM c JOIN b_cards k ON k.card_id = c.provider_card_id
    ),
    matched AS (
{matches}
    ),
    best AS (
        SELECT i, max(pk) FILTER (WHERE leg = 0) & 4294967295 AS rid0,
                  max(pk) FILTER (WHERE leg = 1) & 4294967295 AS rid1
        FROM matched GROUP BY i
    ),
    joined AS (
        SELECT c.i, c.callid, c.t, c.customer_id, c.number, coalesce(u.tax, 0) AS tax,
               k0.currency, k0.unit, k0.rnd, r0.rate, r0.fee, r0.mcd, r0.pulse, r0.grace,
               {_whole("c.us", "k0.dround")} AS d,
               r1.rid AS rid1, k1.currency AS provider_currency, k1.unit AS unit1,
               k1.rnd AS rnd1, r1.rate AS rate1, r1.fee AS fee1, r1.mcd AS mcd1,
               r1.pulse AS pulse1, r1.grace AS grace1, {_whole("c.us", "k1.dround")} AS d1
        FROM best b
        JOIN c ON c.i = b.i
        JOIN b_rates r0 ON r0.rid = b.rid0
        JOIN b_cards k0 ON k0.card = r0.card
        LEFT JOIN b_rates r1 ON r1.rid = b.rid1
        LEFT JOIN b_cards k1 ON k1.card = r1.card
        LEFT JOIN b_customers u ON u.customer_id = c.customer_id
    ),
    priced AS (
        SELECT i, callid, t, customer_id, number, tax, currency, unit, rnd, rate, fee,
               {_billed("d", "mcd", "pulse", "grace")} AS billed,
               rid1, provider_currency, unit1, rnd1, rate1, fee1,
               {_billed("d1", "mcd1", "pulse1", "grace1")} AS billed1
        FROM joined
    ),
    p0 AS (
        SELECT i, t, callid, customer_id, number, billed AS need0, t // {DAY_US} AS day,
               DATE '1970-01-01' + CAST(t // {DAY_US} AS INTEGER) AS date
        FROM priced
        WHERE billed > 0 AND customer_id IN (SELECT customer_id FROM b_allot)
    ),{passes}
    packaged AS (SELECT i, need0 - need{ranks} AS package_seconds FROM p{ranks}),
    charged AS (
        SELECT p.*, coalesce(g.package_seconds, 0) AS package_seconds,
               {
        _charge("p.billed", "coalesce(g.package_seconds, 0)", "p.rate", "p.fee", "p.unit", "p.rnd")
    } AS charge
        FROM priced p LEFT JOIN packaged g ON g.i = p.i
    )
    SELECT callid, billed AS billed_duration, package_seconds, charge,
           {_round("charge * tax", f"100 * {MICRO} * unit", "2")} * unit AS tax,
           CASE WHEN rid1 IS NOT NULL THEN {provider_charge} END AS provider_charge,
           CASE WHEN rid1 IS NOT NULL AND provider_currency = currency
                THEN charge - {provider_charge} END AS profit
    FROM charged
    """


# -- the plain Python loop ------------------------------------------------------------------


@dataclass
class PythonCatalog:
    """The catalog in dicts: per card, prefix → versions (newest effective_from first)."""

    cards: dict[str, dict[str, Any]]
    rates: dict[str, dict[str, list[tuple[int, int, dict[str, int]]]]]
    longest: dict[str, int]
    tax: dict[str, int]
    allotments: dict[str, list[Allotment]]

    @staticmethod
    def of(catalog_rows: CatalogRows) -> PythonCatalog:
        cards = {
            r["card_id"]: {
                "currency": r["currency"],
                "unit": 10 ** (6 - int(r["precision"])),
                "rounding": r["rounding"],
                "duration_rounding": r["duration_rounding"],
            }
            for r in catalog_rows["rate_cards"]
        }
        rates: dict[str, dict[str, list[tuple[int, int, dict[str, int]]]]] = {c: {} for c in cards}
        longest = dict.fromkeys(cards, 0)
        for r in catalog_rows["rates"]:
            versions = rates[r["card_id"]].setdefault(r["prefix"], [])
            row = {
                "rate": _micro(r["rate"]),
                "fee": _micro(r["connect_fee"]),
                "mcd": r["mcd"],
                "pulse": r["pulse"],
                "grace": r["grace"],
                "from": _time_us(r["effective_from"], NEVER_BEFORE),
            }
            versions.append(
                (row["from"], _time_us(r["effective_to"], NEVER_AFTER), row)  # type: ignore[arg-type]
            )
            longest[r["card_id"]] = max(longest[r["card_id"]], len(r["prefix"]))
        for card in rates.values():
            for versions in card.values():
                versions.sort(key=lambda v: -v[0])
        tax = {r["customer_id"]: _micro(r["tax_percent"]) for r in catalog_rows["customers"]}
        return PythonCatalog(cards, rates, longest, tax, allotments(catalog_rows))

    def lookup(self, card_id: str, number: str, t: int) -> dict[str, int] | None:
        prefixes = self.rates[card_id]
        for length in range(min(len(number), self.longest[card_id]), 0, -1):
            versions = prefixes.get(number[:length])
            if versions is None:
                continue
            for eff_from, eff_to, row in versions:
                if eff_from <= t < eff_to:
                    return row
        return None


def _round_ratio(num: int, den: int, mode: str) -> int:
    q, r = divmod(num, den)
    if mode == "up":
        return q + (r > 0)
    if mode == "down":
        return q
    if mode == "half_up":
        return q + (2 * r >= den)
    return q + (2 * r > den)


def _whole_seconds(us: int, mode: str) -> int:
    q, r = divmod(us, MICRO)
    if mode == "up":
        return q + (r > 0)
    if mode == "down":
        return q
    if mode == "half_up":
        return q + (2 * r >= MICRO)
    return q + (2 * r > MICRO)


def _bill(answered: bool, us: int, mode: str, row: dict[str, int]) -> int:
    if not answered:
        return 0
    d = _whole_seconds(us, mode)
    if d == 0 or d <= row["grace"]:
        return 0
    if d <= row["mcd"]:
        return row["mcd"]
    return row["mcd"] + (d - row["mcd"] + row["pulse"] - 1) // row["pulse"] * row["pulse"]


def _charge_py(billed: int, package: int, row: dict[str, int], card: dict[str, Any]) -> int:
    if billed == 0:
        return 0
    charged = billed - package
    num = charged * row["rate"] + (60 * row["fee"] if charged > 0 else 0)
    unit = card["unit"]
    return _round_ratio(num, 60 * unit, card["rounding"]) * unit


def _period_start(day: int, allotment: Allotment) -> int:
    if allotment.frequency == 0:
        return day
    if allotment.frequency == 1:
        return day - (day + 3) % 7  # 1970-01-01 was a Thursday
    if allotment.frequency == 2:
        return day - (EPOCH + timedelta(days=day)).day + 1
    return allotment.start


def rate_python(
    catalog_rows: CatalogRows, calls: pa.Table, index: PythonCatalog | None = None
) -> list[dict[str, Any]]:
    """Rate ``calls`` (schema ``CALLS``) in a plain Python loop; one dict (``RESULT``'s
    fields) per rated call, in input order. ``index``: ``PythonCatalog.of(catalog_rows)``."""
    ix = index if index is not None else PythonCatalog.of(catalog_rows)
    callids = calls["callid"].to_pylist()
    times = calls["dt"].cast(pa.int64()).to_pylist()
    customers = calls["customer_id"].to_pylist()
    cards = calls["card_id"].to_pylist()
    numbers = calls["number"].to_pylist()
    provider_cards = calls["provider_card_id"].to_pylist()
    durations = _decimal_micro(calls["duration"]).tolist()
    answered = calls["answered"].to_pylist()

    # Per rated call: [input row, billed seconds, package seconds, rate row, card, provider
    # leg (charge, card) or None]: lists, not dicts, to keep two million of them small.
    rated: list[list[Any]] = []
    for i in range(len(callids)):
        card_id, number, t = cards[i], numbers[i], times[i]
        row = ix.lookup(card_id, number, t)
        if row is None:
            continue  # no_rate
        card = ix.cards[card_id]
        billed = _bill(answered[i], durations[i], card["duration_rounding"], row)
        provider = provider_cards[i]
        provider_row = None if provider not in ix.cards else ix.lookup(provider, number, t)
        leg = None
        if provider_row is not None:
            provider_card = ix.cards[provider]
            provider_billed = _bill(
                answered[i], durations[i], provider_card["duration_rounding"], provider_row
            )
            leg = (_charge_py(provider_billed, 0, provider_row, provider_card), provider_card)
        rated.append([i, billed, 0, row, card, leg])

    # Packages, in (dt, callid) order.
    used: dict[tuple[str, str, str, int], int] = {}
    drawing = [c for c in rated if c[1] > 0 and customers[c[0]] in ix.allotments]
    drawing.sort(key=lambda c: (times[c[0]], callids[c[0]]))
    for call in drawing:
        i = call[0]
        day = times[i] // DAY_US
        need = call[1]
        for allotment in ix.allotments[customers[i]]:
            if need == 0:
                break
            if not allotment.start <= day <= allotment.end:
                continue
            if allotment.prefixes and not numbers[i].startswith(allotment.prefixes):
                continue
            key = (
                allotment.customer_id,
                allotment.package_id,
                allotment.start_date,
                _period_start(day, allotment),
            )
            available = allotment.allowance - used.get(key, 0)
            if available <= 0:
                continue
            take = min(available, need)
            used[key] = used.get(key, 0) + take
            need -= take
            call[2] += take

    out = []
    for i, billed, package, row, card, leg in rated:
        charge = _charge_py(billed, package, row, card)
        unit = card["unit"]
        tax = _round_ratio(charge * ix.tax.get(customers[i], 0), 100 * MICRO * unit, "half_up")
        provider_charge, profit = None, None
        if leg is not None:
            provider_charge, provider_card = leg
            if provider_card["currency"] == card["currency"]:
                profit = charge - provider_charge
        out.append(
            {
                "callid": callids[i],
                "billed_duration": billed,
                "package_seconds": package,
                "charge": charge,
                "tax": tax * unit,
                "provider_charge": provider_charge,
                "profit": profit,
            }
        )
    return out


__all__ = [
    "CALLS",
    "COMPARED",
    "RESULT",
    "PythonCatalog",
    "load_catalog",
    "rate_python",
    "rate_sql",
]
