"""Reading telemetry topics and payloads: the rules in telemetry_payload's docstring."""

from __future__ import annotations

import json

import pytest

from dtaas.services.telemetry_payload import (
    MAX_FIELDS,
    BadPayload,
    Topic,
    parse_payload,
    parse_time,
    parse_topic,
)

RECEIVED = 1_764_230_400.0


def _parse(document: object) -> tuple[float, dict[str, float]]:
    return parse_payload(json.dumps(document).encode(), received=RECEIVED)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("dtaas/alice/12/telemetry", Topic("alice", 12)),
        ("dtaas/alice/12/a/b/c", Topic("alice", 12)),
        ("dtaas/alice/12", Topic("alice", 12)),
        ("dtaas/alice/12/", Topic("alice", 12)),
        ("dtaas/Alice/12/x", None),  # usernames are lowercase
        ("dtaas/alice/012/x", None),  # one spelling per instance
        ("dtaas/alice/0/x", None),
        ("dtaas/alice/-1/x", None),
        ("dtaas/alice/twelve/x", None),
        ("other/alice/12/x", None),
        ("dtaas/alice", None),
    ],
)
def test_topics_name_a_user_and_an_instance(topic: str, expected: Topic | None) -> None:
    assert parse_topic(topic) == expected


def test_numbers_are_fields_and_everything_else_is_ignored() -> None:
    when, fields = _parse(
        {"x": 1, "y": -2.5, "on": True, "name": "tank", "list": [1], "none": None, "bad key": 3}
    )

    assert when == RECEIVED
    assert fields == {"x": 1.0, "y": -2.5}


def test_nested_objects_become_dotted_fields_up_to_four_levels() -> None:
    _, fields = _parse({"a": {"b": {"c": {"d": 1, "e": {"f": 2}}}}, "m": {"rpm": 1200}})

    assert fields == {"a.b.c.d": 1.0, "m.rpm": 1200.0}


def test_non_finite_numbers_are_ignored() -> None:
    _, fields = parse_payload(b'{"x": NaN, "y": Infinity, "z": 1}', received=RECEIVED)

    assert fields == {"z": 1.0}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"t": 1_764_230_000.5}, 1_764_230_000.5),
        ({"t": 1_764_230_000_500}, 1_764_230_000.5),  # milliseconds
        ({"timestamp": "2025-11-27T08:00:00Z"}, 1_764_230_400.0),
        ({"timestamp": "2025-11-27T09:00:00+01:00"}, 1_764_230_400.0),
        ({"timestamp": "2025-11-27 08:00:00"}, 1_764_230_400.0),  # no zone: UTC
        ({"time": "1764230000"}, 1_764_230_000.0),
        ({"timestamp": 5}, 5.0),  # "timestamp" is always a clock reading
    ],
)
def test_the_time_is_read_from_t_timestamp_or_time(
    document: dict[str, object], expected: float
) -> None:
    when, fields = _parse({**document, "x": 1})

    assert when == expected
    assert fields == {"x": 1.0}


def test_a_small_t_is_a_simulations_time_and_stays_a_field() -> None:
    when, fields = _parse({"t": 12.5, "x": 1})

    assert when == RECEIVED
    assert fields == {"t": 12.5, "x": 1.0}


def test_a_simulations_t_can_come_with_a_clock_time() -> None:
    when, fields = _parse({"t": 12.5, "time": 1_764_230_000.25, "x": 1})

    assert when == 1_764_230_000.25
    assert fields == {"t": 12.5, "x": 1.0}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"42", "a JSON int, not an object"),
        (b"[1]", "a JSON list, not an object"),
        (b'{"t": "soon"}', "its 't'"),
        (b'{"timestamp": "2999-01-01T00:00:00Z", "x": 1}', "more than a day in the future"),
        (b'{"t": true}', "its 't'"),
        (b"{" + b" " * 70_000 + b"}", "bytes; at most"),
    ],
)
def test_unreadable_payloads_are_refused_saying_why(payload: bytes, reason: str) -> None:
    with pytest.raises(BadPayload, match=reason):
        parse_payload(payload, received=RECEIVED)


def test_at_most_256_fields_are_taken() -> None:
    _, fields = _parse({f"f{n}": n for n in range(MAX_FIELDS + 50)})

    assert len(fields) == MAX_FIELDS


@pytest.mark.parametrize("value", ["", "nan", "inf", "2025-13-01", "yesterday", None, [1]])
def test_parse_time_refuses_what_is_not_a_time(value: object) -> None:
    with pytest.raises(ValueError, match=r"time|seconds"):
        parse_time(value)
