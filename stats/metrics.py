"""The traffic and money of SPEC §6, grouped and bucketed, in one DuckDB query.

A group is any combination of the ``KEYS`` (customer, provider, card, code, destination,
currency) and at most one ``BUCKETS`` entry (hour, day, month: UTC, by ``dt``). The columns
are the group keys, then ``METRICS`` in that order.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

from schemas.errors import CdrflowError
from stats.peaks import peaks
from stats.scope import RATED_FILES, Scope

# Group key → its column in the rated lake.
KEYS = {
    "customer": "customer_id",
    "provider": "provider_id",
    "card": "card_id",
    "code": "dest_code",
    "destination": "dest_name",
    "currency": "currency",
}
# Time bucket → its unit; a bucket is shown as text that sorts in time order.
BUCKETS = {"hour": "hour", "day": "day", "month": "month"}
_BUCKET_TEXT = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}
METRICS = (
    "attempts",
    "answered",
    "asr",
    "acd",
    "pdd",
    "ner",
    "minutes",
    "billed_minutes",
    "charge",
    "provider_charge",
    "profit",
    "channels",
    "cps",
)
# Final responses that count towards NER besides answered calls (SPEC §6): the network
# delivered the call and the user declined it.
NER_CODES = (480, 486, 600, 603)


def parse_by(text: str) -> list[str]:
    """``customer,day`` → the group keys in order; an unknown or repeated key is an error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = [*KEYS, *BUCKETS]
    for n in names:
        if n not in known:
            raise CdrflowError(f"--by: unknown group {n!r}; use any of {', '.join(known)}")
    if len(set(names)) != len(names):
        raise CdrflowError(f"--by: {text!r} names a group twice")
    if sum(n in BUCKETS for n in names) > 1:
        raise CdrflowError("--by: at most one of hour, day, month")
    return names


def query_parts(by: Sequence[str], where: str) -> dict[str, str]:
    names = list(by)
    return {
        "select_keys": "".join(
            f"{KEYS[n]} AS {n}, " if n in KEYS else f"date_trunc('{BUCKETS[n]}', dt) AS {n}, "
            for n in names
        ),
        "key_list": "".join(f"{n}, " for n in names),
        "shown_keys": "".join(
            f"{n}, " if n in KEYS else f"strftime({n}, '{_BUCKET_TEXT[n]}') AS {n}, " for n in names
        ),
        "group": ", ".join(names) if names else "()",
        "hash": f"hash({', '.join(names)})" if names else "0::UBIGINT",
        "order": ", ".join(f"{n} NULLS FIRST" for n in names) or "1",
        "where": where,
    }


_CALLS = (
    """
    WITH calls AS (
        SELECT {select_keys}dt, sip_code, duration, billed_duration, pdd_ms, charge,
               provider_charge, profit, currency, provider_currency,
               epoch_us(dt) AS t0,
               epoch_us(dt)
                 + CAST(coalesce(ring_duration, 0) * 1000000 AS BIGINT)
                 + CASE WHEN sip_code = 200
                        THEN CAST(coalesce(duration, 0) * 1000000 AS BIGINT) ELSE 0 END AS t1
        FROM """
    + RATED_FILES
    + """
        WHERE {where}
    )
"""
)

_TOTALS = (
    _CALLS
    + """
    SELECT {shown_keys}
        {hash} AS grp,
        count(*) AS attempts,
        count(*) FILTER (sip_code = 200) AS answered,
        round(100.0 * count(*) FILTER (sip_code = 200) / count(*), 2) AS asr,
        round(sum(duration) FILTER (sip_code = 200)
              / nullif(count(*) FILTER (sip_code = 200), 0), 2)::DOUBLE AS acd,
        round(avg(pdd_ms), 1) AS pdd,
        round(100.0 * count(*) FILTER (sip_code = 200 OR sip_code IN ({ner_codes}))
              / nullif(count(*) FILTER (NOT sip_code BETWEEN 300 AND 399), 0), 2) AS ner,
        round(coalesce(sum(duration) FILTER (sip_code = 200), 0) / 60, 4)::DOUBLE AS minutes,
        round(coalesce(sum(billed_duration), 0) / 60, 4) AS billed_minutes,
        -- Money adds up only within one currency: a group that mixes them gets null.
        CASE WHEN min(currency) = max(currency)
             THEN sum(charge) END::DECIMAL(18, 6) AS charge,
        CASE WHEN min(provider_currency) = max(provider_currency)
             THEN sum(provider_charge) END::DECIMAL(18, 6) AS provider_charge,
        CASE WHEN min(currency) = max(currency)
             THEN sum(profit) END::DECIMAL(18, 6) AS profit
    FROM calls GROUP BY {group} ORDER BY {order}
    """
)

