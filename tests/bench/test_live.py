"""The live benchmark measures what it says: its usage messages are a real stream's, whole and
exact; its wrk script sends every body as made, each with a callid of its own; and the
whole benchmark runs (``benchmark``: wrk and a live worker, minutes)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from bench.live import auth_bodies, lake_money, main, run_wrk, simulated, usage_messages, wrk_script
from pipelines.lakefiles import lake_root

CDRS = 20_000


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("live")
    path, home = simulated(work, CDRS)
    return {"path": path, "home": home, "usage": usage_messages(home, path, "cdrs", 3_000, 4)}


@pytest.mark.slow
def test_the_usage_messages_are_the_lake_cut_into_stream_batches(workload: dict[str, Any]) -> None:
    usage, home = workload["usage"], workload["home"]
    bodies = [json.loads(value) for _, value in usage.messages]
    assert usage.rated + usage.rejected == CDRS and usage.rejected > 0
    assert usage.batches == -(-CDRS // 3_000)
    # Each batch is a stream source: partitions round robin, offsets without gap or overlap.
    spans: dict[int, set[tuple[int, int]]] = {}
    for body in bodies:
        s = body["source"]
        assert s["kind"] == "stream" and s["topic"] == "cdrs"
        spans.setdefault(s["partition"], set()).add((s["first"], s["last"]))
    assert sorted(spans) == [0, 1, 2, 3]
    for ranges in spans.values():
        ordered = sorted(ranges)
        assert ordered[0][0] == 0
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ordered))
    assert sum(last - first + 1 for r in spans.values() for first, last in r) == CDRS
    # Whole and exact: every CDR's callid once, every rated call's money and attempt.
    # (a malformed record without a callid has none to free).
    callids = Counter(c for body in bodies for c in body["callids"])
    rejected = pa.concat_tables(
        pq.read_table(f, columns=["callid"])
        for f in (lake_root(home) / "rejected").rglob("*.parquet")
    )
    assert sum(callids.values()) == usage.rated + rejected.num_rows - rejected["callid"].null_count
    assert rejected["callid"].null_count > 0
    attempts = sum(m["attempts"] for body in bodies for m in body["minutes"])
    assert attempts == usage.rated
    assert {c: m for c, m in usage.money.items() if c} == lake_money(home)
    by_key = Counter(key for key, _ in usage.messages)
    assert by_key[b""] > 0  # rejected calls that name no customer still free their channels
    assert all(
        k.decode() == (b["customer_id"] or "")
        for (k, _), b in zip(usage.messages, bodies, strict=True)
    )


class Capture:
    """A real HTTP server on 127.0.0.1 (a thread of its own) that keeps every body posted."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/authorize"
        app = web.Application()
        app.router.add_post("/authorize", self._post)
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _post(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.text())
        return web.json_response({"allow": True})

    async def _start(self) -> None:
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    def __enter__(self) -> Capture:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)
        self.loop.close()


@pytest.fixture
def capture() -> Iterator[Capture]:
    with Capture() as server:
        yield server


@pytest.mark.benchmark
def test_wrk_sends_every_body_as_made_with_a_callid_of_its_own(
    workload: dict[str, Any], capture: Capture, tmp_path: Path
) -> None:
    bodies = auth_bodies(workload["path"], 50)
    assert len(bodies) == 50 and all("dest_number" in b for b in bodies)
    bodies.append({"customer_id": "acme", "dest_number": '44%d"\\\u00e9', "source_cli": "%s"})
    script = tmp_path / "post.lua"
    script.write_text(wrk_script(bodies, "POST"))
    figures = run_wrk(capture.url, script, 1, 4, 2)
    got = [json.loads(b) for b in capture.bodies]
    assert figures["requests"] > len(bodies) and len(got) >= figures["requests"]
    assert figures["errors"] == 0
    assert 0 < figures["p50"] <= figures["p99"] <= figures["max"]
    callids = [g.pop("callid") for g in got]
    assert len(set(callids)) == len(callids)
    wanted = [json.dumps(b, sort_keys=True) for b in bodies]
    sent = Counter(json.dumps(g, sort_keys=True) for g in got)
    assert set(sent) == set(wanted)


@pytest.mark.benchmark
def test_wrk_sends_every_number_new_when_asked(
    workload: dict[str, Any], capture: Capture, tmp_path: Path
) -> None:
    bodies = auth_bodies(workload["path"], 20)
    script = tmp_path / "fresh.lua"
    script.write_text(wrk_script(bodies, "POST", fresh=True))
    run_wrk(capture.url, script, 1, 4, 2)
    got = [json.loads(b) for b in capture.bodies]
    numbers = [g["dest_number"] for g in got]
    assert len(got) > len(bodies) and len(set(numbers)) == len(numbers)
    for g in got:  # a body's fields, its number followed by digits of its own
        g.pop("callid")
        number = g.pop("dest_number")
        assert any(
            {k: v for k, v in b.items() if k != "dest_number"} == g
            and number.startswith(b["dest_number"])
            and number[len(b["dest_number"]) :].isdigit()
            for b in bodies
        )


@pytest.mark.benchmark
@pytest.mark.integration
def test_the_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cdrs", "20000", "--batch", "3000", "--auth-seconds", "2", "--bodies", "100",
                 "--e2e-cdrs", "20000"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "Kafka alone" in out and "POST /authorize" in out and "GET /customers/" in out
    assert "with and without a live worker" in out
    assert "Targets" in out and "rated CDRs/s" in out and "requests/s" in out
