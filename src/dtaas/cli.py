"""The `dtaas` command line: serve the platform, manage the database, and use a server."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, NoReturn

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from dtaas.client import Client, Credentials, credentials_path
from dtaas.config import Settings, get_settings
from dtaas.errors import DtaasError
from dtaas.logs import configure_logging
from dtaas.security.models import Role

log = logging.getLogger(__name__)

app = typer.Typer(
    name="dtaas",
    help="Digital Twin as a Service: run the platform and work with it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the platform's database.", no_args_is_help=True)
user_app = typer.Typer(help="Manage users (admins).", no_args_is_help=True)
token_app = typer.Typer(help="Manage your API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")

out = Console()
err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


@contextmanager
def _remote() -> Iterator[Client]:
    """A client from the stored credentials; every DtaasError ends the command cleanly."""
    try:
        with Client.from_credentials() as client:
            yield client
    except DtaasError as exc:
        _fail(exc.message)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


# --- running the platform ---------------------------------------------------------------


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError says which setting is wrong
        _fail(f"the configuration is not valid:\n{exc}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from settings).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Migrate the database, seed the demo on first start, and serve the platform."""
    from dtaas.api.app import prepare

    settings = _settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    passwords = prepare(settings)
    if passwords:
        out.rule("[bold]Demo users created (passwords are shown only this once)")
        for username, password in passwords.items():
            out.print(f"  {username:<8} {password}", highlight=False)
        out.rule()
    bind_host = host or settings.host
    bind_port = port or settings.port
    out.print(f"dtaas is serving on http://{bind_host}:{bind_port}", highlight=False)
    sys.stdout.flush()
    uvicorn.run(
        "dtaas.api.app:create_app",
        factory=True,
        host=bind_host,
        port=bind_port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    from dtaas import db

    settings = _settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    engine = db.make_engine(settings)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    out.print("The database is up to date.")


@db_app.command("create-admin")
def db_create_admin(
    username: Annotated[str, typer.Argument(help="Name of the new administrator.")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create an administrator directly in the database (for a new site without demo)."""
    from dtaas import db
    from dtaas.security import service as security

    settings = _settings()
    engine = db.make_engine(settings)
    try:
        db.upgrade(engine)
        with db.make_sessionmaker(engine)() as session:
            security.bootstrap_admin(
                session=session, settings=settings, username=username, password=password
            )
    except DtaasError as exc:
        _fail(exc.message)
    finally:
        engine.dispose()
    out.print(f"Administrator {username} created.")


# --- signing in -------------------------------------------------------------------------


@app.command()
def login(
    server: Annotated[
        str, typer.Option(prompt="Server URL", help="e.g. http://127.0.0.1:8000")
    ] = "http://127.0.0.1:8000",
    username: Annotated[str, typer.Option(prompt=True)] = "",
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)] = "",
    token_name: Annotated[str, typer.Option(help="Name of the token created.")] = "cli",
) -> None:
    """Sign in and store an API token in ~/.config/dtaas/credentials (mode 0600)."""
    try:
        with Client(server) as anonymous:
            created = anonymous.create_token_with_password(
                username=username, password=password, token_name=token_name
            )
    except DtaasError as exc:
        _fail(exc.message)
    path = Credentials(server=server.rstrip("/"), username=username, token=created.token).save()
    out.print(f"Signed in to {server} as {username}; token stored in {path}.", highlight=False)


@app.command()
def logout() -> None:
    """Revoke the stored token and forget it."""
    path = credentials_path()
    with _remote() as client:
        stored = Credentials.load()
        current = [t for t in client.list_tokens() if stored.token.startswith(t.prefix)]
        for token in current:
            if token.revoked_at is None:
                client.revoke_token(token_id=token.id)
    path.unlink(missing_ok=True)
    out.print("Signed out.")


@app.command()
def whoami() -> None:
    """Show who the stored token signs in as."""
    with _remote() as client:
        me = client.whoami()
    out.print(
        f"{me.user.username} ({me.user.role.value}) in {me.organisation} at {client.base_url}",
        highlight=False,
    )


# --- users ------------------------------------------------------------------------------


@user_app.command("ls")
def user_ls() -> None:
    """List users."""
    with _remote() as client:
        users = client.list_users()
    table = Table("username", "name", "role", "status", "created")
    for user in users:
        status = "active" if user.is_active else "disabled"
        table.add_row(
            user.username, user.full_name, user.role.value, status, _when(user.created_at)
        )
    out.print(table)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument()],
    role: Annotated[Role, typer.Option(case_sensitive=False)] = Role.USER,
    full_name: Annotated[str, typer.Option()] = "",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a user."""
    with _remote() as client:
        user = client.create_user(
            username=username, password=password, role=role, full_name=full_name
        )
    out.print(f"User {user.username} created with role {user.role.value}.", highlight=False)


def _set_active(username: str, *, active: bool) -> None:
    with _remote() as client:
        user = client.update_user(username=username, is_active=active)
    state = "enabled" if user.is_active else "disabled; their sessions and tokens stopped working"
    out.print(f"User {user.username} {state}.", highlight=False)


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument()]) -> None:
    """Disable a user: their sessions and tokens stop working at once."""
    _set_active(username, active=False)


@user_app.command("enable")
def user_enable(username: Annotated[str, typer.Argument()]) -> None:
    """Enable a disabled user."""
    _set_active(username, active=True)


# --- tokens -----------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="What the token is for.")],
    expires_in_days: Annotated[int | None, typer.Option(min=1, max=3650)] = None,
) -> None:
    """Create an API token and print it (shown only this once)."""
    with _remote() as client:
        created = client.create_token(name=name, expires_in_days=expires_in_days)
    err.print(
        f"Token {created.name!r} expires {_when(created.expires_at)}; it is shown only once:",
        highlight=False,
    )
    out.print(created.token, highlight=False, soft_wrap=True)


@token_app.command("ls")
def token_ls() -> None:
    """List your tokens."""
    with _remote() as client:
        tokens = client.list_tokens()
    table = Table("id", "name", "token", "created", "expires", "last used", "revoked")
    for token in tokens:
        table.add_row(
            str(token.id),
            token.name,
            token.prefix + "…",
            _when(token.created_at),
            _when(token.expires_at),
            _when(token.last_used_at),
            _when(token.revoked_at),
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument()]) -> None:
    """Revoke one of your tokens."""
    with _remote() as client:
        token = client.revoke_token(token_id=token_id)
    out.print(f"Token {token.id} ({token.name}) revoked.", highlight=False)


def main() -> None:
    """Entry point of the `dtaas` console script."""
    app()
