"""The installed ``cdrflow`` command, run as a newcomer runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _cdrflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cdrflow", path=str(Path(sys.executable).parent))
    assert exe, "the cdrflow entry point is not installed next to this Python"
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=600)


def test_demo_runs_twice_and_proves_the_round_trip(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for _ in range(2):  # a second run over the same home works too
        done = _cdrflow("--home", str(home), "demo")
        assert done.returncode == 0, done.stdout + done.stderr
        said = " ".join(done.stdout.split())  # rich wraps lines at the terminal's width
        assert "round trip identical" in said
        assert "refused: customer demo-voip: column currency: cannot change from USD to EUR" in said
    assert (home / "catalog.sqlite").is_file()
    assert (home / "export" / "customers.csv").is_file()


def test_home_comes_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "CDRFLOW_HOME": str(tmp_path / "envhome")}
    done = _cdrflow("catalog", "info", "--format", "csv", env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "envhome" / "catalog.sqlite").is_file()


def test_an_operator_error_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    done = _cdrflow("--home", str(tmp_path), "customers", "show", "nobody")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: there is no customer 'nobody'"


def test_the_demo_leaves_a_home_with_other_customers_alone(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    add = _cdrflow(
        "--home",
        home,
        "customers",
        "add",
        "--customer-id",
        "mine",
        "--name",
        "Mine",
        "--status",
        "active",
        "--currency",
        "USD",
    )
    assert add.returncode == 0, add.stderr
    done = _cdrflow("--home", home, "demo")
    assert done.returncode == 1
    assert "holds customers of its own (mine)" in " ".join(done.stderr.split())


def test_the_command_line_starts_without_the_store_kafka_or_the_engine_s_imports() -> None:
    """Every command's start imports the command line; SQLAlchemy (the store), the engine's
    modules and confluent-kafka are imported by the commands that use them. `cdrflow rate`
    with the compiled tables in the home's cache never imports the store at all
    (tests/pipelines/test_compiled.py); together 0.2-0.4 s of every start."""
    heavy = ("sqlalchemy", "pipelines.catalog", "confluent_kafka", "pipelines.rate")
    code = f"import sys, pipelines.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
