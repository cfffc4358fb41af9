"""Management commands of the catalog, one group per entity (the ConnexCS customer card).

Every entity gets the same verbs, built from its spec in ``schemas.catalog``: ``add``,
``edit``, ``list`` (filters: status, customer, card), ``search``, ``show`` and ``delete``.
Options are the entity's columns (``tax_percent`` → ``--tax-percent``), given as text and
parsed by the column's kind, so the command line and CSV import accept the same values.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from pipelines.cli.context import catalog_of, operator_errors
from pipelines.cli.output import Format, emit, emit_record, say
from schemas.catalog import ENTITIES, Column, Entity
from schemas.errors import CdrflowError

FormatOption = Annotated[Format, typer.Option("--format", "-f", help="table, csv or json")]
WideOption = Annotated[
    bool,
    typer.Option(
        "--wide", help="every column, each value on one line (wider than the terminal if need be)"
    ),
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="delete a customer's billing history too")
]


@dataclass(frozen=True)
class Listing:
    """What a listing keeps in a narrow terminal: its ``key`` columns always, the others
    until the table fits, going first those in ``drop`` (in its order), then from the right."""

    key: tuple[str, ...]
    drop: tuple[str, ...] = ()


# A surrogate ``id`` is a key too (``show``, ``edit`` and ``delete`` take it).
LISTINGS = {
    "customers": Listing(
        ("customer_id", "name", "status", "currency"),
        ("address", "website", "paypal_email", "portal_access", "minimum_payment", "cps",
         "channels", "tax_percent"),
    ),
    "providers": Listing(("provider_id", "name")),
    "rate_cards": Listing(("card_id", "name", "currency", "direction")),
    "rates": Listing(("prefix", "name", "rate")),
    "packages": Listing(
        ("package_id", "name", "seconds"), ("setup_retail", "cost", "prefixes", "frequency")
    ),
    "routes": Listing(("customer_id", "card_id", "tech_prefix"), ("strip_digits",)),
    "auth": Listing(("customer_id", "kind", "value")),
    "customer_packages": Listing(("customer_id", "package_id"), ("auto_decrement",)),
    "dids": Listing(
        ("number", "customer_id"),
        ("provider_card_id", "provider_id", "monthly_cost", "customer_card_id"),
    ),
    "payments": Listing(("payment_id", "customer_id", "amount", "status")),
    "alerts": Listing(
        ("alert_id", "customer_id", "area", "operator", "threshold"), ("recipient", "name")
    ),
    "contacts": Listing(("customer_id", "name", "email")),
    "cli_rules": Listing(("customer_id", "pattern", "action")),
    "contracts": Listing(
        ("contract_id", "customer_id", "status"), ("name", "provider_id", "end_date")
    ),
    "company": Listing(("name", "email")),
}  # fmt: skip


def listing_of(entity: Entity) -> Listing:
    listing = LISTINGS.get(entity.name, Listing(entity.key[:1]))
    if entity.surrogate:
        return Listing(("id", *listing.key), listing.drop)
    return listing


def command_name(entity: Entity) -> str:
    return {"rate_cards": "cards"}.get(entity.name, entity.name.replace("_", "-"))


def _option_name(column: Column) -> str:
    return "--" + column.name.replace("_", "-")


def _ident_help(entity: Entity) -> str:
    return (
        f"the {entity.singular}'s {entity.key[0]}"
        if entity.key
        else f"the {entity.singular}'s id (see list)"
    )


def _column_params(entity: Entity, *, for_edit: bool) -> list[inspect.Parameter]:
    params = []
    for column in entity.columns:
        if column.secret or (for_edit and column.name in entity.key):
            continue
        help_text = column.help or column.kind.describe()
        if column.required and not for_edit:
            help_text += " (required)"
        elif column.default not in (None, "") and not for_edit:
            help_text += f" (default: {column.kind.render(column.default)})"
        params.append(
            inspect.Parameter(
                column.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    str | None,
                    typer.Option(_option_name(column), help=help_text, show_default=False),
                ],
            )
        )
    return params


def _with_signature(
    func: Callable[..., Any], params: list[inspect.Parameter]
) -> Callable[..., Any]:
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return func


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _given(entity: Entity, values: dict[str, Any]) -> dict[str, str | None]:
    return {c.name: values[c.name] for c in entity.columns if values.get(c.name) is not None}


def _announce_password(
    entity: Entity, ident: Any, password: str, fmt: Format = Format.table
) -> None:
    # The one time a generated password is shown; only its hash is kept (docs/operating.md,
    # "Passwords").
    # With --format csv/json it goes to stderr, so that stdout stays parseable.
    say(
        "password of {} {}: [bold]{}[/bold]  (shown once; only a hash is stored)",
        entity.singular,
        ident,
        password,
        fmt=fmt,
    )


def _read_password_stdin() -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise CdrflowError("--password-stdin was given but standard input was empty")
    return line


def build_group(entity: Entity) -> typer.Typer:
    """The sub-command group of one entity."""
    group = typer.Typer(help=entity.help, no_args_is_help=True)
    has_secret = any(c.secret for c in entity.columns)
    ident_arg = Annotated[str, typer.Argument(help=_ident_help(entity), show_default=False)]
    secret_params = (
        [
            _param(
                "password_stdin",
                Annotated[
                    bool,
                    typer.Option(
                        "--password-stdin",
                        help="read the password from standard input instead of generating one",
                    ),
                ],
                False,
            )
        ]
        if has_secret
        else []
    )

    def add(ctx: typer.Context, **values: Any) -> None:
        raw = _given(entity, values)
        password = None
        if values.get("password_stdin") and not _wants_password(entity, raw):
            raise CdrflowError(f"only a kind=user {entity.singular} has a password")
        if has_secret and _wants_password(entity, raw):
            password = _read_password_stdin() if values.get("password_stdin") else _new_password()
            raw["password"] = password
        row = catalog_of(ctx).add(entity.name, raw)
        ident = row["id"] if entity.surrogate else row[entity.key[0]]
        fmt = values["fmt"]
        if fmt is Format.table:
            say("added {} [bold]{}[/bold]", entity.singular, ident)
        emit_record(row, fmt, entity=entity, title=f"{entity.singular} {ident}")
        if password is not None and not values.get("password_stdin"):
            _announce_password(entity, ident, password, fmt)

    group.command("add", help=f"Add {entity.article} {entity.singular}.")(
        operator_errors(
            _with_signature(
                add,
                [
                    _param("ctx", typer.Context),
                    *_column_params(entity, for_edit=False),
                    *secret_params,
                    _param("fmt", FormatOption, Format.table),
                ],
            )
        )
    )

    def edit(ctx: typer.Context, ident: str, **values: Any) -> None:
        changes = _given(entity, values)
        if not changes:
            raise CdrflowError(f"{entity.singular} {ident}: give at least one option to change")
        row = catalog_of(ctx).edit(entity.name, ident, changes)
        if values["fmt"] is Format.table:
            say("changed {} [bold]{}[/bold]: {}", entity.singular, ident, ", ".join(changes))
        emit_record(row, values["fmt"], entity=entity, title=f"{entity.singular} {ident}")

    group.command(
        "edit",
        help=f"Change some fields of {entity.article} {entity.singular}; "
        "an empty value clears a field.",
    )(
        operator_errors(
            _with_signature(
                edit,
                [
                    _param("ctx", typer.Context),
                    _param("ident", ident_arg),
                    *_column_params(entity, for_edit=True),
                    _param("fmt", FormatOption, Format.table),
                ],
            )
        )
    )

    filters = []
    if entity.status:
        choices = entity.column_by_name[entity.status].kind.describe()
        filters.append(
            _param(
                "status",
                Annotated[str | None, typer.Option(help=f"only this status: {choices}")],
                None,
            )
        )
    if "customer_id" in entity.column_by_name and entity.name != "customers":
        filters.append(
            _param(
                "customer", Annotated[str | None, typer.Option(help="only this customer's")], None
            )
        )
    if entity.name == "rates":
        filters.append(
            _param("card", Annotated[str | None, typer.Option(help="only this card's")], None)
        )

    listing = listing_of(entity)

    def list_(ctx: typer.Context, **values: Any) -> None:
        if entity.status and values.get("status") is not None:
            # A mistyped status is an error, not an empty list.
            try:
                entity.column_by_name[entity.status].kind.parse(values["status"])
            except ValueError as exc:
                raise CdrflowError(f"--status: {exc}") from None
        rows = catalog_of(ctx).list(
            entity.name,
            status=values.get("status"),
            customer=values.get("customer"),
            card=values.get("card"),
        )
        emit(
            rows,
            values["fmt"],
            entity=entity,
            title=f"{entity.name} ({len(rows)})",
            key=listing.key,
            drop=listing.drop,
            wide=values["wide"],
        )

    group.command("list", help=f"List {entity.plural}.")(
        operator_errors(
            _with_signature(
                list_,
                [
                    _param("ctx", typer.Context),
                    *filters,
                    _param("fmt", FormatOption, Format.table),
                    _param("wide", WideOption, False),
                ],
            )
        )
    )

    def search(ctx: typer.Context, text: str, fmt: Format, wide: bool) -> None:
        rows = catalog_of(ctx).list(entity.name, text=text)
        emit(
            rows,
            fmt,
            entity=entity,
            title=f"{entity.name} matching {text!r} ({len(rows)})",
            key=listing.key,
            drop=listing.drop,
            wide=wide,
        )

    group.command(
        "search", help=f"Find {entity.plural} whose {', '.join(entity.search)} contain TEXT."
    )(
        operator_errors(
            _with_signature(
                search,
                [
                    _param("ctx", typer.Context),
                    _param(
                        "text", Annotated[str, typer.Argument(help="text to look for (any case)")]
                    ),
                    _param("fmt", FormatOption, Format.table),
                    _param("wide", WideOption, False),
                ],
            )
        )
    )

    def show(ctx: typer.Context, ident: str, fmt: Format) -> None:
        row = catalog_of(ctx).get(entity.name, ident)
        emit_record(row, fmt, entity=entity, title=f"{entity.singular} {ident}")

    if entity.name != "customers":  # a customer's is the card (pipelines.cli.card)
        group.command("show", help=f"Show one {entity.singular}.")(
            operator_errors(
                _with_signature(
                    show,
                    [
                        _param("ctx", typer.Context),
                        _param("ident", ident_arg),
                        _param("fmt", FormatOption, Format.table),
                    ],
                )
            )
        )

    def delete(ctx: typer.Context, ident: str, force: bool = False) -> None:
        catalog_of(ctx).delete(entity.name, ident, force=force)
        say("deleted {} [bold]{}[/bold]", entity.singular, ident)

    delete_params = [_param("ctx", typer.Context), _param("ident", ident_arg)]
    if entity.name == "customers":
        delete_params.append(_param("force", ForceOption, False))
    delete_help = f"Delete {entity.article} {entity.singular} and the rows it owns."
    if entity.name == "customers":
        delete_help += " A customer with rated CDRs or payments needs --force."
    group.command("delete", help=delete_help)(
        operator_errors(_with_signature(delete, delete_params))
    )

    if has_secret:

        def reset_password(ctx: typer.Context, ident: str, password_stdin: bool = False) -> None:
            password = _read_password_stdin() if password_stdin else _new_password()
            catalog_of(ctx).set_password(entity.name, ident, password)
            say("new password set for {} {}", entity.singular, ident)
            if not password_stdin:
                _announce_password(entity, ident, password)

        group.command(
            "reset-password", help="Set a new password (generated, or from standard input)."
        )(
            operator_errors(
                _with_signature(
                    reset_password,
                    [_param("ctx", typer.Context), _param("ident", ident_arg), *secret_params],
                )
            )
        )
    return group


def _wants_password(entity: Entity, raw: dict[str, str | None]) -> bool:
    """Contacts always get one; an auth entry only when it is of kind user."""
    return entity.name != "auth" or raw.get("kind") == "user"


def _new_password() -> str:
    # The catalog package opens the store: imported when a password is made, not by every
    # command (``context.catalog_of``).
    from pipelines.catalog.secrets import generate_password

    return generate_password()


def register(app: typer.Typer) -> dict[str, typer.Typer]:
    """Add one group per entity to ``app``; returns them by command name."""
    groups = {}
    for entity in ENTITIES:
        if entity.name == "rates":
            continue  # rate rows are managed through `cdrflow cards`
        name = command_name(entity)
        groups[name] = build_group(entity)
        app.add_typer(groups[name], name=name)
    return groups
