"""The Python client of the dtaas REST API.

Example::

    from pathlib import Path

    from dtaas.client import Client

    with Client.sign_in("http://127.0.0.1:8000", username="alice", password="...") as client:
        print(client.whoami().user.username)
        client.upload(folder="alice/data", files=[Path("levels.csv")])
        client.download(path="alice/models/tank", destination=Path("tank.zip"))

Every method returns the API's pydantic models and raises the same
:class:`dtaas.errors.DtaasError` subclasses the server raised, rebuilt from the error
``type``; a server that cannot be reached raises :class:`dtaas.errors.BackendUnavailable`,
and an answer that is not from a dtaas server raises :class:`dtaas.errors.DtaasError`.
Local files that cannot be read or written raise the usual :class:`OSError`.

Transfers stream: uploads are read from disk and downloads written to disk chunk by
chunk, so a file of any size takes a few MiB of memory. Their ``progress`` callback is
called after every chunk with the bytes done so far and the total (``None`` if unknown).

Running a digital twin::

    with Client.from_credentials() as client:
        handle = client.run(twin_path="alice/digital_twins/tank", values={"setpoint_c": 45})
        job = handle.wait()
        print(job.state, job.exit_code)
        print(handle.logs())
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from dtaas.accounting.schemas import StorageRead
from dtaas.errors import (
    ERROR_TYPES,
    BackendUnavailable,
    DtaasError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    TooManyRequests,
)
from dtaas.library.schemas import (
    EntryDetail,
    EntryType,
    Listing,
    SearchResult,
    SortKey,
    Uploaded,
)
from dtaas.lifecycle.models import JobState, SnapshotState
from dtaas.lifecycle.schemas import InstanceDetail, InstanceRead, JobRead, SnapshotRead
from dtaas.security.models import Role
from dtaas.security.schemas import Me, TokenCreated, TokenRead, UserRead
from dtaas.services.schemas import ServiceRead
from dtaas.twins.schemas import (
    ConfigurationRead,
    PlanRead,
    TemplateRead,
    TwinDetail,
    TwinSummary,
    ValidationRead,
)

__all__ = [
    "Client",
    "Credentials",
    "InstanceHandle",
    "JobEvent",
    "ProgressCallback",
    "credentials_path",
]

ModelT = TypeVar("ModelT", bound=BaseModel)
EXAMPLE_URL = "http://127.0.0.1:8000"
LIBRARY = "/api/v1/library"
TWINS = "/api/v1/twins"
SERVICES = "/api/v1/services"
# Bytes read from disk or the network at a time: large enough to keep the link busy,
# small enough that a transfer's memory does not grow with the file.
CHUNK = 256 * 1024
ProgressCallback = Callable[[int, int | None], None]
LogStream = Literal["stdout", "stderr"]
# Seconds between state checks while waiting for a job: quick for short jobs, then calmer.
WAIT_FIRST_POLL = 0.1
WAIT_LAST_POLL = 1.0


def credentials_path() -> Path:
    """Where `dtaas login` keeps the server URL and token: ``$DTAAS_CREDENTIALS`` or
    ``$XDG_CONFIG_HOME/dtaas/credentials`` (default ``~/.config/dtaas/credentials``)."""
    named = os.environ.get("DTAAS_CREDENTIALS")
    if named:
        return Path(named)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dtaas" / "credentials"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A server URL and an API token, as stored by `dtaas login`."""

    server: str
    username: str
    token: str
    token_id: int | None = None  # lets `dtaas logout` revoke exactly this token

    def save(self, path: Path | None = None) -> Path:
        """Write the credentials readable by their owner only (mode 0600, folder 0700)."""
        path = path or credentials_path()
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, mode=0o700)
            path.parent.chmod(stat.S_IRWXU)  # mkdir's mode is filtered by the umask
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        # A leftover file keeps its old mode; narrow it before the token is written.
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {
                    "server": self.server,
                    "username": self.username,
                    "token": self.token,
                    "token_id": self.token_id,
                },
                handle,
            )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> Credentials:
        """Read stored credentials.

        Raises: NotAuthenticated if there are none or they are unreadable.
        """
        path = path or credentials_path()
        damaged = f"The credentials file {path} is damaged; run `dtaas login` again."
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotAuthenticated("You are not signed in; run `dtaas login` first.") from None
        except OSError as exc:
            raise NotAuthenticated(
                f"Cannot read the credentials file {path} ({exc.strerror}); "
                "fix its permissions or run `dtaas login` again."
            ) from exc
        except ValueError as exc:  # not JSON, or not UTF-8
            raise NotAuthenticated(damaged) from exc
        if not isinstance(data, dict):
            raise NotAuthenticated(damaged)
        server, username, token = (data.get(key) for key in ("server", "username", "token"))
        token_id = data.get("token_id")
        if not (isinstance(server, str) and isinstance(username, str) and isinstance(token, str)):
            raise NotAuthenticated(damaged)
        if not (server and token) or not (token_id is None or type(token_id) is int):
            raise NotAuthenticated(damaged)
        return cls(server=server, username=username, token=token, token_id=token_id)


# The first element of a FastAPI validation error's ``loc`` says where the value was sent.
_REQUEST_PARTS = frozenset({"body", "query", "path", "header", "cookie"})


