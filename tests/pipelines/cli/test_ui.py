"""``cdrflow ui``: a real Dagster webserver and daemon on a free port of 127.0.0.1 for a
temporary home, drawn by headless Chromium, then stopped by SIGTERM or SIGINT with nothing
of theirs left behind."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cli.ui import answers
from tests.stats.test_report_browser import browser

pytestmark = pytest.mark.integration

# Generous: the webserver loads the code in a subprocess on a busy machine.
START = 600.0
STOP = 300.0
PNG = b"\x89PNG\r\n\x1a\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_dagster_home(root: Path) -> list[int]:
    """Live processes whose environment sets DAGSTER_HOME to ``root``."""
    wanted = f"DAGSTER_HOME={root}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if wanted in environ and state != "Z":
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_ui_serves_the_definitions_and_stops_cleanly(tmp_path: Path, stop: signal.Signals) -> None:
    home = tmp_path / "home"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cdrflow = Path(sys.executable).with_name("cdrflow")
    ui = subprocess.Popen(
        [str(cdrflow), "--home", str(home), "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START
        while not answers(f"{url}/server_info"):
            assert ui.poll() is None, ui.communicate()[0].decode()
            assert time.monotonic() < deadline, "the webserver never answered"
            time.sleep(0.5)
        root = home / "dagster"
        assert with_dagster_home(root), "no webserver or daemon runs with this DAGSTER_HOME"

        shot = tmp_path / "ui.png"
        command = [browser(), "--headless=new", "--no-sandbox", "--disable-gpu",
                   f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800",
                   "--virtual-time-budget=10000", f"--screenshot={shot}", url]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert shot.read_bytes().startswith(PNG) and shot.stat().st_size > 1000

        ui.send_signal(stop)
        output, _ = ui.communicate(timeout=STOP)
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()
    text = output.decode()
    assert ui.returncode == 0, text
    assert url in text and "stopped the Dagster webserver and daemon" in text
    assert with_dagster_home(root) == []
    assert (root / "dagster.yaml").is_file()
    assert (root / "history" / "runs.db").is_file()  # the instance's storage stays


def test_ui_on_a_taken_port_says_so_and_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(Path(sys.executable).with_name("cdrflow")), "--home", str(home), "ui",
             "--port", str(port)],
            capture_output=True, text=True, timeout=START, check=False,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: the Dagster webserver stopped (exit status ")
    assert f"is port {port} in use? try --port" in line
    assert with_dagster_home(home / "dagster") == []
