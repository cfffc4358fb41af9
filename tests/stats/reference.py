"""The SPEC §6 metrics straight from the rated files, in plain SQL: the slow, obviously
correct reference that ``stats.metrics`` (summaries, the sweep) is tested against."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from stats.metrics import KEYS, query_parts
from stats.rollup import NER_CODES
from stats.scope import RATED_FILES, Scope

# How a bucket is shown: its first instant, to the hour, the day or the month.
_LABELS = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}

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
    ),
    totals AS (
        SELECT {key_list}
            count(*) AS attempts,
            count(*) FILTER (sip_code = 200) AS answered,
            round(100.0 * count(*) FILTER (sip_code = 200) / count(*), 2) AS asr,
            round(sum(duration) FILTER (sip_code = 200)
                  / nullif(count(*) FILTER (sip_code = 200), 0), 2)::DOUBLE AS acd,
            round(avg(pdd_ms), 1) AS pdd,
            round(100.0 * count(*) FILTER (sip_code = 200 OR sip_code IN ({ner_codes}))
                  / nullif(count(*) FILTER (NOT sip_code BETWEEN 300 AND 399), 0), 2) AS ner,
            round(coalesce(sum(duration) FILTER (sip_code = 200), 0) / 60, 4)::DOUBLE
                AS minutes,
            round(coalesce(sum(billed_duration), 0) / 60, 4) AS billed_minutes,
            CASE WHEN min(currency) = max(currency)
                 THEN sum(charge) END::DECIMAL(18, 6) AS charge,
            CASE WHEN min(provider_currency) = max(provider_currency)
                 THEN sum(provider_charge) END::DECIMAL(18, 6) AS provider_charge,
            CASE WHEN min(currency) = max(currency)
                 THEN sum(profit) END::DECIMAL(18, 6) AS profit
        FROM calls GROUP BY {group}
    ),
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
    SELECT {shown}
        t.* EXCLUDE ({excluded}), c.channels::BIGINT AS channels, s.cps::BIGINT AS cps
    FROM totals t
    JOIN channels c ON {join_c}
    JOIN cps s ON {join_s}
    WHERE t.attempts > 0  -- a group without calls has no row, the whole range neither
    ORDER BY {t_order}
    """
)


def metrics_sql(con: duckdb.DuckDBPyConnection, scope: Scope, by: Sequence[str]) -> pa.Table | None:
    """``stats.metrics`` of the scope, computed from every call by SQL windows (None when the
    scope has no files to read)."""
    if not scope.files():
        return None
    where, params = scope.where()
    parts = query_parts(by, where)
    names = list(by)
    sql = _CALLS.format(
        **parts,
        ner_codes=", ".join(str(c) for c in NER_CODES),
        partition=parts["group"] if names else "NULL",
        shown="".join(
            f"t.{n} AS {n}, " if n in KEYS else f"strftime(t.{n}, '{_LABELS[n]}') AS {n}, "
            for n in names
        ),
        excluded=", ".join(names) or "attempts_",
        join_c=" AND ".join(f"c.{n} IS NOT DISTINCT FROM t.{n}" for n in names) or "TRUE",
        join_s=" AND ".join(f"s.{n} IS NOT DISTINCT FROM t.{n}" for n in names) or "TRUE",
        t_order=", ".join(f"t.{n} NULLS FIRST" for n in names) or "1",
    )
    sql = sql.replace("EXCLUDE (attempts_)", "")
    return con.sql(sql, params=[scope.files(), *params]).to_arrow_table()
