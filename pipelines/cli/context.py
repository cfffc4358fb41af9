"""What every command shares: the home, the opened catalog, and operator-facing errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from pipelines.cli.output import fail
from pipelines.home import resolve_home
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


def operator_errors(func: F) -> F:
    """Turn a CdrflowError into its message on stderr and exit status 1, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CdrflowError as exc:
            fail(str(exc))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def option_time(text: str, option: str) -> datetime:
    """An ISO 8601 date or time given to ``option``, UTC when it names no offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CdrflowError(
            f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-11-02 or 2026-11-02T08:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
