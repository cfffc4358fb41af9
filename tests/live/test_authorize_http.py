"""``POST /authorize`` on a real ``cdrflow live worker`` beside a real broker (SPEC §9, §9.1):
each deny reason, channel limits under concurrent requests, holds freed by the timeout (and
kept across a restart), and bad input answered in JSON, never a 500, never a stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.kafka_broker import Broker
from tests.kafka.reader import consume, unique_name
from tests.kafka.test_stream import produce, settled
from tests.live.process import CDRFLOW, PATIENCE, LiveWorker, _default_signals, wait_for

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
UK = "447700900123"

CATALOG = {
    "customers.csv": [
        "customer_id,name,status,currency,tax_percent,debit_limit,channels,cps",
        "acme,Acme,active,USD,0,100,3,",
        "idle,Idle,inactive,USD,0,100,,",
        "poor,Poor,active,USD,0,0,,",
        "tiny,Tiny,active,USD,0,0.05,1,",
        "many,Many,active,USD,20,100,5,",
        "burst,Burst,active,USD,0,100,,2",
        "open,Open,active,USD,0,1000,,",
    ],
    "rate_cards.csv": [
        "card_id,name,currency,direction,precision,rounding,duration_rounding",
        "k,K,USD,termination,4,half_up,up",
    ],
    "rates/k.csv": [
        "prefix,name,rate,connect_fee,mcd,pulse,grace",
        "44,UK,0.60,0,0,1,0",
    ],
    "routes.csv": [
        "customer_id,card_id,tech_prefix,strip_digits,dial_string,priority",
        *(f"{c},k,,0,44|1,0" for c in ("acme", "idle", "poor", "tiny", "many", "burst", "open")),
    ],
    "auth.csv": [
        "customer_id,kind,value,tech_prefix,channels,cps,password",
        "acme,ip,10.1.1.1,,1,,",
    ],
    "cli_rules.csv": [
        "customer_id,pattern,action",
        "acme,^999,deny",
    ],
}


def catalog_home(root: Path) -> Path:
    source = root / "catalog"
    for name, lines in CATALOG.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    home = root / "home"
    with Catalog(home) as catalog:
        import_directory(catalog, source)
    return home


def post(url: str, body: bytes, timeout: float = 60.0) -> tuple[int, Any]:
    """(status, JSON answer) of a POST of raw bytes; every answer is JSON."""
    request = urllib.request.Request(url + "/authorize", data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            assert response.headers.get_content_type() == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers.get_content_type() == "application/json"
        return exc.code, json.loads(exc.read())


def ask(url: str, **call: Any) -> dict[str, Any]:
    status, answer = post(url, json.dumps({"dest_number": UK, **call}).encode())
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


@pytest.fixture
def live(tmp_path: Path, kafka_broker: Broker, topic: str) -> Any:
    """Start the test's worker (one app: a restart recovers its tables) at a given now."""
    home = catalog_home(tmp_path)
    app_id = unique_name("auth")
    started: list[LiveWorker] = []

    def start(now: datetime = NOW) -> LiveWorker:
        worker = LiveWorker(
            home, kafka_broker.bootstrap, topic, app_id, env={"CDRFLOW_NOW": now.isoformat()}
        )
        worker.home = home  # type: ignore[attr-defined]
        worker.app_id = app_id  # type: ignore[attr-defined]
        started.append(worker)
        worker.ready()
        return worker

    yield start
    for worker in started:
        worker.kill()


def test_each_deny_reason_and_an_allowed_call(live: Any) -> None:
    url = live().url
    allowed = ask(url, callid="ok", customer_id="acme", source_cli="4420")
    assert allowed == {
        "allow": True,
        "reason": None,
        "customer_id": "acme",
        "card_id": "k",
        "dest_code": "44",
        "rate": "0.6",
        "max_seconds": 10_000,  # 100 available at 0.01 a second
    }
    cases = [
        ({"customer_id": "nobody"}, "unknown_customer"),
        ({"source_ip": "192.0.2.1"}, "unknown_customer"),
        ({"customer_id": "idle"}, "not_active"),
        ({"customer_id": "acme", "source_cli": "99912"}, "cli_denied"),
        ({"customer_id": "acme", "dest_number": "33123456"}, "no_route"),
        ({"customer_id": "acme", "dest_number": "15551234567"}, "no_rate"),
        ({"customer_id": "poor"}, "credit"),
    ]
    for i, (call, reason) in enumerate(cases):
        answer = ask(url, callid=f"deny-{i}", **call)
        assert (answer["allow"], answer["reason"], answer["max_seconds"]) == (False, reason, 0)
    # Channels of the auth entry (1), then of the customer (3): ok holds one of acme's.
    by_ip = ask(url, callid="ip-1", source_ip="10.1.1.1")
    assert (by_ip["allow"], by_ip["customer_id"]) == (True, "acme")
    assert ask(url, callid="ip-2", source_ip="10.1.1.1")["reason"] == "channels"
    assert ask(url, callid="id-3", customer_id="acme")["allow"]
    assert ask(url, callid="id-4", customer_id="acme")["reason"] == "channels"
    # A repeated callid keeps its hold and gets the same answer.
    assert ask(url, callid="ok", customer_id="acme", source_cli="4420") == allowed
    # CPS: 2 allowed in a second; the third within that second is refused.
    started = time.monotonic()
    answers = [ask(url, callid=f"b{i}", customer_id="burst")["reason"] for i in range(3)]
    if time.monotonic() - started < 1.0:
        assert answers == [None, None, "cps"]
    else:  # the machine was too slow to make three requests within one second
        assert answers[:2] == [None, None]


