"""The streaming benchmark: switch simulator → real Kafka broker → ``cdrflow stream`` workers
→ the lake, on this machine, against ``cdrflow rate`` of the same CDRs.

Run it from the repository root::

    .venv/bin/python -m bench.stream [--cdrs 2000000] [--partitions 4] [--latency-rate 50000]
                                     [--latency-seconds 20]

In one temporary directory (removed at the end) it starts a broker (``pipelines.kafka_broker``)
and, for one worker and then for two, a fresh home with the sample catalog: the workers start,
``cdrflow simulate --kafka`` sends ``--cdrs`` CDRs as fast as it can, and the clock runs from
the first message produced (its Kafka timestamp) to the last batch committed to the lake. It
notes the CPU seconds the broker, the simulator and the workers used. Then the latency run:
one worker, the simulator paced at ``--latency-rate`` for ``--latency-seconds``, and for
every message the time from its Kafka timestamp (set when produced) to the commit of the
batch that landed it, with the median of each fifth of the run (a worker that falls behind
shows it growing). The baselines: ``cdrflow rate`` of the same CDRs from a JSON Lines file,
and Kafka alone (``bench.kafka_floor``): the lines of that file produced and consumed by
clients that do nothing else, with the broker on the same cores, the most a worker could reach.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from bench.rating import machine
from pipelines.catalog import Catalog
from pipelines.catalog.csvdir import import_directory
from pipelines.cli.demo import sample_catalog
from pipelines.kafka_broker import Broker
from pipelines.lakefiles import committed_runs, lake_root
from pipelines.stream import published_mark

CDRFLOW = str(Path(sys.executable).parent / "cdrflow")
ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 20_000  # messages through a new broker before any measured run
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its waited-for children so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def new_home(root: Path) -> Path:
    with Catalog(root) as catalog:
        import_directory(catalog, sample_catalog())
    return root


def landed(home: Path, topic: str) -> int:
    return sum(
        r["stream"]["last"] - r["stream"]["first"] + 1
        for r in committed_runs(home)
        if r.get("stream", {}).get("topic") == topic
    )


def all_published(home: Path, topic: str) -> bool:
    """Every committed batch of ``topic`` is marked published (``pipelines.stream``)."""
    runs = [r["run"] for r in committed_runs(home) if r.get("stream", {}).get("topic") == topic]
    return all(published_mark(home, run).exists() for run in runs)


def simulate_command(home: Path, bootstrap: str, topic: str, count: int, rate: float) -> list[str]:
    return [CDRFLOW, "--home", str(home), "simulate", "--count", str(count), "--kafka", bootstrap,
            "--topic", topic, "--rate", str(rate), "--seed", "1", "--days", "1"]  # fmt: skip


def stream_command(home: Path, bootstrap: str, topic: str, group: str) -> list[str]:
    return [CDRFLOW, "--home", str(home), "stream", "--bootstrap", bootstrap, "--topic", topic,
            "--group", group, "--batch", "100000", "--wait", "0.5"]  # fmt: skip


def run_stream(
    work: Path,
    broker: Broker,
    topic: str,
    count: int,
    workers: int,
    rate: float = 0.0,
    home: Path | None = None,
    published: bool = False,
) -> tuple[dict[str, float], Path]:
    """Workers up, the simulator sending, until the lake holds every message (and, when
    ``published``, every batch is marked published to the output topics: a worker stopped
    sooner leaves its last batches to the next one); in ``home`` (one with the sample
    catalog) or a new one."""
    home = home or new_home(work / f"home-{topic}")
    logs = [open(work / f"{topic}-worker{i}.log", "wb") for i in range(workers)]  # noqa: SIM115
    procs = [
        subprocess.Popen(stream_command(home, broker.bootstrap, topic, f"g-{topic}"), stdout=log,
                         stderr=subprocess.STDOUT)
        for log in logs
    ]  # fmt: skip
    try:
        time.sleep(3)  # the group forms before the traffic starts
        broker_cpu = cpu_seconds(broker.pid or 0)
        worker_cpu = [cpu_seconds(p.pid) for p in procs]
        simulator = subprocess.Popen(
            simulate_command(home, broker.bootstrap, topic, count, rate),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        sim_cpu = 0.0
        while landed(home, topic) < count or (published and not all_published(home, topic)):
            if simulator.poll() is None:
                sim_cpu = cpu_seconds(simulator.pid)
            elif simulator.returncode != 0:
                raise RuntimeError(simulator.stderr.read().decode() if simulator.stderr else "")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker stopped; see {work}/{topic}-worker*.log")
            time.sleep(0.05)
        # From the first message produced (its Kafka timestamp), not from the simulator's
        # launch: its own start (Python, the catalog) is not the pipeline's time.
        seconds = time.time() - first_produced(broker, topic)
        simulator.communicate(timeout=60)  # its stderr pipe read and closed too
        used = [cpu_seconds(p.pid) - c for p, c in zip(procs, worker_cpu, strict=True)]
        return {
            "seconds": seconds,
            "rate": count / seconds,
            "broker_cpu": cpu_seconds(broker.pid or 0) - broker_cpu,
            "worker_cpu": sum(used),
            "simulator_cpu": sim_cpu,
        }, home
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        for log in logs:
            log.close()


def run_floor(broker: Broker, topic: str, path: Path, count: int) -> dict[str, float]:
    """Kafka alone (``bench.kafka_floor``): the consumer up, then the producer sending the
    first ``count`` lines of ``path``, until the consumer has committed them all."""

    def floor(*args: str) -> list[str]:
        return [sys.executable, "-m", "bench.kafka_floor", *args, broker.bootstrap, topic]

    consumer = subprocess.Popen(
        [*floor("consume"), str(count)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3)  # the group forms before the traffic starts
        broker_cpu = cpu_seconds(broker.pid or 0)
        produced = subprocess.run(
            [*floor("produce"), str(path), str(count)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        out, _ = consumer.communicate(timeout=600)
        if consumer.returncode != 0:
            raise RuntimeError(f"the floor's consumer failed with status {consumer.returncode}")
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    consumed = json.loads(out)
    seconds = consumed["done"] - first_produced(broker, topic)
    return {
        "seconds": seconds,
        "rate": consumed["messages"] / seconds,
        "broker_cpu": cpu_seconds(broker.pid or 0) - broker_cpu,
        "worker_cpu": consumed["cpu"],
        "simulator_cpu": json.loads(produced.stdout)["cpu"],
    }


def first_produced(broker: Broker, topic: str) -> float:
    """The Kafka timestamp (seconds) of the topic's first message: the least of its
    partitions' first."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"first-{topic}",
                         "enable.auto.commit": False})  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        stamps = []
        for p in partitions:
            consumer.assign([TopicPartition(topic, p, 0)])
            for m in consumer.consume(1, 10.0):
                if m.error() is None:
                    stamps.append(m.timestamp()[1] / 1000)
        return min(stamps)
    finally:
        consumer.close()


