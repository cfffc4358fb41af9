"""``cdrflow customers show ID``: the customer card (``pipelines.card`` gathers it).

One document, built once: ``--format json`` prints it; ``--format table`` draws it, section
by section, to fit an 80-column terminal (each section keeps its key columns; the JSON has
them all); ``--format csv`` prints the customer's own row only, as ``customers list`` does,
since a card of many sections is not one table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pipelines.cli.context import catalog_of, home_of, operator_errors
from pipelines.cli.entities import FormatOption
from pipelines.cli.output import Format, console, emit_record, jsonable, visible
from schemas.catalog import BY_NAME, CUSTOMERS
from schemas.fields import Money

if TYPE_CHECKING:
    from pipelines.card import Card, Traffic

# The card's sections, in the order of the document and of the screen.
SECTIONS = (
    "customer", "contacts", "auth", "routes", "cli_rules", "packages", "dids", "payments",
    "alerts", "alert_firings", "contracts", "traffic", "calls", "balance", "invoices",
)  # fmt: skip
# Sections that list only the latest rows (--latest); ``counts`` says how many there are.
LATEST_OF = ("payments", "alert_firings", "calls", "invoices")
TRAFFIC = ("attempts", "answered", "asr", "acd", "minutes", "charge")


@operator_errors
def show(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(help="the customer's customer_id")],
    latest: Annotated[
        int,
        typer.Option(
            "--latest", "-n", min=1, help="how many of the latest payments, calls and invoices"
        ),
    ] = 5,
    fmt: FormatOption = Format.table,
) -> None:
    """The customer card: its fields, contacts, auth, routes, CLI rules, packages (seconds
    left this period), DIDs, latest payments, alerts (and their firings), contracts,
    traffic today and this month (UTC, by $CDRFLOW_NOW when set), latest calls, balance and
    latest invoices. --format json: all of it as one document; --format csv: the customer's
    own fields."""
    catalog = catalog_of(ctx)
    if fmt is Format.csv:
        emit_record(catalog.get("customers", customer_id), fmt, entity=CUSTOMERS, title="")
        return
    from pipelines.card import customer_card
    from pipelines.clock import now

    card = customer_card(home_of(ctx), catalog, customer_id, now(), latest)
    doc = document(card)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        console.print(render(doc))


# -- the document ------------------------------------------------------------------------


def document(card: Card) -> dict[str, Any]:
    """The card as one JSON-ready document: each section a key (lists as arrays), money as
    exact text, times as ISO 8601 UTC; ``counts`` says how many rows each list section has
    in all (the latest-only ones list at most ``latest``)."""
    from pipelines.cli.billing import balance_row, document_row
    from pipelines.cli.stats import rows_of

    def catalog(name: str) -> list[dict[str, Any]]:
        return [jsonable(r, BY_NAME[name]) for r in card.rows[name]]

    [customer] = catalog("customers")
    payments = catalog("payments")
    firings = card.firings
    package_money = Money()
    doc: dict[str, Any] = {
        "customer": customer,
        "as_of": _iso(card.at),
        "contacts": catalog("contacts"),
        "auth": catalog("auth"),
        "routes": catalog("routes"),
        "cli_rules": catalog("cli_rules"),
        "packages": [{**p, "retail": package_money.jsonable(p["retail"])} for p in card.packages],
        "dids": catalog("dids"),
        "payments": payments[: card.latest],
        "alerts": catalog("alerts"),
        "alert_firings": (
            None if firings is None or firings.rows is None else rows_of(firings.rows)
        ),
        "contracts": catalog("contracts"),
        "traffic": {
            "today": _traffic(card.today, customer["currency"]),
            "month": _traffic(card.month, customer["currency"]),
        },
        "calls": rows_of(card.calls),
        "balance": {k: v for k, v in balance_row(card.balance).items() if k != "customer_id"},
        "invoices": [document_row(d) for d in card.invoices],
    }
    doc["counts"] = {name: len(doc[name]) for name in SECTIONS if isinstance(doc[name], list)} | {
        "payments": len(payments),
        "alert_firings": None if firings is None else firings.total,
        "calls": card.calls_total,
        "invoices": card.invoices_total,
    }
    doc["problems"] = [firings.problem] if firings is not None and firings.problem else []
    return doc


def _traffic(traffic: Traffic, currency: str) -> dict[str, Any]:
    """A period's traffic, as ``cdrflow stats`` gives it (no calls: zeros)."""
    from pipelines.cli.stats import rows_of

    rows = rows_of(traffic.metrics)
    values = (
        {name: rows[0][name] for name in TRAFFIC}
        if rows
        else {
            "attempts": 0,
            "answered": 0,
            "asr": None,
            "acd": None,
            "minutes": 0.0,
            "charge": Money().render(Decimal(0)),
        }
    )
    return {"from": _iso(traffic.start), "to": _iso(traffic.end), **values, "currency": currency}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- the screen --------------------------------------------------------------------------


