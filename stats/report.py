"""One self-contained HTML page about the lake: traffic quality over time, top destinations,
SIP code mix and peaks, drawn as inline SVG.

The page carries no script, stylesheet link, font or image from elsewhere, so it opens the
same offline, in a mail attachment or years later. The charts are built here as SVG text by
small pure functions (``line_chart``, ``bar_chart``, ``grouped_bar_chart``,
``stacked_bar_chart``) rather than by a plotting library: a few fixed chart kinds need little
code, and nothing has to be inlined or kept in step with a browser. Every drawn value is an
element of class ``mark`` with a ``<title>`` (the browser shows it on hover), so a test can
count what was drawn. All text passes through ``html.escape``.

``report_html`` gathers the numbers with ``stats.metrics`` and ``stats.calls`` on the caller's
connection and returns the page; writing it is the caller's business (CONVENTIONS: I/O lives
in ``pipelines/``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any

import duckdb

from schemas.errors import CdrflowError
from stats.calls import codes
from stats.metrics import metrics
from stats.scope import Scope

# Series colours (Tableau 10): distinct for the colour-blind in most pairs, and printable.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
MINUTES_COLOR = "#2b6a8e"
PROFIT_COLOR = "#2e8b57"
LOSS_COLOR = "#c0392b"
ANSWERED_COLOR = "#3f9e4d"
# SIP codes other than 200, most frequent first; the rest of the codes are "other".
CODE_COLORS = (
    "#e8a33d",
    "#d9534f",
    "#8e6bbf",
    "#5b9bd5",
    "#c7633b",
    "#7a8b99",
    "#b5527f",
)
OTHER_COLOR = "#c9ccd1"
TOP = 10  # destinations per bar chart
MAX_SERIES = 8  # customers per chart: more lines than this are a tangle, not a picture
# Bucket of the charts over time by the days the data spans: about 24 to 72 points an hour
# each, a point a day up to three months, else a point a month.
HOURLY_DAYS = 3
DAILY_DAYS = 92
_BUCKET_FORMAT = {"hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d", "month": "%Y-%m"}
_BUCKET_SHOWN = {"hour": "%d %b %H:%M", "day": "%d %b", "month": "%b %Y"}
_BUCKET_WORD = {"hour": "hourly", "day": "daily", "month": "monthly"}
# Label every k-th bucket, k the first of these that leaves room: whole days, weeks, years.
_LABEL_STEPS = {
    "hour": (1, 2, 3, 4, 6, 12, 24, 48, 72, 168),
    "day": (1, 2, 7, 14, 28),
    "month": (1, 2, 3, 6, 12, 24),
}
MAX_BAR_GROUPS = 31  # peaks over more buckets than this are lines: bars would be hairs
_CHAR_WIDTH = 6.2  # px of an 11 px sans-serif character, to keep axis labels apart


# -- numbers for people ----------------------------------------------------------------------


def compact(value: float) -> str:
    """An axis tick: 1500 → "1.5k", 0.25 → "0.25", 2000000 → "2M" (three significant digits
    at most, so that ticks stay short)."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    text = f"{value:.3g}"
    return "0" if text == "-0" else text


def human(value: float | Decimal | None, decimals: int = 0, unit: str = "") -> str:
    """A value in a table or tooltip: thousands separated, fixed decimals, then the unit;
    "–" when there is no value (no answered call has no ACD)."""
    if value is None:
        return "–"
    text = f"{float(value):,.{decimals}f}"
    return f"{text} {unit}" if unit else text


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k) from at or below ``lo``
    to at or above ``hi``; the chart's axis then spans exactly the first to the last.
    ``integer``: steps of at least 1, for counts (half a call per second is no tick)."""
    lo, hi = min(lo, hi), max(lo, hi)
    if hi - lo <= max(1e-9 * max(abs(lo), abs(hi)), 1e-200):
        # One value (or a spread floats cannot step through): an axis from it to twice it.
        hi = lo + (abs(lo) if abs(lo) > 1e-200 else 1.0)
    raw = (hi - lo) / max(count, 1)
    if integer:
        raw = max(raw, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    # The slack forgives float noise (0.3 / 0.1 = 2.9999999999999996), not a real excess.
    first = math.floor(lo / step + 1e-12) * step
    last = math.ceil(hi / step - 1e-12) * step
    steps = max(1, round((last - first) / step))
    # Rounding each tick to the step's decimals keeps 0.30000000000000004 off the axis.
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(first + i * step, digits) + 0.0 for i in range(steps + 1)]


@dataclass(frozen=True)
class Linear:
    """Maps the domain [d0, d1] onto pixels [r0, r1]; an empty domain maps to the middle."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (self.d1 - self.d0)


