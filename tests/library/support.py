"""Helpers shared by the library's HTTP tests: requests with any path, error shapes, trees."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.config import Settings

API = "/api/v1/library"

LIST_DIRECTORY = """
query ($path: String!) {
  listDirectory(path: $path) {
    repository {
      tree {
        blobs { edges { node { name type } } }
        trees { edges { node { name type } } }
      }
    }
  }
}
"""

READ_FILE = """
query ($path: String!) {
  readFile(path: $path) {
    repository { blobs { nodes { name rawBlob rawTextBlob } } }
  }
}
"""


def url(route: str, **params: str | int | bool) -> str:
    """``route`` with a query string that carries any ``str``, lone surrogates included.

    httpx refuses to encode what UTF-8 cannot represent, so values are percent-encoded
    here (a surrogate as its WTF-8 bytes, which the server decodes to U+FFFD).
    """
    parts = []
    for name, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f"{name}={quote(text.encode('utf-8', 'surrogatepass'), safe='')}")
    return f"{API}/{route}?{'&'.join(parts)}" if parts else f"{API}/{route}"


def post_json(
    client: TestClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """POST ``body`` as JSON, escaping non-ASCII so lone surrogates survive the trip."""
    return client.post(
        path,
        content=json.dumps(body).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )


def graphql(
    client: TestClient, query: str, headers: dict[str, str], **variables: str
) -> httpx.Response:
    return post_json(client, "/lib", {"query": query, "variables": variables}, headers)


def upload(
    client: TestClient,
    headers: dict[str, str],
    folder: str,
    files: list[tuple[str, bytes]],
    **params: str | bool,
) -> httpx.Response:
    """POST ``files`` as multipart ``files`` parts into ``folder``."""
    parts = [("files", (name, content, "application/octet-stream")) for name, content in files]
    return client.post(url("upload", path=folder, **params), files=parts, headers=headers)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The single error item of a response, after checking the common error shape."""
    body = response.json()
    assert set(body) == {"detail"}, body
    assert len(body["detail"]) == 1, body
    error = body["detail"][0]
    assert set(error) == {"type", "msg", "loc"}, error
    assert isinstance(error["msg"], str)
    assert error["msg"].strip(), error
    assert isinstance(error["type"], str)
    assert error["type"], error
    return dict(error)


def graphql_error_of(response: httpx.Response) -> str:
    """The message of a GraphQL error answer (``data`` null, one error)."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None, body
    assert len(body["errors"]) == 1, body
    message = body["errors"][0]["message"]
    assert isinstance(message, str)
    assert message.strip(), body
    return message


def snapshot(root: Path, *, exclude: tuple[Path, ...] = ()) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` (links not followed) with what identifies its content.

    Folders are recorded by mode, files by size, mode, inode, mtime and SHA-256, symlinks
    by target. Entries under an ``exclude`` path are left out.
    """
    skipped = {str(path) for path in exclude}
    tree: dict[str, tuple[object, ...]] = {}
    pending = [str(root)]
    while pending:
        with os.scandir(pending.pop()) as scan:
            for item in scan:
                if item.path in skipped:
                    continue
                info = item.stat(follow_symlinks=False)
                key = item.path[len(str(root)) + 1 :]
                if stat.S_ISLNK(info.st_mode):
                    tree[key] = ("link", os.readlink(item.path))  # noqa: PTH115  # a str path
                elif stat.S_ISDIR(info.st_mode):
                    tree[key] = ("folder", info.st_mode)
                    pending.append(item.path)
                elif stat.S_ISREG(info.st_mode):
                    with open(item.path, "rb") as handle:  # noqa: PTH123  # a str path
                        digest = hashlib.sha256(handle.read()).hexdigest()
                    identity = (info.st_size, info.st_mode, info.st_ino, info.st_mtime_ns)
                    tree[key] = ("file", *identity, digest)
                else:
                    tree[key] = ("other", info.st_mode)
    return tree


def leftovers(folder: Path) -> list[str]:
    """Names of the platform's hidden work files anywhere under ``folder``."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.name.startswith(".dtaas-")
    )


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip of ``members`` (name to content), built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@dataclass
class SharedApp:
    """One app serving every test of a module, each test with its own session and files.

    A module opts in by overriding ``settings`` with :meth:`fresh_settings` and ``client``
    with :meth:`client_for`. Building an app costs ~0.1 s (mostly FastAPI's router setup),
    which the 390 cells of the permission matrix would pay one by one.
    """

    settings: Settings
    client: TestClient | None = None
    session: Session | None = field(default=None, repr=False)

    def fresh_settings(self) -> Settings:
        """The app's settings, after emptying the data directory the last test used."""
        shutil.rmtree(self.settings.data_dir)
        self.settings.data_dir.mkdir()
        return self.settings

    def client_for(self, session: Session) -> TestClient:
        """The app's client, answering with ``session`` from now on."""
        assert self.client is not None
        self.session = session
        return self.client

    def current_session(self) -> Iterator[Session]:
        assert self.session is not None
        try:
            yield self.session
        except Exception:
            self.session.rollback()
            raise