def test_channels_hold_under_fifty_concurrent_requests(live: Any) -> None:
    url = live().url
    barrier = threading.Barrier(50)

    def one(i: int) -> dict[str, Any]:
        barrier.wait()
        return ask(url, callid=f"many-{i}", customer_id="many")

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    assert sum(a["allow"] for a in answers) == 5
    assert sorted({a["reason"] for a in answers if not a["allow"]}) == ["channels"]
    # max_seconds with 20 % tax: 0.012 a second within 100 → 8333 s.
    assert {a["max_seconds"] for a in answers if a["allow"]} == {8333}


def test_a_hold_outlives_a_restart_and_ends_after_max_seconds_and_a_minute(live: Any) -> None:
    first = live()
    # 0.05 at 0.01 a second: 5 s; the hold lasts until 65 s after NOW.
    answer = ask(first.url, callid="t1", customer_id="tiny")
    assert (answer["allow"], answer["max_seconds"]) == (True, 5)
    assert ask(first.url, callid="t2", customer_id="tiny")["reason"] == "channels"
    first.stop()
    second = live(NOW + timedelta(seconds=64))
    assert ask(second.url, callid="t2", customer_id="tiny")["reason"] == "channels"
    assert ask(second.url, callid="t1", customer_id="tiny") == answer
    second.stop()
    third = live(NOW + timedelta(seconds=65))
    assert ask(third.url, callid="t2", customer_id="tiny")["allow"]


def test_holds_reach_their_changelog_at_once_and_outlive_a_sigkill(
    live: Any, kafka_broker: Broker
) -> None:
    """Concurrent allowed calls write their holds to the changelog in batches: every hold is
    there while the worker runs (no flush at a clean stop needed), so a worker killed with
    SIGKILL and restarted holds the same channels and answers a repeat the same."""
    first = live()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: ask(first.url, callid=f"o{i}", customer_id="open"),
                                range(60)))  # fmt: skip
    assert all(a["allow"] for a in answers)
    records = consume(kafka_broker.bootstrap, f"{first.app_id}-holds-changelog", 60)
    assert sorted(json.loads(r.key or b"") for r in records) == sorted(f"o{i}" for i in range(60))
    assert {json.loads(json.loads(r.value)["answer"])["max_seconds"] for r in records} == {
        answers[0]["max_seconds"]
    }
    first.kill()
    second = live()
    status, card = second.get("/customers/open")
    assert (status, card["channels"]) == (200, 60)
    assert ask(second.url, callid="o7", customer_id="open") == answers[7]
    assert second.get("/customers/open")[1]["channels"] == 60


def rate_on_the_stream(home: Path, bootstrap: str, topic: str, cdrs: list[dict[str, Any]]) -> None:
    """Produce ``cdrs`` and let a real stream worker rate them into the lake and publish
    them (rated, rejected and usage), then stop it."""
    produce(bootstrap, topic, [json.dumps(c).encode() for c in cdrs])
    rater = subprocess.Popen(
        [CDRFLOW, "--home", str(home), "stream", "--bootstrap", bootstrap, "--topic", topic,
         "--group", unique_name("raters"), "--batch", "400", "--wait", "0.3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_default_signals,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: settled(home, len(cdrs)), f"{len(cdrs)} CDRs rated and published")
    finally:
        os.killpg(rater.pid, signal.SIGTERM)
        rater.wait(PATIENCE)


def test_a_channel_is_freed_when_its_cdr_arrives_rated_or_rejected(
    live: Any, kafka_broker: Broker, topic: str
) -> None:
    worker = live()
    url = worker.url
    assert ask(url, callid="rated-1", customer_id="tiny")["allow"]
    assert ask(url, callid="rated-2", customer_id="tiny")["reason"] == "channels"
    assert ask(url, callid="rejected-1", source_ip="10.1.1.1")["allow"]
    assert ask(url, callid="rejected-2", source_ip="10.1.1.1")["reason"] == "channels"
    cdr = {"dt": NOW.isoformat(), "sip_code": 200, "duration": "3"}
    rate_on_the_stream(
        worker.home,
        kafka_broker.bootstrap,
        topic,
        [
            {**cdr, "callid": "rated-1", "dest_number": UK, "customer_id": "tiny"},
            # No route for 33: rejected, and its channel is freed all the same.
            {**cdr, "callid": "rejected-1", "dest_number": "33123456", "source_ip": "10.1.1.1"},
        ],
    )
    wait_for(lambda: ask(url, callid="rated-2", customer_id="tiny")["allow"], "rated-1's CDR")
    wait_for(
        lambda: ask(url, callid="rejected-2", source_ip="10.1.1.1")["allow"], "rejected-1's CDR"
    )
    assert ask(url, callid="rated-3", customer_id="tiny")["reason"] == "channels"


def test_bad_requests_get_json_errors_and_the_worker_keeps_running(live: Any) -> None:
    worker = live()
    url = worker.url
    cases = [
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"dest_number": UK, "customer_id": "acme"}).encode(), 400, "callid"),
        (json.dumps({"callid": "x", "customer_id": "acme"}).encode(), 400, "dest_number"),
        (json.dumps({"callid": "x", "dest_number": UK}).encode(), 400, "customer_id"),
        (json.dumps({"callid": 5, "dest_number": UK, "customer_id": "a"}).encode(), 400, "callid"),
        (b" " * (64 * 1024 + 1), 413, "larger than"),
        (json.dumps({"callid": "x" * 100_000}).encode(), 413, "larger than"),
    ]
    for body, status, words in cases:
        got, answer = post(url, body)
        assert (got, words in answer["error"]) == (status, True), (body[:40], answer)
    assert ask(url, callid="after", customer_id="nobody")["reason"] == "unknown_customer"
    assert ask(url, callid="after", customer_id="acme")["allow"]
    assert worker.process.poll() is None
    assert "Traceback" not in worker.text()