# -- SVG pieces --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A chart's size and margins (px): axis labels live in the margins."""

    width: int = 600
    height: int = 280
    left: int = 64
    right: int = 20
    top: int = 40
    bottom: int = 52

    @property
    def x0(self) -> float:
        return float(self.left)

    @property
    def x1(self) -> float:
        return float(self.width - self.right)

    @property
    def y0(self) -> float:
        return float(self.top)

    @property
    def y1(self) -> float:
        return float(self.height - self.bottom)


# A chart in a row of three.
NARROW = Frame(width=420, height=260, left=56)


@dataclass(frozen=True)
class Series:
    """One named line or set of bars; ``values`` align with the chart's categories, None
    where the series has no value there (nothing is drawn, a line breaks)."""

    name: str
    values: Sequence[float | None]
    color: str
    unit: str = ""
    decimals: int = 0


@dataclass(frozen=True)
class Bar:
    """One bar of a bar chart."""

    label: str
    value: float
    color: str
    note: str = ""  # the tooltip; the label and value when empty


@dataclass(frozen=True)
class StackRow:
    """One 100 % bar: its label and each key's share (percent) of it."""

    label: str
    shares: Mapping[str, float]
    notes: Mapping[str, str] = field(default_factory=dict)


def _f(value: float) -> str:
    """A coordinate: two decimals are finer than any screen and keep the file small."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    kind = f' class="{cls}"' if cls else ""
    return (
        f'<text x="{_f(x)}" y="{_f(y)}"{kind} text-anchor="{anchor}"{extra}>{escape(text)}</text>'
    )


def _svg(chart_id: str, frame: Frame, title: str, body: Sequence[str]) -> str:
    """The chart's root element: sized by its viewBox, so the page may scale it."""
    return "\n".join(
        [
            f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {frame.width} '
            f'{frame.height}" width="{frame.width}" height="{frame.height}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
            _text(10, 22, title, "title"),
            *body,
            "</svg>",
        ]
    )


def _y_axis(frame: Frame, scale: Linear, ticks: Sequence[float], label: str) -> list[str]:
    """Horizontal grid lines with their values, and the axis title along the left edge."""
    out = ['<g class="grid">']
    for tick in ticks:
        y = scale(tick)
        out.append(f'<line x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" y1="{_f(y)}" y2="{_f(y)}"/>')
        out.append(_text(frame.x0 - 6, y + 4, compact(tick), "tick", "end"))
    out.append("</g>")
    middle = (frame.y0 + frame.y1) / 2
    out.append(
        _text(14, middle, label, "axis-label", "middle", transform=f"rotate(-90 14 {_f(middle)})")
    )
    return out


