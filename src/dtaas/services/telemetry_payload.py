"""What a telemetry message means: its topic's instance, its fields and its timestamp.

A DT publishes to ``dtaas/<user>/<instance>/<anything>`` a JSON object of numeric fields::

    {"x": 0.93, "v": -0.41, "t": 1764230400.25}
    {"temperature_c": 21.4, "timestamp": "2026-11-27T08:00:00.250Z"}
    {"motor": {"rpm": 1200, "current_a": 3.1}}      -> fields motor.rpm, motor.current_a

Rules, each chosen so that a sloppy publisher loses a field rather than the message:

- ``t``, ``timestamp`` or ``time`` (the first that is one) is the time: epoch seconds (a value
  above 1e11 is taken for milliseconds, as JavaScript sends) or ISO 8601 (UTC when no zone
  is given). Without one, the time the platform received the message is used.
- A numeric ``t``/``time`` before 2001 is not a clock reading but a simulation's own time
  (they start at 0): it stays an ordinary field and the receive time is used.
- Other numbers (not booleans, not NaN or infinities) are fields; nested objects are
  flattened with dots, up to 4 levels; strings, lists and nulls are ignored.
- Field names follow the manifest's rule (letters, digits, ``_`` and ``.``, at most 128).
- A message over 64 KiB, one that is not a JSON object, or one dated more than a day in
  the future is refused whole (a point there would outlive retention and skew charts).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

TOPIC_ROOT = "dtaas"
SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/#"
TIME_KEYS = ("t", "timestamp", "time")
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$"
_FIELD = re.compile(FIELD_PATTERN)
_USERNAME = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")  # security's USERNAME_PATTERN
_INSTANCE = re.compile(r"^[1-9][0-9]{0,17}$")
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_FIELDS = 256
MAX_DEPTH = 4
EARLIEST_CLOCK = 1e9  # 2001-09-09: anything earlier is a simulation's time, not a clock's
MILLISECONDS_ABOVE = 1e11  # seconds would be the year 5138
FUTURE_TOLERANCE_SECONDS = 86_400.0


class BadPayload(ValueError):
    """Raised when a message cannot be read as telemetry; the text says why."""


@dataclass(frozen=True, slots=True)
class Topic:
    """The owner and instance a telemetry topic names."""

    username: str
    instance_id: int


@lru_cache(maxsize=4096)  # a DT publishes to the same few topics over and over
def parse_topic(topic: str) -> Topic | None:
    """The user and instance of ``dtaas/<user>/<instance>/...``, or None if it is not one."""
    parts = topic.split("/", 3)
    if len(parts) < 3 or parts[0] != TOPIC_ROOT:
        return None
    username, instance = parts[1], parts[2]
    if not _USERNAME.match(username) or not _INSTANCE.match(instance):
        return None
    return Topic(username=username, instance_id=int(instance))


def parse_time(value: Any) -> float:
    """Epoch seconds from a number (seconds, or milliseconds above 1e11) or ISO 8601 text.

    Raises: ValueError saying what was wrong with ``value``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is neither epoch seconds nor an ISO 8601 time")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return _iso_seconds(text)
        return parse_time(number) if math.isfinite(number) else _iso_seconds(text)
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite number of seconds")
    return seconds / 1000.0 if abs(seconds) > MILLISECONDS_ABOVE else seconds


def _iso_seconds(text: str) -> float:
    try:
        # fromisoformat takes "Z" from Python 3.11 on; a space for "T" is fine as well.
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text[:40]!r} is not an ISO 8601 time such as 2026-11-27T08:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@lru_cache(maxsize=4096)  # field names repeat in every message
def _is_field_name(name: str) -> bool:
    return _FIELD.match(name) is not None


def _flatten(values: dict[str, Any], prefix: str, depth: int, out: dict[str, float]) -> None:
    for key, value in values.items():
        if len(out) >= MAX_FIELDS:
            return
        kind = type(value)  # exact types: bool is an int subclass, and not a number here
        if kind is float or kind is int:
            number = float(value)
            name = prefix + key
            if math.isfinite(number) and _is_field_name(name):
                out[name] = number
        elif kind is dict and depth < MAX_DEPTH:
            _flatten(value, f"{prefix}{key}.", depth + 1, out)


def parse_payload(payload: bytes, *, received: float) -> tuple[float, dict[str, float]]:
    """The time and the numeric fields of one message (possibly no fields at all).

    Raises: BadPayload.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadPayload(f"{len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} are read")
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise BadPayload(f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise BadPayload(f"a JSON {type(document).__name__}, not an object of fields")
    when = received
    for key in TIME_KEYS:
        if key not in document:
            continue
        raw = document[key]
        if key != "timestamp" and _is_simulation_time(raw):
            continue  # stays a field; a later key may still be the clock
        try:
            when = parse_time(raw)
        except ValueError as exc:
            raise BadPayload(f"its {key!r}: {exc}") from None
        if when > received + FUTURE_TOLERANCE_SECONDS:
            raise BadPayload(f"its {key!r} is more than a day in the future")
        document = {name: value for name, value in document.items() if name != key}
        break
    fields: dict[str, float] = {}
    _flatten(document, "", 1, fields)
    return when, fields


def _is_simulation_time(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and abs(value) < EARLIEST_CLOCK
    )
