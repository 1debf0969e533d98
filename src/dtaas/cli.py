"""The `dtaas` command line: serve the platform, manage the database, and use a server."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from dtaas.client import EXAMPLE_URL, Client, Credentials, credentials_path
from dtaas.config import Settings, get_settings
from dtaas.errors import BackendUnavailable, DtaasError, InvalidInput, NotAuthenticated
from dtaas.logs import configure_logging
from dtaas.security.models import Role

log = logging.getLogger(__name__)

# The shell's convention for a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

# Server messages and user values may contain "[...]": print them as text, never as markup.
out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    err.print(Text.assemble(("error:", "red"), " ", message))
    raise typer.Exit(1)


class _Commands(TyperGroup):
    """The root command group: the one place where a command's errors become exit codes."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer does not export its click Context
        try:
            return super().invoke(ctx)
        except DtaasError as exc:
            _fail(exc.message)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Abort as exc:
            # A prompt turns Ctrl-C into Abort; a closed stdin still ends with "Aborted!".
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise typer.Exit(EXIT_INTERRUPTED) from None
            raise


app = typer.Typer(
    name="dtaas",
    cls=_Commands,
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


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _print_table(table: Table) -> None:
    """Print a table; into a file or pipe as wide as it needs, one line per row for grep."""
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update_width(1000), table).maximum
    Console(file=out.file, width=width, markup=False, highlight=False).print(table)


# --- running the platform ---------------------------------------------------------------


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError says which setting is wrong
        raise InvalidInput(f"The configuration is not valid:\n{exc}") from exc


@contextmanager
def _database_errors(settings: Settings) -> Iterator[None]:
    """Turn a database that cannot be opened into a message instead of a traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except OperationalError as exc:
        where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        raise BackendUnavailable(
            f"Cannot use the database {where}: {exc.orig}. Check DTAAS_DATABASE_URL."
        ) from exc


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
    with _database_errors(settings):
        passwords = prepare(settings)
    if passwords:
        out.rule("Demo users created (passwords are shown only this once)")
        for username, password in passwords.items():
            out.print(f"  {username:<8} {password}")
        out.rule()
    bind_host = host or settings.host
    bind_port = port or settings.port
    out.print(f"dtaas is serving on http://{bind_host}:{bind_port}")
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
        with _database_errors(settings):
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
        with _database_errors(settings), db.make_sessionmaker(engine)() as session:
            db.upgrade(engine)
            admin = security.bootstrap_admin(
                session=session, settings=settings, username=username, password=password
            )
    finally:
        engine.dispose()
    out.print(f"Administrator {admin.username} created; sign in with `dtaas login`.")


# --- signing in -------------------------------------------------------------------------


@app.command()
def login(
    *,
    server: Annotated[
        str,
        typer.Option(prompt="Server URL", envvar="DTAAS_SERVER", help=f"e.g. {EXAMPLE_URL}"),
    ] = EXAMPLE_URL,
    username: Annotated[str, typer.Option(prompt=True, help="Your username.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="Prompted for if left out.")
    ],
    token_name: Annotated[str, typer.Option(help="Name of the token created.")] = "cli",
) -> None:
    """Sign in and store a new API token in the credentials file (mode 0600).

    The file is $DTAAS_CREDENTIALS, else ~/.config/dtaas/credentials.
    """
    with Client(server) as anonymous:
        created = anonymous.create_token_with_password(
            username=username, password=password, token_name=token_name
        )
    stored = Credentials(
        server=anonymous.base_url,
        username=username.strip().lower(),  # how the server matches names
        token=created.token,
        token_id=created.id,
    )
    try:
        path = stored.save()
    except OSError as exc:
        # Best effort: leave no unused token behind, but report the file, the real problem.
        with Client(stored.server, token=stored.token) as client, suppress(DtaasError):
            client.revoke_token(token_id=created.id)
        raise DtaasError(
            f"Cannot write the credentials file {credentials_path()} ({exc.strerror}); "
            "set DTAAS_CREDENTIALS to a file you may write."
        ) from exc
    out.print(f"Signed in to {stored.server} as {stored.username}; token stored in {path}.")


@app.command()
def logout() -> None:
    """Revoke the stored token on its server and delete the credentials file."""
    stored = Credentials.load()
    with Client(stored.server, token=stored.token) as client:
        try:
            if stored.token_id is not None:
                client.revoke_token(token_id=stored.token_id)
            else:  # stored before token ids were: find the token by its prefix
                for token in client.list_tokens():
                    if token.revoked_at is None and stored.token.startswith(token.prefix):
                        client.revoke_token(token_id=token.id)
            outcome = "the token was revoked"
        except NotAuthenticated:
            outcome = "the token had already stopped working"
    credentials_path().unlink(missing_ok=True)
    out.print(f"Signed out of {stored.server}; {outcome}.")


@app.command()
def whoami() -> None:
    """Show who the stored token signs in as."""
    with Client.from_credentials() as client:
        me = client.whoami()
    out.print(
        f"{me.user.username} ({me.user.role.value}) in {me.organisation} at {client.base_url}"
    )


# --- users ------------------------------------------------------------------------------


@user_app.command("ls")
def user_ls() -> None:
    """List users."""
    with Client.from_credentials() as client:
        users = client.list_users()
    table = Table("username", "name", "role", "status", "created")
    for user in users:
        status = "active" if user.is_active else "disabled"
        table.add_row(
            user.username, user.full_name, user.role.value, status, _when(user.created_at)
        )
    _print_table(table)


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument()],
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted for if left out."
        ),
    ],
    role: Annotated[Role, typer.Option(case_sensitive=False)] = Role.USER,
    full_name: Annotated[str, typer.Option()] = "",
) -> None:
    """Create a user."""
    with Client.from_credentials() as client:
        user = client.create_user(
            username=username, password=password, role=role, full_name=full_name
        )
    out.print(f"User {user.username} created with role {user.role.value}.")


def _set_active(username: str, *, active: bool) -> None:
    with Client.from_credentials() as client:
        user = client.update_user(username=username, is_active=active)
    state = "enabled" if user.is_active else "disabled; their sessions and tokens stopped working"
    out.print(f"User {user.username} {state}.")


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
    with Client.from_credentials() as client:
        created = client.create_token(name=name, expires_in_days=expires_in_days)
    # The message goes to stderr so that `TOKEN=$(dtaas token create ci)` captures the token.
    err.print(f"Token {created.name!r} expires {_when(created.expires_at)}; it is shown only once:")
    out.print(created.token)


@token_app.command("ls")
def token_ls() -> None:
    """List your tokens."""
    with Client.from_credentials() as client:
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
    _print_table(table)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[int, typer.Argument()]) -> None:
    """Revoke one of your tokens."""
    with Client.from_credentials() as client:
        token = client.revoke_token(token_id=token_id)
    out.print(f"Token {token.id} ({token.name}) revoked.")


def main() -> None:
    """Entry point of the `dtaas` console script."""
    app()
