"""Assets and asset checks of billing (SPEC §7): the daily summaries, the month's invoices,
the balances, and the checks of the books against the lake.

Assets orchestrate; the computing is the library's, the same code the commands run
(``pipelines.summaries``, ``pipelines.ledger``, ``pipelines.audits``). Money in metadata
is exact decimal text, per currency.
"""

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal

import dagster as dg

from billing.money import ZERO
from dags.partitions import daily, monthly
from dags.resources import CdrflowHome
from pipelines.audits import callids_in_two_days, invoice_usage
from pipelines.catalog.documents import of_month
from pipelines.catalog.store import Catalog
from pipelines.clock import now
from pipelines.ledger import balances_at, build_month
from pipelines.summaries import write_day

# The rated lake: written by ``cdrflow rate`` and the stream raters, re-written by the
# rerate and recalc jobs; every billing asset reads it.
rated_lake = dg.AssetSpec(
    "rated_lake",
    description="lake/rated/date=YYYY-MM-DD/*.parquet: the rated CDRs (SPEC §5.4), written "
    "by `cdrflow rate` and the stream raters, re-rated by the rerate and recalc jobs.",
    group_name="lake",
    kinds={"parquet"},
)


def money_text(totals: Mapping[str, Decimal | str]) -> dg.MetadataValue:
    """Money per currency as exact text: ``EUR 12.500000, USD 3.000000`` (``0`` for none)."""
    shown = ", ".join(f"{currency} {value}" for currency, value in sorted(totals.items()))
    return dg.MetadataValue.text(shown or "0")


def _per_currency(pairs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for currency, value in pairs:
        out[currency] = out.get(currency, ZERO) + value
    return out


@dg.asset(
    partitions_def=daily,
    deps=[rated_lake],
    group_name="billing",
    kinds={"duckdb", "parquet"},
    description="lake/summaries/date=YYYY-MM-DD/summary.parquet: the UTC day's SPEC §6 "
    "metrics per customer and per provider (`cdrflow summaries build --day`).",
)
def daily_summaries(context: dg.AssetExecutionContext, home: CdrflowHome) -> dg.MaterializeResult:
    done = write_day(home.home(), date.fromisoformat(context.partition_key))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(done.path)),
            "customer_rows": done.customers,
            "provider_rows": done.providers,
            "attempts": done.attempts,
            "answered": done.answered,
            "charge": money_text(done.charge),
            "provider_charge": money_text(done.provider_charge),
            "profit": money_text(done.profit),
        }
    )


@dg.asset(
    partitions_def=monthly,
    deps=[rated_lake],
    group_name="billing",
    kinds={"sqlite", "pdf"},
    description="The month's invoices, credit and debit notes (SPEC §7.3), issued into the "
    "catalog store and rendered under invoices/ (`cdrflow invoices build --month`).",
    check_specs=[
        dg.AssetCheckSpec(
            "usage_matches_lake",
            asset="invoices",
            description="The month's issued usage (each invoice with its notes) equals, per "
            "customer, Σ charge of the lake's calls of the month with billed seconds.",
        )
    ],
)
def invoices(context: dg.AssetExecutionContext, home: CdrflowHome) -> dg.MaterializeResult:
    month = date.fromisoformat(context.partition_key)
    with Catalog(home.home()) as catalog:
        issued = build_month(home.home(), catalog, month, now())
        documents = of_month(catalog, month)
        customers, gaps = invoice_usage(home.home(), catalog, month)
    check = dg.AssetCheckResult(
        check_name="usage_matches_lake",
        passed=not gaps,
        metadata={
            "customers": customers,
            "mismatches": len(gaps),
            "differing": dg.MetadataValue.text(
                "; ".join(f"{g.customer_id}: issued {g.issued}, lake {g.lake}" for g in gaps)
            ),
        },
    )
    return dg.MaterializeResult(
        check_results=[check],
        metadata={
            "issued": len(issued),
            "issued_numbers": dg.MetadataValue.text(" ".join(str(d.number) for d in issued)),
            "documents": len(documents),
            "customers": len({d.customer_id for d in documents}),
            "usage": money_text(_per_currency((d.currency, d.usage) for d in documents)),
            "fees": money_text(_per_currency((d.currency, d.fees) for d in documents)),
            "total": money_text(_per_currency((d.currency, d.total) for d in documents)),
            "issued_total": money_text(_per_currency((d.currency, d.total) for d in issued)),
        },
    )


@dg.asset(
    deps=[rated_lake],
    group_name="billing",
    kinds={"duckdb"},
    description="Every customer's balance now (SPEC §7.2, `cdrflow balance`).",
)
def balances(home: CdrflowHome) -> dg.MaterializeResult:
    with Catalog(home.home()) as catalog:
        rows = balances_at(home.home(), catalog, None, now())
    table = "\n".join(
        f"| {b.customer_id} | {b.currency} | {b.balance} | {b.available} |" for b in rows
    )
    return dg.MaterializeResult(
        metadata={
            "customers": len(rows),
            "balance": money_text(_per_currency((b.currency, b.balance) for b in rows)),
            "available": money_text(_per_currency((b.currency, b.available) for b in rows)),
            "balances": dg.MetadataValue.md(
                "| customer | currency | balance | available |\n|---|---|---:|---:|\n" + table
            ),
        }
    )


@dg.asset_check(
    asset=rated_lake.key,
    description="No callid is in two date partitions of the rated lake (a call is billed once).",
)
def callid_in_one_day(home: CdrflowHome) -> dg.AssetCheckResult:
    count, some = callids_in_two_days(home.home())
    return dg.AssetCheckResult(
        passed=count == 0,
        metadata={
            "callids_in_two_days": count,
            "examples": dg.MetadataValue.text(
                "; ".join(f"{callid}: {', '.join(days)}" for callid, days in some)
            ),
        },
    )
