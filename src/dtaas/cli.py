"""The `dtaas` command line: serve the platform, manage the database, and use a server."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from pydantic import JsonValue
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from dtaas.accounting.schemas import StorageRead, parse_quota_mb
from dtaas.client import (
    EXAMPLE_URL,
    Client,
    Credentials,
    LogStream,
    ProgressCallback,
    credentials_path,
)
from dtaas.config import Settings, get_settings
from dtaas.errors import BackendUnavailable, DtaasError, InvalidInput, NotAuthenticated
from dtaas.library.access import COMMON
from dtaas.library.schemas import Entry, EntryType, SortKey
from dtaas.lifecycle.models import InstanceState, JobState, SnapshotState
from dtaas.lifecycle.schemas import JobRead
from dtaas.logs import configure_logging
from dtaas.security.models import Role
from dtaas.services.models import HealthStatus
from dtaas.services.schemas import ServiceRead
from dtaas.twins.schemas import ProblemRead
from dtaas.twins.validate import Problem, validate_folder

log = logging.getLogger(__name__)

# The shell's convention for a command ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130
# ... and for one whose reader went away, as in `dtaas asset cat big.csv | head` (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141

# Server messages and user values may contain "[...]" or ":name:": print them as text,
# never as markup or emoji codes.
out = Console(markup=False, emoji=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)


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
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except OSError as exc:  # a local file: missing, unreadable, or a disk that is full
            _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
        except typer.Abort as exc:
            # A prompt turns Ctrl-C into Abort; a closed stdin still ends with "Aborted!".
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise typer.Exit(EXIT_INTERRUPTED) from None
            raise


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush meets no closed pipe."""
    with suppress(OSError, ValueError):  # no file descriptor, e.g. under a test runner
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


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
asset_app = typer.Typer(
    help="Browse and transfer library files: <username>/... and common/...",
    no_args_is_help=True,
)
twin_app = typer.Typer(
    help="Find, create and check digital twins: <library>/digital_twins/<name>.",
    no_args_is_help=True,
)
instance_app = typer.Typer(
    help="Instances of DTs: run their phases, follow their jobs, stop and remove them.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(asset_app, name="asset")
app.add_typer(twin_app, name="twin")
app.add_typer(instance_app, name="instance")
snapshot_app = typer.Typer(
    help="Snapshots of instances: save one while it runs, re-spawn it, move it elsewhere.",
    no_args_is_help=True,
)
app.add_typer(snapshot_app, name="snapshot")
service_app = typer.Typer(
    help="Platform services (MQTT, AMQP, PostgreSQL, ...): list them and check their health.",
    no_args_is_help=True,
)
app.add_typer(service_app, name="service")
quota_app = typer.Typer(help="Storage quotas of users (admins).", no_args_is_help=True)
app.add_typer(quota_app, name="quota")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else "-"


def _print_table(table: Table) -> None:
    """Print a table; into a file or pipe as wide as it needs, one line per row for grep."""
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update_width(1000), table).maximum
    Console(file=out.file, width=width, markup=False, emoji=False, highlight=False).print(table)


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


# --- storage and quotas -----------------------------------------------------------------


def _quota_text(storage: StorageRead) -> str:
    size = "unlimited" if storage.quota_mb is None else f"{storage.quota_mb} MiB"
    source = "site default" if storage.quota_source == "site" else f"set for {storage.username}"
    return f"{size}, {source}"


@app.command()
def storage(
    username: Annotated[
        str | None, typer.Argument(help="Another user's storage (admins).", show_default=False)
    ] = None,
) -> None:
    """Show what you store (library, instances, snapshots) against your quota."""
    with Client.from_credentials() as client:
        used = client.get_storage(username=username)
    if used.quota_bytes is None:
        summary = f"{_size(used.used_bytes)} used"
    else:
        summary = (
            f"{_size(used.used_bytes)} of {_size(used.quota_bytes)} used, "
            f"{_size(used.free_bytes or 0)} free" + (", over the quota" if used.over_quota else "")
        )
    out.print(f"{used.username}: {summary} (quota: {_quota_text(used)})")
    for part, size in (
        ("library", used.library_bytes),
        ("instances", used.instances_bytes),
        ("snapshots", used.snapshots_bytes),
    ):
        out.print(f"  {part:<10} {_size(size):>10}")


