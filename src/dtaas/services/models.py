"""Tables of the services domain: external services an admin registered, telemetry points."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.orm import Mapped, mapped_column

from dtaas.db import Base, UtcDateTime, utcnow


class ServiceKind(StrEnum):
    """The protocols the platform knows how to check and hand to a DT."""

    MQTT = "mqtt"
    AMQP = "amqp"
    POSTGRES = "postgres"
    INFLUXDB = "influxdb"
    HTTP = "http"


class HealthStatus(StrEnum):
    """What the last health check of a service found."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  # not checked yet


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class RegisteredService(Base):
    """An external service: its URL holds no credentials, its password is Fernet-encrypted."""

    __tablename__ = "registered_service"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[ServiceKind] = mapped_column(
        SqlEnum(ServiceKind, native_enum=False, length=16, values_callable=_values)
    )
    url: Mapped[str] = mapped_column(String(2048))
    username: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # A Fernet token (base64 text); the plaintext is never stored.
    password_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def has_password(self) -> bool:
        return self.password_encrypted is not None


class TelemetryPoint(Base):
    """One value of one field of an instance's telemetry, as received over MQTT.

    ``ts`` is epoch seconds (double precision) rather than a timestamp column: bucketing
    for downsampling is then plain arithmetic that SQLite and PostgreSQL do alike. ``id``
    grows with insertion, so a live stream asks for ``id > last`` whatever the points'
    own (possibly late or out-of-order) timestamps.
    """

    __tablename__ = "telemetry_point"
    __table_args__ = (
        Index("ix_telemetry_point_series", "instance_id", "field", "ts"),
        # Ids never reused on SQLite either (a stream resumes after the last id it saw).
        {"sqlite_autoincrement": True},
    )

    # INTEGER on SQLite makes it the rowid: no second index, inserts stay cheap.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(128))
    ts: Mapped[float] = mapped_column(Float(precision=53))
    value: Mapped[float] = mapped_column(Float(precision=53))
