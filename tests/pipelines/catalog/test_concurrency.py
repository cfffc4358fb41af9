"""Several processes on one store at once: readers never fail, writers queue, nothing is lost.

Raters, Dagster runs and an operator's edits share the catalog (issue 2): this runs real
processes, not threads, against one SQLite file in WAL mode.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_card, import_directory
from pipelines.cli.demo import sample_catalog

WRITES = 40


def _reader(home: str, stop_at: float, out: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        seen = []
        with Catalog(Path(home)) as catalog:
            while time.monotonic() < stop_at:
                count = len(catalog.list("customers"))
                rates = len(catalog.list("rates", card="retail-usd"))
                seen.append((catalog.version(), count, rates))
        out.put(("ok", seen))
    except Exception as exc:  # reported to the test, which fails on it
        out.put(("error", repr(exc)))


def _writer(home: str, name: str, rates_file: str, out: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        with Catalog(Path(home)) as catalog:
            for i in range(WRITES):
                catalog.add(
                    "customers",
                    {
                        "customer_id": f"{name}-{i}",
                        "name": name,
                        "status": "active",
                        "currency": "USD",
                    },
                )
                if i % 10 == 0:
                    import_card(catalog, "retail-usd", Path(rates_file))
        out.put(("ok", name))
    except Exception as exc:
        out.put(("error", repr(exc)))


@pytest.mark.slow
def test_readers_and_writers_in_several_processes(home: Path, tmp_path: Path) -> None:
    with Catalog(home) as catalog:
        import_directory(catalog, sample_catalog())
        start_version = catalog.version()
    rates_file = tmp_path / "rates.csv"
    rates_file.write_text(
        "prefix,name,rate\n" + "".join(f"44{i:03d},UK {i},0.01\n" for i in range(30))
    )
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop_at = time.monotonic() + 8
    procs = [ctx.Process(target=_reader, args=(str(home), stop_at, out)) for _ in range(3)]
    procs += [
        ctx.Process(target=_writer, args=(str(home), name, str(rates_file), out))
        for name in ("ops", "dagster")
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    errors = [detail for status, detail in results if status == "error"]
    assert errors == []
    readings = [detail for status, detail in results if status == "ok" and isinstance(detail, list)]
    assert len(readings) == 3
    for seen in readings:
        assert seen, "a reader read nothing"
        # A reader's view only moves forward, and a card is never seen half-replaced.
        assert [v for v, _, _ in seen] == sorted(v for v, _, _ in seen)
        assert {r for _, _, r in seen} <= {24, 30}  # the sample's 24, or the file's 30
    with Catalog(home) as catalog:
        names = {r["customer_id"] for r in catalog.list("customers")}
        assert {f"{w}-{i}" for w in ("ops", "dagster") for i in range(WRITES)} <= names
        assert catalog.version() == start_version + 2 * (WRITES + WRITES // 10)