def _x_labels(
    frame: Frame,
    labels: Sequence[str],
    xs: Sequence[float],
    title: str,
    steps: Sequence[int] = (),
) -> list[str]:
    """Category labels under the plot, thinned to every k-th so that none overlap (k the
    first of ``steps`` that is enough: every 6 or 12 hours reads better than every 7), and
    the axis title below them."""
    widest = max((len(s) for s in labels), default=1) * _CHAR_WIDTH + 10
    room = max(1, int((frame.x1 - frame.x0) // widest))
    least = max(1, math.ceil(len(labels) / room))
    step = next((k for k in steps if k >= least), least)
    out = [
        f'<line class="axis" x1="{_f(frame.x0)}" x2="{_f(frame.x1)}" '
        f'y1="{_f(frame.y1)}" y2="{_f(frame.y1)}"/>'
    ]
    for i in range(0, len(labels), step):
        out.append(_text(xs[i], frame.y1 + 16, labels[i], "tick", "middle"))
    out.append(_text((frame.x0 + frame.x1) / 2, frame.height - 8, title, "axis-label", "middle"))
    return out


def _value_domain(
    values: Sequence[float | None], integer: bool = False
) -> tuple[Linear, list[float]] | None:
    """The value axis of a chart: from zero (or below, for losses) to a round number."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    ticks = nice_ticks(min(0.0, *present), max(0.0, *present), integer=integer)
    return Linear(ticks[0], ticks[-1], 0, 0), ticks


def _no_data(chart_id: str, frame: Frame, title: str) -> str:
    middle = (frame.y0 + frame.y1) / 2
    return _svg(
        chart_id, frame, title, [_text(frame.width / 2, middle, "no data", "empty", "middle")]
    )


def line_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    x_label: str,
    frame: Frame | None = None,
    label_steps: Sequence[int] = (),
    integer: bool = False,
) -> str:
    """Lines over evenly spaced categories (time buckets), one per series, from a zero
    baseline; a dot of class ``mark`` at every value. ``label_steps``: the preferred
    spacings of category labels; ``integer``: the values are counts."""
    frame = frame or Frame()
    domain = _value_domain([v for s in series for v in s.values], integer)
    if domain is None or not categories:
        return _no_data(chart_id, frame, title)
    base, ticks = domain
    y = Linear(base.d0, base.d1, frame.y1, frame.y0)
    n = len(categories)
    x = Linear(0, n - 1, frame.x0 + 8, frame.x1 - 8)
    xs = [x(i) for i in range(n)]
    radius = 3.0 if n <= 48 else 2.0
    body = _y_axis(frame, y, ticks, y_label)
    body += _x_labels(frame, categories, xs, x_label, label_steps)
    for s in series:
        body.append(f'<g class="series" data-series="{escape(s.name)}">')
        for run in _runs(s.values):
            points = " ".join(f"{_f(xs[i])},{_f(y(v))}" for i, v in run)
            body.append(
                f'<polyline class="line" points="{points}" fill="none" stroke="{s.color}" '
                'stroke-width="2" stroke-linejoin="round"/>'
            )
        for i, v in enumerate(s.values):
            if v is None:
                continue
            note = f"{s.name} · {categories[i]}: {human(v, s.decimals, s.unit)}"
            body.append(
                f'<circle class="mark" cx="{_f(xs[i])}" cy="{_f(y(v))}" r="{radius}" '
                f'fill="{s.color}"><title>{escape(note)}</title></circle>'
            )
        body.append("</g>")
    return _svg(chart_id, frame, title, body)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The unbroken stretches of values: a line does not bridge a bucket without calls."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        runs.append(current)
    return runs


def bar_chart(
    chart_id: str,
    title: str,
    bars: Sequence[Bar],
    x_label: str,
    decimals: int = 0,
    width: int = 600,
) -> str:
    """Horizontal bars, one row per category (labels can be long destination names); bars
    start at zero, so a negative value (a loss) points left."""
    label_room = _label_room([b.label for b in bars])
    frame = Frame(width=width, height=40 + 24 * max(len(bars), 1) + 46, left=label_room)
    if not bars:
        return _no_data(chart_id, frame, title)
    ticks = nice_ticks(min(0.0, *(b.value for b in bars)), max(0.0, *(b.value for b in bars)))
    x = Linear(ticks[0], ticks[-1], frame.x0, frame.x1 - 40)
    body = ['<g class="grid">']
    for tick in ticks:
        body.append(
            f'<line x1="{_f(x(tick))}" x2="{_f(x(tick))}" y1="{_f(frame.y0)}" y2="{_f(frame.y1)}"/>'
        )
        body.append(_text(x(tick), frame.y1 + 16, compact(tick), "tick", "middle"))
    body.append("</g>")
    body.append(_text((frame.x0 + frame.x1) / 2, frame.height - 8, x_label, "axis-label", "middle"))
    zero = x(0)
    for i, b in enumerate(bars):
        top = frame.y0 + 24 * i + 4
        left, right = sorted((zero, x(b.value)))
        note = b.note or f"{b.label}: {human(b.value, decimals)}"
        body.append(_text(frame.x0 - 8, top + 12, _clip(b.label), "cat", "end"))
        body.append(
            f'<rect class="mark" x="{_f(left)}" y="{_f(top)}" width="{_f(right - left)}" '
            f'height="16" fill="{b.color}"><title>{escape(note)}</title></rect>'
        )
        body.append(_text(right + 4, top + 12, human(b.value, decimals), "value"))
    body.append(
        f'<line class="axis" x1="{_f(zero)}" x2="{_f(zero)}" y1="{_f(frame.y0)}" '
        f'y2="{_f(frame.y1)}"/>'
    )
    return _svg(chart_id, frame, title, body)


_LABEL_CHARS = 26  # a longer category label is cut (the tooltip keeps it whole)


def _label_room(labels: Sequence[str]) -> int:
    """The left margin (px) that holds the longest category label, up to ``_LABEL_CHARS``."""
    longest = min(_LABEL_CHARS, max((len(s) for s in labels), default=4))
    return math.ceil(longest * _CHAR_WIDTH) + 16


def _clip(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def grouped_bar_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    y_label: str,
    x_label: str,
    frame: Frame | None = None,
    label_steps: Sequence[int] = (),
    integer: bool = False,
) -> str:
    """Vertical bars side by side, one per series within each category (a customer's peak
    per day); a bar of class ``mark`` for every value. ``label_steps`` and ``integer`` as
    for ``line_chart``."""
    frame = frame or Frame()
    domain = _value_domain([v for s in series for v in s.values], integer)
    if domain is None or not categories or not series:
        return _no_data(chart_id, frame, title)
    base, ticks = domain
    y = Linear(base.d0, base.d1, frame.y1, frame.y0)
    slot = (frame.x1 - frame.x0) / len(categories)
    bar = max(1.0, min(28.0, slot * 0.8 / len(series)))
    centres = [frame.x0 + slot * (i + 0.5) for i in range(len(categories))]
    body = _y_axis(frame, y, ticks, y_label)
    body += _x_labels(frame, categories, centres, x_label, label_steps)
    for k, s in enumerate(series):
        body.append(f'<g class="series" data-series="{escape(s.name)}">')
        for i, v in enumerate(s.values):
            if v is None:
                continue
            left = centres[i] - bar * len(series) / 2 + bar * k
            top, bottom = sorted((y(v), y(0)))
            note = f"{s.name} · {categories[i]}: {human(v, s.decimals, s.unit)}"
            body.append(
                f'<rect class="mark" x="{_f(left)}" y="{_f(top)}" width="{_f(bar)}" '
                f'height="{_f(bottom - top)}" fill="{s.color}"><title>{escape(note)}</title></rect>'
            )
        body.append("</g>")
    return _svg(chart_id, frame, title, body)


def stacked_bar_chart(
    chart_id: str,
    title: str,
    rows: Sequence[StackRow],
    keys: Sequence[tuple[str, str]],
    x_label: str,
    width: int = 600,
) -> str:
    """One horizontal 100 % bar per row, split by ``keys`` (key, colour) in that order; a
    segment of class ``mark`` for every share above zero."""
    label_room = _label_room([r.label for r in rows])
    frame = Frame(width=width, height=40 + 28 * max(len(rows), 1) + 46, left=label_room)
    if not rows:
        return _no_data(chart_id, frame, title)
    x = Linear(0, 100, frame.x0, frame.x1)
    body = ['<g class="grid">']
    for tick in (0, 25, 50, 75, 100):
        body.append(
            f'<line x1="{_f(x(tick))}" x2="{_f(x(tick))}" y1="{_f(frame.y0)}" y2="{_f(frame.y1)}"/>'
        )
        body.append(_text(x(tick), frame.y1 + 16, f"{tick} %", "tick", "middle"))
    body.append("</g>")
    body.append(_text((frame.x0 + frame.x1) / 2, frame.height - 8, x_label, "axis-label", "middle"))
    for i, row in enumerate(rows):
        top = frame.y0 + 28 * i + 4
        body.append(_text(frame.x0 - 8, top + 14, _clip(row.label), "cat", "end"))
        done = 0.0
        for key, color in keys:
            share = row.shares.get(key, 0.0)
            if share <= 0:
                continue
            note = row.notes.get(key) or f"{row.label} · {key}: {human(share, 1, '%')}"
            body.append(
                f'<rect class="mark" x="{_f(x(done))}" y="{_f(top)}" '
                f'width="{_f(x(done + share) - x(done))}" height="20" fill="{color}">'
                f"<title>{escape(note)}</title></rect>"
            )
            done += share
    return _svg(chart_id, frame, title, body)


def legend(items: Sequence[tuple[str, str]]) -> str:
    """The names and colours of a chart's series, as a line of HTML under the chart."""
    entries = "".join(
        f'<li><span class="swatch" style="background:{escape(color)}"></span>{escape(name)}</li>'
        for name, color in items
    )
    return f'<ul class="legend">{entries}</ul>'


def figure(svg: str, items: Sequence[tuple[str, str]] = (), note: str = "") -> str:
    """A chart with its legend and a note under it."""
    parts = [svg]
    if items:
        parts.append(legend(items))
    if note:
        parts.append(f'<p class="note">{escape(note)}</p>')
    return f"<figure>{''.join(parts)}</figure>"


# -- the numbers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportData:
    """Everything the page shows, gathered before any of it is drawn."""

    scope: Scope
    generated: datetime
    bucket: str  # hour, day or month: the charts over time
    buckets: list[str]  # every bucket from the first call's to the last call's
    days: list[str]  # the days with calls
    totals: dict[str, Any]
    customers: list[dict[str, Any]]  # per customer and currency, most attempts first
    over_time: list[dict[str, Any]]  # per customer and bucket
    per_day: list[dict[str, Any]]  # per customer and day
    by_minutes: list[dict[str, Any]]  # the TOP destinations by minutes
    by_profit: dict[str, list[dict[str, Any]]]  # currency → its TOP destinations by profit
    codes: list[dict[str, Any]]  # per customer and SIP code


def bucket_for(first: datetime, last: datetime) -> str:
    """Hourly, daily or monthly points for data from ``first`` to ``last``."""
    days = (last.date() - first.date()).days + 1
    if days <= HOURLY_DAYS:
        return "hour"
    return "day" if days <= DAILY_DAYS else "month"


def bucket_labels(bucket: str, first: str, last: str) -> list[str]:
    """Every bucket from ``first`` to ``last`` (labels as ``stats.metrics`` writes them), so
    that the time axis is even and a bucket without calls is a gap, not a short cut."""
    fmt = _BUCKET_FORMAT[bucket]
    at = datetime.strptime(first, fmt)
    end = datetime.strptime(last, fmt)
    out = []
    while at <= end:
        out.append(at.strftime(fmt))
        if bucket == "hour":
            at += timedelta(hours=1)
        elif bucket == "day":
            at += timedelta(days=1)
        else:
            at = (at.replace(day=1) + timedelta(days=32)).replace(day=1)
    return out


def gather(con: duckdb.DuckDBPyConnection, scope: Scope, generated: datetime) -> ReportData:
    """The report's numbers over ``scope``; an error an operator can act on when the scope
    holds no rated call."""
    totals = metrics(con, scope, []).to_pylist()
    if not totals:
        raise CdrflowError(_nothing(scope))
    per_day = metrics(con, scope, ["customer", "day"]).to_pylist()
    days = sorted({r["day"] for r in per_day})
    bucket = bucket_for(datetime.fromisoformat(days[0]), datetime.fromisoformat(days[-1]))
    over_time = (
        per_day if bucket == "day" else metrics(con, scope, ["customer", bucket]).to_pylist()
    )
    times = sorted({r[bucket] for r in over_time})
    customers = metrics(con, scope, ["customer", "currency"]).to_pylist()
    customers.sort(key=lambda r: (-r["attempts"], str(r["customer"])))
    destinations = metrics(con, scope, ["destination"]).to_pylist()
    destinations.sort(key=lambda r: (-r["minutes"], str(r["destination"])))
    return ReportData(
        scope=scope,
        generated=generated,
        bucket=bucket,
        buckets=bucket_labels(bucket, times[0], times[-1]),
        days=bucket_labels("day", days[0], days[-1]),
        totals=totals[0],
        customers=customers,
        over_time=over_time,
        per_day=per_day,
        by_minutes=[r for r in destinations if r["minutes"] > 0][:TOP],
        by_profit=_top_profit(metrics(con, scope, ["destination", "currency"]).to_pylist()),
        codes=codes(con, scope, ["customer"]).to_pylist(),
    )


def _nothing(scope: Scope) -> str:
    where = f"{scope.lake}"
    if scope.start or scope.end:
        where += f" from {_moment(scope.start)} to {_moment(scope.end)}"
    if scope.customers:
        where += f" for {', '.join(scope.customers)}"
    return (
        f"no rated calls in {where}; rate CDR files first (cdrflow rate FILE…) or widen --from/--to"
    )


def _top_profit(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per currency, the destinations with the most profit. Money adds up only within one
    currency, and a call billed and bought in different currencies has no profit (no rate
    of exchange is known): such calls are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["profit"] is not None and r["currency"] is not None:
            out.setdefault(str(r["currency"]), []).append(dict(r))
    return {
        c: sorted(v, key=lambda r: (-r["profit"], str(r["destination"])))[:TOP]
        for c, v in sorted(out.items())
    }


def report_html(con: duckdb.DuckDBPyConnection, scope: Scope, generated: datetime) -> str:
    """The report over ``scope`` as one HTML page (``generated``: the moment it shows)."""
    return render(gather(con, scope, generated))


# -- the page ----------------------------------------------------------------------------------


def render(data: ReportData) -> str:
    """The page for ``data``: heading, totals, per-customer table, then the charts."""
    colors = customer_colors(data)
    sections = [
        _header(data),
        _customer_table(data),
        _quality_section(data, colors),
        _destinations_section(data),
        _codes_section(data),
        _peaks_section(data, colors),
    ]
    title = f"cdrflow report · {_range_text(data)}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body><main>",
            *sections,
            "</main></body>",
            "</html>",
            "",
        ]
    )


def customer_colors(data: ReportData) -> dict[str, str]:
    """The colour of each charted customer (the MAX_SERIES with the most attempts), the same
    in every chart."""
    names: list[str] = []
    for r in data.customers:
        name = _label(r["customer"])
        if name not in names:
            names.append(name)
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names[:MAX_SERIES])}


