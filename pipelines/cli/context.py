"""What every command shares: the home, the opened catalog, and operator-facing errors."""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import typer

from pipelines.cli.output import fail
from pipelines.home import catalog_path, resolve_home
from schemas.errors import CdrflowError

if TYPE_CHECKING:
    from pipelines.catalog import Catalog

F = TypeVar("F", bound=Callable[..., Any])


def home_of(ctx: typer.Context) -> Path:
    root = ctx.find_root()
    root.ensure_object(dict)
    return resolve_home(root.obj.get("home"))


def catalog_of(ctx: typer.Context) -> Catalog:
    """The home's catalog, opened once per command."""
    root = ctx.find_root()
    root.ensure_object(dict)
    if "catalog" not in root.obj:
        # Imported here, not at the top: SQLAlchemy and the store cost every command's start
        # a fifth of a second or more, and `cdrflow rate` with the tables in the cache needs
        # neither (``compiled.stored_state``).
        from pipelines.catalog import Catalog

        catalog = Catalog(home_of(ctx))
        root.obj["catalog"] = catalog
        root.call_on_close(catalog.close)
    return root.obj["catalog"]  # type: ignore[no-any-return]


@overload
def operator_errors(func: F) -> F: ...
@overload
def operator_errors(*, unwritten: str) -> Callable[[F], F]: ...
def operator_errors(func: F | None = None, *, unwritten: str = "") -> F | Callable[[F], F]:
    """Turn a CdrflowError into its message on stderr and exit status 1, never a traceback;
    and so a write the disk refused (full, over quota, read-only, failing), as one line
    naming what could not be written, then ``unwritten``: what that left as it was (for a
    command that writes the lake, that nothing of it was committed). A refused write to the
    catalog store says so itself: its transaction is rolled back whole."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except CdrflowError as exc:
                fail(str(exc))
                raise typer.Exit(1) from None
            except Exception as exc:
                ctx = kwargs.get("ctx")  # every command that writes takes it
                home = home_of(ctx) if ctx is not None else None
                said = _refused_write(exc, unwritten, home)
                if said is None:
                    raise
                fail(said)
                raise typer.Exit(1) from None

        return wrapper  # type: ignore[return-value]

    return decorate if func is None else decorate(func)


# What a refused write looks like: the errors of a disk that is full, over quota, mounted
# read-only or failing, and SQLite's (its primary result codes) for the same.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})
SQLITE_DISK_ERRORS = frozenset({13, 10, 8})  # SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY


def _refused_write(exc: Exception, unwritten: str, home: Path | None) -> str | None:
    """One line for a write the disk refused, or None for any other exception."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        where = exc.filename if exc.filename is not None else "to disk"
        said = f"could not write {where}: {os.strerror(exc.errno)}"
        return f"{said}; {unwritten}" if unwritten else said
    cause = exc if isinstance(exc, sqlite3.Error) else getattr(exc, "orig", None)
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(cause, sqlite3.Error) and code is not None and code & 0xFF in SQLITE_DISK_ERRORS:
        store = f"the catalog store {catalog_path(home)}" if home else "the catalog store"
        return f"could not write {store}: {cause}; nothing was committed (the catalog is as before)"
    return None


def option_time(text: str, option: str) -> datetime:
    """An ISO 8601 date or time given to ``option``, UTC when it names no offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CdrflowError(
            f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-11-02 or 2026-11-02T08:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
