"""``cdrflow live top``: every customer's live state in the terminal, refreshed.

It reads the live worker's web views (``GET /customers``, ``GET /alerts``) and draws one
table of customers and one of the latest alerts, again every ``--every`` seconds, until
Ctrl-C. ``--once`` draws them once and exits; ``--format csv|json`` prints the customers
for a program instead (once). The table fits the terminal: when it is too narrow, the
columns an operator can most spare go first, and customer, balance, available and channels
always stay; rows beyond the terminal's height are counted, not drawn.

What is fetched is shown as data: values are text (money exactly as the worker sent it),
with control characters escaped (``output.visible``), never console markup.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from pipelines.cli.output import console, fail, visible
from schemas.fields import neutralise

TIMEOUT = 5.0  # seconds a request may take: a worker slower than that is as good as down
HINT = "; is `cdrflow live worker` running there, with that --web-port?"


class TopFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    numeric: bool = False
    keep: bool = False  # never dropped for width


# In the order shown. Drop order when the terminal is narrow: DROPS, first to last.
COLUMNS = (
    Column("customer_id", "customer", keep=True),
    Column("name", "name"),
    Column("status", "status"),
    Column("currency", "cur"),
    Column("balance", "balance", numeric=True, keep=True),
    Column("available", "available", numeric=True, keep=True),
    Column("channels", "channels", numeric=True, keep=True),
    Column("cps", "cps", numeric=True),
    Column("asr", "ASR %", numeric=True),
    Column("acd", "ACD s", numeric=True),
    Column("pdd", "PDD ms", numeric=True),
)
DROPS = ("name", "currency", "pdd", "status", "acd", "cps", "asr")
ALERT_COLUMNS = (
    Column("at", "at (UTC)", keep=True),
    Column("customer_id", "customer", keep=True),
    Column("name", "alert"),
    Column("area", "area", keep=True),
    Column("value", "value", numeric=True, keep=True),
    Column("condition", "condition"),
    Column("delivery", "delivery"),
)
ALERT_DROPS = ("name", "delivery", "condition")


class Unreachable(Exception):
    """The worker did not answer, or answered something that is not its JSON."""


@dataclass
class Snapshot:
    """What one refresh fetched: the customers, the latest alerts (None when the worker
    serves none), and when."""

    customers: list[dict[str, Any]]
    alerts: list[dict[str, Any]] | None
    at: datetime
    problem: str | None = None  # a later refresh that failed: shown over the last good one


def base_url(url: str) -> str:
    """The worker's address without a trailing slash; anything but http(s) is refused."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Unreachable(f"--url {url!r} is not an http:// or https:// address")
    return url.strip().rstrip("/")