def _label(value: Any) -> str:
    return "(none)" if value is None else str(value)


def _moment(value: datetime | None) -> str:
    return "…" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _range_text(data: ReportData) -> str:
    scope = data.scope
    if scope.start or scope.end:
        return f"{_moment(scope.start)} to {_moment(scope.end)}"
    first, last = data.days[0], data.days[-1]
    return f"all rated calls, {first} to {last} (UTC)" if first != last else f"{first} (UTC)"


def _header(data: ReportData) -> str:
    t = data.totals
    customers = ", ".join(data.scope.customers) if data.scope.customers else "all"
    facts = [
        ("Lake", str(data.scope.lake)),
        ("Range", _range_text(data)),
        ("Customers", customers),
        ("Charts over time", f"{_BUCKET_WORD[data.bucket]} (UTC)"),
        ("Generated", _moment(data.generated)),
    ]
    tiles = [
        ("Attempts", human(t["attempts"])),
        ("Answered", human(t["answered"])),
        ("ASR", human(t["asr"], 1, "%")),
        ("ACD", human(t["acd"], 1, "s")),
        ("PDD", human(t["pdd"], 0, "ms")),
        ("NER", human(t["ner"], 1, "%")),
        ("Minutes", human(t["minutes"])),
        ("Peak channels", human(t["channels"])),
        ("Peak CPS", human(t["cps"])),
    ]
    return (
        '<header><h1>cdrflow traffic report</h1><dl class="facts">'
        + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
        + '</dl><div class="tiles">'
        + "".join(
            f'<div class="tile"><span>{escape(k)}</span><strong>{escape(v)}</strong></div>'
            for k, v in tiles
        )
        + "</div></header>"
    )