@quota_app.command("ls")
def quota_ls() -> None:
    """List every user's storage and quota."""
    with Client.from_credentials() as client:
        found = client.list_storage()
    table = Table("username", "library", "instances", "snapshots", "used", "quota")
    for used in found:
        table.add_row(
            used.username,
            _size(used.library_bytes),
            _size(used.instances_bytes),
            _size(used.snapshots_bytes),
            _size(used.used_bytes) + (" (over)" if used.over_quota else ""),
            _quota_text(used),
        )
    _print_table(table)


@quota_app.command("set")
def quota_set(
    username: Annotated[str, typer.Argument(metavar="USER")],
    quota: Annotated[
        str, typer.Argument(metavar="MB|none", help="Whole MiB, or none for the site default.")
    ],
) -> None:
    """Give a user their own storage quota, or return them to the site default."""
    quota_mb = parse_quota_mb(quota)
    with Client.from_credentials() as client:
        used = client.set_quota(username=username, quota_mb=quota_mb)
    out.print(
        f"{used.username}'s quota: {_quota_text(used)}; {_size(used.used_bytes)} used"
        + (", over the quota." if used.over_quota else ".")
    )


# --- library assets ---------------------------------------------------------------------

# The most entries the server lists per request.
PAGE_SIZE = 1000
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _size(size: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``20.0 MiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _BYTE_UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


@contextmanager
def _transfer_bar(description: str) -> Iterator[ProgressCallback]:
    """A progress bar on stderr, drawn only on a terminal so that scripts get clean output."""
    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
    )
    with progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _list_all(client: Client, *, path: str, sort: SortKey, descending: bool) -> list[Entry]:
    entries: list[Entry] = []
    while True:
        page = client.list_entries(
            path=path, sort=sort, descending=descending, offset=len(entries), limit=PAGE_SIZE
        )
        entries.extend(page.entries)
        if not page.entries or len(entries) >= page.total:
            return entries


@asset_app.command("ls")
def asset_ls(
    path: Annotated[
        str | None, typer.Argument(help="A folder; leave out for your library and common.")
    ] = None,
    sort: Annotated[SortKey, typer.Option(case_sensitive=False, help="Order by.")] = SortKey.NAME,
    reverse: Annotated[bool, typer.Option("--reverse", help="Reverse the order.")] = False,
    long: Annotated[
        bool, typer.Option("--long", "-l", help="A table with type, size and time.")
    ] = False,
) -> None:
    """List a library folder; folders are shown with a trailing '/'."""
    with Client.from_credentials() as client:
        entries = _list_all(client, path=path or "", sort=sort, descending=reverse)
    if not long:
        for entry in entries:
            out.print(entry.name + ("/" if entry.type == EntryType.FOLDER else ""))
        return
    table = Table("type", "size", "modified", "name")
    for entry in entries:
        is_folder = entry.type == EntryType.FOLDER
        table.add_row(
            entry.type.value,
            "-" if is_folder else _size(entry.size),
            _when(entry.mtime),
            entry.name + ("/" if is_folder else ""),
        )
    _print_table(table)


@asset_app.command("cat")
def asset_cat(path: Annotated[str, typer.Argument(help="A file, e.g. alice/data/x.csv.")]) -> None:
    """Write a file's bytes to stdout, unchanged."""
    stdout = typer.get_binary_stream("stdout")
    with Client.from_credentials() as client:
        client.stream_to(path=path, sink=stdout)
    stdout.flush()


