"""The Python client of the dtaas REST API.

Example::

    from dtaas.client import Client

    with Client.sign_in("http://127.0.0.1:8000", username="alice", password="...") as client:
        print(client.whoami().user.username)

Every method returns the API's pydantic models and raises the same
:class:`dtaas.errors.DtaasError` subclasses the server raised, rebuilt from the error
``type``; a server that cannot be reached raises :class:`dtaas.errors.BackendUnavailable`.
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
from pydantic import BaseModel, TypeAdapter

from dtaas.errors import (
    ERROR_TYPES,
    BackendUnavailable,
    DtaasError,
    NotAuthenticated,
    TooManyRequests,
)
from dtaas.security.models import Role
from dtaas.security.schemas import Me, TokenCreated, TokenRead, UserRead

__all__ = ["Client", "Credentials", "credentials_path"]

ModelT = TypeVar("ModelT", bound=BaseModel)


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

    def save(self, path: Path | None = None) -> Path:
        """Write the credentials readable by their owner only (mode 0600)."""
        path = path or credentials_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {"server": self.server, "username": self.username, "token": self.token}, handle
            )
        tmp.chmod(stat.S_IRUSR | stat.S_IWUSR)  # an old file must not keep wider modes
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> Credentials:
        """Read stored credentials.

        Raises: NotAuthenticated if there are none or they are unreadable.
        """
        path = path or credentials_path()
        try:
            data = json.loads(path.read_text())
            return cls(server=data["server"], username=data["username"], token=data["token"])
        except FileNotFoundError:
            raise NotAuthenticated("You are not signed in; run `dtaas login` first.") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise NotAuthenticated(
                f"The credentials file {path} is damaged; run `dtaas login` again."
            ) from exc


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        items = response.json()["detail"]
        first = items[0]
        message = "; ".join(str(item["msg"]) for item in items)
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
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"Cannot reach the dtaas server at {self.base_url}: {exc}. Is it running?"
            ) from exc
        _raise_for(response)
        return response

    def _model(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        return model.model_validate(self._request(method, path, **kwargs).json())

    def _models(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> list[ModelT]:
        adapter = TypeAdapter(list[model])  # type: ignore[valid-type]  # model is a runtime class
        result: list[ModelT] = adapter.validate_python(self._request(method, path, **kwargs).json())
        return result

    # --- platform -------------------------------------------------------------------------

    def health(self) -> dict[str, str]:
        """The server's health check."""
        data: dict[str, str] = self._request("GET", "/healthz").json()
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
