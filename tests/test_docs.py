"""The documentation site: `mkdocs build --strict` over docs/ (a broken link fails it), and
its front page as headless Chromium draws it, served over HTTP from 127.0.0.1."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WINDOW = (1280, 900)
# Material's default primary colour (indigo), the header band across the top of each page.
HEADER = np.array([0x40, 0x51, 0xB5])


def build(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of ``config`` into ``out`` (never into the repository)."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def nav_pages() -> list[str]:
    """The Markdown files the site's navigation lists, in its order."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return [page for entry in config["nav"] for page in entry.values()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", out)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_site_builds_strict_with_every_page_in_the_nav(site: Path) -> None:
    pages = nav_pages()
    on_disk = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(pages) == on_disk  # no page left out of the nav, none listed twice
    for page in pages:
        html = site / ("index.html" if page == "index.md" else f"{page[:-3]}/index.html")
        assert html.is_file(), page
    front = (site / "index.html").read_text()
    # Offline: no web fonts, no analytics, nothing fetched from another host.
    assert "fonts.googleapis" not in front and "fonts.gstatic" not in front
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", front)


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "rating.md").open("a") as page:
        page.write("\nSee [the old page](decisions.md) and [a part](billing.md#no-such-part).\n")
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "decisions.md" in said and "no-such-part" in said, said


def test_the_readme_is_a_guide_whose_links_lead_somewhere() -> None:
    """At most 300 lines: what cdrflow is, the two commands, a tour, where to go next; the
    site does not check the README's links, so this does."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "make demo" in readme and "make test" in readme
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert {f"docs/{page}" for page in nav_pages() if page != "index.md"} <= set(local)
    for target in local:
        assert (ROOT / target).is_file(), target


class _Quiet(SimpleHTTPRequestHandler):
    """Serves the site, and records each request's path and status instead of printing."""

    seen: list[tuple[str, int]]

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.seen.append((self.path, int(code)))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(site: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """The built site on a free port of 127.0.0.1, stopped at the end whatever happens."""
    seen: list[tuple[str, int]] = []
    handler = type("Handler", (_Quiet,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium: apt-get install -y chromium (CI counts this skip as a failure)")
    return found


def headless(url: str, profile: Path, *what: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",  # its own profile: runs at once do not share a lock
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *what,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.integration
def test_the_front_page_in_chromium(
    served: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    """The front page draws: the header band in Material's colour across the top, text on
    white below; its DOM has the site's title and every page of the nav; and every file it
    asked the local server for was there."""
    url, seen = served
    shot = tmp_path / "front.png"
    done = headless(url, tmp_path / "profile", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), f"chromium failed:\n{done.stderr[-3000:]}"
    with Image.open(shot) as image:
        assert image.size == WINDOW
        picture = np.asarray(image.convert("RGB")).astype(int)
    header = picture[5:40, :]
    assert (np.abs(header - HEADER).sum(axis=2) < 30).mean() > 0.6, "no header band"
    body = picture[200:, :]
    white = (body >= 250).all(axis=2).mean()
    ink = (body <= 120).all(axis=2).mean()
    assert white > 0.5 and ink > 0.005, (white, ink)  # a page of text, not blank

    dom = headless(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert re.search(r"<title>\s*cdrflow\s*</title>", dom.stdout)
    assert re.search(r"<h1[^>]*>\s*cdrflow", dom.stdout)
    for label in ("Operating", "Rating", "Analytics", "Billing", "Streaming", "Benchmarks"):
        assert re.search(rf">\s*{label}\s*<", dom.stdout), label
    assert ("/", 200) in seen
    assert any(path.startswith("/assets/") for path, _ in seen), seen
    assert [s for s in seen if s[1] >= 400] == []