@asset_app.command("get")
def asset_get(
    path: Annotated[str, typer.Argument(help="A file, or a folder to fetch as a zip.")],
    destination: Annotated[
        Path | None,
        typer.Argument(
            metavar="DEST", help="File to write, or a folder to put it in (default: here)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Download a file, or a folder as a zip, with a progress bar on stderr."""
    with Client.from_credentials() as client:
        entry = client.stat(path=path)
        name = entry.name + (".zip" if entry.type == EntryType.FOLDER else "")
        target = destination or Path(name)
        if target.is_dir():
            target = target / name
        if (target.exists() or target.is_symlink()) and not force:
            _fail(f"{target} exists; add --force to replace it.")
        with _transfer_bar(f"Downloading {entry.path}") as progress:
            client.download(path=entry.path, destination=target, progress=progress)
    out.print(f"Saved {entry.path} as {target} ({_size(target.stat().st_size)}).")


@asset_app.command("put")
def asset_put(
    files: Annotated[list[Path], typer.Argument(metavar="FILE", help="Local files.")],
    folder: Annotated[str, typer.Argument(metavar="FOLDER", help="e.g. alice/data.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files that exist.")
    ] = False,
    extract: Annotated[
        bool, typer.Option("--extract", help="Unpack .zip files into folders.")
    ] = False,
) -> None:
    """Upload files into a library folder, with a progress bar on stderr."""
    with Client.from_credentials() as client, _transfer_bar(f"Uploading to {folder}") as bar:
        uploaded = client.upload(
            folder=folder, files=files, overwrite=overwrite, extract=extract, progress=bar
        )
    for entry in uploaded.files:
        out.print(f"Uploaded {entry.path} ({_size(entry.size)}).")
    for unpacked in uploaded.extracted:
        out.print(f"Unpacked into {unpacked}/.")


@asset_app.command("rm")
def asset_rm(
    path: Annotated[str, typer.Argument()],
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Delete a folder with its content.")
    ] = False,
) -> None:
    """Delete a file or a folder."""
    with Client.from_credentials() as client:
        client.delete(path=path, recursive=recursive)
    out.print(f"Deleted {path}.")


@asset_app.command("mv")
def asset_mv(
    source: Annotated[str, typer.Argument(metavar="SRC")],
    destination: Annotated[str, typer.Argument(metavar="DEST", help="The new path.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a file.")] = False,
) -> None:
    """Rename or move a file or folder; DEST is its new path, not a folder to move into."""
    with Client.from_credentials() as client:
        moved = client.move(source=source, destination=destination, overwrite=overwrite)
    out.print(f"Moved {source} to {moved.path}.")


@asset_app.command("cp")
def asset_cp(
    source: Annotated[str, typer.Argument(metavar="SRC")],
    destination: Annotated[str, typer.Argument(metavar="DEST", help="The path of the copy.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a file.")] = False,
) -> None:
    """Copy a file or folder, e.g. from common/ into your library."""
    with Client.from_credentials() as client:
        copied = client.copy(source=source, destination=destination, overwrite=overwrite)
    out.print(f"Copied {source} to {copied.path}.")


@asset_app.command("mkdir")
def asset_mkdir(path: Annotated[str, typer.Argument()]) -> None:
    """Create a folder; its parent must exist."""
    with Client.from_credentials() as client:
        folder = client.make_folder(path=path)
    out.print(f"Created {folder.path}/.")


@asset_app.command("search")
def asset_search(
    query: Annotated[str, typer.Argument(help="A name part or glob, or text with --text.")],
    text: Annotated[bool, typer.Option("--text", help="Search inside text files.")] = False,
    path: Annotated[str | None, typer.Option(help="Search only this folder.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most results.")] = 100,
) -> None:
    """Find files and folders by name, or lines of text, in your library and common.

    Prints one path per line, or path:line: text with --text.
    """
    with Client.from_credentials() as client:
        result = client.search(query=query, mode="text" if text else "name", path=path, limit=limit)
    for hit in result.hits:
        out.print(hit.path if hit.line is None else f"{hit.path}:{hit.line}: {hit.snippet}")
    if result.truncated:
        # On stderr, so that a script reading the paths does not take this for one.
        err.print(
            f"The search stopped early ({len(result.hits)} results shown); "
            "narrow it with --path or raise --limit."
        )


# --- digital twins ----------------------------------------------------------------------

LIBRARY_TWIN = re.compile(r"[^/]+/digital_twins/[^/]+/?")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _problem_counts(errors: int, warnings: int) -> str:
    if not errors and not warnings:
        return "no problems found"
    return f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"


def _by_position(problem: Problem) -> tuple[str, int, int]:
    return problem.file, problem.line or 0, problem.column or 0


def _from_server(problem: ProblemRead, *, under: str = "") -> Problem:
    """A problem the server found; ``under`` prefixes its file (relative to the DT)."""
    file = f"{under}/{problem.file}" if under else problem.file
    return Problem(problem.severity, file, problem.line, problem.column, problem.message)


def _shown_from_here(folder: Path) -> str:
    """``folder`` as a path from the current directory, for `file:line:col` prefixes."""
    try:
        return os.path.relpath(folder)
    except ValueError:  # another drive (Windows): keep it absolute
        return str(folder)


def _library_assets(folder: Path) -> Callable[[str], bool | None] | None:
    """Checks a DT's asset references on disk when the DT sits in a library layout,
    ``<library>/digital_twins/<dt>`` beside ``common/``; None anywhere else."""
    kinds = folder.parent
    library = kinds.parent
    common = library.parent / COMMON
    if kinds.name != "digital_twins" or not common.is_dir():
        return None

    def exists(reference: str) -> bool | None:
        parts = reference.strip("/").split("/")
        if parts[0] == COMMON:
            return common.joinpath(*parts[1:]).exists()
        if library.name == COMMON:
            return None  # relative to the library of whoever runs the DT
        return library.joinpath(*parts).exists()

    return exists


def _validate_offline(folder: Path) -> tuple[list[Problem], str]:
    """Problems of a local DT folder, with paths from the current directory."""
    checker = _library_assets(folder.resolve())
    report = validate_folder(folder, asset_exists=checker or (lambda _reference: None))
    shown = _shown_from_here(folder)
    if checker is None and report.manifest is not None and report.manifest.assets:
        err.print(
            f"note: {shown} is not in a library (<user>/digital_twins/<dt> beside common/), "
            "so its assets were not checked."
        )
    prefix = "" if shown == "." else f"{shown.rstrip('/')}/"
    problems = [replace(p, file=prefix + p.file) for p in report.problems]
    return problems, shown


@twin_app.command("ls")
def twin_ls() -> None:
    """List the DTs you can run: your own, then common's."""
    with Client.from_credentials() as client:
        twins = client.list_twins()
    table = Table("path", "name", "phases", "valid", "errors", "warnings")
    for twin in twins:
        table.add_row(
            twin.path,
            twin.name,
            ", ".join(twin.phases) or "-",
            "yes" if twin.valid else "no",
            str(twin.errors),
            str(twin.warnings),
        )
    _print_table(table)


@twin_app.command("show")
def twin_show(
    path: Annotated[str, typer.Argument(help="A DT, e.g. common/digital_twins/hello-world.")],
) -> None:
    """Show a DT: description, phases, parameters and problems."""
    with Client.from_credentials() as client:
        twin = client.get_twin(path=path)
    out.print(f"{twin.path}  ({twin.name})")
    if twin.description:
        out.print(twin.description.strip())
    out.print(f"phases: {', '.join(twin.phases) or '-'}")
    out.print(f"executor: {twin.executor or 'local'}")
    for label, items in (("assets", twin.assets), ("services", twin.services)):
        if items:
            out.print(f"{label}: {', '.join(items)}")
    if twin.parameters:
        out.print("parameters:")
        table = Table("name", "type", "default", "required", "help")
        for parameter in twin.parameters:
            table.add_row(
                parameter.name,
                parameter.type,
                "-" if parameter.default is None else json.dumps(parameter.default),
                "yes" if parameter.required else "no",
                parameter.help,
            )
        _print_table(table)
    out.print(f"problems: {_problem_counts(twin.errors, twin.warnings)}")
    for problem in sorted(map(_from_server, twin.problems), key=_by_position):
        out.print(f"  {problem.format()}")


@twin_app.command("templates")
def twin_templates() -> None:
    """List the templates `dtaas twin new --template` can start from."""
    with Client.from_credentials() as client:
        templates = client.list_templates()
    for template in templates:
        out.print(f"{template.name}: {template.description.strip().splitlines()[0]}")


@twin_app.command("new")
def twin_new(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, - and _.")],
    template: Annotated[
        str | None, typer.Option(help="A template; see `dtaas twin templates`.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--from", metavar="PATH", help="A DT to copy, e.g. common/digital_twins/x."),
    ] = None,
) -> None:
    """Create <you>/digital_twins/NAME from a template or as a copy of another DT."""
    if (template is None) == (source is None):
        _fail("Give either --template NAME or --from PATH.")
    with Client.from_credentials() as client:
        twin = client.create_twin(name=name, template=template, source=source)
    origin = f"template {template}" if template is not None else source
    out.print(f"Created {twin.path} from {origin}.")


@twin_app.command("validate")
def twin_validate(
    path: Annotated[
        str,
        typer.Argument(help="A DT folder on this machine, or a DT in the library on the server."),
    ],
) -> None:
    """Check a DT and print each problem as file:line:col: severity: message.

    A folder on this machine is checked here, without a server or credentials; any
    other path is a library path (<library>/digital_twins/<name>) checked by the server.
    Exits with 1 when there are errors, so CI pipelines can run it.
    """
    local = Path(path)
    if local.is_dir():
        problems, shown = _validate_offline(local)
    elif local.exists():
        _fail(f"{path} is a file; give the DT's folder.")
    elif LIBRARY_TWIN.fullmatch(path):
        with Client.from_credentials() as client:
            result = client.validate_twin(path=path)
        shown = result.path
        problems = [_from_server(p, under=shown) for p in [*result.errors, *result.warnings]]
    else:
        _fail(
            f"There is no folder {path} here, and it is not a library path "
            "<library>/digital_twins/<name> either."
        )
    problems.sort(key=_by_position)
    for problem in problems:
        out.print(problem.format())
    errors = sum(problem.severity == "error" for problem in problems)
    out.print(f"{shown}: {_problem_counts(errors, len(problems) - errors)}")
    if errors:
        raise typer.Exit(1)


@twin_app.command("plan")
def twin_plan(
    path: Annotated[str, typer.Argument(help="A DT in the library.")],
    executor: Annotated[
        str | None, typer.Option(help="Check against this executor: local or ray.")
    ] = None,
) -> None:
    """A dry run: is the DT valid, are its assets there, do its services answer?

    Exits with 1 unless every check passes.
    """
    if executor not in (None, "local", "ray"):
        _fail(f"There is no executor {executor!r}; use local or ray.")
    with Client.from_credentials() as client:
        plan = client.plan_twin(path=path, executor=executor)
    for check in plan.checks:
        out.print(f"{'ok' if check.ok else 'FAIL':<4}  {check.check}: {check.message}")
    state = "ready" if plan.ready else "not ready"
    out.print(f"{plan.path} is {state} to run on {plan.executor}: {', '.join(plan.phases)}.")
    if not plan.ready:
        raise typer.Exit(1)


# --- running DTs: instances and jobs ----------------------------------------------------


def _reject_constant(constant: str) -> NoReturn:
    raise ValueError(constant)


def _param(raw: str) -> tuple[str, JsonValue]:
    """``NAME=VALUE`` of --param: the value as JSON when it is (``3``, ``true``, ``"x"``),
    else as text."""
    name, equals, text = raw.partition("=")
    if not equals or not name.strip():
        raise typer.BadParameter(f"{raw!r} is not NAME=VALUE, e.g. speed=2.5", param_hint="--param")
    value: JsonValue
    try:
        # NaN, Infinity and 1e999 are no JSON values: the server would refuse them.
        value = json.loads(text, parse_constant=_reject_constant)
        if isinstance(value, float) and not math.isfinite(value):
            value = text
    except ValueError:
        value = text
    return name.strip(), value


def _write_output(stream: str, text: str) -> None:
    # sys.stdout and sys.stderr are looked up now: the spinner swaps in its own.
    target = sys.stdout if stream == "stdout" else sys.stderr
    target.write(text)
    target.flush()


class _Lines:
    """A job's output, passed on by whole lines, so its stdout and stderr interleave line
    by line and the spinner redraws between lines, never inside one."""

    def __init__(self) -> None:
        self.pending = {"stdout": "", "stderr": ""}

    def write(self, stream: str, text: str) -> None:
        complete, newline, rest = (self.pending[stream] + text).rpartition("\n")
        self.pending[stream] = rest
        if newline:
            _write_output(stream, complete + newline)

    def flush(self) -> None:
        for stream, text in self.pending.items():
            if text:
                _write_output(stream, text)
        self.pending = {"stdout": "", "stderr": ""}


def _job_status(job: JobRead, state: JobState) -> str:
    return f"job {job.id} ({job.phase}): {state.value}"


def _follow(
    client: Client, job: JobRead, *, streams: Collection[str] = ("stdout", "stderr")
) -> JobRead:
    """Pass a job's output on as it comes until the job ends, and return the ended job.

    stdout lines go to stdout and stderr lines to stderr; on a terminal, a spinner on
    stderr shows the job's state and time. Ctrl-C asks the job to stop and exits with 130.
    """
    lines = _Lines()
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
        # Job lines for stdout go there; through the spinner only if it shares the terminal.
        redirect_stdout=out.is_terminal,
    )
    try:
        with progress, closing(client.follow_job(job_id=job.id)) as events:
            task = progress.add_task(_job_status(job, job.state))
            for event in events:
                if event.kind == "log" and event.stream is not None and event.stream in streams:
                    lines.write(event.stream, event.text)
                elif event.kind == "state" and event.state is not None:
                    progress.update(task, description=_job_status(job, event.state))
    except KeyboardInterrupt:
        lines.flush()
        err.print(f"Interrupted; asking job {job.id} to stop.")
        with suppress(DtaasError):
            client.cancel_job(job_id=job.id)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    lines.flush()
    return client.get_job(job_id=job.id)


def _exit_with(job: JobRead) -> None:
    """Report how a followed job ended, on stderr; exit with its status unless it succeeded.

    A job that failed with an exit status passes it on; one that failed without (killed,
    over a limit) or was cancelled exits with 1.
    """
    err.print(f"Job {job.id} ({job.phase}) {job.state.value}: {job.reason or 'no reason given'}.")
    if job.state == JobState.SUCCEEDED:
        return
    code = job.exit_code
    raise typer.Exit(code if code is not None and 0 < code < 256 else 1)


@app.command("run")
def run_twin(
    twin: Annotated[
        str | None,
        typer.Argument(metavar="[DT]", help="A DT, e.g. common/digital_twins/hello-world."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", metavar="NAME", help="One of your saved configurations."),
    ] = None,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help='A parameter value, repeatable; JSON (3, true, "x") or else text.',
        ),
    ] = None,
    phase: Annotated[str, typer.Option(help="The phase to run.")] = "execute",
    name: Annotated[
        str | None, typer.Option(help="Name of the instance (default: the DT's).")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow", "-f", help="Stream the job's output; exit with its status."
        ),
    ] = False,
    from_snapshot: Annotated[
        int | None,
        typer.Option(
            "--from-snapshot",
            metavar="ID",
            help="Re-spawn a snapshot instead: its restore (or execute) phase continues "
            "from the saved state.",
        ),
    ] = None,
) -> None:
    """Deploy a DT as a new instance and run one of its phases, or re-spawn a snapshot.

    With --follow, the job's stdout and stderr are passed on as they come, and the
    command exits with the job's exit status (1 if it failed without one, 130 after
    Ctrl-C, which asks the job to stop).
    """
    if (twin is None) == (from_snapshot is None):
        raise typer.BadParameter("give either a DT or --from-snapshot ID", param_hint="DT")
    if from_snapshot is not None and (config or params or phase != "execute"):
        raise typer.BadParameter(
            "a snapshot keeps its DT, values and phase; drop --config, --param and --phase",
            param_hint="--from-snapshot",
        )
    values = dict(_param(raw) for raw in params or [])
    with Client.from_credentials() as client:
        if twin is None:
            handle = client.respawn(snapshot_id=from_snapshot or 0, name=name)
            phase = handle.job.phase
        else:
            handle = client.run(
                twin_path=twin, values=values, configuration=config, phase=phase, name=name
            )
        where = f"instance {handle.instance_id} ({handle.instance.name})"
        if not follow:
            out.print(f"Created {where}; job {handle.job_id} is queued to run {phase}.")
            out.print(f"Follow it with: dtaas instance logs {handle.job_id} --follow")
            return
        # On stderr: stdout carries the job's own output only.
        err.print(f"Created {where}; job {handle.job_id} runs {phase}.")
        job = _follow(client, handle.job)
    _exit_with(job)


