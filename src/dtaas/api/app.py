"""The app factory: one FastAPI app serving /api/v1, the web pages, health and metrics."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from itsdangerous import TimestampSigner
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dtaas import db
from dtaas.accounting import routes as accounting_routes
from dtaas.api import errors
from dtaas.api.middleware import BodyLimitMiddleware, Metrics, RequestContextMiddleware
from dtaas.config import Settings, get_settings
from dtaas.execution import routes as execution_routes
from dtaas.library import routes as library_routes
from dtaas.library import service as library
from dtaas.lifecycle import routes as lifecycle_routes
from dtaas.lifecycle import snapshot_routes
from dtaas.lifecycle.supervisor import Supervisor
from dtaas.logs import configure_logging
from dtaas.security import routes as security_routes
from dtaas.security import service as security
from dtaas.security.deps import MetricsReader
from dtaas.services import broker as embedded_mqtt
from dtaas.services import mqtt_accounts, results_routes, telemetry_routes
from dtaas.services import proxy as service_proxy
from dtaas.services import routes as services_routes
from dtaas.services import telemetry as telemetry_ingest
from dtaas.services.health import HealthMonitor
from dtaas.twins import routes as twins_routes
from dtaas.web import cluster as web_cluster
from dtaas.web import explore as web_explore
from dtaas.web import instances as web_instances
from dtaas.web import library as web_library
from dtaas.web import pages
from dtaas.web import routes as web_routes
from dtaas.web import services as web_services
from dtaas.web import storage as web_storage
from dtaas.web import twins as web_twins

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    # Stable ids (the function name) keep generated clients readable.
    return route.name


def prepare(settings: Settings) -> dict[str, str]:
    """Migrate the database and seed the demo; returns first-start demo passwords."""
    engine = db.make_engine(settings)
    try:
        db.upgrade(engine)
        with db.make_sessionmaker(engine)() as session:
            security.ensure_organisation(session=session, settings=settings)
            session.commit()
            for user in security.all_users(session=session):
                library.ensure_library(settings=settings, username=user.username)
            if not settings.demo:
                return {}
            library.seed_examples(settings=settings)
            return security.seed_demo(session=session, settings=settings)
    finally:
        engine.dispose()


@functools.cache
def _api_router() -> APIRouter:
    # Built once per process: FastAPI rebuilds every route it includes, and apps are made
    # often (each test's app), so only the app's own copy is built each time.
    api = APIRouter(prefix=API_PREFIX, responses=errors.ERROR_RESPONSES)
    api.include_router(security_routes.router)
    api.include_router(library_routes.router)
    api.include_router(twins_routes.router)
    api.include_router(services_routes.router)
    api.include_router(telemetry_routes.router)
    api.include_router(results_routes.router)
    api.include_router(lifecycle_routes.router)
    api.include_router(snapshot_routes.router)
    api.include_router(execution_routes.router)
    api.include_router(accounting_routes.router)
    return api


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for ``settings`` (default: the process's settings)."""
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    engine = db.make_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("dtaas started database=%s", engine.url.get_backend_name())
        supervisor = Supervisor(settings=settings, sessions=app.state.sessionmaker)
        app.state.supervisor = supervisor
        # Only the process that wins the supervisor's lock (one per site) ingests telemetry:
        # two subscribers would store every point twice.
        supervising = settings.supervisor and supervisor.start()
        mqtt_broker = embedded_mqtt.start_embedded_mqtt(settings)  # None with a real broker
        mqtt_accounts.prepare(settings)  # dynsec: the platform's own role on dtaas/#
        ingestor = (
            telemetry_ingest.start_telemetry(settings, engine, registry=metrics.registry)
            if supervising
            else None
        )
        yield
        if ingestor is not None:
            ingestor.stop()
        if mqtt_broker is not None:
            embedded_mqtt.stop_embedded_mqtt(settings, mqtt_broker)
        supervisor.stop()  # jobs go on running; the next start re-attaches them
        engine.dispose()

    app = FastAPI(
        title="dtaas",
        summary="Digital Twin as a Service",
        version="0.1.0",
        docs_url="/api/docs",
        swagger_ui_oauth2_redirect_url="/api/docs/oauth2-redirect",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        generate_unique_id_function=_operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = db.make_sessionmaker(engine)
    app.state.cookie_signer = TimestampSigner(settings.signing_key(), salt="dtaas.session")
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.service_monitor = HealthMonitor(
        timeout=settings.service_check_timeout_seconds,
        cache_seconds=settings.service_health_cache_seconds,
    )

    errors.install(app)

    app.include_router(_api_router())
    app.include_router(library_routes.graphql_router, responses=errors.ERROR_RESPONSES)
    app.include_router(web_routes.router)
    app.include_router(web_cluster.router)
    app.include_router(web_library.router)
    app.include_router(web_twins.router)
    app.include_router(web_instances.router)
    app.include_router(web_services.router)
    app.include_router(web_storage.router)
    app.include_router(service_proxy.router)
    app.include_router(web_explore.router)

    @app.get("/healthz", tags=["platform"], responses={503: {"model": errors.ErrorResponse}})
    def healthz() -> JSONResponse:
        """Liveness and readiness: answers 200 when the database answers."""
        try:
            with engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            log.exception("health check: database unreachable")
            return JSONResponse(
                {
                    "detail": [
                        {
                            "type": "backend_unavailable",
                            "msg": "The database does not answer; check DTAAS_DATABASE_URL.",
                            "loc": ["database"],
                        }
                    ]
                },
                status_code=503,
            )
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", tags=["platform"], responses=errors.ERROR_RESPONSES)
    def read_metrics(actor: MetricsReader) -> Response:
        """Prometheus metrics (admins, or a token of an admin)."""
        del actor  # the dependency is the permission check
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        limits={
            f"{API_PREFIX}/library/upload": settings.upload_max_bytes,
            f"{API_PREFIX}/library/file": settings.edit_max_bytes,
            f"{API_PREFIX}/snapshots/upload": settings.snapshot_max_bytes,
        },
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