def render(doc: Mapping[str, Any]) -> RenderableType:
    """The card for people: a heading, the customer's fields, then a small table per
    section (one line for a section with nothing in it)."""
    c = doc["customer"]
    counts = doc["counts"]
    parts: list[RenderableType] = [
        Text.assemble(
            (visible(f"customer {c['customer_id']}"), "bold"),
            "  " + visible(f"{c['name']} · {c['status']} · {c['currency']}"),
        ),
        Text(f"as of {_short_time(doc['as_of'])} UTC", style="dim"),
        _fields(c),
    ]
    for name, title, columns in _LAYOUT:
        parts.append(Text(""))
        rows = doc[name]
        if name == "alert_firings" and rows is None:
            note = "; ".join(doc["problems"]) or "none (no live app keeps this home's alerts)"
            parts.append(_line(title, note))
            continue
        shown = _title(title, len(rows), counts.get(name), name in LATEST_OF)
        parts.append(_table(shown, rows, columns) if rows else _line(title, "none"))
        if name == "contracts":
            parts += [Text(""), _traffic_table(doc["traffic"])]
        if name == "calls":
            parts += [Text(""), _balance(doc["balance"])]
    return Group(*parts)


def _title(title: str, shown: int, total: int | None, latest: bool) -> str:
    if latest and total is not None and total > shown:
        return f"{title} (latest {shown} of {total})"
    return f"{title} ({shown})"


