"""FastAPI dependencies of the services domain: the health monitor and the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dtaas.security.deps import require
from dtaas.security.permissions import Permission, Principal
from dtaas.services.health import HealthMonitor


def get_monitor(request: Request) -> HealthMonitor:
    """The app's health monitor: one cache of check results per process."""
    monitor: HealthMonitor = request.app.state.service_monitor
    return monitor


MonitorDep = Annotated[HealthMonitor, Depends(get_monitor)]
ServiceAdmin = Annotated[Principal, Depends(require(Permission.MANAGE_SERVICES))]