def _customer_table(data: ReportData) -> str:
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
        ("Customer", lambda r: _label(r["customer"])),
        ("Currency", lambda r: _label(r["currency"])),
        ("Attempts", lambda r: human(r["attempts"])),
        ("ASR %", lambda r: human(r["asr"], 1)),
        ("ACD s", lambda r: human(r["acd"], 1)),
        ("PDD ms", lambda r: human(r["pdd"])),
        ("NER %", lambda r: human(r["ner"], 1)),
        ("Minutes", lambda r: human(r["minutes"])),
        ("Charge", lambda r: human(r["charge"], 2)),
        ("Profit", lambda r: human(r["profit"], 2)),
        ("Channels", lambda r: human(r["channels"])),
        ("CPS", lambda r: human(r["cps"])),
    ]
    head = "".join(f"<th>{escape(name)}</th>" for name, _ in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(cell(r))}</td>" for _, cell in columns) + "</tr>"
        for r in data.customers
    )
    return (
        '<section><h2>Customers</h2><table class="customers">'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        '<p class="note">Profit counts only calls billed and bought in the same currency.</p>'
        "</section>"
    )


def _per_customer(
    rows: Sequence[Mapping[str, Any]],
    key: str,
    categories: Sequence[str],
    metric: str,
    colors: Mapping[str, str],
    unit: str,
    decimals: int,
) -> list[Series]:
    """One series per charted customer: its ``metric`` at each category of ``key``."""
    values: dict[str, dict[str, float]] = {}
    for r in rows:
        name = _label(r["customer"])
        if name in colors and r[metric] is not None:
            values.setdefault(name, {})[r[key]] = float(r[metric])
    return [
        Series(name, [values.get(name, {}).get(c) for c in categories], color, unit, decimals)
        for name, color in colors.items()
    ]


