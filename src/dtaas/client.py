"""The Python client of the dtaas REST API.

Example::

    from dtaas.client import Client

    with Client.sign_in("http://127.0.0.1:8000", username="alice", password="...") as client:
        print(client.whoami().user.username)

Every method returns the API's pydantic models and raises the same
:class:`dtaas.errors.DtaasError` subclasses the server raised, rebuilt from the error
``type``; a server that cannot be reached raises :class:`dtaas.errors.BackendUnavailable`,
and an answer that is not from a dtaas server raises :class:`dtaas.errors.DtaasError`.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from dtaas.errors import (
    ERROR_TYPES,
    BackendUnavailable,
    DtaasError,
    InvalidInput,
    NotAuthenticated,
    TooManyRequests,
)
from dtaas.security.models import Role
from dtaas.security.schemas import Me, TokenCreated, TokenRead, UserRead

__all__ = ["Client", "Credentials", "credentials_path"]

ModelT = TypeVar("ModelT", bound=BaseModel)
EXAMPLE_URL = "http://127.0.0.1:8000"


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
    try:
        items = response.json()["detail"]
        first = items[0]
        message = "; ".join(_describe(item) for item in items)
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

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise BackendUnavailable(
                f"The dtaas server at {self.base_url} did not answer in time; try again later."
            ) from exc
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"Cannot reach the dtaas server at {self.base_url}: {exc}. Is it running?"
            ) from exc
        _raise_for(response)
        return response

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
