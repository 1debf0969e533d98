"""HTTP routes of the execution manager: the Ray cluster's nodes and resources, for admins."""

from __future__ import annotations

from fastapi import APIRouter

from dtaas.execution import cluster
from dtaas.execution.schemas import ClusterRead
from dtaas.security.deps import CurrentActor, SettingsDep

router = APIRouter(tags=["execution"])


@router.get("/admin/cluster", response_model=ClusterRead)
def read_cluster(settings: SettingsDep, actor: CurrentActor) -> ClusterRead:
    """The Ray cluster's nodes and resources now, or why it cannot be read (admins)."""
    return cluster.read_cluster(settings=settings, actor=actor)