def _shown(bucket: str, labels: Sequence[str]) -> list[str]:
    fmt = _BUCKET_FORMAT[bucket]
    return [datetime.strptime(s, fmt).strftime(_BUCKET_SHOWN[bucket]) for s in labels]


def _quality_section(data: ReportData, colors: Mapping[str, str]) -> str:
    axis = f"{data.bucket} (UTC)"
    shown = _shown(data.bucket, data.buckets)
    charts = [
        ("asr", "ASR (answer-seizure ratio)", "ASR %", "%", 1),
        ("acd", "ACD (average call duration)", "ACD seconds", "s", 1),
        ("pdd", "PDD (post-dial delay)", "PDD milliseconds", "ms", 0),
    ]
    figures = []
    for metric, title, y_label, unit, decimals in charts:
        series = _per_customer(
            data.over_time, data.bucket, data.buckets, metric, colors, unit, decimals
        )
        steps = _LABEL_STEPS[data.bucket]
        svg = line_chart(f"chart-{metric}", title, shown, series, y_label, axis, NARROW, steps)
        figures.append(figure(svg, list(colors.items())))
    note = _more_customers(data, colors)
    return _section("Quality over time, per customer", figures, note, "three")


def _more_customers(data: ReportData, colors: Mapping[str, str]) -> str:
    total = len({_label(r["customer"]) for r in data.customers})
    if total <= len(colors):
        return ""
    return f"The {len(colors)} customers with the most attempts are charted, of {total}."


