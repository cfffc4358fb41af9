"""A small, deterministic CDR workload against the sample catalog, for the runner's tests.

(The product's simulator, ``cdrflow simulate``, makes realistic traffic at any size; this one
is tiny and fixed so that tests can reason about it.)
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2026, 11, 2, tzinfo=UTC)
CALLERS = [
    {"source_ip": "203.0.113.10"},  # acme
    {"source_ip": "203.0.113.5"},  # acme, with tech prefix 9901# → premium card
    {"source_ip": "198.51.100.7"},  # globex
    {"sip_user": "initech-pbx1"},
    {"sip_user": "hooli-sbc"},
    {"customer_id": "umbrella"},
    {"source_ip": "192.0.2.200"},  # nobody
]
STEMS = ["44", "447", "4477", "4474", "1212", "1", "33", "336", "4915", "4916", "91", "2348", "999"]


def records(n: int, seed: int = 0, start: datetime = START) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        caller = rnd.choice(CALLERS)
        stem = rnd.choice(STEMS)
        number = stem + "".join(rnd.choice("0123456789") for _ in range(10 - len(stem)))
        if caller.get("source_ip") == "203.0.113.5":
            number = "9901#" + number
        elif caller.get("customer_id") == "umbrella":
            number = "77" + number
        answered = rnd.random() < 0.55
        cdr = {
            "callid": f"{seed}-{i:07d}",
            "dt": (start + timedelta(seconds=i * 7 + rnd.random()))
            .isoformat()
            .replace("+00:00", "Z"),
            "dest_number": number,
            "sip_code": 200 if answered else rnd.choice([486, 480, 487, 503]),
            "duration": round(rnd.lognormvariate(4, 1.2), 3) if answered else 0,
            "pdd_ms": rnd.randint(200, 6000),
            **caller,
        }
        if rnd.random() < 0.3:
            cdr["provider_card_id"] = rnd.choice(["cost-tier1", "cost-mobnet", "cost-eurotrans"])
        if rnd.random() < 0.03:
            cdr = {**cdr, "direction": "inbound", "dest_number": "+12125550100"}
        out.append(cdr)
    # Repeats of earlier calls, as switches resend them.
    for i in range(0, n, 97):
        out.insert(min(i + 13, len(out)), dict(out[i]))
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]], broken_every: int = 0) -> Path:
    with path.open("w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps(row) + "\n")
            if broken_every and i % broken_every == 0:
                f.write('{"callid": "broken", "dt": \n')
    return path
