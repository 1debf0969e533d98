"""Response models of the execution manager: the Ray cluster as the admin page shows it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, computed_field


class ResourceUse(BaseModel):
    """One resource of a node or of the whole cluster: what it has, and what jobs hold."""

    total: float
    used: float

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use on a property
    @property
    def free(self) -> float:
        return max(0.0, self.total - self.used)


class NodeRead(BaseModel):
    """One node of the cluster, alive or dead."""

    node_id: str
    address: str
    is_head: bool
    alive: bool
    cpus: ResourceUse
    gpus: ResourceUse
    memory_bytes: ResourceUse


class ClusterRead(BaseModel):
    """The site's Ray cluster: whether there is one, whether it answers, what it has."""

    configured: bool
    default_executor: str
    dashboard_url: str | None
    reachable: bool
    # Why the cluster could not be read, as a sentence that says what to check.
    problem: str | None = None
    nodes_alive: int = 0
    nodes_dead: int = 0
    cpus: ResourceUse | None = None
    gpus: ResourceUse | None = None
    memory_bytes: ResourceUse | None = None
    nodes: list[NodeRead] = []
    checked_at: datetime
