"""The home directory every command works on (SPEC §2), and who may read it.

A home holds password hashes, customers' money and every call: it is its owner's alone.
cdrflow's commands run with a umask of 077 (``private_umask``), so every file and directory
they make, in the home or anywhere else, is readable by its owner alone (0600 and 0700),
whatever the umask they were started with, SQLite's -wal and -shm files and the lake's
Parquet, manifests, staging, lock and cache files included. Besides that, a home is created
0700 and the catalog file 0600 whatever the umask (``make_home``, ``private_file``), so that
a program that uses these modules under a looser umask still keeps them closed; and a
catalog file an older cdrflow left readable by others is made 0600 when it is opened.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_HOME = "cdrflow-home"
ENV_HOME = "CDRFLOW_HOME"
# The bits a home's files and directories never have: group's and others'.
NOT_OWNER = 0o077
log = logging.getLogger("cdrflow.home")


def resolve_home(option: str | os.PathLike[str] | None = None) -> Path:
    """``--home PATH``, else ``$CDRFLOW_HOME``, else ``./cdrflow-home``."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_HOME)
    return Path(env) if env else Path(DEFAULT_HOME)


def catalog_path(home: Path) -> Path:
    return home / "catalog.sqlite"


def rated_lake(home: Path) -> Path:
    return home / "lake" / "rated"


def invoices_dir(home: Path) -> Path:
    """Rendered invoices and notes, ``<number>.html`` and ``<number>.pdf`` (SPEC §2)."""
    return home / "invoices"


def private_umask() -> None:
    """From now on, what this process creates is its owner's alone (the umask's own bits
    for the owner are kept)."""
    os.umask(os.umask(NOT_OWNER) | NOT_OWNER)


def make_home(home: Path) -> None:
    """The home directory, created 0700 if it is not there (an existing one is left as it
    is: it may be a directory the operator shares on purpose, or one of many homes' parent)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)


def private_file(path: Path, create: bool = True) -> None:
    """``path`` created 0600 if it is not there (with ``create``), and made 0600 if others
    may read or write it, with a warning (an older cdrflow created the catalog 0644)."""
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return
        except FileExistsError:
            pass
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & NOT_OWNER:
        path.chmod(mode & ~NOT_OWNER)
        log.warning(
            "%s was open to others (%04o); it is now its owner's alone (%04o)",
            path,
            mode,
            mode & ~NOT_OWNER,
        )


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A write to ``path``: an OSError it raises without a file name (a write that found the
    disk full: neither Python's file objects nor Arrow's name the file) is raised again
    naming ``path``, so that the operator is told what could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
