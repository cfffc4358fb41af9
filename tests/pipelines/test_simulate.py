"""The switch simulator: files that parse, counts that add up, traffic the catalog can rate.

Destinations are checked with a small reference of SPEC §5.1 written here, independent of
the simulator's own route logic: who pays, which route, and whether the card has a prefix.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import json
import re
import statistics
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bench.catalog import build_bench_catalog
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli import app
from pipelines.cli.demo import sample_catalog
from pipelines.simulate import DEFAULT_START, read_catalog, simulate
from schemas.cdr import INPUT, INPUT_NAMES
from schemas.errors import CdrflowError
from tests.pipelines.cli.driver import Cli

Rows = Mapping[str, Sequence[Mapping[str, Any]]]
CODES = {200, 486, 480, 487, 603, 404, 408, 503, 502, 403, 484, 302}
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CALLID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Rows:
    """The bundled sample catalog, as the simulator reads it (imported once: hashing its
    passwords is slow)."""
    with Catalog(tmp_path_factory.mktemp("sample")) as catalog:
        import_directory(catalog, sample_catalog())
        return read_catalog(catalog)


@pytest.fixture(scope="module")
def jsonl(rows: Rows, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    path = tmp_path_factory.mktemp("jsonl") / "cdrs.jsonl"
    counts = simulate(rows, 30_000, path, duplicate_rate=0.01, malformed_rate=0.01, chunk=7_000)
    return path, counts


def parsed(path: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Each line and its object (None when it is not JSON)."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                yield line, json.loads(line)
            except json.JSONDecodeError:
                yield line, None


# -- a reference of SPEC §5.1 ------------------------------------------------------------------


def resolve(record: Mapping[str, Any], rows: Rows) -> tuple[str | None, str | None, str | None]:
    """(customer, card, number rated) as SPEC §5.1 finds them; None where it stops."""
    dest = record["dest_number"]
    if record.get("direction") == "inbound":
        for did in rows["dids"]:
            if did["number"] == dest.removeprefix("+"):
                return did["customer_id"], did["customer_card_id"], did["number"]
    customer = record.get("customer_id")
    if customer is None and record.get("source_ip"):
        address = ipaddress.ip_address(record["source_ip"])
        matches = sorted(
            (len(a["tech_prefix"] or ""), a["customer_id"])
            for a in rows["auth"]
            if a["kind"] == "ip"
            and address in ipaddress.ip_network(a["value"])
            and dest.startswith(a["tech_prefix"] or "")
        )
        customer = matches[-1][1] if matches else None
    if customer is None and record.get("sip_user"):
        users = [
            a for a in rows["auth"] if a["kind"] == "user" and a["value"] == record["sip_user"]
        ]
        customer = users[0]["customer_id"] if users else None
    if customer is None:
        return None, None, None
    routes = sorted(
        (r for r in rows["routes"] if r["customer_id"] == customer),
        key=lambda r: (r["priority"], -len(r["tech_prefix"] or "")),
    )
    for route in routes:
        tech = route["tech_prefix"] or ""
        if not dest.startswith(tech):
            continue
        number = dest[len(tech) :].removeprefix("+")[route["strip_digits"] :]
        dial = route["dial_string"] or ""
        if not number.isdigit():
            continue
        if dial.startswith("^"):
            if not re.search(dial, number):
                continue
        elif dial and not any(number.startswith(p) for p in dial.split("|")):
            continue
        return customer, route["card_id"], number
    return customer, None, None


def check_destinations(rows: Rows, records: list[dict[str, Any]], unknown: int) -> None:
    """Every caller is found; the numbers of all but the unknown destinations are rated."""
    prefixes: dict[str, set[str]] = collections.defaultdict(set)
    for r in rows["rates"]:
        prefixes[r["card_id"]].add(r["prefix"])

    def rated(card: str, number: str) -> bool:
        return any(number[:k] in prefixes[card] for k in range(1, len(number) + 1))

    outcome: collections.Counter[str] = collections.Counter()
    for record in records:
        customer, card, number = resolve(record, rows)
        if customer is None:
            outcome["unknown_customer"] += 1
        elif card is None or number is None:
            outcome["no_route"] += 1
        else:
            outcome["rated" if rated(card, number) else "no_rate"] += 1
            provider = record.get("provider_card_id")
            if provider is not None:
                outcome["provider" if rated(provider, number) else "provider_no_rate"] += 1
    assert outcome["unknown_customer"] == 0, outcome
    assert outcome["provider_no_rate"] == 0, outcome
    assert outcome["rated"] >= 0.95 * len(records), outcome
    # The numbers that fail are the ones the simulator meant to fail, give or take a few.
    assert abs(outcome["no_route"] + outcome["no_rate"] - unknown) <= 0.002 * len(records)
    assert outcome["provider"] >= 0.8 * len(records), outcome


def sound_records(path: Path, counts: Mapping[str, int]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for _, record in parsed(path):
        if record is None or "callid" not in record or record["callid"] in seen:
            continue
        seen.add(record["callid"])
        if (
            record["sip_code"] == 999
            or not isinstance(record["duration"], int | float)
            or not re.fullmatch(r"[0-9+*#]+", record["dest_number"])
            or not ISO_MS.fullmatch(record["dt"])
        ):
            continue
        out.append(record)
    assert len(out) == counts["records"] - counts["duplicates"] - counts["malformed"]
    return out


# -- JSON Lines --------------------------------------------------------------------------------


def test_jsonl_lines_parse_except_the_malformed_ones(jsonl: tuple[Path, dict[str, int]]) -> None:
    path, counts = jsonl
    lines = list(parsed(path))
    assert len(lines) == counts["records"] == 30_000
    broken = collections.Counter[str]()
    for line, record in lines:
        assert line.endswith("\n") and "\n" not in line[:-1]
        if record is None:
            broken["truncated"] += 1
            continue
        assert None not in record.values()  # absent fields are left out, never null
        assert list(record) == [n for n in INPUT_NAMES if n in record]  # in SPEC order
        if "callid" not in record:
            broken["missing_callid"] += 1
        elif record["sip_code"] == 999:
            broken["bad_sip_code"] += 1
        elif isinstance(record["duration"], str):
            broken["wrong_type"] += 1
        elif not re.fullmatch(r"[0-9+*#]+", record["dest_number"]):
            broken["letters"] += 1
        elif not ISO_MS.fullmatch(record["dt"]):
            broken["bad_dt"] += 1
    for kind in ("truncated", "wrong_type", "missing_callid", "bad_sip_code", "letters", "bad_dt"):
        assert broken[kind] == counts[f"malformed_{kind}"], kind
        assert broken[kind] > 0, kind
    assert sum(broken.values()) == counts["malformed"]


def test_jsonl_records_have_the_spec_types(jsonl: tuple[Path, dict[str, int]]) -> None:
    path, counts = jsonl
    records = sound_records(path, counts)
    for record in records:
        assert CALLID.fullmatch(record["callid"])
        assert isinstance(record["sip_code"], int) and record["sip_code"] in CODES
        assert isinstance(record["pdd_ms"], int) if "pdd_ms" in record else True
        assert 0 <= Decimal(str(record["ring_duration"])) <= 30
        duration = Decimal(str(record["duration"]))
        assert duration >= 0 and duration == duration.quantize(Decimal("0.001"))
        if record["sip_code"] != 200:
            assert duration == 0
        assert record["direction"] in ("outbound", "inbound")
        assert record.get("source_cli") is None or re.fullmatch(
            r"\+?[1-9]\d{9,13}", record["source_cli"]
        )
        assert sum(k in record for k in ("customer_id", "sip_user")) <= 1
    assert {r["switch"] for r in records} <= {
        f"sbc-{s}" for s in ("lon-01", "lon-02", "fra-01", "ams-01", "nyc-01", "sgp-01")
    }


def test_duplicates_repeat_an_earlier_line_exactly(jsonl: tuple[Path, dict[str, int]]) -> None:
    path, counts = jsonl
    first: dict[str, str] = {}
    repeats = 0
    for line, record in parsed(path):
        if record is None or "callid" not in record:
            continue
        if record["callid"] in first:
            assert line == first[record["callid"]]
            repeats += 1
        else:
            first[record["callid"]] = line
    assert repeats == counts["duplicates"]
    # 30,000 records at 1 %: 300 expected, a binomial spread of about 17.
    assert 240 <= counts["duplicates"] <= 360
    assert 240 <= counts["malformed"] <= 360


def test_traffic_looks_like_a_switch(jsonl: tuple[Path, dict[str, int]]) -> None:
    path, counts = jsonl
    records = sound_records(path, counts)
    answered = [r for r in records if r["sip_code"] == 200]
    assert 0.4 <= len(answered) / len(records) <= 0.6
    assert counts["answered"] == len(answered)
    assert 40 <= statistics.median(r["duration"] for r in answered) <= 90
    assert max(r["duration"] for r in answered) > 1800  # the tail is long
    failures = collections.Counter(r["sip_code"] for r in records if r["sip_code"] != 200)
    assert failures.most_common(3)[0][0] in (486, 487, 480)
    assert set(failures) == CODES - {200}
    assert 1000 <= statistics.median(r["pdd_ms"] for r in records if "pdd_ms" in r) <= 2200
    # In [start, start + 1 day), nearly in order.
    times = [datetime.fromisoformat(r["dt"]) for r in records]
    assert min(times) >= DEFAULT_START and max(times) < DEFAULT_START + timedelta(days=1)
    assert all(b - a > timedelta(seconds=-5) for a, b in itertools.pairwise(times))
    inbound = [r for r in records if r["direction"] == "inbound"]
    assert 0.01 <= len(inbound) / len(records) <= 0.06
    assert any(r["dest_number"].startswith("+") for r in inbound)
    identified = collections.Counter(
        "customer_id" if "customer_id" in r else "sip_user" if "sip_user" in r else "source_ip"
        for r in records
        if r["direction"] == "outbound"
    )
    assert identified["source_ip"] > identified["sip_user"] > 0 and identified["customer_id"] > 0
    tech = [r for r in records if r["dest_number"].startswith(("9901#", "77"))]
    assert tech, "the sample's tech prefixes are used"


def test_destinations_are_rated_by_the_customers_card(
    rows: Rows, jsonl: tuple[Path, dict[str, int]]
) -> None:
    path, counts = jsonl
    records = sound_records(path, counts)
    unknown = counts["unknown_destinations"]
    assert 0.01 * len(records) <= unknown <= 0.03 * len(records)
    check_destinations(rows, records, unknown)


# -- CSV and Parquet ---------------------------------------------------------------------------


def test_csv_reads_with_pyarrow(rows: Rows, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.csv"
    counts = simulate(rows, 20_000, path, duplicate_rate=0.01, malformed_rate=0.01, chunk=6_000)
    assert path.read_text().splitlines()[0].replace('"', "").split(",") == list(INPUT_NAMES)
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in INPUT_NAMES},
            null_values=[""],  # an absent field; "n/a" is a malformed duration here
            strings_can_be_null=True,
        ),
    )
    assert table.num_rows == counts["records"]
    assert table.column_names == list(INPUT_NAMES)
    records = table.to_pylist()
    assert sum(r["callid"] is None for r in records) == counts["malformed_missing_callid"]
    assert sum(r["sip_code"] == "999" for r in records) == counts["malformed_bad_sip_code"]
    assert (
        sum(r["duration"] in ("abc", "n/a", "1m20s") for r in records)
        == counts["malformed_wrong_type"]
    )
    callids = collections.Counter(r["callid"] for r in records if r["callid"])
    assert sum(n - 1 for n in callids.values()) == counts["duplicates"]
    good = [
        r
        for r in records
        if r["callid"] and r["sip_code"] != "999" and re.fullmatch(r"\d+(\.\d{3})?", r["duration"])
    ]
    assert all(r["duration"] == "0" for r in good if r["sip_code"] != "200")
    assert all(r["customer_id"] is None or r["sip_user"] is None for r in good)


def test_parquet_is_typed_as_schemas_cdr(rows: Rows, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.parquet"
    counts = simulate(rows, 20_000, path, duplicate_rate=0.01, malformed_rate=0.01, chunk=6_000)
    table = pq.read_table(path)
    assert table.num_rows == counts["records"]
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in INPUT]
    records = table.to_pylist()
    assert sum(r["callid"] is None for r in records) == counts["malformed_missing_callid"]
    assert sum(r["sip_code"] == 999 for r in records) == counts["malformed_bad_sip_code"]
    assert sum(r["duration"] < 0 for r in records) == counts["malformed_negative_duration"]
    letters = sum(not re.fullmatch(r"[0-9+*#]+", r["dest_number"]) for r in records)
    assert letters == counts["malformed_letters"] > 0
    assert all(DEFAULT_START <= r["dt"] < DEFAULT_START + timedelta(days=1) for r in records)
    assert all(r["dt"].microsecond % 1000 == 0 for r in records)  # milliseconds, as switches
    answered = [r for r in records if r["sip_code"] == 200]
    assert 0.4 <= len(answered) / len(records) <= 0.6
    unanswered = [r for r in records if r["sip_code"] not in (200, 999) and r["duration"] >= 0]
    assert all(r["duration"] == 0 for r in unanswered)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_seed_gives_the_same_bytes(rows: Rows, tmp_path: Path, suffix: str) -> None:
    def run(name: str, seed: int) -> bytes:
        path = tmp_path / f"{name}{suffix}"
        simulate(
            rows, 5_000, path, seed=seed, duplicate_rate=0.01, malformed_rate=0.01, chunk=2_000
        )
        return path.read_bytes()

    assert run("a", 11) == run("b", 11)
    assert run("c", 12) != run("a", 11)
    assert not list(tmp_path.glob(".*partial"))


def test_start_and_days_bound_the_times(rows: Rows, tmp_path: Path) -> None:
    path = tmp_path / "cdrs.jsonl"
    start = datetime(2026, 12, 5, 6, 30, tzinfo=UTC)
    counts = simulate(rows, 10_000, path, start=start, days=3, malformed_rate=0)
    times = [datetime.fromisoformat(r["dt"]) for _, r in parsed(path) if r is not None]
    assert len(times) == counts["records"]
    assert start <= min(times) < start + timedelta(hours=1)
    assert start + timedelta(days=3) - timedelta(hours=1) < max(times) < start + timedelta(days=3)
    assert len({t.date() for t in times}) == 4


def test_refusals_name_the_problem(rows: Rows, tmp_path: Path) -> None:
    with pytest.raises(CdrflowError, match=r"\.jsonl, \.csv or \.parquet"):
        simulate(rows, 10, tmp_path / "cdrs.txt")
    with pytest.raises(CdrflowError, match="duplicate rate"):
        simulate(rows, 10, tmp_path / "cdrs.csv", duplicate_rate=2)
    with pytest.raises(CdrflowError, match="no customer with a route"):
        simulate({"customers": rows["customers"]}, 10, tmp_path / "cdrs.csv")
    assert not list(tmp_path.iterdir())


# -- the command -------------------------------------------------------------------------------


def test_cdrflow_simulate(sample: Catalog, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "cdrs.jsonl"
    args = ["--home", str(home), "simulate", "--count", "3000", "--out", str(out)]
    args += ["--seed", "5", "--duplicates", "0.01", "--malformed", "0", "--start", "2026-12-24"]
    result = CliRunner().invoke(app, [*args, "--days", "2"])
    assert result.exit_code == 0, result.output
    assert "answered (ASR)" in result.stdout and "wrote 3,000 CDRs" in result.stdout
    records = [r for _, r in parsed(out)]
    assert len(records) == 3000 and None not in records
    days = {r["dt"][:10] for r in records if r is not None}
    assert days == {"2026-12-24", "2026-12-25"}

    refused = CliRunner().invoke(
        app, ["--home", str(home), "simulate", "--count", "5", "--out", str(tmp_path / "x.xml")]
    )
    assert refused.exit_code == 1
    assert "use .jsonl, .csv or .parquet" in refused.stderr
    bad_start = CliRunner().invoke(app, [*args[:7], "--start", "noon"])
    assert bad_start.exit_code == 1 and "ISO 8601" in bad_start.stderr


@pytest.mark.parametrize(
    ("start", "days", "span"),
    [("1999-12-31", "1", "1999-12-31 to 1999-12-31"),
     ("2099-12-31", "2", "2099-12-31 to 2100-01-01"),
     ("2026-11-02", "99999999999", "2026-11-02 to 9999-12-31")],
)  # fmt: skip
def test_simulated_traffic_stays_in_the_years_cdrflow_rates(
    sample: Catalog, home: Path, tmp_path: Path, start: str, days: str, span: str
) -> None:
    """A file every CDR of which the rater rejects is no demo: refused before it is written."""
    out = tmp_path / "cdrs.jsonl"
    refused = Cli(home).refused(
        "simulate", "--count", "5", "--out", str(out), "--start", start, "--days", days
    )
    assert refused == (
        f"--start and --days: {span} is not within the years 2000 to 2099, where cdrflow rates a dt"
    )
    assert not out.exists()
    Cli(home).ok("simulate", "--count", "5", "--out", str(out), "--start", "2099-12-31")


# -- the benchmark catalog ---------------------------------------------------------------------


@pytest.mark.slow
def test_bench_catalog_is_large_and_simulates(tmp_path: Path) -> None:
    counts = build_bench_catalog(tmp_path / "bench", prefixes=50_000, cards=1, seed=1)
    with Catalog(tmp_path / "bench") as catalog:
        rows = read_catalog(catalog)
        cards = {c["card_id"]: c for c in catalog.list("rate_cards")}
        routes = catalog.list("routes")
        auth = catalog.list("auth")
        assert catalog.list("packages") and catalog.list("customer_packages")
        assert catalog.list("dids") and catalog.list("providers")
    assert counts["rates"] == len(rows["rates"])
    per_card = collections.Counter(r["card_id"] for r in rows["rates"])
    sold = {r["card_id"] for r in routes}
    assert sold and all(cards[c]["direction"] == "termination" for c in sold)
    assert all(per_card[c] >= 50_000 for c in sold), per_card
    cost = [c for c in cards if c.startswith("cost-")]
    assert len(cost) == 3 and all(per_card[c] > 1000 for c in cost)
    prefixes = [r["prefix"] for r in rows["rates"] if r["card_id"] in sold]
    assert max(map(len, prefixes)) == 8 and min(map(len, prefixes)) == 1
    assert len(prefixes) > len(set(prefixes))  # some prefixes have two effective versions
    assert {a["kind"] for a in auth} == {"ip", "user"} and any(a["tech_prefix"] for a in auth)
    assert any(r["tech_prefix"] for r in routes) and any(r["strip_digits"] for r in routes)
    assert any((r["dial_string"] or "").startswith("^") for r in routes)

    path = tmp_path / "bench.jsonl"
    simulated = simulate(rows, 20_000, path, malformed_rate=0, duplicate_rate=0)
    assert simulated["skipped_routes"] == 0
    records = [r for _, r in parsed(path) if r is not None]
    check_destinations(rows, records, simulated["unknown_destinations"])