_EDGES = _CALLS + "SELECT {hash} AS grp, t0, t1 FROM calls"

# The same peaks in SQL: the reference the sweep is tested against, and the answer when two
# groups' hashes collide (which 64 bits make a curiosity, but exact is exact).
_PEAKS_SQL = (
    _CALLS
    + """,
    edges AS (
        SELECT {key_list}t0 AS t, 1 AS step FROM calls
        UNION ALL
        SELECT {key_list}t1 AS t, -1 AS step FROM calls
    ),
    channels AS (
        SELECT {key_list}max(up) AS channels FROM (
            SELECT {key_list}sum(step) OVER (
                PARTITION BY {partition} ORDER BY t, step
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS up
            FROM edges)
        GROUP BY {group}
    ),
    cps AS (
        SELECT {key_list}max(n) AS cps FROM (
            SELECT {key_list}count(*) AS n FROM calls GROUP BY {key_list}t0 // 1000000)
        GROUP BY {group}
    )
    SELECT {c_keys}c.channels::BIGINT AS channels, s.cps::BIGINT AS cps
    FROM channels c JOIN cps s ON {join}
    ORDER BY {c_order}
    """
)


def metrics(con: duckdb.DuckDBPyConnection, scope: Scope, by: Sequence[str]) -> pa.Table:
    """The SPEC §6 metrics of the scope's rated CDRs per group of ``by`` (one row per group
    that has calls; no group at all: one row over the whole scope, if it has calls)."""
    files = scope.files()
    if not files:
        return _empty(by)
    where, params = scope.where()
    parts = query_parts(by, where)
    ner_codes = ", ".join(str(c) for c in NER_CODES)
    totals = con.sql(_TOTALS.format(**parts, ner_codes=ner_codes), params=[files, *params])
    table = totals.to_arrow_table()
    if table.num_rows == 0:
        return _empty(by)
    groups = table["grp"].to_numpy()
    order = np.argsort(groups)
    if np.unique(groups).size == groups.size:
        edges = con.sql(_EDGES.format(**parts), params=[files, *params]).fetchnumpy()
        channels, cps = peaks(
            groups[order],
            np.asarray(edges["grp"], np.uint64),
            np.asarray(edges["t0"], np.int64),
            np.asarray(edges["t1"], np.int64),
        )
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        channels, cps = channels[back], cps[back]
    else:
        exact = peaks_sql(con, scope, by)
        channels, cps = exact["channels"].to_numpy(), exact["cps"].to_numpy()
    table = table.drop_columns(["grp"])
    table = table.append_column("channels", pa.array(channels, pa.int64()))
    return table.append_column("cps", pa.array(cps, pa.int64()))


def peaks_sql(con: duckdb.DuckDBPyConnection, scope: Scope, by: Sequence[str]) -> pa.Table:
    """Channels and CPS per group by a SQL window (groups in the order of ``metrics``)."""
    where, params = scope.where()
    parts = query_parts(by, where)
    names = list(by)
    sql = _PEAKS_SQL.format(
        **parts,
        partition=parts["group"] if names else "NULL",
        c_keys="".join(f"c.{n} AS {n}, " for n in names),
        join=" AND ".join(f"c.{n} IS NOT DISTINCT FROM s.{n}" for n in names) or "TRUE",
        c_order=", ".join(f"c.{n} NULLS FIRST" for n in names) or "1",
    )
    return con.sql(sql, params=[scope.files(), *params]).to_arrow_table()


def _empty(by: Sequence[str]) -> pa.Table:
    columns = {n: pa.array([], pa.string()) for n in by}
    columns.update({m: pa.array([], pa.int64()) for m in METRICS})
    return pa.table(columns)