def _describe(item: dict[str, Any]) -> str:
    """One error item as text; validation errors of the schema name their field."""
    message = str(item["msg"])
    if item.get("type") in ERROR_TYPES:
        return message  # our own messages already name the offending value
    loc = [str(part) for part in item.get("loc") or []]
    if loc and loc[0] in _REQUEST_PARTS:
        loc = loc[1:]
    return f"{'.'.join(loc)}: {message}" if loc else message


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    problems: list[tuple[str, list[str | int]]] = []
    try:
        items = response.json()["detail"]
        first = items[0]
        problems = [(_describe(item), list(item.get("loc") or [])) for item in items]
        message = "; ".join(text for text, _ in problems)
        error_class = ERROR_TYPES.get(str(first.get("type")))
        loc = first.get("loc") or None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        message = f"The server answered {response.status_code} {response.reason_phrase}."
        error_class, loc = None, None
    if error_class is None:
        # e.g. FastAPI's own 422 types ("missing", "string_too_short"): keep the status.
        error_class = next(
            (cls for cls in ERROR_TYPES.values() if cls.status_code == response.status_code),
            DtaasError,
        )
    if issubclass(error_class, TooManyRequests):
        retry = response.headers.get("retry-after", "1")
        raise TooManyRequests(message, retry_after=int(retry) if retry.isdigit() else 1, loc=loc)
    if issubclass(error_class, InvalidInput) and len(problems) > 1:
        # One (message, loc) per field, as the server's InvalidInput carried them.
        raise error_class(message, loc=loc, problems=problems)
    raise error_class(message, loc=loc)


