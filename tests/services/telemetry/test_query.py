"""Reading telemetry on both backends: downsampling bounds and correctness, ranges, fields,
CSV, the live stream's paging, retention, and who may read what."""

from __future__ import annotations

import csv
import io
import math
import time
from typing import Any

import pytest

from dtaas.errors import InvalidInput, NotFound
from dtaas.security.permissions import Principal
from dtaas.services import telemetry_query as query
from dtaas.services import telemetry_store
from dtaas.services.telemetry import TelemetryIngestor
from dtaas.services.telemetry_schemas import TelemetrySeries
from tests.execution.processes import wait_until
from tests.services.support import MOSQUITTO_URL
from tests.services.telemetry.conftest import Site

START = 1_764_230_400.0


def _store(site: Site, rows: list[telemetry_store.Row]) -> None:
    with site.engine.begin() as connection:
        telemetry_store.insert_points(connection, rows)


def _read(
    site: Site, owner: Principal, instance_id: int, field: str = "x", **options: Any
) -> TelemetrySeries:
    with site.sessions() as session:
        return query.read_series(
            session=session,
            settings=site.settings,
            actor=owner,
            instance_id=instance_id,
            field=field,
            **options,
        )


def _wave(instance_id: int, count: int, step: float = 0.1) -> list[telemetry_store.Row]:
    """A sine with one spike up and one down, ``step`` seconds apart."""
    rows = []
    for n in range(count):
        value = math.sin(n / 50)
        if n == 4321:
            value = 25.0
        if n == 7777:
            value = -30.0
        rows.append((instance_id, "x", START + n * step, value))
    return rows


@pytest.fixture
def owner(site: Site) -> Principal:
    return site.new_user()


@pytest.fixture
def instance_id(site: Site, owner: Principal) -> int:
    return site.new_instance(owner)


def test_ten_thousand_points_come_back_as_at_most_500_keeping_min_and_max(
    site: Site, owner: Principal, instance_id: int
) -> None:
    rows = _wave(instance_id, 10_000)
    _store(site, rows)

    series = _read(site, owner, instance_id, points=500)

    assert series.downsampled
    assert series.raw_points == 10_000
    assert len(series.t) <= 500
    assert sum(series.count) == 10_000
    assert max(series.max) == 25.0
    assert min(series.min) == -30.0
    assert series.t == sorted(series.t)
    assert all(
        lo <= mean <= hi for lo, mean, hi in zip(series.min, series.avg, series.max, strict=True)
    )


def test_each_bucket_holds_exactly_the_points_of_its_time_slice(
    site: Site, owner: Principal, instance_id: int
) -> None:
    rows = _wave(instance_id, 2_000, step=0.37)
    _store(site, rows)

    series = _read(site, owner, instance_id, points=64)

    # The same buckets computed here: equal slices of [first, last], the last one closed.
    low, high = rows[0][2], rows[-1][2]
    width = (high - low) / 64
    expected: dict[int, list[tuple[float, float]]] = {}
    for _, _, ts, value in rows:
        expected.setdefault(min(math.floor((ts - low) / width), 63), []).append((ts, value))
    assert series.bucket_seconds == pytest.approx(width)
    assert series.count == [len(expected[k]) for k in sorted(expected)]
    for n, key in enumerate(sorted(expected)):
        points = expected[key]
        assert series.min[n] == min(v for _, v in points)
        assert series.max[n] == max(v for _, v in points)
        assert series.avg[n] == pytest.approx(sum(v for _, v in points) / len(points))
        assert series.t[n] == pytest.approx(sum(t for t, _ in points) / len(points))


def test_few_points_come_back_as_they_are(site: Site, owner: Principal, instance_id: int) -> None:
    _store(site, [(instance_id, "x", START + n, float(n * n)) for n in range(100)])

    series = _read(site, owner, instance_id, points=500)

    assert not series.downsampled
    assert series.t == [START + n for n in range(100)]
    assert series.avg == series.min == series.max == [float(n * n) for n in range(100)]
    assert series.count == [1] * 100


def test_a_range_is_inclusive_and_takes_epoch_seconds_or_iso_times(
    site: Site, owner: Principal, instance_id: int
) -> None:
    _store(site, [(instance_id, "x", START + n, float(n)) for n in range(60)])

    by_epoch = _read(site, owner, instance_id, start=str(START + 10), end=str(START + 20))
    by_iso = _read(
        site, owner, instance_id, start="2025-11-27T08:00:10Z", end="2025-11-27T09:00:20+01:00"
    )

    assert by_epoch.avg == [float(n) for n in range(10, 21)]
    assert by_iso.avg == by_epoch.avg
    assert (by_iso.start, by_iso.end) == (START + 10, START + 20)