def _destinations_section(data: ReportData) -> str:
    bars = [
        Bar(
            _label(r["destination"]),
            float(r["minutes"]),
            MINUTES_COLOR,
            f"{_label(r['destination'])}: {human(r['minutes'])} minutes, "
            f"{human(r['attempts'])} attempts, ASR {human(r['asr'], 1, '%')}",
        )
        for r in data.by_minutes
    ]
    figures = [
        figure(
            bar_chart(
                "chart-top-minutes", "Top destinations by minutes", bars, "minutes", 0, NARROW.width
            )
        )
    ]
    for currency, rows in data.by_profit.items():
        bars = [
            Bar(
                _label(r["destination"]),
                float(r["profit"]),
                PROFIT_COLOR if r["profit"] >= 0 else LOSS_COLOR,
                f"{_label(r['destination'])}: profit {human(r['profit'], 2, currency)}, "
                f"charge {human(r['charge'], 2, currency)}",
            )
            for r in rows
        ]
        svg = bar_chart(
            f"chart-top-profit-{currency.lower()}",
            f"Top destinations by profit ({currency})",
            bars,
            f"profit {currency}",
            decimals=2,
            width=NARROW.width,
        )
        figures.append(figure(svg, [("profit", PROFIT_COLOR), ("loss", LOSS_COLOR)]))
    return _section(
        "Top destinations",
        figures,
        "Profit counts only calls billed and bought in the same currency.",
        "three",
    )


