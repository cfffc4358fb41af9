"""Real receivers for alert deliveries: an SMTP server (aiosmtpd) and an HTTP server, both
on 127.0.0.1, started and stopped by the tests (the session's Kafka broker and topics are
tests/conftest.py's)."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from pipelines.kafka_broker import free_port

PATIENCE = 120.0  # seconds: a bound against a hang, never a deadline


@dataclass
class Mailbox:
    """What the SMTP server received."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self.arrived:
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self.messages.append(message)
            self.arrived.notify_all()
        return "250 OK"

    def wait(self, count: int) -> list[EmailMessage]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= count, PATIENCE)
            return list(self.messages)


class Accounts:
    """An SMTP authenticator that knows one user and records every login tried."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password
        self.mailbox: Mailbox | None = None  # set when its server starts

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        assert self.mailbox is not None
        self.mailbox.logins.append((login, password))
        # handled=False: aiosmtpd answers (235, or 535 on a failure) itself.
        return AuthResult(success=(login, password) == (self.user, self.password), handled=False)


def _smtp(**kwargs: Any) -> Iterator[Mailbox]:
    mailbox = Mailbox(free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port, **kwargs)
    if "authenticator" in kwargs:
        kwargs["authenticator"].mailbox = mailbox
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[Mailbox]:
    yield from _smtp()


SMTP_USER, SMTP_PASSWORD = "alerts", "s3cret-Pa55word-for-tests"


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the client trusts it as its CA)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def smtp_auth_server(certificate: tuple[Path, Path]) -> Iterator[Mailbox]:
    """An SMTP server that wants STARTTLS, then ``SMTP_USER`` / ``SMTP_PASSWORD``."""
    yield from _smtp(
        authenticator=Accounts(SMTP_USER, SMTP_PASSWORD),
        auth_required=True,
        tls_context=_server_context(certificate),
        require_starttls=True,
    )


@pytest.fixture
def smtps_server(certificate: tuple[Path, Path]) -> Iterator[Mailbox]:
    """An SMTP server that speaks TLS from the first byte (port 465's way)."""
    yield from _smtp(ssl_context=_server_context(certificate))


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() when it came


class Webhook:
    """An HTTP server on 127.0.0.1 that records every POST and answers the next status of
    ``statuses`` (the last one from then on)."""

    def __init__(self) -> None:
        self.posts: list[Posted] = []
        self.statuses = [200]
        self.arrived = threading.Condition()
        # When set, the answer to a POST waits until it is released (a delivery in flight).
        self.hold: threading.Event | None = None
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                with hook.arrived:
                    status = hook.statuses[min(len(hook.posts), len(hook.statuses) - 1)]
                    hook.posts.append(Posted(self.path, dict(self.headers), body, time.monotonic()))
                    hook.arrived.notify_all()
                if hook.hold is not None:
                    hook.hold.wait(PATIENCE)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/noc?token=t0ken"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait(self, count: int) -> list[Posted]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.posts) >= count, PATIENCE)
            return list(self.posts)


def _serve() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    try:
        yield hook
    finally:
        if hook.hold is not None:
            hook.hold.set()
        hook.server.shutdown()
        hook.server.server_close()
        hook.thread.join()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    yield from _serve()


@pytest.fixture
def failing_webhook() -> Iterator[Webhook]:
    """A second webhook server, answering 500 to every POST."""
    for hook in _serve():
        hook.statuses = [500]
        yield hook