def test_other_fields_and_instances_do_not_leak_into_a_series(
    site: Site, owner: Principal, instance_id: int
) -> None:
    other = site.new_instance(owner)
    _store(site, [(instance_id, "x", START, 1.0), (instance_id, "v", START, 2.0)])
    _store(site, [(other, "x", START, 3.0)])

    assert _read(site, owner, instance_id).avg == [1.0]
    assert _read(site, owner, other).avg == [3.0]


def test_fields_list_the_declared_ones_first_with_units_then_the_others(
    site: Site, owner: Principal, instance_id: int
) -> None:
    _store(
        site,
        [
            (instance_id, "x", START + 1, 1.0),
            (instance_id, "x", START + 5, 5.0),
            (instance_id, "zeta", START, 9.0),
            (instance_id, "alpha", START, 8.0),
        ],
    )
    with site.sessions() as session:
        listed = query.list_fields(
            session=session, settings=site.settings, actor=owner, instance_id=instance_id
        )

    assert [(f.field, f.unit, f.label, f.declared) for f in listed.fields] == [
        ("x", "m", "Position", True),
        ("v", "m/s", "", True),
        ("alpha", "", "", False),
        ("zeta", "", "", False),
    ]
    x = listed.fields[0]
    assert (x.first_ts, x.last_ts, x.last_value) == (START + 1, START + 5, 5.0)
    assert listed.fields[1].first_ts is None  # declared, nothing sent yet


def test_a_declared_field_without_points_is_an_empty_series(
    site: Site, owner: Principal, instance_id: int
) -> None:
    series = _read(site, owner, instance_id, field="v")

    assert (series.t, series.raw_points, series.unit) == ([], 0, "m/s")


@pytest.mark.parametrize(
    ("options", "message", "loc"),
    [
        ({"field": "bad name"}, "is not a telemetry field name", ["query", "field"]),
        ({"field": "1x"}, "is not a telemetry field name", ["query", "field"]),
        ({"start": "yesterday"}, "start 'yesterday' is not a time", ["query", "start"]),
        ({"end": "2025-13-40"}, "end '2025-13-40' is not a time", ["query", "end"]),
        ({"start": str(START + 5), "end": str(START)}, "must be before end", ["query", "start"]),
        ({"start": str(START), "end": str(START)}, "must be before end", ["query", "start"]),
        ({"points": 1}, "points must be from 2 to 10000, not 1", ["query", "points"]),
        ({"points": 10_001}, "not 10001", ["query", "points"]),
    ],
)
def test_bad_parameters_are_refused_saying_which_and_why(
    site: Site,
    owner: Principal,
    instance_id: int,
    options: dict[str, object],
    message: str,
    loc: list[str],
) -> None:
    arguments: dict[str, Any] = {"field": "x", **options}
    with pytest.raises(InvalidInput, match=message) as raised:
        _read(site, owner, instance_id, **arguments)
    assert raised.value.loc == loc


def test_an_unknown_field_is_not_found_naming_where_the_fields_are(
    site: Site, owner: Principal, instance_id: int
) -> None:
    with pytest.raises(NotFound, match=r"no telemetry field 'nope'; GET .*/telemetry/fields"):
        _read(site, owner, instance_id, field="nope")


def test_another_users_instance_is_not_found(
    site: Site, owner: Principal, instance_id: int
) -> None:
    _store(site, [(instance_id, "x", START, 1.0)])
    stranger = site.new_user("stranger")

    with pytest.raises(NotFound, match=f"There is no instance {instance_id}"):
        _read(site, stranger, instance_id)
    with site.sessions() as session, pytest.raises(NotFound):
        query.points_after(session, actor=stranger, instance_id=instance_id, after=0)


