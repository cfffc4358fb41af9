"""``cdrflow live top``: the customers' live state in the terminal, from a worker's web views.

The quick tests run it against a small aiohttp server of our own on 127.0.0.1 that serves
fixed JSON (and can be made to fail); the integration test against a real
``cdrflow live worker`` on the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from confluent_kafka import Producer

from pipelines.catalog import Catalog
from pipelines.cli.live_top import COLUMNS, fitting
from pipelines.kafka_broker import Broker
from tests.kafka.reader import unique_name
from tests.live.process import LiveWorker

CDRFLOW = str(Path(sys.executable).parent / "cdrflow")
PATIENCE = 120.0  # a bound against a hang, never a deadline

CUSTOMERS: list[dict[str, Any]] = [
    {"customer_id": "globex", "name": "Globex Voice GmbH", "status": "active", "currency": "EUR",
     "balance": "1000.000001", "available": "2000.000001", "channels": 0, "cps": 0,
     "asr": None, "acd": None, "pdd": None},
    {"customer_id": "acme", "name": "Acme Telecom Ltd", "status": "active", "currency": "USD",
     "balance": "-123.456789", "available": "376.543211", "channels": 3, "cps": 1,
     "asr": "45.5", "acd": "61.2", "pdd": "1234", "debit_limit": "500"},
]  # fmt: skip
ALERTS: list[dict[str, Any]] = [
    {"alert_id": "acme-low-balance", "crossing": 1, "customer_id": "acme",
     "name": "Balance below 100", "area": "balance", "operator": "<", "threshold": "100",
     "value": "-123.456789", "at": "2026-12-07T10:15:00.123456Z", "channel": "email",
     "delivery": {"status": "delivered", "tries": 1}},
    {"alert_id": "globex-asr", "crossing": 3, "customer_id": "globex", "name": "ASR under 35%",
     "area": "asr", "operator": "<", "threshold": "35", "value": "20.5",
     "at": "2026-12-07T10:20:00Z", "channel": "webhook", "delivery": {"status": "pending"}},
]  # fmt: skip


class FixedServer:
    """A real HTTP server on 127.0.0.1 in a thread of its own, answering what the test sets:
    ``customers`` (or ``status``/``body`` to fail), and ``alerts`` (None: a 404)."""

    def __init__(self) -> None:
        self.customers: list[dict[str, Any]] = json.loads(json.dumps(CUSTOMERS))
        self.alerts: list[dict[str, Any]] | None = json.loads(json.dumps(ALERTS))
        self.status = 200
        self.body: str | None = None
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app = web.Application()
        app.router.add_get("/customers", self._customers)
        app.router.add_get("/alerts", self._alerts)
        self.runner = web.AppRunner(app)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _customers(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.json_response({"error": "broken"}, status=self.status)
        if self.body is not None:
            return web.Response(text=self.body)
        return web.json_response(self.customers)

    async def _alerts(self, request: web.Request) -> web.Response:
        if self.alerts is None:
            raise web.HTTPNotFound()
        limit = int(request.query.get("limit", "100"))
        return web.json_response(self.alerts[-limit:])

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(PATIENCE)

    async def _start(self) -> None:
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(PATIENCE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(PATIENCE)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[FixedServer]:
    fixed = FixedServer()
    fixed.start()
    try:
        yield fixed
    finally:
        fixed.stop()


def default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def top(*args: str, columns: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50"}
    return subprocess.run(
        [CDRFLOW, "live", "top", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=PATIENCE,
        preexec_fn=default_signals,
        start_new_session=True,
    )


def table_rows(out: str) -> dict[str, list[str]]:
    """The rows of the first table in ``out``, by their first cell."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("└"):
            break
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells
    return rows


def header_of(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith("┃"))
    return [c.strip() for c in line.strip("┃").split("┃")]


