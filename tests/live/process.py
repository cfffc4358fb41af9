"""``cdrflow live worker`` as the tests run it: a real process on 127.0.0.1, started and
stopped by its PID, asked over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CDRFLOW = str(Path(sys.executable).parent / "cdrflow")
# Bounds against a hang, never deadlines: a busy machine makes these tests slower, not wrong.
PATIENCE = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_signals() -> None:
    """A background shell starts its children with SIGINT and SIGTERM ignored: undo that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def wait_for(condition: Callable[[], Any], what: str, patience: float = PATIENCE) -> Any:
    """Poll until ``condition()`` is truthy (and return it); a hang fails naming ``what``."""
    give_up = time.monotonic() + patience
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"waited {patience:.0f} s for {what}")
        time.sleep(0.2)


class LiveWorker:
    """One ``cdrflow live worker`` process; its log goes to ``log`` (a file, read back)."""

    def __init__(
        self,
        home: Path,
        bootstrap: str,
        topic: str,
        app_id: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"live-{app_id}-{self.port}.log"
        command = [CDRFLOW, "--home", str(home), "live", "worker", "--bootstrap", bootstrap]
        command += ["--topic", topic, "--web-port", str(self.port), "--app-id", app_id, *extra]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                preexec_fn=_default_signals,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def request(
        self, path: str, body: Any = None, method: str | None = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """(status, decoded JSON body) of one request; (0, None) while nothing listens."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    def get(self, path: str) -> tuple[int, Any]:
        return self.request(path)

    def ready(self) -> list[dict[str, Any]]:
        """Wait until the worker answers ``GET /customers``; that answer."""

        def answered() -> list[dict[str, Any]] | None:
            assert self.process.poll() is None, f"the worker stopped:\n{self.text()[-4000:]}"
            status, body = self.get("/customers")
            return body if status == 200 else None

        return wait_for(answered, f"the live worker on {self.url} to answer")  # type: ignore[no-any-return]

    def customers(self) -> dict[str, dict[str, Any]]:
        status, body = self.get("/customers")
        assert status == 200, body
        return {c["customer_id"]: c for c in body}

    def stop(self, timeout: float = PATIENCE) -> str:
        """SIGTERM, and wait for a clean exit (status 0); the log."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the worker did not stop:\n{self.text()[-4000:]}") from None
        assert self.process.returncode == 0, self.text()[-4000:]
        return self.text()

    def kill(self) -> None:
        """SIGKILL to its process group: a crash at whatever moment it is at."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(PATIENCE)