class Client:
    """A connection to one dtaas server, authenticated by an API token."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Talk to the server at ``base_url``, sending ``token`` as a bearer token if given.

        Raises: InvalidInput unless ``base_url`` is an http:// or https:// URL.
        """
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise InvalidInput(
                f"The server URL {base_url!r} is not valid ({exc}); use e.g. {EXAMPLE_URL}.",
                loc=["server"],
            ) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidInput(
                f"The server URL {base_url!r} must start with http:// or https://, "
                f"e.g. {EXAMPLE_URL}.",
                loc=["server"],
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_credentials(cls, path: Path | None = None) -> Client:
        """A client for the server and token stored by `dtaas login`."""
        stored = Credentials.load(path)
        return cls(stored.server, token=stored.token)

    @classmethod
    def sign_in(
        cls,
        base_url: str,
        *,
        username: str,
        password: str,
        token_name: str = "python-client",
        expires_in_days: int | None = None,
    ) -> Client:
        """Trade a password for a new API token and return a client that uses it."""
        with cls(base_url) as anonymous:
            created = anonymous.create_token_with_password(
                username=username,
                password=password,
                token_name=token_name,
                expires_in_days=expires_in_days,
            )
        return cls(base_url, token=created.token)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """Turn a server that cannot be reached, or stops answering, into BackendUnavailable."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(
                f"The dtaas server at {self.base_url} did not answer in time; try again later."
            ) from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"Cannot reach the dtaas server at {self.base_url}: {exc}. Is it running?"
            ) from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._transport_errors():
            response = self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response

    def _stream_into(
        self,
        path: str,
        *,
        params: dict[str, str],
        sink: BinaryIO,
        progress: ProgressCallback | None,
    ) -> int:
        """GET ``path`` and write the body to ``sink`` chunk by chunk; returns the bytes."""
        with self._transport_errors(), self._http.stream("GET", path, params=params) as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            length = response.headers.get("content-length")
            encoded = "content-encoding" in response.headers  # the length counts other bytes
            total = int(length) if length and length.isdigit() and not encoded else None
            done = 0
            if progress is not None:
                progress(done, total)
            for chunk in response.iter_bytes(CHUNK):
                sink.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        return done

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise self._not_dtaas() from exc

    def _not_dtaas(self) -> DtaasError:
        return DtaasError(
            f"The server at {self.base_url} did not answer like a dtaas server; "
            "check the server URL."
        )

    def _model(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        try:
            return model.model_validate(self._json(method, path, **kwargs))
        except ValidationError as exc:
            raise self._not_dtaas() from exc

    def _models(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> list[ModelT]:
        adapter = TypeAdapter(list[model])  # type: ignore[valid-type]  # model is a runtime class
        try:
            result: list[ModelT] = adapter.validate_python(self._json(method, path, **kwargs))
        except ValidationError as exc:
            raise self._not_dtaas() from exc
        return result

    # --- platform -------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """The server's health check."""
        data: dict[str, str] = self._json("GET", "/healthz")
        return data

    # --- signing in and tokens -----------------------------------------------------------

    def create_token_with_password(
        self,
        *,
        username: str,
        password: str,
        token_name: str = "cli",
        expires_in_days: int | None = None,
    ) -> TokenCreated:
        """Trade a username and password for a new API token."""
        body: dict[str, Any] = {
            "username": username,
            "password": password,
            "token_name": token_name,
        }
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return self._model(TokenCreated, "POST", "/api/v1/auth/token", json=body)

    def whoami(self) -> Me:
        """The signed-in user, their organisation and permissions."""
        return self._model(Me, "GET", "/api/v1/me")

    def change_password(self, *, current_password: str, new_password: str) -> None:
        """Change your own password."""
        self._request(
            "POST",
            "/api/v1/me/password",
            json={"current_password": current_password, "new_password": new_password},
        )

    def list_tokens(self) -> list[TokenRead]:
        """Your API tokens, revoked ones included."""
        return self._models(TokenRead, "GET", "/api/v1/tokens")

    def create_token(self, *, name: str, expires_in_days: int | None = None) -> TokenCreated:
        """Create an API token; its secret is in the result only."""
        body: dict[str, Any] = {"name": name}
        if expires_in_days is not None:
            body["expires_in_days"] = expires_in_days
        return self._model(TokenCreated, "POST", "/api/v1/tokens", json=body)

    def revoke_token(self, *, token_id: int) -> TokenRead:
        """Revoke a token."""
        return self._model(TokenRead, "DELETE", f"/api/v1/tokens/{token_id}")

    # --- users ---------------------------------------------------------------------------

    def list_users(self) -> list[UserRead]:
        """All users (admins)."""
        return self._models(UserRead, "GET", "/api/v1/users")

    def create_user(
        self, *, username: str, password: str, role: Role = Role.USER, full_name: str = ""
    ) -> UserRead:
        """Create a user (admins)."""
        body = {"username": username, "password": password, "role": role.value}
        if full_name:
            body["full_name"] = full_name
        return self._model(UserRead, "POST", "/api/v1/users", json=body)

    def update_user(
        self,
        *,
        username: str,
        role: Role | None = None,
        full_name: str | None = None,
        is_active: bool | None = None,
    ) -> UserRead:
        """Change a user's role or name, or disable or enable them (admins)."""
        body: dict[str, Any] = {}
        if role is not None:
            body["role"] = role.value
        if full_name is not None:
            body["full_name"] = full_name
        if is_active is not None:
            body["is_active"] = is_active
        return self._model(
            UserRead, "PATCH", f"/api/v1/users/{quote(username, safe='')}", json=body
        )

    # --- storage and quotas --------------------------------------------------------------

    def get_storage(self, *, username: str | None = None) -> StorageRead:
        """What you (or, for admins, ``username``) store, by part, against the quota.

        Raises: PermissionDenied for another user's unless you are an admin; NotFound.
        """
        if username is None:
            return self._model(StorageRead, "GET", "/api/v1/accounting/storage")
        path = f"/api/v1/accounting/storage/{quote(username, safe='')}"
        return self._model(StorageRead, "GET", path)

    def list_storage(self) -> list[StorageRead]:
        """Every user's storage and quota (admins).

        Raises: PermissionDenied unless you are an admin.
        """
        return self._models(StorageRead, "GET", "/api/v1/accounting/quotas")

    def set_quota(self, *, username: str, quota_mb: int | None) -> StorageRead:
        """Give a user their own storage quota in MiB; None returns them to the site default.

        Raises: PermissionDenied unless you are an admin; NotFound; InvalidInput for a
        negative quota.
        """
        path = f"/api/v1/accounting/quotas/{quote(username, safe='')}"
        return self._model(StorageRead, "PUT", path, json={"quota_mb": quota_mb})

    # --- library -------------------------------------------------------------------------

    def list_entries(
        self,
        *,
        path: str = "",
        sort: SortKey | str = SortKey.NAME,
        descending: bool = False,
        offset: int = 0,
        limit: int = 200,
    ) -> Listing:
        """One page of a library folder; the empty path lists your library and ``common``.

        Folders come first when sorted by name or type; ``total`` counts every entry.

        Raises: BadRequest for a malformed path; PermissionDenied outside your library
        and common; NotFound; Conflict if the path is a file.
        """
        params = {
            "path": path,
            "sort": str(sort),
            "descending": _flag(descending),
            "offset": str(offset),
            "limit": str(limit),
        }
        return self._model(Listing, "GET", f"{LIBRARY}/entries", params=params)

    def stat(self, *, path: str) -> EntryDetail:
        """Metadata of a file or folder, with the ETag to pass to :meth:`write_text`.

        Raises: BadRequest; PermissionDenied; NotFound.
        """
        return self._model(EntryDetail, "GET", f"{LIBRARY}/stat", params={"path": path})

    def read_bytes(self, *, path: str) -> bytes:
        """The whole content of a file, in memory; use :meth:`download` for large files.

        Raises: BadRequest; PermissionDenied; NotFound; Conflict if the path is a folder.
        """
        return self._request("GET", f"{LIBRARY}/file", params={"path": path}).content

    def stream_to(
        self, *, path: str, sink: BinaryIO, progress: ProgressCallback | None = None
    ) -> int:
        """Write a file's content to the open binary ``sink`` as it arrives; returns its size.

        Raises: BadRequest; PermissionDenied; NotFound; Conflict if the path is a folder;
        OSError if ``sink`` cannot be written.
        """
        return self._stream_into(
            f"{LIBRARY}/file", params={"path": path}, sink=sink, progress=progress
        )

    def download(
        self, *, path: str, destination: Path, progress: ProgressCallback | None = None
    ) -> Path:
        """Save a file, or a folder as a zip, to ``destination`` (replaced if it exists).

        The bytes go to a hidden file next to ``destination`` that is renamed into place
        once complete, so an interrupted download never leaves a truncated file behind.

        Raises: BadRequest; PermissionDenied; NotFound; InvalidInput if ``destination``
        is a folder; OSError if it cannot be written.
        """
        if destination.is_dir():
            raise InvalidInput(
                f"{destination} is a folder; name the file to save {path} as.",
                loc=["destination"],
            )
        if not destination.parent.is_dir():
            # Said here: the hidden partial file would otherwise be the one named.
            raise FileNotFoundError(
                errno.ENOENT, os.strerror(errno.ENOENT), str(destination.parent)
            )
        is_folder = self.stat(path=path).type == EntryType.FOLDER
        endpoint = f"{LIBRARY}/archive" if is_folder else f"{LIBRARY}/file"
        partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
        try:
            with partial.open("xb") as sink:
                self._stream_into(endpoint, params={"path": path}, sink=sink, progress=progress)
            partial.replace(destination)
        finally:
            partial.unlink(missing_ok=True)
        return destination

    def write_text(self, *, path: str, text: str, if_match: str | None = None) -> EntryDetail:
        """Create or replace a UTF-8 text file.

        Replacing a file needs ``if_match``: the ETag from :meth:`stat` or an earlier
        write, so that a newer version is never overwritten; ``"*"`` creates only.

        Raises: BadRequest; PermissionDenied; NotFound if the folder is missing;
        PayloadTooLarge over the server's edit limit; PreconditionRequired when replacing
        without ``if_match``; PreconditionFailed when ``if_match`` is stale; Conflict if
        the path is a folder.
        """
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if if_match is not None:
            headers["If-Match"] = if_match
        return self._model(
            EntryDetail,
            "PUT",
            f"{LIBRARY}/file",
            params={"path": path},
            content=text.encode("utf-8"),
            headers=headers,
        )

    def upload(
        self,
        *,
        folder: str,
        files: Sequence[Path],
        overwrite: bool = False,
        extract: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Uploaded:
        """Upload local files into a library folder, streamed from disk.

        Each file keeps its name; ``extract`` unpacks ``.zip`` files into folders of the
        same name instead. The server stores nothing unless the whole upload succeeds.
        ``progress`` counts the bytes of the files sent, out of their total size.

        Raises: InvalidInput if ``files`` is empty, two files share a name, or a name or
        file cannot be uploaded; BadRequest; PermissionDenied; NotFound if ``folder`` does
        not exist; Conflict if a file exists and ``overwrite`` is false; PayloadTooLarge;
        OSError if a local file cannot be read.
        """
        body = _MultipartBody(files)
        params = {"path": folder, "overwrite": _flag(overwrite), "extract": _flag(extract)}
        headers = {
            "Content-Type": body.content_type,
            # Sent up front so the server can refuse an upload over its limit at once.
            "Content-Length": str(body.length),
        }
        return self._model(
            Uploaded,
            "POST",
            f"{LIBRARY}/upload",
            params=params,
            headers=headers,
            content=body.chunks(progress),
        )

    def make_folder(self, *, path: str) -> EntryDetail:
        """Create a folder; its parent must exist.

        Raises: BadRequest; PermissionDenied; NotFound; Conflict if the path exists.
        """
        return self._model(EntryDetail, "POST", f"{LIBRARY}/folders", json={"path": path})

    def move(self, *, source: str, destination: str, overwrite: bool = False) -> EntryDetail:
        """Rename or move a file or folder; ``destination`` is its new path.

        Raises: BadRequest; PermissionDenied; NotFound; Conflict if ``destination``
        exists (a file is replaced with ``overwrite``, a folder never).
        """
        body = {"source": source, "destination": destination, "overwrite": overwrite}
        return self._model(EntryDetail, "POST", f"{LIBRARY}/move", json=body)

    def copy(self, *, source: str, destination: str, overwrite: bool = False) -> EntryDetail:
        """Copy a file or folder, e.g. from ``common/`` into your library.

        Raises: BadRequest; PermissionDenied; NotFound; Conflict if ``destination``
        exists (a file is replaced with ``overwrite``, a folder never).
        """
        body = {"source": source, "destination": destination, "overwrite": overwrite}
        return self._model(EntryDetail, "POST", f"{LIBRARY}/copy", json=body)

    def delete(self, *, path: str, recursive: bool = False) -> None:
        """Delete a file, or a folder (one with content only when ``recursive``).

        Raises: BadRequest; PermissionDenied; NotFound; Conflict for a folder that is not
        empty without ``recursive``, or a folder of the library layout.
        """
        params = {"path": path, "recursive": _flag(recursive)}
        self._request("DELETE", f"{LIBRARY}/entries", params=params)

    def search(
        self,
        *,
        query: str,
        mode: Literal["name", "text"] = "name",
        path: str | None = None,
        limit: int = 100,
    ) -> SearchResult:
        """Find files and folders by name (substring or glob) or lines of text in files.

        Searches your library and ``common``, or only the folder ``path``; ``truncated``
        says when the result limit or the server's time limit stopped the search.

        Raises: InvalidInput for an empty query; BadRequest; PermissionDenied; NotFound.
        """
        params = {"q": query, "mode": mode, "limit": str(limit)}
        if path:
            params["path"] = path
        return self._model(SearchResult, "GET", f"{LIBRARY}/search", params=params)

    # --- services ------------------------------------------------------------------------

    def list_services(self) -> list[ServiceRead]:
        """Every service in the catalogue with its health, checked within a few seconds."""
        return self._models(ServiceRead, "GET", SERVICES)

    def get_service(self, *, name: str) -> ServiceRead:
        """One service with its health.

        Raises: NotFound.
        """
        return self._model(ServiceRead, "GET", f"{SERVICES}/{quote(name, safe='')}")

    def check_service(self, *, name: str) -> ServiceRead:
        """Check a service now, whatever result the server has cached.

        Raises: NotFound.
        """
        return self._model(ServiceRead, "POST", f"{SERVICES}/{quote(name, safe='')}/check")

    def register_service(
        self,
        *,
        name: str,
        kind: str,
        url: str,
        username: str | None = None,
        password: str | None = None,
        description: str = "",
    ) -> ServiceRead:
        """Add an external service to the catalogue (admins); the server encrypts the password.

        Raises: InvalidInput for a bad name, kind or URL; PermissionDenied unless an admin;
        Conflict if the name is taken.
        """
        body: dict[str, str] = {"name": name, "kind": kind, "url": url}
        if username is not None:
            body["username"] = username
        if password is not None:
            body["password"] = password
        if description:
            body["description"] = description
        return self._model(ServiceRead, "POST", SERVICES, json=body)

    def delete_service(self, *, name: str) -> None:
        """Remove a registered service (admins).

        Raises: PermissionDenied unless an admin; NotFound; Conflict for a platform service.
        """
        self._request("DELETE", f"{SERVICES}/{quote(name, safe='')}")

    # --- digital twins -------------------------------------------------------------------

    def list_twins(self) -> list[TwinSummary]:
        """Every DT you can see, with its validity: your own first, then common's."""
        return self._models(TwinSummary, "GET", TWINS)

    def get_twin(self, *, path: str) -> TwinDetail:
        """A DT: description, files, phases, parameters and every validation problem.

        Raises: BadRequest for a malformed path; PermissionDenied; NotFound unless ``path``
        is a DT folder, ``<library>/digital_twins/<name>``.
        """
        return self._model(TwinDetail, "GET", f"{TWINS}/detail", params={"path": path})

    def validate_twin(self, *, path: str) -> ValidationRead:
        """Every error and warning of a DT on the server, with file, line and column.

        Raises: BadRequest; PermissionDenied; NotFound.
        """
        return self._model(ValidationRead, "GET", f"{TWINS}/validation", params={"path": path})

    def plan_twin(self, *, path: str, executor: str | None = None) -> PlanRead:
        """A dry run before any compute starts: validity, assets, services and resources.

        ``executor`` ("local" or "ray") checks against that executor instead of the DT's
        own choice.

        Raises: BadRequest; InvalidInput for another executor; PermissionDenied for
        viewers; NotFound.
        """
        params = {"path": path}
        if executor is not None:
            params["executor"] = executor
        return self._model(PlanRead, "GET", f"{TWINS}/plan", params=params)

    def list_templates(self) -> list[TemplateRead]:
        """The built-in templates a new DT can start from."""
        return self._models(TemplateRead, "GET", f"{TWINS}/templates")

    def create_twin(
        self, *, name: str, template: str | None = None, source: str | None = None
    ) -> TwinDetail:
        """Create ``<you>/digital_twins/<name>`` from a built-in template or a copy of a DT.

        Give exactly one of ``template`` (see :meth:`list_templates`) and ``source`` (the
        library path of a DT to copy).

        Raises: InvalidInput for a bad name, or unless exactly one of template and source
        is given; PermissionDenied for viewers; NotFound for an unknown template or
        source; Conflict if the name is taken.
        """
        body: dict[str, str] = {"name": name}
        if template is not None:
            body["template"] = template
        if source is not None:
            body["source"] = source
        return self._model(TwinDetail, "POST", TWINS, json=body)

    def list_configurations(self, *, path: str) -> list[ConfigurationRead]:
        """Your saved configurations (named parameter values) of a DT, by name.

        Raises: BadRequest; PermissionDenied; NotFound.
        """
        return self._models(
            ConfigurationRead, "GET", f"{TWINS}/configurations", params={"path": path}
        )

    def save_configuration(
        self, *, path: str, name: str, values: Mapping[str, JsonValue]
    ) -> ConfigurationRead:
        """Check parameter values against the DT's manifest and save them under a name.

        Raises: InvalidInput with one problem per bad value; PermissionDenied for viewers;
        NotFound; Conflict if you already have a configuration of that name for the DT.
        """
        return self._model(
            ConfigurationRead,
            "POST",
            f"{TWINS}/configurations",
            params={"path": path},
            json={"name": name, "values": dict(values)},
        )

    # --- instances and jobs ----------------------------------------------------------------

    def create_instance(
        self,
        *,
        twin_path: str,
        values: Mapping[str, JsonValue] | None = None,
        configuration_id: int | None = None,
        name: str | None = None,
    ) -> InstanceRead:
        """Deploy a DT: a working copy with parameter values, ready to run its phases.

        ``values`` override those of the configuration ``configuration_id``; the
        manifest's defaults fill the rest.

        Raises: InvalidInput with one problem per bad value, or for a configuration of
        another DT; PermissionDenied for viewers; NotFound; Conflict if the DT has errors.
        """
        body: dict[str, JsonValue] = {"twin_path": twin_path, "values": dict(values or {})}
        if configuration_id is not None:
            body["configuration_id"] = configuration_id
        if name is not None:
            body["name"] = name
        return self._model(InstanceRead, "POST", "/api/v1/instances", json=body)

    def list_instances(self) -> list[InstanceRead]:
        """Your instances, newest first."""
        return self._models(InstanceRead, "GET", "/api/v1/instances")

    def get_instance(self, *, instance_id: int) -> InstanceDetail:
        """An instance with its jobs, oldest first.

        Raises: NotFound (also for another user's instance).
        """
        return self._model(InstanceDetail, "GET", f"/api/v1/instances/{instance_id}")

    def run_phase(self, *, instance_id: int, phase: str) -> JobRead:
        """Queue a lifecycle phase (create, execute, analyze, ...) of an instance.

        Raises: InvalidInput for a phase the DT does not have; PermissionDenied; NotFound;
        Conflict unless the instance is ready (e.g. while another phase runs).
        """
        return self._model(
            JobRead, "POST", f"/api/v1/instances/{instance_id}/phases", json={"phase": phase}
        )

    def terminate(self, *, instance_id: int) -> InstanceRead:
        """Stop a running phase, then run the DT's terminate script if it has one.

        Raises: PermissionDenied; NotFound; Conflict once terminated or cleaned.
        """
        return self._model(InstanceRead, "POST", f"/api/v1/instances/{instance_id}/terminate")

    def clean(self, *, instance_id: int) -> InstanceRead:
        """Run the DT's clean script if it has one, then remove the working copy.

        Raises: PermissionDenied; NotFound; Conflict unless the instance is ready or
        terminated.
        """
        return self._model(InstanceRead, "POST", f"/api/v1/instances/{instance_id}/clean")

    def delete_instance(self, *, instance_id: int) -> None:
        """Forget an instance, its jobs and their logs.

        Raises: PermissionDenied; NotFound; Conflict while one of its jobs is active.
        """
        self._request("DELETE", f"/api/v1/instances/{instance_id}")

    def get_job(self, *, job_id: int) -> JobRead:
        """A job: state, exit code, usage, provenance and queue position.

        Raises: NotFound (also for another user's job).
        """
        return self._model(JobRead, "GET", f"/api/v1/jobs/{job_id}")

    def cancel_job(self, *, job_id: int) -> JobRead:
        """Ask a queued or running job to stop; it ends as cancelled.

        Raises: PermissionDenied; NotFound; Conflict if it has ended or is being cancelled.
        """
        return self._model(JobRead, "POST", f"/api/v1/jobs/{job_id}/cancel")

    def job_logs(self, *, job_id: int, stream: LogStream = "stdout", offset: int = 0) -> str:
        """A job's stdout or stderr so far, from byte ``offset`` on.

        Raises: NotFound; InvalidInput for a negative offset.
        """
        params = {"stream": stream, "offset": str(offset)}
        return self._request("GET", f"/api/v1/jobs/{job_id}/logs", params=params).text

    def follow_job(self, *, job_id: int) -> Generator[JobEvent, None, None]:
        """A job's events as they happen: its output so far and then as it is written,
        its state changes, and a last ``end`` event once it has ended.

        Example::

            for event in client.follow_job(job_id=7):
                if event.kind == "log":
                    print(event.text, end="")

        The stream lasts as long as the job runs. Close the generator (or leave the
        ``for`` loop) to stop following; the job goes on.

        Raises: NotFound; BackendUnavailable if the server cannot be reached or closes the
        stream before the job has ended.
        """
        path = f"/api/v1/jobs/{job_id}/events"
        # The server sends nothing while a job is silent, so a read may wait for as long
        # as the job runs.
        limits = httpx.Timeout(self._timeout, read=None)
        with (
            self._transport_errors(),
            self._http.stream("GET", path, timeout=limits) as response,
        ):
            if not response.is_success:
                response.read()
                _raise_for(response)
            for name, data in _server_sent_events(response.iter_lines()):
                event = self._job_event(name, data)
                if event is not None:
                    yield event
                    if event.kind == "end":
                        return
        raise BackendUnavailable(
            f"The server closed the stream of job {job_id} before the job ended; follow it again."
        )

    def wait_for_job(self, *, job_id: int, timeout: float | None = None) -> JobRead:
        """Block until a job has ended and return it; a failed job is returned, not raised.

        Asks the server for the job's state at growing intervals (up to a second).

        Raises: TimeoutError once ``timeout`` seconds have passed (the job goes on);
        NotFound; BackendUnavailable.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = WAIT_FIRST_POLL
        while True:
            job = self.get_job(job_id=job_id)
            if job.state.is_terminal():
                return job
            pause = interval
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"Job {job_id} did not end within {timeout:g} s; it is still "
                        f"{job.state.value}."
                    )
                pause = min(pause, left)
            time.sleep(pause)
            interval = min(interval * 1.5, WAIT_LAST_POLL)

    # --- snapshots -----------------------------------------------------------------------

    def create_snapshot(self, *, instance_id: int, name: str | None = None) -> SnapshotRead:
        """Start saving an instance (running or not); see :meth:`wait_for_snapshot`.

        Raises: PermissionDenied; NotFound; Conflict if the instance has no working copy
        or is being saved already.
        """
        body = {"name": name} if name is not None else {}
        return self._model(
            SnapshotRead, "POST", f"/api/v1/instances/{instance_id}/snapshots", json=body
        )

    def list_snapshots(self, *, instance_id: int | None = None) -> list[SnapshotRead]:
        """Your snapshots (of one instance if given), newest first."""
        path = "/api/v1/snapshots"
        if instance_id is not None:
            path = f"/api/v1/instances/{instance_id}/snapshots"
        return self._models(SnapshotRead, "GET", path)

    def get_snapshot(self, *, snapshot_id: int) -> SnapshotRead:
        """A snapshot and what it holds. Raises: NotFound."""
        return self._model(SnapshotRead, "GET", f"/api/v1/snapshots/{snapshot_id}")

    def wait_for_snapshot(self, *, snapshot_id: int, timeout: float | None = None) -> SnapshotRead:
        """Block until a snapshot is ready or failed and return it (failed is not raised).

        Raises: TimeoutError once ``timeout`` seconds have passed; NotFound.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = WAIT_FIRST_POLL
        while True:
            snapshot = self.get_snapshot(snapshot_id=snapshot_id)
            if snapshot.state in (SnapshotState.READY, SnapshotState.FAILED):
                return snapshot
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Snapshot {snapshot_id} is still {snapshot.state.value} after {timeout:g} s."
                )
            time.sleep(interval)
            interval = min(interval * 1.5, WAIT_LAST_POLL)

    def download_snapshot(
        self, *, snapshot_id: int, destination: Path, progress: ProgressCallback | None = None
    ) -> Path:
        """Save a ready snapshot's file, checked against its sha256, to ``destination``.

        Raises: NotFound; Conflict unless ready; DtaasError if the bytes that arrived do
        not match the checksum (nothing is left then).
        """
        expected = self.get_snapshot(snapshot_id=snapshot_id).sha256
        partial = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.part")
        try:
            with partial.open("xb") as sink:
                self._stream_into(
                    f"/api/v1/snapshots/{snapshot_id}/download",
                    params={},
                    sink=sink,
                    progress=progress,
                )
            if expected is not None and _sha256_of(partial) != expected:
                raise DtaasError(
                    f"Snapshot {snapshot_id} arrived damaged (checksum mismatch); "
                    "download it again."
                )
            partial.replace(destination)
        finally:
            partial.unlink(missing_ok=True)
        return destination

    def upload_snapshot(self, *, source: Path, name: str | None = None) -> SnapshotRead:
        """Upload a snapshot file made elsewhere; the server verifies it before listing it.

        Raises: InvalidInput for a damaged or unsafe file; PayloadTooLarge; PermissionDenied.
        """
        params = {"name": name} if name is not None else {}
        headers = {
            "Content-Type": "application/zstd",
            "X-Checksum-Sha256": _sha256_of(source),
        }
        with source.open("rb") as body:
            return self._model(
                SnapshotRead,
                "POST",
                "/api/v1/snapshots/upload",
                params=params,
                content=iter(lambda: body.read(CHUNK), b""),
                headers=headers,
            )

    def delete_snapshot(self, *, snapshot_id: int) -> None:
        """Delete a snapshot and its file. Raises: NotFound; Conflict while it is taken."""
        self._request("DELETE", f"/api/v1/snapshots/{snapshot_id}")

    def respawn(
        self, *, snapshot_id: int, name: str | None = None, executor: str | None = None
    ) -> InstanceHandle:
        """A new instance from a snapshot, continuing from its saved state.

        Raises: NotFound; Conflict unless the snapshot is ready and intact.
        """
        body = {k: v for k, v in {"name": name, "executor": executor}.items() if v is not None}
        instance = self._model(
            InstanceRead, "POST", f"/api/v1/snapshots/{snapshot_id}/respawn", json=body
        )
        detail = self.get_instance(instance_id=instance.id)
        if not detail.jobs:
            raise DtaasError(
                f"Instance {instance.id} was re-spawned but has no restore or execute phase."
            )
        return InstanceHandle(self, instance=instance, job=detail.jobs[-1])

    def _job_event(self, name: str, data: str) -> JobEvent | None:
        """An event of the job stream; None for kinds this client does not know."""
        if name not in ("log", "state", "end"):
            return None
        try:
            payload = json.loads(data) if data else {}
            if name == "log":
                stream = payload["stream"]
                if stream not in ("stdout", "stderr"):
                    raise ValueError(stream)
                return JobEvent(kind="log", stream=stream, text=str(payload["text"]))
            if name == "state":
                return JobEvent(kind="state", state=JobState(payload["state"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise self._not_dtaas() from exc
        return JobEvent(kind="end")

    def run(
        self,
        *,
        twin_path: str,
        values: Mapping[str, JsonValue] | None = None,
        configuration: str | None = None,
        phase: str = "execute",
        name: str | None = None,
    ) -> InstanceHandle:
        """Deploy a DT and queue one of its phases; returns a handle to wait on.

        Example::

            handle = client.run(twin_path="common/digital_twins/hello-world", phase="create")
            job = handle.wait(timeout=600)
            print(job.state, handle.logs())

        ``configuration`` names one of your saved configurations of the DT; ``values``
        override its values. If the phase cannot be queued, the new instance is deleted
        again, so a failed call leaves nothing behind.

        Raises: NotFound for an unknown DT or configuration name; InvalidInput with one
        problem per bad value, or for a phase the DT does not have; PermissionDenied for
        viewers; Conflict if the DT has errors.
        """
        configuration_id = None
        if configuration is not None:
            configuration_id = self._configuration_id(twin_path, configuration)
        instance = self.create_instance(
            twin_path=twin_path, values=values, configuration_id=configuration_id, name=name
        )
        try:
            job = self.run_phase(instance_id=instance.id, phase=phase)
        except DtaasError:
            with suppress(DtaasError):
                self.delete_instance(instance_id=instance.id)
            raise
        return InstanceHandle(self, instance=instance, job=job)

    def _configuration_id(self, twin_path: str, name: str) -> int:
        """The id of your configuration ``name`` of a DT.

        Raises: NotFound if there is none of that name.
        """
        saved = self.list_configurations(path=twin_path)
        for configuration in saved:
            if configuration.name == name.strip():
                return configuration.id
        yours = ", ".join(repr(c.name) for c in saved)
        hint = f"yours are: {yours}" if yours else "you have saved none for it"
        raise NotFound(
            f"There is no configuration {name!r} of {twin_path.strip('/')}; {hint}.",
            loc=["configuration"],
        )


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _file_size(path: Path) -> int:
    """The size of a file to upload.

    Raises: OSError if ``path`` is missing or a folder; InvalidInput for a FIFO, socket
    or device.
    """
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(
            f"{path} is not a regular file; only files can be uploaded.", loc=["files"]
        )
    return info.st_size


class _MultipartBody:
    """A multipart/form-data body of ``files`` parts, produced from disk chunk by chunk.

    Sizes are taken up front to send an exact Content-Length; a file that changes size
    meanwhile stops the upload rather than sending a body of another length.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        if not files:
            raise InvalidInput("Name at least one file to upload.", loc=["files"])
        names = [path.name for path in files]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise InvalidInput(
                f"More than one file is named {twice[0]!r}; a folder holds one file of a "
                "name, so upload them separately.",
                loc=["files"],
            )
        self.boundary = secrets.token_hex(16)
        self.files = [(path, _file_size(path), self._part_head(path)) for path in files]
        self.tail = f"--{self.boundary}--\r\n".encode()
        self.total = sum(size for _, size, _ in self.files)
        self.length = sum(len(head) + size + 2 for _, size, head in self.files) + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _part_head(self, path: Path) -> bytes:
        name = path.name
        # A line break would end the part's header; a backslash is a folder separator
        # to the server, which would keep only what follows it.
        if any(char in name for char in "\r\n\\"):
            raise InvalidInput(
                f"The file name {name!r} contains a line break or a backslash, which "
                "library names cannot; rename the file.",
                loc=["files"],
            )
        quoted = name.replace('"', '\\"')
        head = (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="files"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        try:
            return head.encode("utf-8")
        except UnicodeEncodeError:  # bytes of another encoding, kept as surrogates by os
            raise InvalidInput(
                f"The file name {name!r} is not valid UTF-8; rename the file.", loc=["files"]
            ) from None

    def chunks(self, progress: ProgressCallback | None) -> Iterator[bytes]:
        """The body; calls ``progress`` after each chunk of file content.

        Raises: OSError if a file cannot be read; DtaasError if one changed size.
        """
        done = 0
        if progress is not None:
            progress(done, self.total)
        for path, size, head in self.files:
            yield head
            remaining = size
            with path.open("rb") as handle:
                while remaining:
                    chunk = handle.read(min(CHUNK, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    done += len(chunk)
                    yield chunk
                    if progress is not None:
                        progress(done, self.total)
                if remaining or handle.read(1):
                    raise DtaasError(f"{path} changed size while it was uploaded; upload it again.")
            yield b"\r\n"
        yield self.tail


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _server_sent_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) of a text/event-stream, dispatched at each blank line."""
    name = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data or name:
                yield name or "message", "\n".join(data)
            name, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment, e.g. a keep-alive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job's live stream, from :meth:`Client.follow_job`.

    ``kind`` says which fields are set:

    - ``"log"``: ``stream`` and ``text``, output as it was written (not always whole lines);
    - ``"state"``: ``state``, the job's new state;
    - ``"end"``: nothing; the job has ended and this is the last event.
    """

    kind: Literal["log", "state", "end"]
    stream: LogStream | None = None
    text: str = ""
    state: JobState | None = None


class InstanceHandle:
    """An instance started by :meth:`Client.run`, and the job of the phase it runs.

    The handle talks through the client that made it; keep that client open meanwhile.
    """

    def __init__(self, client: Client, *, instance: InstanceRead, job: JobRead) -> None:
        self.client = client
        self.instance = instance
        self.job = job  # as last seen; wait() refreshes it

    def __repr__(self) -> str:
        return (
            f"InstanceHandle(instance_id={self.instance_id}, job_id={self.job_id}, "
            f"phase={self.job.phase!r}, state={self.job.state.value!r})"
        )

    @property
    def instance_id(self) -> int:
        return self.instance.id

    @property
    def job_id(self) -> int:
        return self.job.id

    def wait(self, timeout: float | None = None) -> JobRead:
        """Block until the job has ended and return it; check its ``state`` and
        ``exit_code``: a failed job is returned, not raised.

        Raises: TimeoutError once ``timeout`` seconds have passed (the job goes on);
        NotFound if the instance was deleted; BackendUnavailable.
        """
        self.job = self.client.wait_for_job(job_id=self.job_id, timeout=timeout)
        return self.job

    def logs(self, stream: LogStream = "stdout") -> str:
        """The job's stdout (or stderr) so far.

        Raises: NotFound if the instance was deleted; BackendUnavailable.
        """
        return self.client.job_logs(job_id=self.job_id, stream=stream)

    def terminate(self) -> InstanceRead:
        """Stop the job if it still runs, then run the DT's terminate script if it has one.

        Raises: Conflict once the instance is terminated or cleaned; NotFound.
        """
        self.instance = self.client.terminate(instance_id=self.instance_id)
        return self.instance