def test_once_draws_every_customer_with_money_as_sent(server: FixedServer) -> None:
    done = top("--url", server.url, "--once")
    assert done.returncode == 0, done.stderr
    assert header_of(done.stdout)[:7] == [
        "customer", "name", "status", "cur", "balance", "available", "channels",
    ]  # fmt: skip
    rows = table_rows(done.stdout)
    assert list(rows) == ["acme", "globex"]  # sorted by customer
    assert rows["acme"][4:] == ["-123.456789", "376.543211", "3", "1", "45.5", "61.2", "1234"]
    assert rows["globex"][4:8] == ["1000.000001", "2000.000001", "0", "0"]
    alerts = done.stdout.split("latest alerts", 1)[1].splitlines()
    assert "acme-low-balance" not in "".join(alerts)  # the alert's name is shown, not its id
    newest, older = (line for line in alerts if line.startswith("│"))  # newest first
    assert re.search(r"2026-12-07 10:20:00 .*globex .*ASR under 35% .*asr .*20\.5 .*< 35 "
                     r".*pending", newest)  # fmt: skip
    assert re.search(r"2026-12-07 10:15:00 .*acme .*Balance below 100 .*balance .*-123\.456789"
                     r" .*< 100 .*delivered", older)  # fmt: skip
    one = top("--url", server.url, "--once", "--alerts", "1").stdout.split("latest alerts")[1]
    assert "ASR under 35%" in one and "Balance below 100" not in one


def test_a_narrow_terminal_keeps_customer_balance_available_and_channels(
    server: FixedServer,
) -> None:
    done = top("--url", server.url, "--once", columns=52)
    assert done.returncode == 0, done.stderr
    assert header_of(done.stdout) == ["customer", "balance", "available", "channels"]
    assert table_rows(done.stdout)["acme"] == ["acme", "-123.456789", "376.543211", "3"]
    assert all(len(line) <= 52 for line in done.stdout.splitlines())
    # One step wider: the first columns to come back are the rates, not the name.
    assert "name" not in fitting(COLUMNS, server.customers, 80)


