"""What the site's Ray cluster has and what its jobs hold, read from the dashboard's HTTP API.

Two reads, each bounded by ``READ_TIMEOUT_SECONDS``: the nodes and what each has
(``/api/v0/nodes``, the state API the Ray executor also asks before it submits a job), and
what is in use on each node (``/api/cluster_status``: the autoscaler's view, ``[used,
total]`` per resource and node). Memory is Ray's schedulable memory, which jobs reserve
with ``resources.memory`` in dt.yaml, not the machines' RAM.

A cluster that is down, hangs or refuses the token is *reported*, not raised: the admin
page says "unreachable" and why within seconds, and is never held up by it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from dtaas.config import Settings
from dtaas.db import utcnow
from dtaas.execution.schemas import ClusterRead, NodeRead, ResourceUse
from dtaas.security.permissions import Permission, Principal, require

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 2.0
# The resources shown, by Ray's names (the same in the nodes' totals and in the usage).
CPU, GPU, MEMORY = "CPU", "GPU", "memory"

Usage = Mapping[str, list[float]]  # resource -> [used, total]


class ClusterUnreadable(Exception):
    """Raised when the cluster cannot be read; the message says why and what to check."""


def read_cluster(*, settings: Settings, actor: Principal) -> ClusterRead:
    """The cluster's nodes and resources now, or why they cannot be read.

    Raises: PermissionDenied unless the actor may see the platform's metrics (admins).
    """
    require(actor, Permission.VIEW_METRICS)
    address = settings.ray_address
    if address is None:
        return ClusterRead(
            configured=False,
            default_executor=settings.executor,
            dashboard_url=None,
            reachable=False,
            checked_at=utcnow(),
        )
    try:
        nodes = read_nodes(settings)
    except ClusterUnreadable as exc:
        # INFO, not WARNING: an open admin page asks every few seconds.
        log.info("the Ray cluster could not be read address=%s problem=%s", address, exc)
        return ClusterRead(
            configured=True,
            default_executor=settings.executor,
            dashboard_url=address,
            reachable=False,
            problem=str(exc),
            checked_at=utcnow(),
        )
    alive = [node for node in nodes if node.alive]
    return ClusterRead(
        configured=True,
        default_executor=settings.executor,
        dashboard_url=address,
        reachable=True,
        nodes_alive=len(alive),
        nodes_dead=len(nodes) - len(alive),
        cpus=_sum(node.cpus for node in alive),
        gpus=_sum(node.gpus for node in alive),
        memory_bytes=_sum(node.memory_bytes for node in alive),
        nodes=nodes,
        checked_at=utcnow(),
    )


def read_nodes(settings: Settings) -> list[NodeRead]:
    """Every node the cluster knows, head first, with what it has and what is in use.

    Raises: ClusterUnreadable.
    """
    address = settings.ray_address or ""
    token = settings.ray_auth_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    with httpx.Client(base_url=address, headers=headers, timeout=READ_TIMEOUT_SECONDS) as client:
        listed = _data(client, "/api/v0/nodes", {"limit": 10_000})
        status = _data(client, "/api/cluster_status", {})
    try:
        usage = _usage_by_node(status)
        nodes = [
            _node(entry, usage.get(entry["node_id"], {})) for entry in listed["result"]["result"]
        ]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ClusterUnreadable(
            f"The Ray cluster at {address} answered in a form this platform does not know; "
            "check that the cluster runs Ray 2.60 or newer."
        ) from exc
    return sorted(nodes, key=lambda node: (not node.is_head, not node.alive, node.address))


def _data(client: httpx.Client, path: str, params: dict[str, Any]) -> Any:
    """The ``data`` of the dashboard's answer to ``GET path``.

    Raises: ClusterUnreadable.
    """
    address = str(client.base_url).rstrip("/")
    try:
        response = client.get(path, params=params)
    except httpx.TimeoutException as exc:
        raise ClusterUnreadable(
            f"The Ray cluster at {address} did not answer within {READ_TIMEOUT_SECONDS:g} s; "
            "check that its head node runs and is not overloaded."
        ) from exc
    except httpx.HTTPError as exc:
        raise ClusterUnreadable(
            f"The Ray cluster at {address} is unreachable ({type(exc).__name__}); "
            "check DTAAS_RAY_ADDRESS and that the cluster's head node runs."
        ) from exc
    if response.status_code in (401, 403):
        raise ClusterUnreadable(
            f"The Ray cluster at {address} refused the platform's token; set "
            "DTAAS_RAY_AUTH_TOKEN to the token the cluster was started with."
        )
    try:
        response.raise_for_status()
        return response.json()["data"]
    except (httpx.HTTPStatusError, ValueError, KeyError, TypeError) as exc:
        raise ClusterUnreadable(
            f"The Ray cluster at {address} answered {path} with HTTP {response.status_code} "
            "and no data; check that DTAAS_RAY_ADDRESS is the dashboard's URL (port 8265)."
        ) from exc


def _usage_by_node(status: Mapping[str, Any]) -> dict[str, Usage]:
    # The report is missing for a moment after the head starts: nothing is in use then.
    report = (status.get("clusterStatus") or {}).get("loadMetricsReport") or {}
    by_node: dict[str, Usage] = report.get("usageByNode") or {}
    return by_node


def _node(entry: Mapping[str, Any], usage: Usage) -> NodeRead:
    totals: Mapping[str, float] = entry.get("resources_total") or {}

    def use(name: str) -> ResourceUse:
        used = usage.get(name, [0.0])[0]
        return ResourceUse(total=float(totals.get(name, 0.0)), used=float(used))

    return NodeRead(
        node_id=entry["node_id"],
        address=entry.get("node_ip") or "?",
        is_head=bool(entry.get("is_head_node")),
        alive=entry.get("state") == "ALIVE",
        cpus=use(CPU),
        gpus=use(GPU),
        memory_bytes=use(MEMORY),
    )


def _sum(uses: Iterable[ResourceUse]) -> ResourceUse:
    listed = list(uses)
    return ResourceUse(total=sum(use.total for use in listed), used=sum(use.used for use in listed))
