"""``stats.report``: the SVG builders draw one mark per value, on the right scale, with all
text escaped; the page over a small lake charts what ``stats.metrics`` says."""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.errors import CdrflowError
from stats.calls import codes
from stats.metrics import metrics
from stats.report import (
    MAX_BAR_GROUPS,
    MAX_SERIES,
    TOP,
    Bar,
    Frame,
    Linear,
    Series,
    StackRow,
    bar_chart,
    bucket_for,
    bucket_labels,
    code_keys,
    compact,
    gather,
    grouped_bar_chart,
    human,
    line_chart,
    nice_ticks,
    report_html,
    stacked_bar_chart,
)
from stats.scope import Scope, connect
from tests.stats.simulated import small_lake

SVG = "{http://www.w3.org/2000/svg}"
GENERATED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script> & co'


def parse(svg: str) -> ET.Element:
    """The chart as XML: parsing fails on any unescaped text."""
    return ET.fromstring(svg)


def marks(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if "mark" in e.get("class", "").split()]


def charts(page: str) -> dict[str, ET.Element]:
    """Every chart of a page by its id."""
    found = [parse(m) for m in re.findall(r"<svg .*?</svg>", page, flags=re.S)]
    return {root.get("id", ""): root for root in found}


# -- scales and numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0, 97, [0, 20, 40, 60, 80, 100]),
        (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1]),
        (0, 0.3, [0, 0.1, 0.2, 0.3]),  # not 0.30000000000000004
        (-3.2, 7, [-5, 0, 5, 10]),
        (-3.2, 3, [-4, -2, 0, 2, 4]),
        (0, 0, [0, 0.2, 0.4, 0.6, 0.8, 1]),
        (0, 1500, [0, 500, 1000, 1500]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_values(
    lo: float, hi: float, ticks: list[float]
) -> None:
    assert nice_ticks(lo, hi) == ticks


def test_integer_ticks_step_by_whole_numbers() -> None:
    assert nice_ticks(0, 1, integer=True) == [0, 1]
    assert nice_ticks(0, 3, integer=True) == [0, 1, 2, 3]


@given(
    st.floats(-1e9, 1e9, allow_nan=False),
    st.floats(-1e9, 1e9, allow_nan=False),
    st.booleans(),
)
def test_nice_ticks_cover_any_range_in_even_steps(a: float, b: float, integer: bool) -> None:
    lo, hi = min(a, b), max(a, b)
    ticks = nice_ticks(lo, hi, integer=integer)
    assert 2 <= len(ticks) <= 12
    slack = 1e-9 * max(abs(lo), abs(hi), 1)  # float noise, far below a pixel
    assert ticks[0] <= lo + slack and ticks[-1] >= hi - slack
    steps = [y - x for x, y in itertools.pairwise(ticks)]
    assert max(steps) - min(steps) <= slack


def test_linear_maps_the_domain_onto_the_range() -> None:
    y = Linear(0, 100, 200, 40)  # up the screen: larger values higher
    assert (y(0), y(100), y(50)) == (200, 40, 120)
    assert Linear(5, 5, 0, 10)(5) == 5  # an empty domain: the middle


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.25, "0.25"), (12.5, "12.5"), (999, "999"), (1500, "1.5k"), (2e6, "2M")],
)
def test_compact_ticks(value: float, text: str) -> None:
    assert compact(value) == text


def test_human_numbers() -> None:
    assert human(1234567) == "1,234,567"
    assert human(48.567, 1, "%") == "48.6 %"
    assert human(None, 2) == "–"


# -- chart builders ----------------------------------------------------------------------------


def test_a_line_chart_marks_every_value_and_breaks_at_gaps() -> None:
    series = [
        Series("acme", [10, 20, None, 40, 50], "#111111"),
        Series("globex", [5, None, None, None, 8], "#222222"),
    ]
    root = parse(line_chart("c", "ASR", ["a", "b", "c", "d", "e"], series, "ASR %", "hour"))
    assert len(marks(root)) == 6
    lines = [e for e in root.iter(f"{SVG}polyline")]
    assert len(lines) == 4  # acme: two stretches; globex: two lone points


