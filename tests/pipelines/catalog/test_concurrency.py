"""Several processes on one store at once: readers never fail, writers queue, nothing is lost.

Raters, Dagster runs and an operator's edits share the catalog (issue 2): this runs real
processes, not threads, against one SQLite file in WAL mode. The processes start together
(a barrier, once each has imported its modules and opened the store) and the readers read
until the writers are done (an event), so that a busy machine makes the test slower, never
wrong.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_card, import_directory
from pipelines.cli.demo import sample_catalog

WRITES = 40
READERS = 3
WRITERS = ("ops", "dagster")
# Generous bounds against a hang (a process that died before the barrier), not deadlines.
HANG = 600


def _reader(home: str, start: Barrier, writers_done: Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        seen = []
        with Catalog(Path(home)) as catalog:
            start.wait(HANG)
            while True:
                # The last reading starts after the writers are done: it sees all they wrote.
                last = writers_done.is_set()
                count = len(catalog.list("customers"))
                rates = len(catalog.list("rates", card="retail-usd"))
                seen.append((catalog.version(), count, rates))
                if last:
                    break
        out.put(("ok", seen))
    except Exception as exc:  # reported to the test, which fails on it
        out.put(("error", repr(exc)))


def _writer(home: str, name: str, rates_file: str, start: Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    try:
        with Catalog(Path(home)) as catalog:
            start.wait(HANG)
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
        start_customers = len(catalog.list("customers"))
    rates_file = tmp_path / "rates.csv"
    rates_file.write_text(
        "prefix,name,rate\n" + "".join(f"44{i:03d},UK {i},0.01\n" for i in range(30))
    )
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(READERS + len(WRITERS))
    writers_done = ctx.Event()
    readings, written = ctx.Queue(), ctx.Queue()
    readers = [
        ctx.Process(target=_reader, args=(str(home), start, writers_done, readings))
        for _ in range(READERS)
    ]
    writers = [
        ctx.Process(target=_writer, args=(str(home), name, str(rates_file), start, written))
        for name in WRITERS
    ]
    for p in readers + writers:
        p.start()
    try:
        wrote = [written.get(timeout=HANG) for _ in writers]
    finally:
        writers_done.set()  # whatever the writers did, the readers stop
    read = [readings.get(timeout=HANG) for _ in readers]
    for p in readers + writers:
        p.join(HANG)
        assert p.exitcode == 0
    assert [detail for status, detail in wrote + read if status == "error"] == []
    final_version = start_version + len(WRITERS) * (WRITES + WRITES // 10)
    final_customers = start_customers + len(WRITERS) * WRITES
    for _, seen in read:
        assert seen, "a reader read nothing"
        # A reader's view only moves forward, and a card is never seen half-replaced.
        assert [v for v, _, _ in seen] == sorted(v for v, _, _ in seen)
        assert {r for _, _, r in seen} <= {24, 30}  # the sample's 24, or the file's 30
        # Its last reading came after the writers finished: it sees everything committed.
        assert seen[-1] == (final_version, final_customers, 30)
    with Catalog(home) as catalog:
        names = {r["customer_id"] for r in catalog.list("customers")}
        assert {f"{w}-{i}" for w in WRITERS for i in range(WRITES)} <= names
        assert catalog.version() == final_version