def latencies(broker: Broker, topic: str, home: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each message's Kafka timestamp (set when produced) and the seconds from it to the
    commit of the batch holding it, in the order produced."""
    commits: dict[int, list[tuple[int, int, float]]] = {}
    for path in sorted((lake_root(home) / "_runs").glob("*.json")):
        run = json.loads(path.read_text())
        s = run.get("stream")
        if s and s["topic"] == topic:
            span = (s["first"], s["last"], path.stat().st_mtime)
            commits.setdefault(s["partition"], []).append(span)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"lat-{topic}",
                         "enable.auto.commit": False})  # fmt: skip
    produced, waited = [], []
    try:
        for p, spans in commits.items():
            consumer.assign([TopicPartition(topic, p, 0)])
            end = max(last for _, last, _ in spans)
            stamps: dict[int, float] = {}
            while len(stamps) <= end:
                for m in consumer.consume(10_000, 2.0):
                    if m.error() is None:
                        stamps[m.offset()] = m.timestamp()[1] / 1000
            for first, last, committed in spans:
                produced += [stamps[o] for o in range(first, last + 1)]
                waited += [committed - stamps[o] for o in range(first, last + 1)]
    finally:
        consumer.close()
    order = np.argsort(produced, kind="stable")
    return np.array(produced)[order], np.array(waited)[order]


def latency_report(produced: np.ndarray, waited: np.ndarray, offered: float) -> str:
    """Percentiles of produce → commit, the rate the messages were produced at, and the
    median in each fifth of the run: a worker that keeps up has no growing median."""
    span = produced[-1] - produced[0]
    fifths = [np.percentile(waited[part], 50) for part in np.array_split(np.arange(waited.size), 5)]
    return (
        f"latency with the simulator paced at {offered:,.0f} CDRs/s ({waited.size:,} CDRs "
        f"produced over {span:.1f} s: {waited.size / span:,.0f} CDRs/s; 1 worker): produce → "
        f"committed in the lake p50 {np.percentile(waited, 50):.2f} s, p99 "
        f"{np.percentile(waited, 99):.2f} s, max {waited.max():.2f} s; median by fifth of the "
        f"run {', '.join(f'{m:.2f}' for m in fifths)} s"
    )


def throughput_table(
    args: argparse.Namespace, batch_rate: float, runs: dict[str, dict[str, float]]
) -> Table:
    """The throughput runs beside their two baselines: ``cdrflow rate`` of the file, and
    Kafka alone (the first of ``runs``)."""
    table = Table(title=f"{args.cdrs:,} CDRs through Kafka ({args.partitions} partitions)")
    columns = ("run", "seconds", "CDRs/s", "vs cdrflow rate", "vs Kafka alone", "broker CPU s")
    for column in (*columns, "producer CPU s", "consumers CPU s"):
        table.add_column(column, justify="right")
    seconds = f"{args.cdrs / batch_rate:.1f}"
    table.add_row("cdrflow rate (file)", seconds, f"{batch_rate:,.0f}", "1.00", "", "", "", "")
    floor = next(iter(runs.values()))["rate"]
    for name, r in runs.items():
        table.add_row(
            name,
            f"{r['seconds']:.1f}",
            f"{r['rate']:,.0f}",
            f"{r['rate'] / batch_rate:.2f}",
            f"{r['rate'] / floor:.2f}",
            f"{r['broker_cpu']:.1f}",
            f"{r['simulator_cpu']:.1f}",
            f"{r['worker_cpu']:.1f}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cdrs", type=int, default=2_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--latency-rate", type=float, default=50_000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    args = parser.parse_args(argv)
    console = Console()
    info = machine()
    console.print(
        f"[bold]cdrflow stream benchmark[/bold] on {info['cpu']}, nproc {info['nproc']}, "
        f"load average {info['load']}"
    )
    with tempfile.TemporaryDirectory(prefix="cdrflow-bench-stream-") as tmp:
        work = Path(tmp)
        # The baseline: the same CDRs (same seed) from a file, by cdrflow rate.
        base = new_home(work / "home-batch")
        path = work / "cdrs.jsonl"
        same = ["--count", str(args.cdrs), "--out", str(path), "--seed", "1", "--days", "1"]
        subprocess.run([CDRFLOW, "--home", str(base), "simulate", *same], check=True)
        started = time.monotonic()
        rate = [CDRFLOW, "--home", str(base), "rate", str(path), "--format", "json"]
        subprocess.run(rate, check=True, capture_output=True)
        batch_rate = args.cdrs / (time.monotonic() - started)
        shutil.rmtree(base)
        with Broker.start(work / "broker", die_with_parent=True) as broker:
            # A new broker makes its internal topics (group offsets, producer ids) for the
            # first group and the first idempotent producer: not in any measured run.
            broker.create_topic("warm-up", args.partitions)
            run_floor(broker, "warm-up", path, min(args.cdrs, WARM_UP))
            # Kafka alone, on the same lines: what no worker can pass on this machine.
            broker.create_topic("cdrs-floor", args.partitions)
            runs = {"Kafka alone (no rating)": run_floor(broker, "cdrs-floor", path, args.cdrs)}
            path.unlink()
            for workers in (1, 2):
                topic = f"cdrs-w{workers}"
                broker.create_topic(topic, args.partitions)
                runs[f"{workers} worker{'s' if workers > 1 else ''}"], home = run_stream(
                    work, broker, topic, args.cdrs, workers
                )
                shutil.rmtree(home)
            console.print(throughput_table(args, batch_rate, runs))
            topic = "cdrs-latency"
            broker.create_topic(topic, args.partitions)
            count = int(args.latency_rate * args.latency_seconds)
            _, home = run_stream(work, broker, topic, count, 1, rate=args.latency_rate)
            produced, waited = latencies(broker, topic, home)
            console.print(latency_report(produced, waited, args.latency_rate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