def test_a_line_chart_puts_zero_on_the_baseline_and_the_top_tick_at_the_top() -> None:
    frame = Frame()
    root = parse(line_chart("c", "t", ["a", "b"], [Series("s", [0, 100], "#000")], "y", "x"))
    ys = sorted(float(m.get("cy", "nan")) for m in marks(root))
    assert ys == [frame.y0, frame.y1]  # 100 is the top tick: the top of the plot


def test_time_labels_fall_on_round_steps() -> None:
    hours = [f"{i % 24:02d}h{i // 24}" for i in range(72)]
    root = parse(line_chart("c", "t", hours, [Series("s", [1.0] * 72, "#000")], "y", "x"))
    shown = [t for t in root.itertext() if t in hours]
    assert shown == hours[::6]  # not every 5th, which would fit too
    root = parse(
        line_chart("c", "t", hours, [Series("s", [1.0] * 72, "#0")], "y", "x", label_steps=[7])
    )
    assert [t for t in root.itertext() if t in hours] == hours[::7]


def test_a_bar_chart_draws_bars_in_proportion_and_losses_to_the_left() -> None:
    bars = [Bar("a", 100, "#0a0"), Bar("b", 50, "#0a0"), Bar("c", -20, "#a00")]
    root = parse(bar_chart("c", "profit", bars, "USD"))
    drawn = marks(root)
    assert len(drawn) == 3
    widths = [float(m.get("width", "nan")) for m in drawn]
    assert widths[0] == pytest.approx(2 * widths[1], abs=0.02)  # coordinates: 2 decimals
    assert widths[2] == pytest.approx(widths[0] / 5, abs=0.02)
    xs = [float(m.get("x", "nan")) for m in drawn]
    assert xs[2] < xs[0]  # the loss ends where the others start: at zero


def test_a_grouped_bar_chart_draws_a_bar_per_value() -> None:
    series = [Series("acme", [4, 2, None], "#111"), Series("globex", [1, 3, 2], "#222")]
    root = parse(grouped_bar_chart("c", "peaks", ["d1", "d2", "d3"], series, "n", "day"))
    drawn = marks(root)
    assert len(drawn) == 5
    heights = {m.findtext(f"{SVG}title"): float(m.get("height", "nan")) for m in drawn}
    assert heights["acme · d1: 4"] == pytest.approx(4 * heights["globex · d1: 1"])


def test_a_stacked_bar_fills_the_plot_with_its_shares() -> None:
    keys = [("200 OK", "#0a0"), ("486 Busy Here", "#a00"), ("other", "#ccc")]
    rows = [StackRow("acme", {"200 OK": 50, "486 Busy Here": 30, "other": 20})]
    rows.append(StackRow("globex", {"200 OK": 100}))
    root = parse(stacked_bar_chart("c", "codes", rows, keys, "share"))
    drawn = marks(root)
    assert len(drawn) == 4
    acme = [float(m.get("width", "nan")) for m in drawn[:3]]
    assert sum(acme) == pytest.approx(float(drawn[3].get("width", "nan")))
    assert acme[0] == pytest.approx(sum(acme) / 2)


def test_charts_without_values_say_so() -> None:
    for svg in (
        line_chart("c", "t", ["a"], [Series("s", [None], "#000")], "y", "x"),
        bar_chart("c", "t", [], "x"),
        grouped_bar_chart("c", "t", [], [], "y", "x"),
        stacked_bar_chart("c", "t", [], [], "x"),
    ):
        root = parse(svg)
        assert not marks(root)
        assert "no data" in "".join(root.itertext())


