"""Each SPEC §6 metric computed by hand on crafted lakes, against ``stats.metrics``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.errors import CdrflowError
from stats.metrics import METRICS, metrics, parse_by
from stats.peaks import channels
from stats.scope import Scope, connect
from tests.stats.lakes import T0, call, write_lake
from tests.stats.reference import metrics_sql


def run(home: Path, calls: list[dict[str, Any]], by: str, **scope: Any) -> list[dict[str, Any]]:
    lake = write_lake(home, calls)
    with connect() as con:
        table = metrics(con, Scope(lake, **scope), parse_by(by))
    assert table.column_names == [*parse_by(by), *METRICS]
    return table.to_pylist()


def test_every_metric_of_one_group_by_hand(tmp_path: Path) -> None:
    calls = [
        call(1, 0, duration=Decimal("30.5"), billed_duration=36, pdd_ms=1000,
             charge=Decimal("0.0150"), provider_charge=Decimal("0.0100"), profit=Decimal("0.0050")),
        call(2, 1, duration=Decimal("89.5"), billed_duration=90, pdd_ms=2000,
             charge=Decimal("0.0450"), provider_charge=Decimal("0.0300"), profit=Decimal("0.0150")),
        call(3, 2, sip_code=486, pdd_ms=3000),  # busy: counts for NER
        call(4, 3, sip_code=302),  # a redirect: out of NER's attempts
        call(5, 4, sip_code=503, duration=Decimal(12)),  # unanswered: its duration is no talk
    ]  # fmt: skip
    [row] = run(tmp_path, calls, "customer")
    assert row["customer"] == "acme"
    assert row["attempts"] == 5
    assert row["answered"] == 2
    assert row["asr"] == 40.0  # 100 * 2 / 5
    assert row["acd"] == 60.0  # (30.5 + 89.5) / 2
    assert row["pdd"] == 2000.0  # the three that carry it
    assert row["ner"] == 75.0  # 100 * (2 + 1) / (5 - 1)
    assert row["minutes"] == 2.0  # 120 s of talk
    assert row["billed_minutes"] == 2.1  # 126 s
    assert row["charge"] == Decimal("0.06")
    assert row["provider_charge"] == Decimal("0.04")
    assert row["profit"] == Decimal("0.02")
    assert row["cps"] == 1


def test_channels_count_calls_up_at_one_instant(tmp_path: Path) -> None:
    calls = [
        call(1, 0, duration=Decimal(10)),  # up [0, 10)
        call(2, 10, duration=Decimal(10)),  # starts as 1 ends: never both up
        call(3, 5, duration=Decimal(4), ring_duration=Decimal(2)),  # up [5, 11)
        call(4, 6, sip_code=487, ring_duration=Decimal(3)),  # ringing only: up [6, 9)
        call(5, 7, sip_code=487),  # up for no time at all
    ]
    [row] = run(tmp_path, calls, "customer")
    assert row["channels"] == 3  # at 6 s to 9 s: calls 1, 3 and 4


def test_cps_is_the_most_attempts_in_one_wall_clock_second(tmp_path: Path) -> None:
    calls = [call(1, 0.0), call(2, 0.5), call(3, 0.999999), call(4, 1.0), call(5, 1.5)]
    [row] = run(tmp_path, calls, "customer")
    assert row["cps"] == 3


def test_a_call_belongs_to_the_bucket_of_its_start(tmp_path: Path) -> None:
    late = T0.replace(hour=23, minute=59, second=50)
    calls = [
        call(1, late, duration=Decimal(60)),  # up into the next day
        call(2, late + timedelta(seconds=20), duration=Decimal(5)),  # next day, while 1 is up
    ]
    rows = run(tmp_path, calls, "customer,day")
    assert [(r["day"], r["attempts"], r["channels"]) for r in rows] == [
        ("2026-11-30", 1, 1),
        ("2026-12-01", 1, 1),  # call 1 is up then, but it is not a call of this day
    ]
    hours = run(tmp_path / "h", calls, "hour")
    assert [r["hour"] for r in hours] == ["2026-11-30 23:00", "2026-12-01 00:00"]
    months = run(tmp_path / "m", calls, "month")
    assert [(r["month"], r["attempts"], r["channels"]) for r in months] == [
        ("2026-11", 1, 1),
        ("2026-12", 1, 1),
    ]


def test_groups_without_answers_or_with_only_redirects(tmp_path: Path) -> None:
    calls = [
        call(1, 0, customer_id="a", sip_code=302),
        call(2, 1, customer_id="b", sip_code=486),
    ]
    rows = {r["customer"]: r for r in run(tmp_path, calls, "customer")}
    assert rows["a"]["acd"] is None and rows["a"]["ner"] is None  # no answer; only a 3xx
    assert rows["a"]["asr"] == 0.0 and rows["a"]["minutes"] == 0.0
    assert rows["b"]["ner"] == 100.0
    assert rows["b"]["pdd"] is None  # no call carried a PDD


def test_an_empty_range_gives_no_rows_and_the_same_columns(tmp_path: Path) -> None:
    rows = run(tmp_path, [call(1, 0)], "customer,day", start=T0 + timedelta(days=3))
    assert rows == []


def test_the_range_is_half_open_and_prunes_partitions(tmp_path: Path) -> None:
    calls = [call(1, 0), call(2, 3600), call(3, T0 + timedelta(days=2))]
    lake = write_lake(tmp_path, calls)
    scope = Scope(lake, T0, T0 + timedelta(seconds=3600))
    assert [Path(f).parent.name for f in scope.files()] == ["date=2026-11-30"]
    with connect() as con:
        [row] = metrics(con, scope, []).to_pylist()
    assert row["attempts"] == 1  # the call at exactly --to is outside


def test_money_of_mixed_currencies_is_not_added_up(tmp_path: Path) -> None:
    calls = [
        call(1, 0, customer_id="u", charge=Decimal("1.5"), profit=Decimal("0.5")),
        call(2, 1, customer_id="e", currency="EUR", charge=Decimal("2"), profit=Decimal(1)),
    ]
    [row] = run(tmp_path, calls, "day")
    assert row["charge"] is None and row["profit"] is None
    by_currency = run(tmp_path / "c", calls, "currency")
    assert [(r["currency"], r["charge"]) for r in by_currency] == [
        ("EUR", Decimal(2)),
        ("USD", Decimal("1.5")),
    ]


def test_every_group_key(tmp_path: Path) -> None:
    calls = [call(1, 0), call(2, 1, provider_id=None, dest_code="4420", dest_name="UK London")]
    rows = run(tmp_path, calls, "provider,card,code,destination")
    assert [(r["provider"], r["code"], r["destination"]) for r in rows] == [
        (None, "4420", "UK London"),
        ("carrier", "44", "UK"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer,weekday", "unknown group 'weekday'"),
        ("day,month", "at most one of hour, day, month"),
        ("customer,customer", "names a group twice"),
    ],
)
def test_bad_groupings_are_refused(text: str, message: str) -> None:
    with pytest.raises(CdrflowError, match=message):
        parse_by(text)


@st.composite
def traffic(draw: Any) -> list[dict[str, Any]]:
    """Calls over two days around midnight, some in the same second, with every kind of
    key, ring and answer."""
    n = draw(st.integers(1, 40))
    out = []
    for i in range(n):
        at = draw(st.sampled_from([0, 43_190, 43_200, 46_000])) + draw(st.integers(0, 20)) / (
            draw(st.sampled_from([1, 2, 4]))
        )
        out.append(
            call(
                i,
                at,
                customer_id=draw(st.sampled_from(["a", "b", "c"])),
                provider_id=draw(st.sampled_from(["p", "q", None])),
                dest_code=draw(st.sampled_from(["44", "4420"])),
                currency=draw(st.sampled_from(["USD", "USD", "EUR"])),
                sip_code=draw(st.sampled_from([200, 200, 486, 302, 503])),
                duration=Decimal(draw(st.integers(0, 8))) / 2,
                ring_duration=Decimal(draw(st.integers(0, 3))),
                billed_duration=draw(st.integers(0, 60)),
                pdd_ms=draw(st.sampled_from([None, 150, 2001])),
                charge=Decimal(draw(st.integers(0, 10**6))) / 10**6,
                provider_charge=Decimal(draw(st.integers(0, 10**6))) / 10**6,
                profit=Decimal(draw(st.integers(-(10**6), 10**6))) / 10**6,
            )
        )
    return out


def write_files(home: Path, calls: list[dict[str, Any]], files: int) -> Path:
    """The calls as a rated lake of ``files`` files a day, each call in a file by its number
    (so the files of a day overlap in time, as a switch's late CDRs make them)."""
    lake = home / "lake" / "rated"
    for f in range(files):
        part = write_lake(home / f"f{f}", [c for i, c in enumerate(calls) if i % files == f])
        for src in part.glob("date=*/*.parquet"):
            target = lake / src.parent.name / f"part-{f}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            src.rename(target)
    return lake


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    traffic(),
    st.sampled_from(["customer", "customer,hour", "", "provider,code,day", "currency,month"]),
    st.integers(1, 3),
    st.sampled_from([None, 43_195.5, 43_200]),
    st.sampled_from([None, 46_010.25, 90_000]),
    st.sampled_from([(), ("a",), ("b", "c")]),
)
def test_every_metric_agrees_with_sql_over_the_calls(
    tmp_path_factory: pytest.TempPathFactory,
    calls: list[dict[str, Any]],
    by: str,
    files: int,
    start: float | None,
    end: float | None,
    customers: tuple[str, ...],
) -> None:
    """The summaries, the hours a range cuts through, and the sweep over overlapping files
    give what SQL over every call gives, column for column (then again from the cache)."""
    home = tmp_path_factory.mktemp("sweep")
    lake = write_files(home, calls, files)
    scope = Scope(
        lake,
        None if start is None else T0 + timedelta(seconds=start),
        None if end is None else T0 + timedelta(seconds=end),
        customers,
    )
    with connect() as con:
        reference = metrics_sql(con, scope, parse_by(by))
        exact = [] if reference is None else reference.to_pylist()
        assert metrics(con, scope, parse_by(by)).to_pylist() == exact
        assert reference is None or any((home / "lake" / "_rollup").glob("date=*/totals.arrow"))
        assert metrics(con, scope, parse_by(by)).to_pylist() == exact


