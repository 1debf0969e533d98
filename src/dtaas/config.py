"""Settings: ``DTAAS_*`` environment variables over an optional TOML file over defaults."""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_ENV = "DTAAS_CONFIG_FILE"
DEFAULT_CONFIG_FILE = Path("dtaas.toml")


def _config_file() -> Path | None:
    """The TOML file to read: ``$DTAAS_CONFIG_FILE``, else ``./dtaas.toml`` if present."""
    named = os.environ.get(CONFIG_FILE_ENV)
    if named:
        return Path(named)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class Settings(BaseSettings):
    """Every setting of the platform, with a safe default for a laptop."""

    model_config = SettingsConfigDict(env_prefix="DTAAS_", extra="forbid")

    data_dir: Path = Field(
        default=Path(".dtaas-data"),
        description="Where the SQLite database, secret key and files live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default is a SQLite file in the data directory. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    files_dir: Path | None = Field(
        default=None, description="Root of the users' libraries; default <data_dir>/files."
    )
    host: str = Field(default="127.0.0.1", description="Address `dtaas serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535)
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that signs cookies; default is generated once into the data directory.",
    )
    organisation: str = Field(default="Demo organisation", min_length=1, max_length=200)
    demo: bool = Field(default=True, description="Seed demo users at first start.")
    session_max_age_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    cookie_secure: bool = Field(
        default=False, description="Send cookies only over HTTPS; turn on behind TLS."
    )
    token_default_days: int = Field(default=90, ge=1, le=3650)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=60, ge=1)
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Limit for JSON and form bodies."
    )
    upload_max_bytes: int = Field(
        default=4 * 1024**3, ge=1024, description="Largest upload request (413 above)."
    )
    edit_max_bytes: int = Field(
        default=5 * 1024**2, ge=1024, description="Largest text file saved by the editor."
    )
    zip_max_entries: int = Field(default=20_000, ge=1)
    zip_max_total_bytes: int = Field(default=8 * 1024**3, ge=1024)
    zip_max_ratio: int = Field(default=200, ge=2, description="Compression ratio of a bomb.")
    search_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        default="auto", description="Run local jobs under bubblewrap: auto uses it if installed."
    )
    jobs_max_running: int = Field(default=8, ge=1, description="Jobs running at once, site-wide.")
    jobs_max_running_per_user: int = Field(default=4, ge=1)
    job_stop_grace_seconds: float = Field(default=5.0, ge=0, le=600)
    job_default_wall_time_seconds: int = Field(default=24 * 3600, ge=1)
    job_default_memory_bytes: int = Field(default=4 * 1024**3, ge=16 * 1024**2)
    job_max_processes: int = Field(default=512, ge=1)
    job_max_file_bytes: int = Field(default=16 * 1024**3, ge=1024)
    supervisor: bool = Field(
        default=True, description="Run and watch jobs in this process (one per site)."
    )
    snapshot_save_timeout_seconds: int = Field(
        default=120, ge=1, le=24 * 3600, description="How long a DT's save script may take."
    )
    snapshot_max_bytes: int = Field(
        default=8 * 1024**3, ge=1024, description="Largest snapshot uploaded or unpacked."
    )
    storage_quota_mb: int | None = Field(
        default=None,
        ge=0,
        description="Each user's storage (library, instances' working copies, snapshots) "
        "in MiB, unless an administrator sets their own; unset means unlimited.",
    )
    executor: Literal["local", "ray"] = Field(
        default="local",
        description="Where jobs run unless a DT asks otherwise: this machine, or the Ray "
        "cluster at ray_address.",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster's dashboard (jobs API) URL, e.g. http://127.0.0.1:8265.",
    )
    ray_auth_token: SecretStr | None = Field(
        default=None,
        description="The token of a Ray cluster started with RAY_AUTH_MODE=token.",
    )
    ray_shared_dir: Path | None = Field(
        default=None,
        description="A directory every Ray node mounts at this same path: working copies "
        "under it run in place and their results land in them directly; others are "
        "uploaded, and what a job writes stays on the node.",
    )
    ray_max_upload_bytes: int = Field(
        default=100 * 1024**2,
        ge=1024,
        le=512 * 1024**2,  # Ray's own limit for an uploaded working_dir
        description="Largest working copy uploaded to Ray; larger ones need ray_shared_dir.",
    )
    ray_autoscaling: bool = Field(
        default=False,
        description="The cluster adds nodes on demand (e.g. KubeRay's autoscaler): a job "
        "asking for more than any node now has waits for one instead of being refused.",
    )
    mqtt_url: str | None = Field(default=None, description="e.g. mqtt://127.0.0.1:1883")
    mqtt_dynsec: bool = Field(
        default=False,
        description="The user in mqtt_url is an admin of Mosquitto's dynamic-security plugin: "
        "each instance then gets an MQTT account of its own, confined to its topic prefix, "
        "and jobs never get mqtt_url's credentials.",
    )
    amqp_url: str | None = Field(
        default=None, description="e.g. amqp://guest:guest@127.0.0.1:5672/"
    )
    amqp_management_url: str | None = Field(
        default=None,
        description="RabbitMQ's management API with an administrator's credentials, e.g. "
        "http://admin:password@127.0.0.1:15672; with it each instance gets a vhost and user "
        "of its own, without it every job shares amqp_url's account.",
    )
    postgres_url: str | None = Field(
        default=None, description="PostgreSQL for DTs (not the platform's own database)."
    )
    influxdb_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:8086")
    embedded_mqtt: bool = Field(
        default=True,
        description="Without mqtt_url, start an MQTT broker on 127.0.0.1 inside the platform.",
    )
    embedded_mqtt_port: int = Field(
        default=1884,  # not 1883, so it never takes the port of a real broker
        ge=0,
        le=65535,
        description="Port of the embedded broker; 0 (or a busy port) picks a free one.",
    )
    service_check_timeout_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long a service's health check may take."
    )
    service_health_cache_seconds: float = Field(
        default=5.0, ge=0, le=3600, description="How long a health check's result is reused."
    )
    telemetry_retention_days: int = Field(
        default=30,
        ge=0,
        le=36500,
        description="Telemetry points older than this are deleted; 0 keeps them forever.",
    )
    telemetry_batch_points: int = Field(
        default=2000, ge=1, le=100_000, description="Telemetry points written per batch."
    )
    telemetry_flush_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Longest a telemetry point waits to be written."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003  # fixed signature
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @field_validator("host")
    @classmethod
    def _host_is_an_address(cls, value: str) -> str:
        if value == "localhost":
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"host {value!r} is not an IP address; use e.g. 127.0.0.1") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith(("postgres://", "postgresql://")):
            # Plain postgres URLs would pick psycopg2, which we do not ship.
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite", "postgresql+psycopg://")):
            raise ValueError(
                "database_url must be sqlite:///<file> or postgresql+psycopg://...; "
                f"got a URL with scheme {value.split(':', 1)[0]!r}"
            )
        return value

    @field_validator("ray_address")
    @classmethod
    def _ray_address_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                f"ray_address {value!r} is not the dashboard's URL; use e.g. http://127.0.0.1:8265"
            )
        return value.rstrip("/") if value else value

    @field_validator("amqp_management_url")
    @classmethod
    def _amqp_management_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(
                "amqp_management_url must be the HTTP address of RabbitMQ's management "
                "API, e.g. http://admin:password@127.0.0.1:15672"
            )
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _ray_executor_has_an_address(self) -> Settings:
        if self.executor == "ray" and self.ray_address is None:
            raise ValueError(
                "executor is 'ray' but ray_address is not set; set DTAAS_RAY_ADDRESS to "
                "the Ray dashboard's URL, e.g. http://127.0.0.1:8265"
            )
        return self

    @model_validator(mode="after")
    def _mqtt_dynsec_has_an_admin(self) -> Settings:
        if self.mqtt_dynsec and not self.mqtt_url:
            raise ValueError(
                "mqtt_dynsec is set but mqtt_url is not; set DTAAS_MQTT_URL to the Mosquitto "
                "whose dynamic-security admin the platform is, e.g. "
                "mqtt://dtaas-admin:<password>@127.0.0.1:1883"
            )
        if self.mqtt_dynsec and self.mqtt_url and "@" not in self.mqtt_url.split("://", 1)[-1]:
            raise ValueError(
                "mqtt_dynsec is set but mqtt_url carries no user; write the dynamic-security "
                "admin's name and password into it, e.g. "
                "mqtt://dtaas-admin:<password>@127.0.0.1:1883"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'dtaas.db').resolve()}"

    @property
    def resolved_files_dir(self) -> Path:
        """Root of the libraries: ``<files>/<user>/...`` and ``<files>/common/...``."""
        return (self.files_dir or self.data_dir / "files").resolve()

    def signing_key(self) -> str:
        """The cookie-signing key: configured, or created once with mode 0600 and reused."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a leftover file keeps its old mode otherwise
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            tmp.replace(path)
        return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