@instance_app.command("ls")
def instance_ls() -> None:
    """List your instances, newest first."""
    with Client.from_credentials() as client:
        instances = client.list_instances()
    table = Table("id", "name", "dt", "state", "configuration", "created")
    for instance in instances:
        table.add_row(
            str(instance.id),
            instance.name,
            instance.twin_path,
            instance.state.value,
            instance.configuration_name or "-",
            _when(instance.created_at),
        )
    _print_table(table)


@instance_app.command("show")
def instance_show(instance_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Show an instance: its DT, state, parameter values and jobs."""
    with Client.from_credentials() as client:
        instance = client.get_instance(instance_id=instance_id)
    out.print(f"instance {instance.id}: {instance.name}")
    out.print(f"dt: {instance.twin_path}")
    out.print(f"state: {instance.state.value}")
    out.print(f"phases: {', '.join(instance.phases) or '-'}")
    out.print(f"executor: {instance.executor}")
    out.print(f"configuration: {instance.configuration_name or '-'}")
    out.print(f"values: {json.dumps(instance.values, sort_keys=True)}")
    out.print(f"created: {_when(instance.created_at)}")
    if not instance.jobs:
        out.print("jobs: none yet")
        return
    table = Table("job", "phase", "state", "executor", "exit", "started", "ended", "reason")
    for job in instance.jobs:
        table.add_row(
            str(job.id),
            job.phase,
            job.state.value,
            job.executor,
            "-" if job.exit_code is None else str(job.exit_code),
            _when(job.started_at),
            _when(job.ended_at),
            job.reason or "-",
        )
    _print_table(table)


@instance_app.command("logs")
def instance_logs(
    job_or_instance: Annotated[
        int,
        typer.Argument(
            metavar="JOB_OR_INSTANCE",
            help="A job id; with --instance, an instance id (its latest job).",
        ),
    ],
    instance: Annotated[
        bool, typer.Option("--instance", "-i", help="Show the latest job of this instance.")
    ] = False,
    stderr: Annotated[
        bool, typer.Option("--stderr", help="The job's stderr instead of its stdout.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Stream stdout and stderr until the job ends; exit with its status.",
        ),
    ] = False,
) -> None:
    """Print a job's output; with --follow, as it comes until the job ends."""
    with Client.from_credentials() as client:
        if instance:
            jobs = client.get_instance(instance_id=job_or_instance).jobs
            if not jobs:
                _fail(f"Instance {job_or_instance} has run no phase yet.")
            job = jobs[-1]
        else:
            job = client.get_job(job_id=job_or_instance)
        if not follow:
            _write_output("stdout", client.job_logs(job_id=job.id, stream=_stream(stderr)))
            return
        ended = _follow(client, job, streams=(_stream(stderr),) if stderr else ("stdout", "stderr"))
    _exit_with(ended)


def _stream(stderr: bool) -> LogStream:
    return "stderr" if stderr else "stdout"


@instance_app.command("phase")
def instance_phase(
    instance_id: Annotated[int, typer.Argument(metavar="ID")],
    phase: Annotated[str, typer.Argument(help="e.g. create, execute, analyze.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow", "-f", help="Stream the job's output; exit with its status."
        ),
    ] = False,
) -> None:
    """Run a lifecycle phase of an instance."""
    with Client.from_credentials() as client:
        job = client.run_phase(instance_id=instance_id, phase=phase)
        if not follow:
            out.print(f"Job {job.id} is queued to run {phase} on instance {instance_id}.")
            return
        err.print(f"Job {job.id} runs {phase} on instance {instance_id}.")
        ended = _follow(client, job)
    _exit_with(ended)


@instance_app.command("terminate")
def instance_terminate(instance_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop an instance's running phase, then run its terminate script if it has one."""
    with Client.from_credentials() as client:
        instance = client.terminate(instance_id=instance_id)
    if instance.state == InstanceState.TERMINATED:
        out.print(f"Instance {instance.id} terminated.")
    else:
        out.print(
            f"Instance {instance.id} is {instance.state.value}; "
            f"see `dtaas instance show {instance.id}`."
        )


@instance_app.command("clean")
def instance_clean(instance_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Run an instance's clean script if it has one, then remove its working copy."""
    with Client.from_credentials() as client:
        instance = client.clean(instance_id=instance_id)
    if instance.state == InstanceState.CLEANED:
        out.print(f"Instance {instance.id} cleaned; its working copy was removed.")
    else:
        out.print(
            f"Instance {instance.id} is cleaning up: its clean script runs, then its working "
            "copy is removed."
        )


@instance_app.command("rm")
def instance_rm(instance_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Delete an instance with its jobs and logs."""
    with Client.from_credentials() as client:
        client.delete_instance(instance_id=instance_id)
    out.print(f"Instance {instance_id} deleted.")


# --- services ---------------------------------------------------------------------------


def _health_text(service: ServiceRead) -> str:
    health = service.health
    if health.status == HealthStatus.UP and health.latency_ms is not None:
        return f"up ({health.latency_ms:.1f} ms)"
    if health.error:
        return f"{health.status.value}: {health.error}"
    return health.status.value


@service_app.command("ls")
def service_ls() -> None:
    """List the services with their health (checked now, or within the last seconds)."""
    with Client.from_credentials() as client:
        services = client.list_services()
    table = Table("name", "kind", "source", "health", "url")
    for service in services:
        table.add_row(
            service.name,
            service.kind.value,
            service.source,
            _health_text(service),
            service.url,
        )
    _print_table(table)


@service_app.command("check")
def service_check(name: Annotated[str, typer.Argument(help="A service, e.g. mqtt.")]) -> None:
    """Check a service now; exits with 1 if it is down, so scripts can wait on it."""
    with Client.from_credentials() as client:
        service = client.check_service(name=name)
    out.print(f"{service.name} ({service.kind.value}, {service.url}) is {_health_text(service)}")
    if service.health.status != HealthStatus.UP:
        raise typer.Exit(1)


def main() -> None:
    """Entry point of the `dtaas` console script."""
    app()


# --- snapshots -----------------------------------------------------------------------------------


def _snapshot_size(size: int | None) -> str:
    return "-" if size is None else _size(size)


@snapshot_app.command("create")
def snapshot_create(
    instance_id: Annotated[int, typer.Argument(metavar="INSTANCE")],
    name: Annotated[str | None, typer.Option(help="A name for the snapshot.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until it is ready or failed.")
    ] = True,
) -> None:
    """Save an instance, running or not; exits 1 if the snapshot failed."""
    with Client.from_credentials() as client:
        snapshot = client.create_snapshot(instance_id=instance_id, name=name)
        if wait:
            snapshot = client.wait_for_snapshot(snapshot_id=snapshot.id)
    if snapshot.state == SnapshotState.FAILED:
        err.print(f"Snapshot {snapshot.id} failed: {snapshot.reason}.")
        raise typer.Exit(1)
    out.print(
        f"Snapshot {snapshot.id} of instance {instance_id} is {snapshot.state.value}"
        + (f" ({_snapshot_size(snapshot.size_bytes)})." if snapshot.size_bytes else ".")
    )


@snapshot_app.command("ls")
def snapshot_ls(
    instance_id: Annotated[
        int | None, typer.Option("--instance", "-i", metavar="ID", help="Of this instance only.")
    ] = None,
) -> None:
    """List your snapshots, newest first, with the storage they take."""
    with Client.from_credentials() as client:
        found = client.list_snapshots(instance_id=instance_id)
    table = Table("id", "name", "dt", "instance", "state", "size", "created")
    for snapshot in found:
        table.add_row(
            str(snapshot.id),
            snapshot.name,
            snapshot.twin_path,
            "-" if snapshot.instance_id is None else str(snapshot.instance_id),
            snapshot.state.value + (" (auto)" if snapshot.auto else ""),
            _snapshot_size(snapshot.size_bytes),
            _when(snapshot.created_at),
        )
    _print_table(table)
    total = sum(snapshot.size_bytes or 0 for snapshot in found)
    err.print(f"{len(found)} snapshot(s), {_size(total)} in all.")


@snapshot_app.command("show")
def snapshot_show(snapshot_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Show a snapshot: its DT, values, state, checksum and the jobs it had run."""
    with Client.from_credentials() as client:
        snapshot = client.get_snapshot(snapshot_id=snapshot_id)
    out.print(f"snapshot {snapshot.id}: {snapshot.name}")
    out.print(f"dt: {snapshot.twin_path}")
    out.print(
        f"state: {snapshot.state.value}" + (f" ({snapshot.reason})" if snapshot.reason else "")
    )
    out.print(f"instance: {snapshot.instance_id if snapshot.instance_id is not None else '-'}")
    out.print(f"size: {_snapshot_size(snapshot.size_bytes)}")
    out.print(f"sha256: {snapshot.sha256 or '-'}")
    out.print(f"created: {_when(snapshot.created_at)}")
    values = snapshot.details.get("values")
    if values is not None:
        out.print(f"values: {json.dumps(values, sort_keys=True)}")
    jobs = snapshot.details.get("jobs") or []
    if jobs:
        out.print("jobs: " + ", ".join(f"{j['id']} {j['phase']} {j['state']}" for j in jobs))


@snapshot_app.command("download")
def snapshot_download(
    snapshot_id: Annotated[int, typer.Argument(metavar="ID")],
    destination: Annotated[
        Path | None, typer.Argument(metavar="[FILE]", help="Default: snapshot-ID.tar.zst")
    ] = None,
) -> None:
    """Save a snapshot's file, checked against its sha256."""
    target = destination or Path(f"snapshot-{snapshot_id}.tar.zst")
    with Client.from_credentials() as client:
        saved = client.download_snapshot(snapshot_id=snapshot_id, destination=target)
    out.print(f"Saved snapshot {snapshot_id} as {saved} ({_size(saved.stat().st_size)}).")


@snapshot_app.command("upload")
def snapshot_upload(
    source: Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False)],
    name: Annotated[str | None, typer.Option(help="A name for the snapshot.")] = None,
) -> None:
    """Upload a snapshot file made elsewhere; it is verified before it is listed."""
    with Client.from_credentials() as client:
        snapshot = client.upload_snapshot(source=source, name=name)
    out.print(f"Uploaded snapshot {snapshot.id} ({snapshot.twin_path}); re-spawn it with:")
    out.print(f"  dtaas run --from-snapshot {snapshot.id}")


@snapshot_app.command("rm")
def snapshot_rm(snapshot_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Delete a snapshot and its file."""
    with Client.from_credentials() as client:
        client.delete_snapshot(snapshot_id=snapshot_id)
    out.print(f"Deleted snapshot {snapshot_id}.")