def code_keys(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The legend of the SIP code mix: 200 first, then the most frequent other codes, then
    "other" for the rest; (key, colour) pairs."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[_code_key(r)] = counts.get(_code_key(r), 0) + int(r["attempts"])
    ranked = sorted((k for k in counts if not k.startswith("200 ")), key=lambda k: -counts[k])
    keys = [(k, ANSWERED_COLOR) for k in counts if k.startswith("200 ")]
    keys += list(zip(ranked, CODE_COLORS, strict=False))
    if len(ranked) > len(CODE_COLORS):
        keys.append(("other", OTHER_COLOR))
    return keys


def _code_key(row: Mapping[str, Any]) -> str:
    reason = f" {row['sip_reason']}" if row["sip_reason"] else ""
    return f"{row['sip_code']}{reason}"


def _codes_section(data: ReportData) -> str:
    keys = code_keys(data.codes)
    named = {k for k, _ in keys}
    order = [_label(r["customer"]) for r in data.customers]
    shares: dict[str, dict[str, float]] = {}
    notes: dict[str, dict[str, str]] = {}
    for r in data.codes:
        name, key = _label(r["customer"]), _code_key(r)
        key = key if key in named else "other"
        row = shares.setdefault(name, {})
        row[key] = row.get(key, 0.0) + float(r["share"])
        notes.setdefault(name, {})[key] = f"{name} · {key}: {human(row[key], 1, '%')}" + (
            f" ({human(r['attempts'])} attempts)" if key != "other" else ""
        )
    rows = [StackRow(n, shares[n], notes[n]) for n in dict.fromkeys(order) if n in shares][
        : MAX_SERIES * 2
    ]
    svg = stacked_bar_chart(
        "chart-codes", "SIP code mix per customer", rows, keys, "share of attempts", width=1200
    )
    return _section("SIP code mix", [figure(svg, keys)], "", "wide")


def _peaks_section(data: ReportData, colors: Mapping[str, str]) -> str:
    """Peaks per customer per day; per month when the data spans more than DAILY_DAYS (the
    charts over time are monthly then, and a year of days is no chart)."""
    bucket, rows, labels = "day", data.per_day, data.days
    if data.bucket == "month":
        bucket, rows, labels = "month", data.over_time, data.buckets
    shown = _shown(bucket, labels)
    chart = grouped_bar_chart if len(labels) <= MAX_BAR_GROUPS else line_chart
    figures = []
    for metric, title, y_label in (
        ("channels", f"Peak channels per {bucket}", "channels (calls up at once)"),
        ("cps", f"Peak CPS per {bucket}", "calls per second"),
    ):
        series = _per_customer(rows, bucket, labels, metric, colors, "", 0)
        svg = chart(
            f"chart-{metric}",
            title,
            shown,
            series,
            y_label,
            f"{bucket} (UTC)",
            label_steps=_LABEL_STEPS[bucket],
            integer=True,
        )
        figures.append(figure(svg, list(colors.items())))
    return _section("Channels and CPS peaks, per customer", figures, "")


def _section(title: str, figures: Sequence[str], note: str, layout: str = "two") -> str:
    """A heading, a note and the figures in a grid of ``layout``: wide, two or three to a
    row on a wide screen, fewer on a narrow one."""
    grid = f"grid {layout}"
    text = f'<p class="note">{escape(note)}</p>' if note else ""
    body = "".join(figures)
    return f'<section><h2>{escape(title)}</h2>{text}<div class="{grid}">{body}</div></section>'


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f3f4f6; color: #1f2430;
  font: 14px/1.45 "Liberation Sans", "DejaVu Sans", Arial, Helvetica, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 20px 24px 32px; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 18px; margin: 24px 0 8px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 12px;
  color: #4a5160; }
.facts dt { font-weight: 600; }
.facts dd { margin: 0; overflow-wrap: anywhere; }
.tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.tile { background: #fff; border-radius: 8px; padding: 8px 14px; min-width: 112px;
  box-shadow: 0 1px 2px rgba(0, 0, 0, .08); }
.tile span { display: block; color: #5d6473; font-size: 12px; }
.tile strong { font-size: 18px; }
.grid { display: grid; gap: 16px; }
.grid.two { grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); }
.grid.three { grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); }
.grid.wide { grid-template-columns: 1fr; }
figure { margin: 0; background: #fff; border-radius: 8px; padding: 12px;
  box-shadow: 0 1px 2px rgba(0, 0, 0, .08); }
svg.chart { display: block; width: 100%; height: auto; }
svg text { font-family: inherit; font-size: 11px; fill: #4a5160; }
svg .title { font-size: 15px; font-weight: 600; fill: #1f2430; }
svg .axis-label { font-size: 12px; fill: #2f3542; }
svg .value { font-size: 10px; }
svg .empty { font-size: 14px; fill: #8a909c; }
svg .grid line { stroke: #e4e7eb; stroke-width: 1; }
svg .axis { stroke: #8a909c; stroke-width: 1; }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 8px 0 0;
  padding: 0; font-size: 12px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
.note { color: #5d6473; font-size: 12px; margin: 4px 0 8px; }
table.customers { border-collapse: collapse; background: #fff; width: 100%; font-size: 13px;
  box-shadow: 0 1px 2px rgba(0, 0, 0, .08); }
.customers th, .customers td { padding: 5px 10px; border-bottom: 1px solid #e4e7eb;
  text-align: right; white-space: nowrap; }
.customers th:nth-child(-n+2), .customers td:nth-child(-n+2) { text-align: left; }
.customers th { background: #f8f9fb; }
@media print { body { background: #fff; } figure, .tile, table { box-shadow: none; } }
"""