def _channels_by_hand(group: list[int], spans: list[tuple[int, int]], n_groups: int) -> list[int]:
    channels = [0] * n_groups
    for g in range(n_groups):
        mine = [s for s, k in zip(spans, group, strict=True) if k == g]
        for t in {a for a, _ in mine}:
            channels[g] = max(channels[g], sum(a <= t < b for a, b in mine))
    return channels


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 60).map(lambda t: t * 100_000) | st.integers(0, 6_000_000),
            st.sampled_from([0, 100_000, 1_000_000]) | st.integers(0, 3_000_000),
            st.integers(-1, 2),
        ),
        min_size=1,
        max_size=60,
    ),
    st.booleans(),
)
def test_the_sweep_over_runs_and_parts_counts_by_hand(
    raw: list[tuple[int, int, int, int]], split: bool
) -> None:
    """Channels (calls up over [start, end)) from runs of any overlap, with calls never up
    and ties of ends and starts, swept in one part or split in time, against counting every
    instant."""
    import stats.peaks

    runs = [sorted((s, s + d, g) for r, s, d, g in raw if r == run) for run in range(3)]
    # The walk takes the calls that are ever up (a call never up counts for CPS only), each
    # run's starts and ends as events in time order: time × 2, + 1 for a start.
    ups = [[c for c in calls if c[0] < c[1]] for calls in runs]
    events = [
        sorted(
            [(s * 2 + 1, i) for i, (s, _, _) in enumerate(calls)]
            + [(e * 2, ~i) for i, (_, e, _) in enumerate(calls)]
        )
        for calls in ups
    ]
    before = stats.peaks._CALLS_PER_PART
    stats.peaks._CALLS_PER_PART = 1 if split else 1 << 20
    try:
        counted = channels(
            np.array([e for day in events for e, _ in day], np.int64),
            np.array([c for day in events for _, c in day], np.int32),
            np.cumsum([0] + [len(day) for day in events]).astype(np.int64),
            np.array([g for calls in ups for _, _, g in calls], np.int32),
            np.cumsum([0] + [len(calls) for calls in ups]).astype(np.int64),
            3,
        )
    finally:
        stats.peaks._CALLS_PER_PART = before
    spans = [(s, e) for calls in runs for s, e, _ in calls]
    assert counted.tolist() == _channels_by_hand([g for c in runs for _, _, g in c], spans, 3)