def test_machine_formats_carry_what_the_worker_sent(server: FixedServer) -> None:
    as_json = top("--url", server.url, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    by_id = {c["customer_id"]: c for c in CUSTOMERS}
    assert json.loads(as_json.stdout) == [by_id["acme"], by_id["globex"]]
    as_csv = top("--url", server.url, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["customer_id"] for r in rows] == ["acme", "globex"]
    assert rows[0]["balance"] == "-123.456789" and rows[0]["debit_limit"] == "500"
    assert rows[1]["asr"] == "" and rows[1]["channels"] == "0"
    assert list(rows[0])[:4] == ["customer_id", "name", "status", "currency"]


def test_names_are_shown_as_text_never_as_terminal_control(server: FixedServer) -> None:
    server.customers[0]["name"] = "\x1b[2JEvil [bold]corp[/bold]"
    done = top("--url", server.url, "--once", columns=160)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert "\\x1b[2JEvil [bold]corp[/bold]" in done.stdout


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("down", r"error: http://127\.0\.0\.1:\d+/customers does not answer \(.*refused\); is "
                 r"`cdrflow live worker` running there"),
        ("500", r"error: http://127\.0\.0\.1:\d+/customers answered HTTP 500 Internal Server "
                r"Error: broken"),
        ("html", r"error: http://127\.0\.0\.1:\d+/customers did not answer JSON"),
        ("object", r"error: http://127\.0\.0\.1:\d+/customers did not answer a JSON list"),
    ],
)  # fmt: skip
def test_a_worker_that_does_not_answer_is_one_line(
    server: FixedServer, breakage: str, message: str
) -> None:
    url = server.url
    if breakage == "down":
        url = f"http://127.0.0.1:{closed_port()}"
    elif breakage == "500":
        server.status = 500
    elif breakage == "html":
        server.body = "<html>proxy error</html>"
    else:
        server.body = '{"customers": []}'
    for args in (["--once"], ["--format", "json"], []):
        done = top("--url", url, *args)
        assert done.returncode == 1
        assert done.stdout == ""
        assert re.fullmatch(message + r".*\n", done.stderr), done.stderr


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on (just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_address_that_is_not_http_is_refused() -> None:
    done = top("--url", "127.0.0.1:6066", "--once")
    assert done.returncode == 1
    assert done.stderr == "error: --url '127.0.0.1:6066' is not an http:// or https:// address\n"


def test_a_worker_without_alerts_still_shows_its_customers(server: FixedServer) -> None:
    server.alerts = None
    done = top("--url", server.url, "--once")
    assert done.returncode == 0, done.stderr
    assert list(table_rows(done.stdout)) == ["acme", "globex"]
    assert "(this worker serves no alerts)" in done.stdout
    server.alerts = []
    assert "no alerts yet" in top("--url", server.url, "--once").stdout


def test_many_customers_are_cut_to_the_terminal_height(server: FixedServer) -> None:
    server.customers = [
        {**CUSTOMERS[1], "customer_id": f"c{i:03d}"} for i in range(200)
    ]  # fmt: skip
    master, slave = terminal(rows=30, columns=100)
    process = spawn(["--url", server.url, "--every", "0.3"], slave)
    try:
        screen = read_until(master, lambda text: "more (--format csv lists all)" in text)
        shown = re.findall(r"│ (c\d{3}) ", screen)
        assert 5 < len(set(shown)) < 30
        assert f"… and {200 - len(set(shown))} more" in screen
    finally:
        interrupt(process, master)


def terminal(rows: int, columns: int) -> tuple[int, int]:
    """A pseudo-terminal of that size: (the test's end, the program's end)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


def spawn(args: list[str], slave: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    process = subprocess.Popen(
        [CDRFLOW, "live", "top", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        preexec_fn=default_signals,
        start_new_session=True,
    )
    os.close(slave)
    return process


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def read_until(master: int, done: Any) -> str:
    """What the terminal shows, read until ``done(text)`` holds for a whole screen (rich
    redraws in place: a screen is whole once the next one has begun); that screen's text."""
    buffer = ""
    give_up = time.monotonic() + PATIENCE
    while time.monotonic() < give_up:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            buffer += chunk.decode(errors="replace")
            screens = ANSI.sub("", buffer).split("customers · ")[1:-1]
            for screen in reversed(screens):
                if done(screen):
                    return screen
    raise AssertionError(f"the terminal never showed it; it ends:\n{ANSI.sub('', buffer)[-3000:]}")


def interrupt(process: subprocess.Popen[bytes], master: int) -> int:
    """Ctrl-C (SIGINT) and the exit status; the terminal read to the end meanwhile."""
    process.send_signal(signal.SIGINT)
    give_up = time.monotonic() + PATIENCE
    while process.poll() is None and time.monotonic() < give_up:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            with contextlib.suppress(OSError):
                os.read(master, 65536)
    if process.poll() is None:
        process.kill()
        process.wait()
    os.close(master)
    return process.returncode


def test_the_view_follows_the_worker_until_ctrl_c(server: FixedServer) -> None:
    master, slave = terminal(rows=40, columns=120)
    process = spawn(["--url", server.url, "--every", "0.3"], slave)
    try:
        first = read_until(master, lambda text: "376.543211" in text)
        assert "-123.456789" in first and "Balance below 100" in first
        server.customers[1]["available"] = "12.000000"
        server.customers[1]["channels"] = 7
        read_until(master, lambda text: re.search(r"acme .*12\.000000 .* 7 ", text) is not None)
        # The worker gone: the last answer stays, under the reason; back, the view follows.
        server.status = 503
        # A screen is whole between two headers; each redraw is a whole screen, so wait for
        # the first that holds the reason, the last answer and its value together.
        read_until(
            master,
            lambda text: (
                "answered HTTP 503" in text
                and "showing the last answer" in text
                and "12.000000" in text
            ),
        )
        server.status = 200
        server.customers[1]["available"] = "11.000000"
        back = read_until(master, lambda text: "11.000000" in text)
        assert "HTTP 503" not in back
    finally:
        status = interrupt(process, master)
    assert status == 0


# -- against a real live worker -------------------------------------------------------------


@pytest.fixture
def live_worker(sample: Catalog, home: Path, kafka_broker: Broker, topic: str) -> Iterator[str]:
    """``cdrflow live worker`` on the sample home, reading ``<topic>.usage``; its URL once its
    views answer. Stopped by its PID whatever happens."""
    worker = LiveWorker(home, kafka_broker.bootstrap, topic, unique_name("top"))
    try:
        worker.ready()
        yield worker.url
    finally:
        worker.stop()


def usage_message(
    topic: str, offset: int, money: str, callids: list[str], attempts: int, answered: int
) -> bytes:
    """Acme's usage message of one stream batch (``pipelines.usage``'s format): its calls
    in one minute, answered ones a minute long with a PDD of 900 ms."""
    return json.dumps(
        {"batch": f"stream-{topic}-p00000-o{offset}-{offset}", "customer_id": "acme",
         "currency": "USD", "callids": callids, "draws": [],
         "source": {"kind": "stream", "topic": topic, "partition": 0, "first": offset,
                    "last": offset},
         "minutes": [{"minute": "2026-12-07T10:15:00Z", "attempts": attempts,
                      "answered": answered, "duration": str(60 * answered),
                      "pdd_sum": 900 * attempts, "pdd_count": attempts, "money": money,
                      "package_seconds": 0}]}
    ).encode()  # fmt: skip


@pytest.mark.integration
@pytest.mark.slow
def test_top_shows_a_real_worker_and_follows_its_usage(
    live_worker: str, sample: Catalog, home: Path, kafka_broker: Broker, topic: str
) -> None:
    url = live_worker
    # --format json is the worker's own GET /customers, and the table shows the same.
    customers = json.loads(top("--url", url, "--format", "json").stdout)
    assert [c["customer_id"] for c in customers] == sorted(
        c["customer_id"] for c in sample.list("customers")
    )
    done = top("--url", url, "--once")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    for c in customers:
        assert rows[c["customer_id"]][4:7] == [c["balance"], c["available"], str(c["channels"])]
    acme = next(c for c in customers if c["customer_id"] == "acme")
    # A switch's call rated and published: the view, already running, shows the balance move.
    master, slave = terminal(rows=40, columns=160)
    process = spawn(["--url", url, "--every", "0.5"], slave)
    try:
        read_until(master, lambda text: acme["balance"] in text)
        producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
        usage = f"{topic}.usage"
        producer.produce(usage, usage_message(topic, 0, "1.5", ["c1"], 1, 1), b"acme")
        assert producer.flush(PATIENCE) == 0
        moved = str(Decimal(acme["balance"]) - Decimal("1.5"))
        screen = read_until(master, lambda text: f" {moved} " in text)
        assert re.search(rf"acme .* {re.escape(moved)} .* 100\.00 .* 60\.00 .* 900\.00", screen)
        # Three calls that fail: ASR 25 %, under the sample's alert for acme (< 35).
        producer.produce(usage, usage_message(topic, 1, "0", ["c2", "c3", "c4"], 3, 0), b"acme")
        assert producer.flush(PATIENCE) == 0
        screen = read_until(master, lambda text: "ASR under 35%" in text)
        assert re.search(r"acme .* 25\.00 .* 60\.00 .* 900\.00", screen)
        fired = screen.split("latest alerts")[1]
        assert re.search(r"acme .*ASR under 35% .*asr .*25(\.00)? .*< 35", fired), fired
    finally:
        status = interrupt(process, master)
    assert status == 0
    assert Decimal(json.loads(top("--url", url, "--format", "json").stdout)[0]["balance"]) == (
        Decimal(acme["balance"]) - Decimal("1.5")
    )
