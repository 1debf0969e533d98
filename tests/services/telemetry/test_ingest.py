"""Telemetry ingestion end to end: paho publishes to a real broker (the machine's Mosquitto
or the embedded amqtt), the platform's subscriber stores the points in batches, on SQLite
and PostgreSQL; what does not belong is dropped and counted, and nothing stops it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event, text

from dtaas.security.permissions import Principal
from dtaas.services.telemetry import TelemetryIngestor
from dtaas.services.telemetry_query import read_series
from dtaas.services.telemetry_schemas import TelemetrySeries
from tests.execution.processes import wait_until
from tests.services.telemetry.conftest import (
    Publisher,
    Site,
    topic_of,
    wait_for_points,
)

NOW = 1_764_230_400.0  # 2025-11-27 08:00 UTC: a fixed, recent clock reading


def _series(site: Site, owner: Principal, instance_id: int, field: str) -> TelemetrySeries:
    with site.sessions() as session:
        return read_series(
            session=session,
            settings=site.settings,
            actor=owner,
            instance_id=instance_id,
            field=field,
        )


def _counts_settle(ingestor: TelemetryIngestor, outcome: str, at_least: int) -> int:
    return wait_until(
        lambda: (n := ingestor.counts()[outcome]) >= at_least and n,
        timeout=10,
        message=f"{at_least} message(s) counted as {outcome}",
    )


def test_published_points_become_queryable(
    site: Site, ingestor: TelemetryIngestor, publisher: Publisher
) -> None:
    owner = site.new_user()
    instance_id = site.new_instance(owner)

    publisher.send(topic_of(owner, instance_id), {"x": 1.5, "v": -0.25, "t": NOW})
    publisher.send(topic_of(owner, instance_id, "a/b"), {"x": 2.5, "t": NOW + 1})
    wait_for_points(site, instance_id, 3, ingestor=ingestor)

    x = _series(site, owner, instance_id, "x")
    v = _series(site, owner, instance_id, "v")
    assert (x.t, x.avg, x.unit) == ([NOW, NOW + 1], [1.5, 2.5], "m")
    assert (v.t, v.avg) == ([NOW], [-0.25])
    assert _counts_settle(ingestor, "points", 3) == 3


def test_timestamps_in_iso_milliseconds_or_missing_are_understood(
    site: Site, ingestor: TelemetryIngestor, publisher: Publisher
) -> None:
    owner = site.new_user()
    instance_id = site.new_instance(owner)
    before = time.time()

    publisher.send(topic_of(owner, instance_id), {"x": 1, "timestamp": "2025-11-27T08:00:10Z"})
    publisher.send(topic_of(owner, instance_id), {"x": 2, "t": (NOW + 20) * 1000})
    # A simulation's own time starts at 0: it is a field, and the receive time is used.
    publisher.send(topic_of(owner, instance_id), {"x": 3, "t": 0.25})
    wait_for_points(site, instance_id, 4, ingestor=ingestor)

    x = _series(site, owner, instance_id, "x")
    assert x.avg == [1.0, 2.0, 3.0]
    assert x.t[:2] == [NOW + 10, NOW + 20]
    assert before <= x.t[2] <= time.time()
    sim = _series(site, owner, instance_id, "t")
    assert sim.avg == [0.25]


def test_another_users_topic_and_unknown_instances_are_dropped(
    site: Site, ingestor: TelemetryIngestor, publisher: Publisher, broker_url: str
) -> None:
    owner, intruder = site.new_user(), site.new_user("intruder")
    instance_id = site.new_instance(owner)
    missing = instance_id + 100_000

    publisher.send(topic_of(intruder, instance_id), {"x": 666})  # not the intruder's instance
    publisher.send(topic_of(owner, missing), {"x": 667})  # no such instance
    publisher.send(f"dtaas/{owner.username}/not-a-number/telemetry", {"x": 668})
    publisher.send(topic_of(owner, instance_id), {"x": 1})  # sent last: once it is stored,
    wait_for_points(site, instance_id, 1, ingestor=ingestor)  # the others have been handled

    assert _series(site, owner, instance_id, "x").avg == [1.0]
    assert site.count_points(missing) == 0
    counts = ingestor.counts()
    if broker_url.startswith("mqtt://127.0.0.1:1883"):
        # Mosquitto is shared: other tests' topics are dropped here too.
        assert counts["unknown_instance"] >= 2
        assert counts["bad_topic"] >= 1
    else:
        assert (counts["unknown_instance"], counts["bad_topic"]) == (2, 1)


def test_bad_payloads_are_counted_and_do_not_stop_the_subscriber(
    site: Site, ingestor: TelemetryIngestor, publisher: Publisher
) -> None:
    owner = site.new_user()
    instance_id = site.new_instance(owner)
    topic = topic_of(owner, instance_id)
    bad = [
        b"\xff\xfe\x00",  # not UTF-8
        b"{not json",
        b"[1, 2, 3]",  # JSON, not an object
        b'{"x": 1, "t": "yesterday"}',  # a time that is not one
        b'{"x": 1, "t": 99999999999}',  # seconds in the year 5138: in the future
        b'{"x": 1, "timestamp": "2999-01-01T00:00:00Z"}',  # far in the future
        b'{"x": "' + b"a" * 70_000 + b'"}',  # over 64 KiB
    ]
    for payload in bad:
        publisher.send(topic, payload)
    publisher.send(topic, b'{"status": "ok", "on": true, "list": [1], "none": null}')  # no field
    publisher.send(topic, {"x": 42.0, "nested": {"deep": {"y": 7}}, "nan": "NaN"})
    wait_for_points(
        site, instance_id, 2, ingestor=ingestor
    )  # x and nested.deep.y of the last message

    assert _series(site, owner, instance_id, "nested.deep.y").avg == [7.0]

    assert _series(site, owner, instance_id, "x").avg == [42.0]
    assert site.count_points(instance_id) == 2
    assert _counts_settle(ingestor, "stored", 1) == 1
    counts = ingestor.counts()
    assert counts["bad_payload"] == len(bad)
    assert counts["empty"] == 1


def test_points_of_an_instance_deleted_meanwhile_are_dropped_not_fatal(
    site: Site, ingestor: TelemetryIngestor, publisher: Publisher
) -> None:
    owner = site.new_user()
    doomed, kept = site.new_instance(owner), site.new_instance(owner)
    publisher.send(topic_of(owner, doomed), {"x": 1})
    wait_for_points(site, doomed, 1, ingestor=ingestor)  # its owner is cached now

    site.delete_instance(owner, doomed)
    publisher.send(topic_of(owner, doomed), {"x": 2})  # fails the foreign key, once
    publisher.send(topic_of(owner, kept), {"x": 3})
    wait_for_points(site, kept, 1, ingestor=ingestor)

    assert site.count_points(doomed) == 0  # deleted with its instance, and not re-added
    assert ingestor.counts()["write_failed"] == 0


@pytest.mark.parametrize("broker_url", ["embedded"], indirect=True)
def test_a_burst_is_written_in_a_few_batches(
    site: Site, broker_url: str, publisher: Publisher
) -> None:
    settings = site.settings.model_copy(
        update={"telemetry_batch_points": 1000, "telemetry_flush_seconds": 0.5}
    )
    commits: list[float] = []
    event.listen(site.engine, "commit", lambda _connection: commits.append(time.monotonic()))
    ingestor = TelemetryIngestor(settings=settings, engine=site.engine, broker_url=broker_url)
    ingestor.start()
    try:
        assert ingestor.wait_subscribed(5)
        owner = site.new_user()
        instance_id = site.new_instance(owner)
        commits.clear()
        for n in range(3000):
            publisher.client.publish(topic_of(owner, instance_id), f'{{"x": {n}}}', qos=0)
        publisher.send(topic_of(owner, instance_id), {"x": 3000})
        wait_for_points(site, instance_id, 3001, timeout=60)
    finally:
        ingestor.stop()

    # Batches end at 1000 points, after 0.5 s, or at a 50 ms lull in the stream; a burst
    # through a busy machine has a few lulls, but nowhere near one commit per message.
    assert len(commits) <= 40, f"{len(commits)} commits for 3001 points"
    with site.engine.connect() as connection:
        values = connection.execute(
            text("SELECT value FROM telemetry_point WHERE instance_id = :i"), {"i": instance_id}
        ).scalars()
        assert sorted(values) == [float(n) for n in range(3001)]
    assert ingestor.counts()["points"] == 3001
