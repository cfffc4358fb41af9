"""A real single-node Kafka broker (KRaft) on 127.0.0.1, for the tests and the walk-through
of docs/streaming.md.

Only package registries are reachable, so the broker is not the distribution's tarball but
its jars from Maven Central (``tools/kafka/pom.xml``), fetched once with Maven into
``tools/kafka/target/lib`` and started the way the distribution's scripts start it:
``StorageTool format --standalone`` once, then ``kafka.Kafka server.properties``. One JVM is
both controller and broker, with a small heap: the machines have 2 cores and the tests
share them with the broker.

``Broker.start`` returns once the broker answers a metadata request; ``stop`` ends that one
process by its PID (SIGTERM, then SIGKILL), ``kill`` crashes it, ``restart`` brings it back
on the same ports and log directory. From a shell::

    python -m pipelines.kafka_broker start --dir DIR   # prints the bootstrap address;
                                                       # creates SPEC §8's topics
    python -m pipelines.kafka_broker stop --dir DIR
    python -m pipelines.kafka_broker jars              # only fetch the jars
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipelines.kafka_config import LIBRDKAFKA_LOG
from schemas.errors import CdrflowError

TOOLS = Path(__file__).resolve().parent.parent / "tools" / "kafka"
MAVEN = (
    "mvn",
    "-q",
    "-B",
    "-Dstyle.color=never",
    "dependency:copy-dependencies",
    "-DoutputDirectory=target/lib",
)
# Written into target/lib once Maven has copied every jar: the sha256 of the pom it used, so
# that an interrupted copy or a changed pom fetches again instead of starting half a broker.
COMPLETE = ".complete"
HEAP = ("-Xmx512m", "-Xms256m")
HOST = "127.0.0.1"
PROPERTIES = "server.properties"
LOG = "broker.log"
START_MARK = "=== starting the broker"  # where each run begins in the log
PID_FILE = "broker.pid"
# SPEC §8's topics and §9.1's ``cdrs.usage``, made by ``start`` from the shell (the broker
# creates none by itself).
SPEC_TOPICS = ("cdrs", "cdrs.rated", "cdrs.rejected", "cdrs.usage", "alerts")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
log = logging.getLogger("cdrflow.kafka")


class Broker:
    """One broker JVM, started by this process, and the directory it keeps its state in."""

    def __init__(self, workdir: Path, port: int, controller_port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.controller_port = controller_port
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in: float | None = None  # seconds from launch to the first answer
        self._admin: AdminClient | None = None
        self._die_with_parent = False

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        port: int | None = None,
        *,
        die_with_parent: bool = False,
        timeout: float = START_TIMEOUT,
    ) -> Broker:
        """A broker serving on ``port`` (a free one if None) with its state under ``workdir``.

        A ``workdir`` that already holds a formatted broker is started again with its data and
        its controller port (the quorum recorded that address); otherwise it is formatted.
        ``die_with_parent`` has Linux end the broker when this thread exits, even by SIGKILL,
        so a killed test run leaves no JVM behind.
        """
        lib = ensure_jars()
        workdir = Path(workdir).resolve()
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        formatted = (workdir / "data" / "meta.properties").is_file()
        known = _ports_of(workdir / PROPERTIES) if formatted else None
        controller = known[1] if known else free_port()
        broker = cls(workdir, port or (known[0] if known else free_port()), controller)
        broker._write_properties()
        if not formatted:
            broker._format(lib)
        broker._launch(lib, die_with_parent, timeout)
        return broker

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same ports, log directory and data."""
        die_with_parent = self._die_with_parent
        self.stop()
        self._launch(ensure_jars(), die_with_parent, timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End the broker: SIGTERM to its PID (it closes its logs cleanly), SIGKILL if it is
        still there after ``timeout`` seconds. Does nothing when it is not running."""
        self._close_admin()
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("broker %s ignored SIGTERM for %.0f s; killing it", process.pid, timeout)
            self.kill()

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would end it (nothing flushed, nothing closed)."""
        self._close_admin()
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what it serves --------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / LOG

    def admin(self) -> AdminClient:
        """An admin client of this broker, made on first use and dropped when it stops."""
        if self._admin is None:
            # librdkafka's log lines go to cdrflow's logging, once each (the stubs type
            # values as scalars).
            config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": LIBRDKAFKA_LOG}
            self._admin = AdminClient(config)
        return self._admin

    def create_topic(self, name: str, partitions: int = 4, timeout: float = 30.0) -> None:
        """Create ``name`` and wait until every partition has a leader, so that the first
        produce does not race the controller (auto-creation is off, as in production)."""
        futures = self.admin().create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=timeout,
        )
        try:
            futures[name].result(timeout)
        except KafkaException as exc:
            raise CdrflowError(f"cannot create topic {name} on {self.bootstrap}: {exc}") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = self.admin().list_topics(name, timeout=timeout).topics.get(name)
            found = topic.partitions if topic is not None and topic.error is None else {}
            if len(found) == partitions and all(p.leader >= 0 for p in found.values()):
                return
            time.sleep(0.05)
        raise CdrflowError(f"topic {name} on {self.bootstrap} has no leaders after {timeout} s")

    def topics(self) -> set[str]:
        """The topics the broker holds, internal ones left out."""
        names = self.admin().list_topics(timeout=30).topics
        return {name for name in names if not name.startswith("__")}

    # -- inside ----------------------------------------------------------------------------

    def _write_properties(self) -> None:
        """server.properties: one KRaft node, replication 1 everywhere, no auto-created topics
        (a typo in a topic name must fail, not create a topic), and no rebalance delay (a
        consumer group in a test starts at once)."""
        listeners = f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "4",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # 50 partitions each by default: minutes of a test's time on 2 cores to create.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash the controller waits out the dead incarnation's session before the
            # broker may serve again: 9 s by default, 3 s here (a crash test restarts at once).
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
        }
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (self.workdir / PROPERTIES).write_text(text, encoding="utf-8")

    def _format(self, lib: Path) -> None:
        """Format the log directory as a single-node dynamic quorum (Kafka 4's way)."""
        command = [
            *_java(lib),
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(self.workdir / PROPERTIES),
            "--standalone",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise CdrflowError(
                f"formatting the broker's storage in {self.workdir / 'data'} failed "
                f"(exit {done.returncode}):\n{_tail(done.stdout + done.stderr)}"
            )

    def _launch(self, lib: Path, die_with_parent: bool, timeout: float) -> None:
        """Start the JVM in its own session (a Ctrl-C meant for the caller does not reach it;
        the caller stops it by PID) and wait until it answers."""
        self._die_with_parent = die_with_parent
        command = [*_java(lib), "kafka.Kafka", str(self.workdir / PROPERTIES)]
        if die_with_parent and shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "SIGKILL", "--", *command]
        began = time.monotonic()
        with self.log_path.open("ab") as out:
            out.write(f"\n{START_MARK} on {self.bootstrap} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            self._wait_until_ready(began + timeout)
        except BaseException:
            self.kill()
            raise
        self.started_in = time.monotonic() - began
        log.info("broker %s on %s ready in %.1f s", self.pid, self.bootstrap, self.started_in)

    def _wait_until_ready(self, deadline: float) -> None:
        """Poll until the broker's port accepts and a metadata request is answered; fail
        with the log's tail when the JVM exits or the deadline passes."""
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CdrflowError(
                    f"the Kafka broker exited with status {self.process.returncode} while "
                    f"starting; the end of {self.log_path}:\n{self._log_tail()}"
                )
            # The port first: librdkafka would log every refused connection.
            if _accepts(HOST, self.port):
                try:
                    self.admin().list_topics(timeout=2)
                    return
                except KafkaException:
                    pass
            time.sleep(0.1)
        raise CdrflowError(
            f"the Kafka broker did not answer on {self.bootstrap} in time; the end of "
            f"{self.log_path}:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return _why(text.rsplit(START_MARK, 1)[-1])

    def _close_admin(self) -> None:
        # librdkafka clients have no close(); dropping the last reference ends its threads.
        self._admin = None


def ensure_jars(tools: Path = TOOLS) -> Path:
    """The directory of the broker's jars, fetched with Maven first when missing or made
    from another pom. Raises CdrflowError naming the command when Maven fails."""
    pom = tools / "pom.xml"
    if not pom.is_file():
        raise CdrflowError(f"{pom} is missing: the Kafka broker's jars are listed there")
    lib = tools / "target" / "lib"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = lib / COMPLETE
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
        return lib
    command = " ".join(MAVEN)
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise CdrflowError(
            f"the Kafka broker needs Java 17+ and Maven to fetch its jars ({command} in {tools})"
        )
    shutil.rmtree(lib, ignore_errors=True)
    log.info("fetching the Kafka broker's jars: %s (in %s)", command, tools)
    done = subprocess.run(MAVEN, cwd=tools, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not any(lib.glob("*.jar")):
        raise CdrflowError(
            f"fetching the Kafka broker's jars failed: `{command}` in {tools} exited with "
            f"{done.returncode}:\n{_tail(done.stdout + done.stderr)}"
        )
    marker.write_text(digest + "\n", encoding="utf-8")
    return lib


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _java(lib: Path) -> list[str]:
    java = shutil.which("java") or "java"
    return [java, *HEAP, "-XX:+ExitOnOutOfMemoryError", "-cp", f"{lib}/*"]


def _cluster_id() -> str:
    """A cluster id as ``kafka-storage random-uuid`` prints it (URL-safe base64 of 16 random
    bytes), made here to save a JVM start. Kafka refuses ids that start with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _ports_of(properties: Path) -> tuple[int, int] | None:
    """(broker, controller) ports of an existing server.properties, if it has both."""
    try:
        lines = properties.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("listeners="):
            ports = dict(
                (name, int(address.rsplit(":", 1)[1]))
                for name, _, address in (
                    item.partition("://") for item in line.removeprefix("listeners=").split(",")
                )
            )
            if "PLAINTEXT" in ports and "CONTROLLER" in ports:
                return ports["PLAINTEXT"], ports["CONTROLLER"]
    return None


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _why(log_text: str, errors: int = 12, last: int = 10) -> str:
    """The lines of a broker's log that say why it failed: its errors and their causes (the
    config dump and the shutdown that follow an error are thousands of lines), then its end."""
    lines = log_text.rstrip().splitlines()
    causes = list(
        dict.fromkeys(line for line in lines if " ERROR " in line or line.startswith("Caused by:"))
    )[:errors]
    return "\n".join([*causes, "...", *lines[-last:]] if causes else lines[-last:])


# -- the command line --------------------------------------------------------------------------


def stop_by_pid_file(workdir: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the broker that ``start --dir`` left running in ``workdir``; False if none was.

    The PID is trusted only while its command line still names this directory's
    server.properties, so that a PID the system has since given to another process is
    never signalled.
    """
    pid_file = Path(workdir).resolve() / PID_FILE
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return False
    if not _is_our_broker(pid, pid_file.parent / PROPERTIES):
        pid_file.unlink(missing_ok=True)
        return False
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        _signal(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _is_our_broker(pid: int, properties: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in argv and str(properties).encode() in argv


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def main(argv: Sequence[str] | None = None) -> int:
    """``start``/``stop`` a broker that outlives the command (docs/streaming.md), or ``jars``."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.kafka_broker")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start a broker; print its bootstrap address")
    start.add_argument("--dir", type=Path, required=True, help="its data, log and pid file")
    start.add_argument("--port", type=int, default=None, help="default: a free port")
    start.add_argument(
        "--topics",
        nargs="*",
        default=list(SPEC_TOPICS),
        help=f"topics to create if missing, 4 partitions each (default: {' '.join(SPEC_TOPICS)})",
    )
    stop = commands.add_parser("stop", help="stop the broker started with --dir")
    stop.add_argument("--dir", type=Path, required=True)
    commands.add_parser("jars", help="fetch the broker's jars with Maven if missing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "jars":
            print(ensure_jars())
        elif args.command == "start":
            stop_by_pid_file(args.dir)  # a second start replaces the first
            broker = Broker.start(args.dir, args.port)
            (broker.workdir / PID_FILE).write_text(f"{broker.pid}\n", encoding="utf-8")
            for topic in sorted(set(args.topics) - broker.topics()):
                broker.create_topic(topic)
            # The JVM outlives this command by design: forget it without waiting for it.
            broker.process = None
            print(broker.bootstrap)
        elif not stop_by_pid_file(args.dir):
            print(f"no broker of ours is running in {args.dir}", file=sys.stderr)
    except CdrflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
