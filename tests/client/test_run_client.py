"""Running DTs through the client: instances, phases and jobs on a live server's supervisor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dtaas.client import Client, InstanceHandle, JobEvent
from dtaas.errors import Conflict, InvalidInput, NotFound
from dtaas.lifecycle.models import InstanceState, JobState
from dtaas.lifecycle.schemas import InstanceDetail, InstanceRead, JobRead
from tests.execution.processes import wait_until
from tests.live import LiveServer

HELLO = "alice/digital_twins/hello"
SLEEPER = "alice/digital_twins/sleeper"
SCRIPTS = {
    "create": "#!/bin/bash\necho 'create: preparing'\n",
    "execute": (
        "#!/bin/bash\necho 'execute: one'\necho 'execute: warning' >&2\necho 'execute: two'\n"
    ),
    "terminate": "#!/bin/bash\necho 'terminate: done'\n",
}
PARAMETERS = """\
manifest: 1
name: params
parameters:
  speed: {type: float, min: 0, max: 10, default: 2.5}
  steps: {type: int, min: 1}
"""
WAIT_TIMEOUT = 60.0


@pytest.fixture
def alice(live: LiveServer) -> Iterator[Client]:
    live.add_twin(HELLO, scripts=SCRIPTS)
    live.add_twin(SLEEPER, scripts={"execute": "#!/bin/bash\necho ready\nexec sleep 300\n"})
    live.add_twin(
        "alice/digital_twins/params",
        scripts={"execute": '#!/bin/bash\necho "$DTAAS_PARAM_SPEED x $DTAAS_PARAM_STEPS"\n'},
        manifest=PARAMETERS,
    )
    with live.client_for("alice") as client:
        yield client


def wait_running(client: Client, handle: InstanceHandle, line: str) -> None:
    """Wait until the handle's job runs and has written ``line`` to its stdout."""
    wait_until(
        lambda: (
            client.get_job(job_id=handle.job_id).state == JobState.RUNNING and line in handle.logs()
        ),
        message=f"job {handle.job_id} writing {line!r}",
    )


# --- Client.run and its handle ------------------------------------------------------------


def test_run_wait_returns_the_succeeded_job_and_logs_its_output(alice: Client) -> None:
    handle = alice.run(twin_path=HELLO)

    job = handle.wait(timeout=WAIT_TIMEOUT)

    assert isinstance(handle, InstanceHandle)
    assert isinstance(job, JobRead)
    assert (job.id, job.instance_id, job.phase) == (handle.job_id, handle.instance_id, "execute")
    assert (job.state, job.exit_code) == (JobState.SUCCEEDED, 0)
    assert handle.job == job
    assert handle.logs() == "execute: one\nexecute: two\n"
    assert handle.logs("stderr") == "execute: warning\n"


def test_run_a_phase_with_values_and_a_named_configuration(alice: Client) -> None:
    alice.save_configuration(
        path="alice/digital_twins/params", name="fast", values={"speed": 9, "steps": 2}
    )

    handle = alice.run(
        twin_path="alice/digital_twins/params", configuration="fast", values={"steps": 7}
    )
    job = handle.wait(timeout=WAIT_TIMEOUT)

    assert job.state == JobState.SUCCEEDED
    assert handle.logs() == "9 x 7\n"
    assert handle.instance.configuration_name == "fast"
    assert job.provenance["values"] == {"speed": 9, "steps": 7}


def test_run_with_an_unknown_configuration_is_not_found(alice: Client) -> None:
    with pytest.raises(NotFound) as caught:
        alice.run(twin_path="alice/digital_twins/params", configuration="fast")

    assert caught.value.message == (
        "There is no configuration 'fast' of alice/digital_twins/params; "
        "you have saved none for it."
    )
    assert alice.list_instances() == []


