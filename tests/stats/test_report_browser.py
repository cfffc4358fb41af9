"""The report in a real browser: headless Chromium draws every chart of the page.

Two screenshots of the same page, one with the data marks hidden by a style rule: every chart
card must differ between them (its marks drew), and nothing else may. Cards are found in the
picture itself (white cards on the grey page), so the test needs no knowledge of the layout
beyond the colours of the page and how many charts the HTML has.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from stats.report import customer_colors, gather, render
from stats.scope import Scope, connect

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1400, 3000)
PAGE = (0xF3, 0xF4, 0xF6)  # the page's background (stats.report's CSS)
HIDE_MARKS = "<style>.mark { visibility: hidden !important; }</style></head>"
Picture = npt.NDArray[np.uint8]


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium: apt-get install -y chromium (CI counts this skip as a failure)")


def screenshot(page: Path, out: Path, profile: Path) -> Picture:
    """``page`` as headless Chromium draws it in a WINDOW-sized viewport, as RGB pixels."""
    command = [
        browser(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",  # its own profile: runs at once do not share a lock
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={out}",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and out.is_file(), f"chromium failed:\n{done.stderr[-3000:]}"
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"))


def runs(flags: npt.NDArray[np.bool_]) -> Iterator[tuple[int, int]]:
    """The [start, end) stretches where ``flags`` is true."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    yield from zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)


def cards(picture: Picture) -> list[tuple[slice, slice]]:
    """The white rectangles on the grey page (figures, tiles, the table): rows with white
    pixels make bands, and within a band the columns with white make cards."""
    white = (picture == 255).all(axis=2)
    found = []
    for top, bottom in runs(white.sum(axis=1) >= 8):
        band = white[top:bottom]
        for left, right in runs(band.mean(axis=0) > 0.05):
            if bottom - top >= 40 and right - left >= 100:
                found.append((slice(top, bottom), slice(left, right)))
    return found


@pytest.fixture(scope="module")
def rendered(
    small_lake_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Picture, Picture, dict[str, str]]:
    """The page over the small lake, its screenshot, and its screenshot without marks."""
    folder = tmp_path_factory.mktemp("browser")
    data = gather(
        connect(), Scope(small_lake_home / "lake" / "rated"), datetime(2026, 11, 30, tzinfo=UTC)
    )
    html = render(data)
    shown, hidden = folder / "report.html", folder / "hidden.html"
    shown.write_text(html, encoding="utf-8")
    hidden.write_text(html.replace("</head>", HIDE_MARKS, 1), encoding="utf-8")
    return (
        html,
        screenshot(shown, folder / "report.png", folder / "profile"),
        screenshot(hidden, folder / "hidden.png", folder / "profile"),
        customer_colors(data),
    )


def test_the_whole_page_fits_the_window(rendered: tuple[str, Picture, Picture, dict]) -> None:
    _, picture, _, _ = rendered
    assert picture.shape == (WINDOW[1], WINDOW[0], 3)
    bottom = picture[-40:].reshape(-1, 3)
    assert (bottom == PAGE).all(), "the page is longer than the window: charts were cut off"


def test_every_chart_drew_its_marks(rendered: tuple[str, Picture, Picture, dict]) -> None:
    html, picture, hidden, _ = rendered
    charts = len(re.findall(r'<svg [^>]*class="chart"', html))
    changed = (picture != hidden).any(axis=2)
    with_marks = []
    for rows, cols in cards(picture):
        region = picture[rows, cols].reshape(-1, 3)
        if changed[rows, cols].sum() == 0:
            continue
        colours = len(np.unique(region, axis=0))
        with_marks.append((changed[rows, cols].sum(), colours))
    assert len(with_marks) == charts == 9, with_marks
    for pixels, colours in with_marks:
        assert pixels >= 500, f"a chart barely drew: {with_marks}"
        assert colours >= 30, f"a chart is nearly blank: {with_marks}"
    outside = changed.sum() - sum(p for p, _ in with_marks)
    assert outside == 0, "hiding the marks changed pixels outside the charts"


def test_each_customer_is_drawn_in_its_colour(
    rendered: tuple[str, Picture, Picture, dict],
) -> None:
    _, picture, hidden, colors = rendered
    assert len(colors) >= 3
    for name, color in colors.items():
        rgb = tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
        drawn = (picture == rgb).all(axis=2).sum()
        legend_only = (hidden == rgb).all(axis=2).sum()  # the swatches of the legends
        assert drawn - legend_only >= 300, f"{name} ({color}): {drawn - legend_only} pixels"