def test_all_text_is_escaped() -> None:
    svgs = [
        line_chart(HOSTILE, HOSTILE, [HOSTILE], [Series(HOSTILE, [1], "#000")], HOSTILE, HOSTILE),
        bar_chart(HOSTILE, HOSTILE, [Bar(HOSTILE, 1, "#000", HOSTILE)], HOSTILE),
        grouped_bar_chart(HOSTILE, HOSTILE, [HOSTILE], [Series(HOSTILE, [1], "#0")], "y", "x"),
        stacked_bar_chart(
            HOSTILE, HOSTILE, [StackRow(HOSTILE, {HOSTILE: 1})], [(HOSTILE, "#0")], ""
        ),
    ]
    for svg in svgs:
        assert "<script" not in svg
        root = parse(svg)
        assert root.get("id") == HOSTILE
        assert HOSTILE in "".join(root.itertext())  # escaped, not dropped


# -- time buckets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "bucket"),
    [
        ("2026-11-02T00:00", "2026-11-02T23:59", "hour"),
        ("2026-11-02T00:00", "2026-11-04T23:59", "hour"),
        ("2026-11-02T00:00", "2026-11-05T00:00", "day"),
        ("2026-11-02T00:00", "2027-02-01T00:00", "day"),
        ("2026-11-02T00:00", "2027-03-01T00:00", "month"),
    ],
)
def test_the_bucket_follows_the_days_the_data_spans(first: str, last: str, bucket: str) -> None:
    assert bucket_for(datetime.fromisoformat(first), datetime.fromisoformat(last)) == bucket


def test_bucket_labels_have_no_holes() -> None:
    assert bucket_labels("hour", "2026-11-02 22:00", "2026-11-03 01:00") == [
        "2026-11-02 22:00",
        "2026-11-02 23:00",
        "2026-11-03 00:00",
        "2026-11-03 01:00",
    ]
    assert bucket_labels("day", "2026-02-27", "2026-03-01") == [
        "2026-02-27",
        "2026-02-28",
        "2026-03-01",
    ]
    assert bucket_labels("month", "2026-11", "2027-02") == [
        "2026-11",
        "2026-12",
        "2027-01",
        "2027-02",
    ]


def test_code_keys_put_answered_first_and_group_the_rare_codes() -> None:
    rows = [
        {"sip_code": code, "sip_reason": f"r{code}", "attempts": n}
        for code, n in [
            *[(486, 50), (200, 40), (503, 30), (404, 1), (408, 2), (480, 3)],
            *[(487, 4), (600, 5), (603, 6), (488, 7)],
        ]
    ]
    keys = [k for k, _ in code_keys(rows)]
    assert keys[:3] == ["200 r200", "486 r486", "503 r503"]
    assert keys[-1] == "other" and "404 r404" not in keys


# -- the page over a lake ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lake(small_lake_home: Path) -> Path:
    return small_lake_home / "lake" / "rated"


@pytest.fixture(scope="module")
def page(lake: Path) -> str:
    return report_html(connect(), Scope(lake), GENERATED)


def test_the_page_has_every_chart(page: str) -> None:
    found = charts(page)
    expected = {"chart-asr", "chart-acd", "chart-pdd", "chart-top-minutes", "chart-codes"}
    expected |= {"chart-channels", "chart-cps", "chart-top-profit-usd", "chart-top-profit-eur"}
    assert set(found) == expected
    assert all(marks(root) for root in found.values())


def test_the_charts_draw_what_the_metrics_say(page: str, lake: Path) -> None:
    con, scope = connect(), Scope(lake)
    found = charts(page)
    customers = {r["customer"] for r in metrics(con, scope, ["customer"]).to_pylist()}
    assert len(customers) <= MAX_SERIES  # else only some would be charted
    hourly = metrics(con, scope, ["customer", "hour"])  # two days: hourly points
    daily = metrics(con, scope, ["customer", "day"])
    assert len(marks(found["chart-asr"])) == hourly.num_rows
    for metric in ("acd", "pdd"):  # a bucket without an answered call has no ACD
        values = [v for v in hourly[metric].to_pylist() if v is not None]
        assert len(marks(found[f"chart-{metric}"])) == len(values)
    assert len(marks(found["chart-channels"])) == len(marks(found["chart-cps"])) == daily.num_rows
    destinations = metrics(con, scope, ["destination"]).to_pylist()
    assert len(marks(found["chart-top-minutes"])) == min(
        TOP, sum(r["minutes"] > 0 for r in destinations)
    )
    top = max(destinations, key=lambda r: r["minutes"])
    first = marks(found["chart-top-minutes"])[0].findtext(f"{SVG}title") or ""
    assert first.startswith(f"{top['destination']}: {human(top['minutes'])} minutes")
    per_code = codes(con, scope, ["customer"]).to_pylist()
    keys = {k for k, _ in code_keys(per_code)}
    segments = {
        (r["customer"], f"{r['sip_code']} {r['sip_reason']}")
        if f"{r['sip_code']} {r['sip_reason']}" in keys
        else (r["customer"], "other")
        for r in per_code
    }
    assert len(marks(found["chart-codes"])) == len(segments)


