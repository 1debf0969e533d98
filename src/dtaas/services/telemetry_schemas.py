"""What the telemetry API returns: an instance's fields and a (downsampled) series."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TelemetryFieldRead(BaseModel):
    """A field an instance's manifest declares, or one it has sent, or both."""

    field: str
    label: str = ""
    unit: str = ""
    declared: bool = Field(description="Listed under `telemetry:` in the DT's dt.yaml.")
    first_ts: float | None = Field(default=None, description="Epoch seconds of its first point.")
    last_ts: float | None = Field(default=None, description="Epoch seconds of its last point.")
    last_value: float | None = None


class TelemetryFields(BaseModel):
    """Declared fields first (in the manifest's order), then the others by name."""

    instance_id: int
    fields: list[TelemetryFieldRead]


class TelemetrySeries(BaseModel):
    """One field over a time range, in columns (the shape uPlot draws).

    When the range holds more points than asked for, it is cut into ``points`` buckets of
    equal time and each non-empty bucket gives one row: ``t`` is the mean time of its
    points, ``avg``, ``min`` and ``max`` their mean, smallest and largest value, ``count``
    how many there were. So the extremes survive downsampling (a spike stays visible as
    ``max``) and the mean line stays honest. Otherwise every point is a row of its own
    (``avg == min == max``, ``count == 1``).
    """

    instance_id: int
    field: str
    unit: str = ""
    start: float | None = Field(description="Epoch seconds the range starts at (inclusive).")
    end: float | None = Field(description="Epoch seconds the range ends at (inclusive).")
    points: int = Field(description="The most rows asked for.")
    raw_points: int = Field(description="How many points the range holds.")
    downsampled: bool
    bucket_seconds: float | None = None
    t: list[float]
    avg: list[float]
    min: list[float]
    max: list[float]
    count: list[int]
