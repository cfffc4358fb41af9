"""What every command shares: the home, the opened catalog, and operator-facing errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from pipelines.catalog import Catalog
from pipelines.cli.output import fail
from pipelines.home import resolve_home
from schemas.errors import CdrflowError

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
