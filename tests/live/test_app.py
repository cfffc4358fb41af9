"""``cdrflow live worker`` on a real broker beside real stream workers (SPEC §9, §9.1): live
balances equal ``cdrflow balance`` to the cent, whatever fed them, and a worker killed with
SIGKILL comes back with its tables."""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipelines.kafka_broker import Broker
from pipelines.lakefiles import committed_runs
from pipelines.stream import published_mark
from tests.kafka.reader import unique_name
from tests.kafka.test_stream import keyed, lines, produce, worker
from tests.live.process import CDRFLOW, LiveWorker, wait_for
from tests.pipelines.test_rate import new_home
from tests.pipelines.workload import records, write_jsonl

pytestmark = pytest.mark.integration

MONEY = ("payments", "usage", "fees", "balance", "debit_limit", "available")


def cdrflow(home: Path, *args: str) -> str:
    done = subprocess.run(
        [CDRFLOW, "--home", str(home), *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def balances(home: Path) -> dict[str, dict[str, Any]]:
    rows = json.loads(cdrflow(home, "balance", "--format", "json"))
    return {r["customer_id"]: {k: r[k] for k in ("currency", *MONEY)} for r in rows}


def live_balances(live: LiveWorker) -> dict[str, dict[str, Any]]:
    return {ident: {k: c[k] for k in ("currency", *MONEY)} for ident, c in live.customers().items()}


def agree(home: Path, live: LiveWorker) -> bool:
    """Whether every live balance equals ``cdrflow balance``'s, to the cent."""
    return live_balances(live) == balances(home)


class Rater:
    """A stream worker (``cdrflow stream``) of the test's topic, stopped when the lake holds
    the topic's first ``n`` messages and they are published (rated, rejected and usage)."""

    def __init__(self, home: Path, bootstrap: str, topic: str) -> None:
        self.home, self.topic = home, topic
        self.process = worker(home, bootstrap, topic, f"raters-{topic}")

    def settled(self, n: int) -> bool:
        runs = committed_runs(self.home, f"stream-{self.topic}-p*.json")
        done = sum(r["rated"] + sum(r["rejected"].values()) for r in runs)
        return done >= n and all(published_mark(self.home, r["run"]).exists() for r in runs)

    def stop_when_settled(self, n: int) -> None:
        try:
            wait_for(lambda: self.settled(n), f"{n} messages landed and published", 600)
        finally:
            self.process.terminate()
            self.process.communicate(timeout=600)


def stream_until_settled(home: Path, bootstrap: str, topic: str, n: int) -> None:
    Rater(home, bootstrap, topic).stop_when_settled(n)


def window_counts(home: Path, customer: str) -> tuple[int, int]:
    """Attempts and answered calls of ``customer`` in the lake in the 15 minutes up to the
    newest rated call's (its minute included)."""
    files = [str(p) for p in (home / "lake" / "rated").glob("date=*/*.parquet")]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    row = con.execute(
        "WITH calls AS (SELECT * FROM read_parquet(?::VARCHAR[])), "
        "floor AS (SELECT date_trunc('minute', max(dt)) - INTERVAL 14 MINUTE AS at FROM calls) "
        "SELECT count(*), count(*) FILTER (sip_code = 200) FROM calls, floor "
        "WHERE customer_id = ? AND dt >= floor.at",
        [files, customer],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_live_balances_equal_cdrflow_balance_through_stream_rate_payments_and_a_kill(
    tmp_path: Path, kafka_broker: Broker, topic: str
) -> None:
    bootstrap = kafka_broker.bootstrap
    home = new_home(tmp_path, "home")
    # Before the live worker: a `cdrflow rate` run and a first stretch of the stream.
    before = write_jsonl(tmp_path / "before.jsonl", records(400, seed=41))
    cdrflow(home, "rate", str(before))
    values = lines(write_jsonl(tmp_path / "stream.jsonl", records(3000, seed=42)))
    produce(bootstrap, topic, values[:1500], keyed(values[:1500]))
    stream_until_settled(home, bootstrap, topic, 1500)

    app_id = unique_name("live")
    live = LiveWorker(home, bootstrap, topic, app_id)
    try:
        live.ready()
        wait_for(lambda: agree(home, live), "live balances seeded from the lake")
        status, body = live.get("/customers/nobody")
        assert status == 404 and "nobody" in body["error"]
        # While it runs: more of the stream, a `cdrflow rate` run, a payment.
        produce(bootstrap, topic, values[1500:], keyed(values[1500:]))
        stream_until_settled(home, bootstrap, topic, 3000)
        late = datetime(2026, 11, 3, 12, tzinfo=UTC)  # the newest calls: the ASR window
        after = write_jsonl(tmp_path / "after.jsonl", records(600, seed=43, start=late))
        cdrflow(home, "rate", str(after))
        cdrflow(
            home, "payments", "add", "--payment-id", "PAY-LIVE-1", "--customer-id", "globex",
            "--amount", "123.456789", "--status", "completed", "--at", "2026-11-03T08:00:00Z",
        )  # fmt: skip
        wait_for(lambda: agree(home, live), "live balances after stream, rate and payment")
        want = balances(home)
        assert want["globex"]["payments"] == "2623.456789"
        assert any(c["usage"] != "0.00" for c in want.values())
        # The window: the 15 minutes up to the newest call, all of them from the last run.
        acme = live.customers()["acme"]
        attempts, answered = window_counts(home, "acme")
        assert (acme["attempts"], acme["answered"]) == (attempts, answered) and attempts > 0
        assert acme["asr"] is not None

        # A re-rate (after a tax change) rewrites rows the app counted: it reads the lake again.
        cdrflow(home, "customers", "edit", "acme", "--tax-percent", "25")
        cdrflow(home, "rerate", "--from", "2026-11-02", "--to", "2026-11-04")
        wait_for(lambda: agree(home, live), "live balances after a re-rate")
        rerated = balances(home)
        assert rerated["acme"]["usage"] != want["acme"]["usage"]
        assert "rewrote lake rows" in live.text()
        want = rerated

        # SIGKILL while the stream flows, restart: the tables come back from Kafka, and
        # what was counted before the kill (offsets committed or not) counts once.
        more = lines(write_jsonl(tmp_path / "more.jsonl", records(1600, seed=44)))
        produce(bootstrap, topic, more, keyed(more))
        rater = Rater(home, bootstrap, topic)
        try:
            wait_for(lambda: live_balances(live) != want, "the live worker counting new batches")
            live.kill()
            live = LiveWorker(home, bootstrap, topic, app_id)
            live.ready()
        finally:
            rater.stop_when_settled(3000 + len(more))
        wait_for(lambda: agree(home, live), "live balances after a SIGKILL and a restart")
        assert "first start" not in live.text()  # recovered, not seeded again
        log = live.stop()
    finally:
        live.kill()
    assert "Traceback" not in log


def test_a_web_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [CDRFLOW, "--home", str(tmp_path / "home"), "live", "worker", "--bootstrap",
             "127.0.0.1:1", "--web-port", str(port)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (Address already in use): another live "
        "worker may be running there; --web-port and --host choose another"
    ]
