"""DTs as services: the platform proxies ``/services/<instance id>/...`` to the HTTP port of
the instance's running service phase (``serve:`` in ``dt.yaml``).

Only the instance's owner reaches it, signed in as for any other page or with a token; the
platform's own credentials (cookies, Authorization) never reach the DT, and the DT's
cookies never reach the browser, so a DT cannot read or replace a platform session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.background import BackgroundTask

from dtaas.db import SessionDep
from dtaas.errors import BackendUnavailable
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle.models import Job, JobState
from dtaas.security.deps import CurrentActor

router = APIRouter(include_in_schema=False)

PORT_KEY = "http_port"  # in the serving job's provenance
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Hop-by-hop headers, and the platform's credentials, stay on this side.
_DROP_REQUEST = {
    "host",
    "cookie",
    "authorization",
    "x-csrf-token",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
}
_DROP_RESPONSE = {"set-cookie", "connection", "keep-alive", "transfer-encoding", "content-length"}
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


def serving_port(session: SessionDep, instance_id: int) -> int | None:
    """The port of the instance's running service phase, if one runs."""
    jobs = session.scalars(
        select(Job).where(Job.instance_id == instance_id, Job.state == JobState.RUNNING)
    ).all()
    for job in jobs:
        port = (job.provenance or {}).get(PORT_KEY)
        if isinstance(port, int):
            return port
    return None


@router.api_route("/services/{instance_id:int}/{path:path}", methods=METHODS)
async def proxy(
    instance_id: int, path: str, request: Request, session: SessionDep, actor: CurrentActor
) -> StreamingResponse:
    """Forward the request to the DT's HTTP service and stream its answer back."""
    lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    port = serving_port(session, instance_id)
    session.close()  # a long response must not hold a database connection
    if port is None:
        raise BackendUnavailable(
            f"Instance {instance_id} is not serving: the phase that answers HTTP is not "
            "running; start it on the instance's page."
        )
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST}
    headers["X-Forwarded-Prefix"] = f"/services/{instance_id}"
    client = httpx.AsyncClient(timeout=TIMEOUT, trust_env=False)
    upstream = client.build_request(
        request.method,
        f"http://127.0.0.1:{port}/{path}",
        params=request.url.query,
        headers=headers,
        content=_body(request) if _has_body(request) else None,
    )
    try:
        answer = await client.send(upstream, stream=True)
    except httpx.TransportError as exc:
        await client.aclose()
        raise BackendUnavailable(
            f"Instance {instance_id}'s service did not answer ({exc.__class__.__name__})."
        ) from exc

    async def close() -> None:
        await answer.aclose()
        await client.aclose()

    return StreamingResponse(
        answer.aiter_raw(),
        status_code=answer.status_code,
        headers={k: v for k, v in answer.headers.items() if k.lower() not in _DROP_RESPONSE},
        background=BackgroundTask(close),
    )


def _has_body(request: Request) -> bool:
    return "content-length" in request.headers or "transfer-encoding" in request.headers


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        yield chunk