def test_csv_export_holds_every_point_by_field_then_time(
    site: Site, owner: Principal, instance_id: int
) -> None:
    _store(
        site,
        [
            (instance_id, "x", START + 1, 0.1),
            (instance_id, "v", START, -2.0),
            (instance_id, "x", START, 1e-300),
        ],
    )
    with site.sessions() as session:
        export = query.prepare_export(session=session, actor=owner, instance_id=instance_id)
    rows = list(csv.reader(io.StringIO("".join(query.iter_csv(site.sessions, export)))))

    assert rows == [
        ["time", "epoch_seconds", "field", "value"],
        ["2025-11-27T08:00:00Z", repr(START), "v", "-2.0"],
        ["2025-11-27T08:00:00Z", repr(START), "x", "1e-300"],
        ["2025-11-27T08:00:01Z", repr(START + 1), "x", "0.1"],
    ]


def test_csv_export_of_some_fields_in_a_range(
    site: Site, owner: Principal, instance_id: int
) -> None:
    _store(site, [(instance_id, f, START + n, float(n)) for n in range(10) for f in ("x", "v")])
    with site.sessions() as session:
        export = query.prepare_export(
            session=session,
            actor=owner,
            instance_id=instance_id,
            fields=["v"],
            start=str(START + 2),
            end=str(START + 4),
        )
    text = "".join(query.iter_csv(site.sessions, export))

    assert [row[2:] for row in csv.reader(io.StringIO(text))][1:] == [
        ["v", "2.0"],
        ["v", "3.0"],
        ["v", "4.0"],
    ]


def test_new_points_are_paged_by_id_and_filtered_by_field(
    site: Site, owner: Principal, instance_id: int
) -> None:
    other = site.new_instance(owner)
    with site.sessions() as session:
        start = query.last_point_id(session)
    _store(site, [(instance_id, "x", START + n, float(n)) for n in range(5)])
    _store(site, [(other, "x", START, 99.0)])
    _store(site, [(instance_id, "v", START, -1.0)])

    with site.sessions() as session:
        newest = query.last_point_id(session)
        first_id, first = query.points_after(
            session, actor=owner, instance_id=instance_id, after=start, limit=3
        )
        rest_id, rest = query.points_after(
            session, actor=owner, instance_id=instance_id, after=first_id
        )
        _, only_v = query.points_after(
            session, actor=owner, instance_id=instance_id, after=start, fields=["v"]
        )
        end_id, nothing = query.points_after(
            session, actor=owner, instance_id=instance_id, after=rest_id
        )

    assert first == {"x": {"t": [START, START + 1, START + 2], "v": [0.0, 1.0, 2.0]}}
    assert rest == {
        "x": {"t": [START + 3, START + 4], "v": [3.0, 4.0]},
        "v": {"t": [START], "v": [-1.0]},
    }
    assert only_v == {"v": {"t": [START], "v": [-1.0]}}
    assert (nothing, end_id) == ({}, rest_id)
    assert rest_id == newest  # past the other instance's point too: never scanned again


def test_retention_deletes_only_points_older_than_the_cutoff(
    site: Site, owner: Principal, instance_id: int
) -> None:
    other = site.new_instance(owner)
    day = 86_400.0
    _store(site, [(instance_id, "x", START - day * d, float(d)) for d in (40, 31, 29, 1)])
    _store(site, [(other, "x", START - day * d, float(d)) for d in (45, 0)])

    # Chunks of two: the loop must go on until a chunk comes back short.
    deleted = telemetry_store.delete_expired(site.engine, before=START - 30 * day, chunk=2)

    assert deleted == 3
    assert sorted(_read(site, owner, instance_id).avg) == [1.0, 29.0]
    assert _read(site, owner, other).avg == [0.0]


def test_the_ingestor_enforces_retention_when_it_starts(
    site: Site, owner: Principal, instance_id: int
) -> None:
    now = time.time()
    _store(site, [(instance_id, "x", now - 3 * 86_400, 3.0), (instance_id, "x", now, 0.0)])
    settings = site.settings.model_copy(update={"telemetry_retention_days": 2})
    ingestor = TelemetryIngestor(settings=settings, engine=site.engine, broker_url=MOSQUITTO_URL)
    ingestor.start()
    try:
        wait_until(lambda: site.count_points(instance_id) == 1, timeout=10, message="the sweep")
    finally:
        ingestor.stop()

    assert _read(site, owner, instance_id).avg == [0.0]


def test_deleting_an_instance_deletes_its_points(
    site: Site, owner: Principal, instance_id: int
) -> None:
    _store(site, [(instance_id, "x", START, 1.0)])

    site.delete_instance(owner, instance_id)

    assert site.count_points(instance_id) == 0
