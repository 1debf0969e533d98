"""The reference library service's GraphQL API (``listDirectory``, ``readFile``) at ``/lib``.

The schema and response shapes are those of the reference platform, which mimic GitLab's
GraphQL, so clients written for it work unchanged. Paths are the same as ours:
``<user>/...`` or ``common/...``, and the same access rules apply.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo, build_schema, graphql_sync

from dtaas.config import Settings
from dtaas.errors import DtaasError
from dtaas.library.access import locate, readable_areas
from dtaas.library.paths import HIDDEN_PREFIX
from dtaas.security.permissions import Principal

log = logging.getLogger(__name__)

MAX_READ_BYTES = 16 * 1024 * 1024
Info = GraphQLResolveInfo[dict[str, Any]]

SCHEMA = build_schema(
    """
    type Query {
      listDirectory(path: String!): Project!
      readFile(path: String!): Project!
    }
    type Project { repository: Repository! }
    type Repository { tree: Tree!  blobs: RepositoryBlobConnection! }
    type Tree { blobs: BlobConnection!  trees: TreeConnection! }
    type BlobConnection { edges: [BlobEdge!]! }
    type BlobEdge { node: Blob! }
    type Blob { name: String!  type: String! }
    type TreeConnection { edges: [TreeEdge!]! }
    type TreeEdge { node: TreeEntry! }
    type TreeEntry { name: String!  type: String! }
    type RepositoryBlobConnection { nodes: [RepositoryBlob!]! }
    type RepositoryBlob { name: String!  rawBlob: String!  rawTextBlob: String! }
    """
)


def _project(*, trees: list[str], blobs: list[str], files: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "repository": {
            "tree": {
                "blobs": {"edges": [{"node": {"name": n, "type": "blob"}} for n in blobs]},
                "trees": {"edges": [{"node": {"name": n, "type": "tree"}} for n in trees]},
            },
            "blobs": {"nodes": files},
        }
    }


def _list_directory(_root: object, info: Info, path: str) -> dict[str, Any]:
    settings: Settings = info.context["settings"]
    actor: Principal = info.context["actor"]
    if not path.strip("/"):
        return _project(trees=readable_areas(actor), blobs=[], files=[])
    try:
        location = locate(settings=settings, actor=actor, path=path, write=False)
        trees: list[str] = []
        blobs: list[str] = []
        with os.scandir(location.real) as scan:
            for item in sorted(scan, key=lambda e: e.name):
                if item.name.startswith(HIDDEN_PREFIX):
                    continue
                # Like the reference: lstat, so a symlink is a blob, never followed.
                is_dir = stat.S_ISDIR(item.stat(follow_symlinks=False).st_mode)
                (trees if is_dir else blobs).append(item.name)
    except DtaasError as exc:
        raise GraphQLError(exc.message) from exc
    except OSError as exc:
        raise GraphQLError("Error reading directory") from exc
    return _project(trees=trees, blobs=blobs, files=[])


def _read_file(_root: object, info: Info, path: str) -> dict[str, Any]:
    settings: Settings = info.context["settings"]
    actor: Principal = info.context["actor"]
    try:
        location = locate(settings=settings, actor=actor, path=path, write=False)
        if not location.real.is_file() or location.real.stat().st_size > MAX_READ_BYTES:
            raise GraphQLError("Error reading file")
        text = location.real.read_text(encoding="utf-8", errors="replace").strip()
    except DtaasError as exc:
        raise GraphQLError(exc.message) from exc
    except OSError as exc:
        raise GraphQLError("Error reading file") from exc
    name = location.inner.rsplit("/", 1)[-1]
    return _project(
        trees=[], blobs=[], files=[{"name": name, "rawBlob": text, "rawTextBlob": text}]
    )


_query = SCHEMA.query_type
assert _query is not None  # noqa: S101  # the SDL above defines Query
_query.fields["listDirectory"].resolve = _list_directory
_query.fields["readFile"].resolve = _read_file


def execute(
    *,
    settings: Settings,
    actor: Principal,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
) -> dict[str, Any]:
    """Run a GraphQL request; returns the standard ``{"data", "errors"}`` response."""
    result = graphql_sync(
        SCHEMA,
        query,
        variable_values=variables,
        operation_name=operation_name,
        context_value={"settings": settings, "actor": actor},
    )
    return dict(result.formatted)