def test_the_page_shows_its_lake_range_and_moment(page: str, lake: Path) -> None:
    assert f"<dd>{lake}</dd>" in page
    assert "all rated calls, 2026-11-02 to 2026-11-03 (UTC)" in page
    assert "2026-11-30 12:00 UTC" in page


def test_the_page_needs_nothing_from_elsewhere(page: str) -> None:
    assert not re.search(r"<script|<link|<img|<iframe|src=|@import|url\(", page, flags=re.I)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def test_the_page_is_the_same_for_the_same_lake(page: str, lake: Path) -> None:
    assert report_html(connect(), Scope(lake), GENERATED) == page


def test_a_range_and_customers_narrow_the_page(lake: Path) -> None:
    start, end = datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 3, 6, tzinfo=UTC)
    scope = Scope(lake, start, end, ("acme",))
    page = report_html(connect(), scope, GENERATED)
    found = charts(page)
    assert "2026-11-03 00:00 UTC to 2026-11-03 06:00 UTC" in page
    assert len(marks(found["chart-asr"])) == 6  # six hours of one customer
    names = {e.get("data-series") for e in found["chart-asr"].iter(f"{SVG}g")} - {None}
    assert names == {"acme"}


def test_nothing_to_report_is_an_operator_error(lake: Path, tmp_path: Path) -> None:
    with pytest.raises(CdrflowError, match=r"no rated calls in .* rate CDR files first"):
        report_html(connect(), Scope(tmp_path / "lake" / "rated"), GENERATED)
    late = Scope(lake, datetime(2030, 1, 1, tzinfo=UTC), customers=("acme",))
    with pytest.raises(CdrflowError, match=r"from 2030-01-01 00:00 UTC to … for acme"):
        report_html(connect(), late, GENERATED)


@pytest.fixture(scope="module")
def long_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four months of calls: monthly points."""
    return small_lake(tmp_path_factory.mktemp("long_lake"), days=120) / "lake" / "rated"


def test_months_of_calls_are_charted_by_month(long_lake: Path) -> None:
    con, scope = connect(), Scope(long_lake)
    data = gather(con, scope, GENERATED)
    assert data.bucket == "month"
    assert data.buckets == ["2026-11", "2026-12", "2027-01", "2027-02", "2027-03"]
    found = charts(report_html(con, scope, GENERATED))
    monthly = metrics(con, scope, ["customer", "month"])
    assert len(marks(found["chart-asr"])) == monthly.num_rows
    assert len(marks(found["chart-channels"])) == monthly.num_rows  # peaks per month, as bars
    assert {m.tag for m in marks(found["chart-channels"])} == {f"{SVG}rect"}
    assert "Peak channels per month" in "".join(found["chart-channels"].itertext())


def test_peaks_over_many_days_are_lines(long_lake: Path) -> None:
    start = datetime(2026, 11, 10, tzinfo=UTC)
    scope = Scope(long_lake, start, start + timedelta(days=MAX_BAR_GROUPS + 9))
    found = charts(report_html(connect(), scope, GENERATED))
    daily = metrics(connect(), scope, ["customer", "day"])
    assert len(marks(found["chart-cps"])) == daily.num_rows
    assert {m.tag for m in marks(found["chart-cps"])} == {f"{SVG}circle"}