def test_run_with_bad_values_is_invalid_input_per_field(alice: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        alice.run(twin_path="alice/digital_twins/params", values={"speed": 11, "steps": "x"})

    assert caught.value.problems == [
        ("speed: must be at most 10", ["values", "speed"]),
        ("steps: expected a whole number", ["values", "steps"]),
    ]
    assert alice.list_instances() == []


def test_run_of_a_phase_the_dt_lacks_leaves_no_instance_behind(alice: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        alice.run(twin_path=HELLO, phase="analyze")

    assert caught.value.message == (
        "alice/digital_twins/hello has no phase 'analyze'; its phases are: create, execute, "
        "terminate."
    )
    assert alice.list_instances() == []


def test_wait_with_a_timeout_raises_timeout_error_while_the_job_runs(alice: Client) -> None:
    handle = alice.run(twin_path=SLEEPER)
    wait_running(alice, handle, "ready")

    with pytest.raises(TimeoutError) as caught:
        handle.wait(timeout=0.2)

    assert (
        str(caught.value) == f"Job {handle.job_id} did not end within 0.2 s; it is still running."
    )
    assert alice.get_job(job_id=handle.job_id).state == JobState.RUNNING


def test_terminate_stops_a_long_job(alice: Client) -> None:
    handle = alice.run(twin_path=SLEEPER)
    wait_running(alice, handle, "ready")

    instance = handle.terminate()
    job = handle.wait(timeout=WAIT_TIMEOUT)

    assert isinstance(instance, InstanceRead)
    assert instance.state == InstanceState.TERMINATING
    assert job.state == JobState.CANCELLED
    assert job.reason == "cancelled"
    wait_until(
        lambda: (
            alice.get_instance(instance_id=handle.instance_id).state == InstanceState.TERMINATED
        ),
        message="the instance terminated",
    )
    with pytest.raises(Conflict):
        handle.terminate()


# --- following a job ------------------------------------------------------------------------


def test_follow_job_yields_output_and_states_then_end(alice: Client) -> None:
    handle = alice.run(twin_path=HELLO)

    events = list(alice.follow_job(job_id=handle.job_id))

    assert all(isinstance(event, JobEvent) for event in events)
    assert events[-1] == JobEvent(kind="end")
    output = {
        stream: "".join(e.text for e in events if e.kind == "log" and e.stream == stream)
        for stream in ("stdout", "stderr")
    }
    assert output == {"stdout": "execute: one\nexecute: two\n", "stderr": "execute: warning\n"}
    states = [event.state for event in events if event.kind == "state"]
    assert states[-1] == JobState.SUCCEEDED
    assert set(states) <= {JobState.QUEUED, JobState.STARTING, JobState.RUNNING, *states[-1:]}


def test_follow_job_of_another_users_job_is_not_found(alice: Client, live: LiveServer) -> None:
    job = alice.run(twin_path=HELLO).wait(timeout=WAIT_TIMEOUT)
    live.add_user("bob")

    with live.client_for("bob") as bob, pytest.raises(NotFound) as caught:
        next(bob.follow_job(job_id=job.id))

    assert caught.value.message == f"There is no job {job.id}."


def test_leaving_a_follow_early_leaves_the_job_running(alice: Client) -> None:
    handle = alice.run(twin_path=SLEEPER)

    events = alice.follow_job(job_id=handle.job_id)
    first_output = next(event for event in events if event.kind == "log")
    events.close()

    assert first_output == JobEvent(kind="log", stream="stdout", text="ready\n")
    assert alice.get_job(job_id=handle.job_id).state == JobState.RUNNING


# --- instances and jobs, one endpoint at a time ---------------------------------------------


def test_instance_methods_follow_the_lifecycle(alice: Client) -> None:
    created = alice.create_instance(twin_path=HELLO, name="by hand")
    job = alice.run_phase(instance_id=created.id, phase="create")
    ended = alice.wait_for_job(job_id=job.id, timeout=WAIT_TIMEOUT)
    logs = alice.job_logs(job_id=job.id), alice.job_logs(job_id=job.id, offset=8)
    detail = alice.get_instance(instance_id=created.id)
    listed = alice.list_instances()
    cleaned = alice.clean(instance_id=created.id)
    alice.delete_instance(instance_id=created.id)

    assert isinstance(created, InstanceRead)
    assert (created.name, created.state, created.phases) == (
        "by hand",
        InstanceState.READY,
        ["create", "execute", "terminate"],
    )
    assert ended.state == JobState.SUCCEEDED
    assert logs == ("create: preparing\n", "preparing\n")
    assert isinstance(detail, InstanceDetail)
    assert [j.id for j in detail.jobs] == [job.id]
    assert [i.id for i in listed] == [created.id]
    assert cleaned.state == InstanceState.CLEANED
    with pytest.raises(NotFound) as caught:
        alice.get_instance(instance_id=created.id)
    assert caught.value.message == f"There is no instance {created.id}."


def test_cancel_job_stops_a_running_job_and_refuses_an_ended_one(alice: Client) -> None:
    handle = alice.run(twin_path=SLEEPER)
    wait_running(alice, handle, "ready")

    cancelling = alice.cancel_job(job_id=handle.job_id)
    ended = handle.wait(timeout=WAIT_TIMEOUT)

    assert cancelling.state == JobState.CANCELLING
    assert ended.state == JobState.CANCELLED
    with pytest.raises(Conflict) as caught:
        alice.cancel_job(job_id=handle.job_id)
    assert caught.value.message == f"Job {handle.job_id} is already cancelled; nothing to cancel."


def test_run_phase_while_busy_is_a_conflict(alice: Client) -> None:
    handle = alice.run(twin_path=SLEEPER)

    with pytest.raises(Conflict) as caught:
        alice.run_phase(instance_id=handle.instance_id, phase="execute")

    assert caught.value.message == (
        f"Instance {handle.instance_id} is busy, so it cannot run execute; in this state you "
        "can wait for the running phase or terminate."
    )