def _line(title: str, note: str) -> Text:
    return Text.assemble((title, "bold"), ": ", (visible(note), "dim"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return visible(str(value))


@dataclass(frozen=True)
class Column:
    """A shown column: its header, how its value is read from a row, whether it is a number
    (right-aligned), and whether it is a key, kept on one line (others fold to fit)."""

    header: str
    get: Callable[[Mapping[str, Any]], Any]
    number: bool = False
    key: bool = False


def _col(name: str, header: str | None = None, number: bool = False, key: bool = False) -> Column:
    return Column(header or name, lambda row: row.get(name), number, key)


def _table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> Table:
    table = Table(
        title=Text(title, style="bold"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        header_style="dim",
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        show_edge=False,
    )
    for c in columns:
        table.add_column(
            c.header, justify="right" if c.number else "left", overflow="fold", no_wrap=c.key
        )
    for row in rows:
        table.add_row(*(Text(_cell(c.get(row))) for c in columns))
    return table


def _fields(c: Mapping[str, Any]) -> Table:
    """The customer's own fields but those of the heading: the short ones on the left, the
    long ones (addresses) on the right, which folds them."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold", ratio=1)
    long = [k for k in _LONG_FIELDS if k in c]
    short = [k for k in c if k not in long and k not in _HEADING_FIELDS]
    for i in range(max(len(short), len(long))):
        cells = []
        for names in (short, long):
            name = names[i] if i < len(names) else None
            cells += [name.replace("_", " ") if name else "", _cell(c[name]) if name else ""]
        grid.add_row(*map(Text, cells))
    return grid


_HEADING_FIELDS = ("customer_id", "name", "status", "currency")
_LONG_FIELDS = ("paypal_email", "website", "address")


def _traffic_table(traffic: Mapping[str, Mapping[str, Any]]) -> Table:
    today, month = traffic["today"], traffic["month"]
    rows = [
        {"period": f"today {today['from'][:10]}", **today},
        {"period": f"month {month['from'][:7]}", **month},
    ]
    columns = [
        _col("period"),
        _col("attempts", number=True),
        _col("answered", number=True),
        _col("asr", "ASR %", True),
        _col("acd", "ACD s", True),
        _col("minutes", number=True),
        Column("charge " + today["currency"], lambda r: r["charge"], number=True),
    ]
    return _table("traffic (UTC)", rows, columns)


def _balance(b: Mapping[str, Any]) -> Table:
    columns = [
        _col(name, name.replace("_", " "), number=True)
        for name in ("balance", "available", "debit_limit", "payments", "usage", "fees")
    ]
    return _table(f"balance now ({b['currency']})", [b], columns)


def _short_time(value: Any) -> str:
    """An ISO time to the second, as a table shows it (the JSON keeps it whole)."""
    text = str(value or "")
    return text[:19].replace("T", " ")


def _period(p: Mapping[str, Any]) -> str:
    if p["state"] == "future":
        return f"starts {p['start_date']}"
    if p["state"] == "ended":
        return f"ended {p['end_date']}"
    return f"from {p['period_start']}"


_LAYOUT: tuple[tuple[str, str, list[Column]], ...] = (
    ("contacts", "contacts", [
        _col("name"), _col("email"), _col("public_notes", "public notes"),
        _col("private_notes", "private notes"), _col("password_set", "password"),
    ]),
    ("auth", "auth", [
        _col("id", number=True), _col("kind"), _col("value", key=True),
        _col("tech_prefix", "tech prefix"), _col("channels", number=True), _col("cps", number=True),
        Column("password", lambda r: r["password_set"] if r["kind"] == "user" else None),
    ]),
    ("routes", "ingress routes", [
        _col("id", number=True), _col("card_id", "card"), _col("tech_prefix", "tech prefix"),
        _col("strip_digits", "strip", True), _col("dial_string", "dial string"),
        _col("priority", number=True),
    ]),
    ("cli_rules", "CLI rules", [_col("id", number=True), _col("pattern"), _col("action")]),
    ("packages", "packages", [
        _col("package_id", "package", key=True), _col("frequency"), _col("prefixes"),
        Column("period", _period, key=True), _col("seconds", number=True),
        _col("used", number=True), _col("left", number=True),
    ]),
    ("dids", "DIDs", [
        _col("number", key=True), _col("customer_card_id", "card"), _col("provider_id", "provider"),
        _col("monthly_retail", "monthly", True), _col("start_date", "start"),
        _col("end_date", "end"),
    ]),
    ("payments", "payments", [
        _col("payment_id", "payment", key=True),
        Column("at", lambda r: _short_time(r["at"]), key=True),
        _col("amount", number=True), _col("status"), _col("description"),
    ]),
    ("alerts", "alerts", [
        _col("alert_id", "alert", key=True), _col("name"),
        Column("when", lambda r: f"{r['area']} {r['operator']} {r['threshold']}", key=True),
        _col("recipient"),
    ]),
    ("alert_firings", "alert firings", [
        Column("at", lambda r: _short_time(r["at"]), key=True),
        _col("alert_id", "alert", key=True), _col("value", number=True), _col("delivery"),
    ]),
    ("contracts", "contracts", [
        _col("contract_id", "contract", key=True), _col("name"), _col("provider_id", "provider"),
        _col("start_date", "start", key=True), _col("end_date", "end", key=True), _col("status"),
    ]),
    ("calls", "calls", [
        Column("dt", lambda r: _short_time(r["dt"]), key=True),
        _col("dest_number", "number", key=True),
        _col("dest_name", "destination"), _col("sip_code", "sip", True),
        _col("duration", number=True), _col("charge", number=True),
    ]),
    ("invoices", "invoices and notes", [
        _col("number", key=True), _col("kind"), _col("month", key=True), _col("total", number=True),
        _col("balance_due", "due", True), Column("issued", lambda r: r["issued_at"][:10], key=True),
    ]),
)  # fmt: skip
