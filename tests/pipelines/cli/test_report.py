"""``cdrflow report``: writes one HTML file, says where; an empty lake or a bad range is an
operator's error, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from pipelines.cli import report as report_module
from pipelines.cli import root
from tests.pipelines.cli.driver import describe
from tests.stats.simulated import small_lake

# The command on an app of its own, with cdrflow's --home: the test does not depend on how
# pipelines.cli registers it.
app = typer.Typer(pretty_exceptions_enable=False)
app.callback()(root)
app.command("report")(report_module.report)
app.command("noop", hidden=True)(lambda: None)  # two commands: typer keeps the subcommand


@pytest.fixture(scope="module")
def small_lake_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_lake(tmp_path_factory.mktemp("small_lake"))


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), "report", *args])


def refused(home: Path, *args: str) -> str:
    result = run(home, *args)
    assert result.exit_code == 1, describe(result)
    assert isinstance(result.exception, SystemExit), describe(result)
    assert result.stderr.startswith("error: "), describe(result)
    return result.stderr.removeprefix("error: ")


def test_it_writes_the_report_where_asked(small_lake_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "november.html"
    result = run(small_lake_home, "--out", str(out), "--customer", "acme", "--customer", "hooli")
    assert result.exit_code == 0, describe(result)
    assert result.stdout.startswith(f"wrote the report to {out} (")
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<dt>Customers</dt><dd>acme, hooli</dd>" in page
    assert not list(out.parent.glob(".*partial"))


def test_the_default_is_report_html_here(
    small_lake_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(small_lake_home, "--from", "2026-11-03", "--to", "2026-11-03T12:00Z")
    assert result.exit_code == 0, describe(result)
    assert "2026-11-03 00:00 UTC to 2026-11-03 12:00 UTC" in (tmp_path / "report.html").read_text()


def test_an_empty_lake_is_an_operators_error(tmp_path: Path) -> None:
    message = refused(tmp_path / "home", "--out", str(tmp_path / "r.html"))
    assert "no rated calls in" in message and "cdrflow rate" in message
    assert not (tmp_path / "r.html").exists()


def test_a_range_without_calls_says_which(small_lake_home: Path, tmp_path: Path) -> None:
    message = refused(small_lake_home, "--from", "2030-01-01", "--out", str(tmp_path / "r.html"))
    assert "no rated calls" in message and "2030-01-01 00:00 UTC" in message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--from", "yesterday"], "--from: 'yesterday' is not a date or time"),
        (["--from", "2026-11-03", "--to", "2026-11-02"], "is not after --from"),
    ],
)
def test_a_bad_range_is_refused(
    small_lake_home: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    assert expected in refused(small_lake_home, *args, "--out", str(tmp_path / "r.html"))


def test_a_directory_is_no_file_to_write(small_lake_home: Path, tmp_path: Path) -> None:
    result = run(small_lake_home, "--out", str(tmp_path))
    assert result.exit_code == 2, describe(result)  # click's usage error
    assert "Invalid value for '--out'" in result.stderr, describe(result)


def test_an_unwritable_place_is_an_operators_error(small_lake_home: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    message = refused(small_lake_home, "--out", str(tmp_path / "file" / "r.html"))
    assert message.startswith(f"--out {tmp_path / 'file' / 'r.html'}: cannot write it")
