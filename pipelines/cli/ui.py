"""``cdrflow ui``: the Dagster webserver and daemon of this home on 127.0.0.1 (SPEC §7.5).

Both run with ``DAGSTER_HOME=<home>/dagster`` (its SQLite storage keeps runs, schedules'
and sensors' state across restarts) and ``CDRFLOW_HOME=<home>`` (the home the assets and
jobs of ``dags.definitions`` work on), each in a process group of its own, their output in
``<home>/dagster/ui-logs/``. The URL is printed once the webserver answers. Ctrl-C or SIGTERM
stops both groups (SIGTERM, then SIGKILL after ``GRACE`` seconds), and any process of the
code they started that carries this DAGSTER_HOME, and waits for all of them; a process that
stops on its own stops the other.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from pipelines.cli.context import home_of, operator_errors
from pipelines.cli.output import say
from pipelines.home import ENV_HOME, make_home
from schemas.errors import CdrflowError

HOST = "127.0.0.1"
MODULE = "dags.definitions"
# Seconds each process group has to stop after SIGTERM before it is killed.
GRACE = 20.0
# Seconds the webserver may take to answer at first (it loads the code in a subprocess).
START_TIMEOUT = 600.0
# Sensors and schedules' ticks are kept by the daemon; telemetry stays off.
DAGSTER_YAML = "telemetry:\n  enabled: false\n"
STOPPING = (signal.SIGINT, signal.SIGTERM)


def dagster_home(home: Path) -> Path:
    """``<home>/dagster``: the DAGSTER_HOME of ``cdrflow ui`` (SPEC §2)."""
    return home / "dagster"


def _program(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise CdrflowError(f"{name} is not installed: pip install dagster-webserver")
    return found


def _reset_signals() -> None:
    # A process started in the background inherits SIGINT ignored; these get the defaults.
    for sig in STOPPING:
        signal.signal(sig, signal.SIG_DFL)


def start(home: Path, port: int) -> tuple[Path, list[tuple[str, subprocess.Popen[bytes]]]]:
    """Start the webserver and the daemon of ``home`` (the home made if missing)."""
    make_home(home)
    root = dagster_home(home)
    logs = root / "ui-logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = root / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    env = {**os.environ, "DAGSTER_HOME": str(root), ENV_HOME: str(home)}
    commands = {
        "webserver": [_program("dagster-webserver"), "-h", HOST, "-p", str(port), "-m", MODULE],
        "daemon": [_program("dagster-daemon"), "run", "-m", MODULE],
    }
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("ab") as log:
                started.append(
                    (
                        name,
                        subprocess.Popen(
                            command,
                            env=env,
                            cwd=root,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            process_group=0,
                            preexec_fn=_reset_signals,
                        ),
                    )
                )
    except BaseException:
        stop(root, started)
        raise
    return root, started


def stop(root: Path, processes: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """SIGTERM to each process group, SIGKILL to what is left after ``GRACE`` seconds,
    then the same to any process that still carries ``root`` as its DAGSTER_HOME."""
    groups = [p.pid for _, p in processes]
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    for _, process in processes:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    _signal_groups(groups, signal.SIGKILL)
    for _, process in processes:
        process.wait()
    left = stragglers(root)
    for pid in left:
        _kill(pid, signal.SIGTERM)
    _wait_gone(left, GRACE)
    for pid in stragglers(root):
        _kill(pid, signal.SIGKILL)
    _wait_gone(stragglers(root), GRACE)


def _signal_groups(groups: list[int], sig: signal.Signals) -> None:
    for group in groups:
        with suppress(ProcessLookupError, PermissionError):  # the whole group is gone
            os.killpg(group, sig)


def _kill(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stragglers(root: Path) -> list[int]:
    """Processes (but this one) whose environment sets DAGSTER_HOME to ``root``."""
    wanted = f"DAGSTER_HOME={root}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and not _zombie(int(entry.name)):
            found.append(int(entry.name))
    return found


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the old handlers after)."""
    asked = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        asked.set()

    old: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    for sig in STOPPING:
        old[sig] = signal.signal(sig, handler)
    try:
        yield asked
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _died(processes: list[tuple[str, subprocess.Popen[bytes]]]) -> tuple[str, int] | None:
    for name, process in processes:
        code = process.poll()
        if code is not None:
            return name, code
    return None


@operator_errors
def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="the UI's port")] = 3000,
) -> None:
    """Start the Dagster UI and daemon for this home on 127.0.0.1 (DAGSTER_HOME is
    <home>/dagster): billing's assets, checks, jobs, schedules and the rate-card sensor.
    Ctrl-C stops both."""
    home = home_of(ctx).resolve()
    url = f"http://{HOST}:{port}"
    with stop_signals() as asked:
        root, processes = start(home, port)
        failed = None
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not asked.is_set() and not answers(f"{url}/server_info"):
                failed = _died(processes)
                if failed or time.monotonic() > deadline:
                    break
                asked.wait(0.25)
            if not asked.is_set() and not failed and time.monotonic() <= deadline:
                say(
                    "Dagster UI of {} at [bold]{}[/bold] (logs in {}); Ctrl-C stops it",
                    home,
                    url,
                    root / "ui-logs",
                )
                while not asked.is_set() and not failed:
                    failed = _died(processes)
                    asked.wait(0.5)
        finally:
            stop(root, processes)
    if failed:
        name, code = failed
        raise CdrflowError(
            f"the Dagster {name} stopped (exit status {code}); see {root / 'ui-logs' / name}.log"
            + (f" (is port {port} in use? try --port)" if name == "webserver" else "")
        )
    if not asked.is_set():
        raise CdrflowError(
            f"the Dagster webserver did not answer at {url} within {START_TIMEOUT:.0f} s; "
            f"see {root / 'ui-logs' / 'webserver.log'}"
        )
    say("stopped the Dagster webserver and daemon of {}", home)