def get_json(url: str, *, missing_ok: bool = False) -> Any:
    """The JSON ``url`` answers; None for a 404 when ``missing_ok``."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return None
        raise Unreachable(f"{url} answered HTTP {exc.code} {exc.reason}{_said(exc)}") from None
    except urllib.error.URLError as exc:
        raise Unreachable(f"{url} does not answer ({exc.reason}){HINT}") from None
    except (TimeoutError, OSError) as exc:
        raise Unreachable(f"{url} does not answer ({exc}){HINT}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise Unreachable(f"{url} did not answer JSON") from None


def _said(exc: urllib.error.HTTPError) -> str:
    """The worker's own reason in an error answer (``{"error": "..."}``), if it gave one."""
    try:
        error = json.loads(exc.read(4096))["error"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f": {error}" if isinstance(error, str) else ""


def _objects(value: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise Unreachable(f"{url} did not answer a JSON list of objects")
    return value


def fetch(url: str, alerts: int) -> Snapshot:
    """The customers and the ``alerts`` latest alerts (newest first) of the worker at
    ``url``."""
    customers = _objects(get_json(f"{url}/customers"), f"{url}/customers")
    latest = None
    if alerts > 0:
        got = get_json(f"{url}/alerts?limit={alerts}", missing_ok=True)
        if got is not None:
            found = _objects(got, f"{url}/alerts")
            found.sort(key=lambda a: str(a.get("at") or ""), reverse=True)
            latest = found[:alerts]
    customers.sort(key=lambda c: str(c.get("customer_id") or ""))
    return Snapshot(customers, latest, datetime.now(UTC))


def cell(value: Any) -> str:
    """A value as the table shows it: text as sent (money is text), numbers as JSON has them,
    nothing for null, a list or object as its JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def moment(value: Any) -> Any:
    """An ISO 8601 UTC time as ``YYYY-MM-DD HH:MM:SS`` (the column says UTC); anything else
    as it came."""
    if not isinstance(value, str):
        return value
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return f"{at:%Y-%m-%d %H:%M:%S}"


def _alert_row(alert: Mapping[str, Any]) -> dict[str, Any]:
    condition = f"{cell(alert.get('operator'))} {cell(alert.get('threshold'))}".strip()
    delivery = alert.get("delivery")
    if isinstance(delivery, Mapping):
        delivery = delivery.get("status")
    return {**alert, "at": moment(alert.get("at")), "condition": condition, "delivery": delivery}


def fitting(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    width: int,
    drops: Sequence[str] = DROPS,
) -> list[Column]:
    """The columns whose table fits ``width``: dropped in ``drops`` order until it does (a
    column is its widest cell plus padding and a border); the kept ones always stay."""
    shown = [c for c in columns if c.keep or any(c.key in r for r in rows)]

    def needed(cols: Sequence[Column]) -> int:
        widths = (
            max([len(c.header), *(len(visible(cell(r.get(c.key)))) for r in rows)]) for c in cols
        )
        return 1 + sum(w + 3 for w in widths)

    for key in drops:
        if needed(shown) <= width:
            break
        shown = [c for c in shown if c.key != key or c.keep]
    return shown


def table_of(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    width: int,
    drops: Sequence[str] = DROPS,
    *,
    title: str | None = None,
) -> Table:
    """A table of ``rows`` in the columns that fit ``width``."""
    table = Table(
        title=None if title is None else Text(visible(title)),
        title_justify="left",
        header_style="bold",
        expand=False,
    )
    shown = fitting(columns, rows, width, drops)
    for c in shown:
        table.add_column(
            Text(c.header),
            justify="right" if c.numeric else "left",
            overflow="ellipsis",
            no_wrap=True,
            min_width=len(c.header) if c.keep else None,
        )
    for r in rows:
        table.add_row(*(Text(visible(cell(r.get(c.key)))) for c in shown))
    return table


def view(snapshot: Snapshot, url: str, width: int, height: int | None) -> RenderableType:
    """The screen: a header line, the customers (as many as the height allows), the latest
    alerts, and a failed refresh's reason when the last one failed."""
    customers = snapshot.customers
    alerts = snapshot.alerts
    lines: list[RenderableType] = []
    header = Text(
        f"{snapshot.at:%Y-%m-%d %H:%M:%SZ} · {len(customers)} customers · {url}",
        no_wrap=True,
        overflow="ellipsis",
    )
    lines.append(header)
    if snapshot.problem:
        lines.append(Text(visible(snapshot.problem), style="bold red"))
    shown = customers
    if height is not None:
        # 5 lines of table frame and header, the header line, and the alerts' table.
        reserve = 6 + len(lines) + (0 if not alerts else 5 + len(alerts))
        room = max(height - reserve, 3)
        if len(customers) > room:
            shown = customers[: room - 1]
    lines.append(table_of(COLUMNS, shown, width))
    if len(shown) < len(customers):
        lines.append(Text(f"… and {len(customers) - len(shown)} more (--format csv lists all)"))
    if alerts is None:
        lines.append(Text("(this worker serves no alerts)", style="dim"))
    elif alerts:
        rows = [_alert_row(a) for a in alerts]
        lines.append(table_of(ALERT_COLUMNS, rows, width, ALERT_DROPS, title="latest alerts"))
    else:
        lines.append(Text("no alerts yet", style="dim"))
    return Group(*lines)


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The CSV columns: the table's in its order, then any others the worker sent."""
    known = [c.key for c in COLUMNS]
    seen = {k for r in rows for k in r}
    others = sorted(seen.difference(known))
    return [k for k in known if k in seen] + others


def write_machine(customers: Sequence[Mapping[str, Any]], fmt: TopFormat) -> None:
    """The customers as JSON (as the worker sent them) or CSV (cells neutralised)."""
    if fmt is TopFormat.json:
        sys.stdout.write(json.dumps(list(customers), indent=2, ensure_ascii=False) + "\n")
        return
    columns = columns_of(customers)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for r in customers:
        writer.writerow(neutralise(cell(r.get(c))) for c in columns)


def run(
    url: str, every: float, once: bool, fmt: TopFormat, alerts: int, out: Console = console
) -> None:
    """Fetch and draw, once or until Ctrl-C. The first fetch failing is an error; a later
    one is shown over the last good snapshot, and the next refresh tries again."""
    snapshot = fetch(url, alerts if fmt is TopFormat.table else 0)
    if fmt is not TopFormat.table:
        write_machine(snapshot.customers, fmt)
        return
    if once:
        out.print(view(snapshot, url, out.width, None))
        return

    def screen() -> RenderableType:
        return view(snapshot, url, out.width, out.height)

    try:
        with Live(screen(), console=out, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(every)
                try:
                    snapshot = fetch(url, alerts)
                except Unreachable as exc:
                    snapshot.problem = (
                        f"{datetime.now(UTC):%H:%M:%SZ} {exc}; showing the last answer"
                    )
                live.update(screen(), refresh=True)
    except KeyboardInterrupt:
        return


def top(
    url: Annotated[
        str,
        typer.Option("--url", help="the live worker's web address, e.g. http://127.0.0.1:6066"),
    ],
    every: Annotated[
        float, typer.Option("--every", min=0.2, help="seconds between refreshes")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="draw once and exit (for pipes and scripts)")
    ] = False,
    fmt: Annotated[
        TopFormat,
        typer.Option("--format", help="table for people; csv or json print the customers once"),
    ] = TopFormat.table,
    alerts: Annotated[
        int,
        typer.Option("--alerts", min=0, max=1000, help="how many of the latest alerts to show"),
    ] = 8,
) -> None:
    """Every customer's live balance, available credit, channels, CPS, ASR, ACD and PDD, and
    the latest alerts, from a running `cdrflow live worker`; refreshed until Ctrl-C."""
    try:
        run(base_url(url), every, once, fmt, alerts)
    except Unreachable as exc:
        fail(str(exc))
        raise typer.Exit(1) from None
