"""The lifecycle API over HTTP: instances, phases as real jobs, logs, cancel, queue, SSE.

Jobs run for real (bubblewrap when installed, as in production); the test drives the
supervisor's ticks itself (``driver.run_until``) instead of a background thread.

The suite is parametrised over the executor: each test runs on the local one, and most
also on a site whose jobs go to the session's Ray head (on SQLite only; a Ray job takes
about 2 s). On Ray run the tests of the phases and the state machine around a running job
(terminate, busy, a failing clean, a clean that removes the working copy), parameters,
cancel and the live log, plus every test that starts no job. Marked ``local_only``, with
the reason, are what only the sandbox does (reference DTs' /workspace, usage, a read-only
common/) and, to keep the Ray runs short, job-running tests that would repeat what another
Ray run covers or that no executor takes part in (permissions, the queue).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.execution.local import bubblewrap_path
from dtaas.lifecycle import service
from dtaas.lifecycle.models import Job, JobState
from tests.execution.processes import sandboxes_of
from tests.factories import bearer
from tests.lifecycle.conftest import API, bound_sessions, on_every_executor, write_twin

Headers = dict[str, str]
GREETING = "hello from common"
REFERENCE_SCRIPTS = {
    "create": """#!/bin/bash
echo "create: preparing in $PWD"
mkdir -p output
cp /workspace/common/data/greeting/message.txt output/message.txt
""",
    "execute": """#!/bin/bash
echo "execute: $(cat output/message.txt)"
echo "execute: progress on stderr" >&2
date -u +%s > output/executed-at.txt
""",
    "terminate": """#!/bin/bash
echo "terminate: nothing keeps running"
lifecycle/clean
""",
    "clean": """#!/bin/bash
rm -rf output
echo "clean: output removed"
""",
}
# Waits (at most a minute) for a file the test creates in alice's library, found through
# $DTAAS_WORKSPACE: /workspace in the sandbox, the library's own path elsewhere (Ray).
WAITER = """#!/bin/bash
echo "waiting $DTAAS_INSTANCE_ID"
for i in $(seq 1200); do [ -e "$DTAAS_WORKSPACE/data/go" ] && break; sleep 0.05; done
echo "went $DTAAS_INSTANCE_ID"
"""
SLEEPER = """#!/bin/bash
echo ready
sleep 300
"""
PARAMETERS = """manifest: 1
name: params
description: Prints its parameters.
parameters:
  speed: {type: float, min: 0, max: 10, default: 2.5}
  label: {type: string, pattern: "^[a-z]+$"}
  steps: {type: int, min: 1}
  verbose: {type: bool, default: false}
"""
BROKEN = """manifest: 1
name: broken
parameters:
  speed: {type: velocity}
"""
ACTIVE = (JobState.STARTING, JobState.RUNNING, JobState.CANCELLING)

pytestmark = on_every_executor


@pytest.fixture(autouse=True)
def streams_on_the_test_connection(client: TestClient, session: Session) -> None:
    """The SSE route opens sessions of its own; they must see the test's rows too."""
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]  # typed as a bare ASGI app


# --- helpers ----------------------------------------------------------------------------


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"detail"}
    assert set(body["detail"][0]) == {"type", "msg", "loc"}
    detail: dict[str, Any] = body["detail"][0]
    return detail


def create_instance(client: TestClient, headers: Headers, twin_path: str, **body: Any) -> Any:
    return client.post(f"{API}/instances", json={"twin_path": twin_path, **body}, headers=headers)


def new_instance(client: TestClient, headers: Headers, twin_path: str, **body: Any) -> int:
    response = create_instance(client, headers, twin_path, **body)
    assert response.status_code == 201, response.text
    instance_id: int = response.json()["id"]
    return instance_id


def run_phase(client: TestClient, headers: Headers, instance_id: int, phase: str) -> Any:
    return client.post(
        f"{API}/instances/{instance_id}/phases", json={"phase": phase}, headers=headers
    )


def queue_phase(client: TestClient, headers: Headers, instance_id: int, phase: str) -> int:
    response = run_phase(client, headers, instance_id, phase)
    assert response.status_code == 202, response.text
    job_id: int = response.json()["id"]
    return job_id


def read_instance(client: TestClient, headers: Headers, instance_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/instances/{instance_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read_job(client: TestClient, headers: Headers, job_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read_log(client: TestClient, headers: Headers, job_id: int, stream: str = "stdout") -> str:
    response = client.get(f"{API}/jobs/{job_id}/logs", params={"stream": stream}, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def ended(client: TestClient, headers: Headers, job_id: int) -> dict[str, Any] | None:
    """The job once it is in a terminal state."""
    job = read_job(client, headers, job_id)
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


def state_of(client: TestClient, headers: Headers, instance_id: int) -> str:
    state: str = read_instance(client, headers, instance_id)["state"]
    return state


def finish(driver, client: TestClient, headers: Headers, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = driver.run_until(
        lambda: ended(client, headers, job_id), message=f"job {job_id} ending"
    )
    return job


def running_jobs(session: Session) -> int:
    count = session.scalar(select(func.count()).select_from(Job).where(Job.state.in_(ACTIVE)))
    return int(count or 0)


# --- DTs --------------------------------------------------------------------------------


@pytest.fixture
def hello(settings: Settings, common_dir: Path) -> str:
    """A reference-format DT (lifecycle scripts only) reading common/data/greeting."""
    (common_dir / "data" / "greeting").mkdir()
    (common_dir / "data" / "greeting" / "message.txt").write_text(GREETING)
    return write_twin(settings, "alice/digital_twins/hello", REFERENCE_SCRIPTS)


@pytest.fixture
def waiter(settings: Settings, alice) -> str:
    return write_twin(settings, "alice/digital_twins/waiter", {"execute": WAITER})


@pytest.fixture
def go(settings: Settings, alice) -> Path:
    """The file that lets ``waiter`` jobs finish."""
    return settings.resolved_files_dir / "alice" / "data" / "go"


@pytest.fixture
def sleeper(settings: Settings, alice) -> str:
    return write_twin(settings, "alice/digital_twins/sleeper", {"execute": SLEEPER})


# --- the whole lifecycle ----------------------------------------------------------------


@pytest.mark.local_only("a reference DT reads /workspace, which only the sandbox provides")
def test_reference_dt_runs_create_execute_terminate_clean_unchanged(
    client, driver, settings, as_alice, hello
):
    created = create_instance(client, as_alice, hello)
    assert created.status_code == 201, created.text
    instance_id = created.json()["id"]
    assert created.json()["state"] == "ready"
    assert created.json()["phases"] == ["create", "execute", "terminate", "clean"]
    states = [created.json()["state"]]
    copy = service.instance_dir(settings, instance_id) / "dt"

    logs = {}
    for phase in ("create", "execute"):
        queued = run_phase(client, as_alice, instance_id, phase)
        assert queued.status_code == 202, queued.text
        assert queued.json()["state"] == "queued"
        states.append(state_of(client, as_alice, instance_id))
        job = finish(driver, client, as_alice, queued.json()["id"])
        assert (job["state"], job["exit_code"], job["reason"]) == (
            "succeeded",
            0,
            "exited with status 0",
        )
        logs[phase] = (
            read_log(client, as_alice, job["id"]),
            read_log(client, as_alice, job["id"], "stderr"),
        )
        states.append(state_of(client, as_alice, instance_id))
    assert (copy / "output" / "message.txt").read_text() == GREETING
    assert (copy / "output" / "executed-at.txt").is_file()

    terminating = client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)
    assert terminating.status_code == 202, terminating.text
    states.append(terminating.json()["state"])
    terminate_job = read_instance(client, as_alice, instance_id)["jobs"][-1]
    assert terminate_job["phase"] == "terminate"
    finish(driver, client, as_alice, terminate_job["id"])
    states.append(state_of(client, as_alice, instance_id))

    cleaning = client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    assert cleaning.status_code == 202, cleaning.text
    clean_job = read_instance(client, as_alice, instance_id)["jobs"][-1]
    assert clean_job["phase"] == "clean"
    finish(driver, client, as_alice, clean_job["id"])
    states.append(state_of(client, as_alice, instance_id))

    assert states == [
        "ready",
        "busy",
        "ready",
        "busy",
        "ready",
        "terminating",
        "terminated",
        "cleaned",
    ]
    assert logs == {
        "create": ("create: preparing in /workspace/digital_twins/hello\n", ""),
        "execute": (f"execute: {GREETING}\n", "execute: progress on stderr\n"),
    }
    assert read_log(client, as_alice, terminate_job["id"]) == (
        "terminate: nothing keeps running\nclean: output removed\n"
    )
    assert read_log(client, as_alice, clean_job["id"]) == "clean: output removed\n"
    assert not copy.exists()
    jobs = read_instance(client, as_alice, instance_id)["jobs"]
    assert [(j["phase"], j["state"]) for j in jobs] == [
        ("create", "succeeded"),
        ("execute", "succeeded"),
        ("terminate", "succeeded"),
        ("clean", "succeeded"),
    ]


@pytest.mark.local_only("Ray measures no usage of a job's command and runs no sandbox")
def test_usage_and_provenance_are_recorded(client, driver, as_alice, hello):
    created = create_instance(client, as_alice, hello)
    instance = created.json()
    queue_phase(client, as_alice, instance["id"], "create")
    job = finish(
        driver, client, as_alice, read_instance(client, as_alice, instance["id"])["jobs"][0]["id"]
    )

    assert job["cpu_seconds"] is not None and job["cpu_seconds"] >= 0
    assert job["max_rss_bytes"] is not None and job["max_rss_bytes"] > 0
    assert job["wall_seconds"] is not None and job["wall_seconds"] > 0
    assert job["started_at"] is not None and job["ended_at"] is not None
    provenance = job["provenance"]
    assert provenance["twin_path"] == hello
    assert provenance["content_hash"] == instance["content_hash"]
    assert len(provenance["content_hash"]) == 64
    assert provenance["values"] == {}
    assert provenance["command"] == "./lifecycle/create"
    assert provenance["sandbox"] == "bwrap"
    assert set(provenance["limits"]) == {
        "wall_time_seconds",
        "memory_bytes",
        "cpu_seconds",
        "processes",
    }
    assert provenance["limits"]["processes"] == 512


# --- transitions ------------------------------------------------------------------------


def test_execute_after_terminate_is_conflict_naming_what_is_allowed(
    client, driver, as_alice, hello
):
    instance_id = new_instance(client, as_alice, hello)
    client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)

    terminating = run_phase(client, as_alice, instance_id, "execute")
    finish(driver, client, as_alice, read_instance(client, as_alice, instance_id)["jobs"][-1]["id"])
    terminated = run_phase(client, as_alice, instance_id, "execute")

    assert terminating.status_code == 409
    assert error_of(terminating)["msg"] == (
        f"Instance {instance_id} is terminating, so it cannot run execute; in this state you "
        "can wait until terminate has finished."
    )
    assert terminated.status_code == 409
    error = error_of(terminated)
    assert error["type"] == "conflict"
    assert error["msg"] == (
        f"Instance {instance_id} is terminated, so it cannot run execute; in this state you "
        "can clean or delete."
    )
    assert error["loc"] == ["instance_id"]


def test_busy_instance_refuses_another_phase_clean_and_delete(client, driver, as_alice, waiter, go):
    instance_id = new_instance(client, as_alice, waiter)
    job_id = queue_phase(client, as_alice, instance_id, "execute")

    responses = [
        run_phase(client, as_alice, instance_id, "execute"),
        client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice),
        client.delete(f"{API}/instances/{instance_id}", headers=as_alice),
    ]
    go.touch()
    finish(driver, client, as_alice, job_id)

    assert [r.status_code for r in responses] == [409, 409, 409]
    for response in responses:
        assert error_of(response)["type"] == "conflict"
        assert error_of(response)["msg"].endswith(
            "in this state you can wait for the running phase or terminate."
        )


@pytest.mark.local_only(
    "a clean job on Ray is covered by test_an_instance_being_cleaned_cannot_be_deleted"
)
def test_cleaned_instance_can_only_be_deleted(client, driver, settings, as_alice, hello):
    instance_id = new_instance(client, as_alice, hello)
    queue_phase(client, as_alice, instance_id, "clean")
    finish(driver, client, as_alice, read_instance(client, as_alice, instance_id)["jobs"][0]["id"])

    terminate = client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)
    deleted = client.delete(f"{API}/instances/{instance_id}", headers=as_alice)

    assert terminate.status_code == 409
    assert error_of(terminate)["msg"].endswith("in this state you can delete.")
    assert deleted.status_code == 204
    assert client.get(f"{API}/instances/{instance_id}", headers=as_alice).status_code == 404
    assert not service.instance_dir(settings, instance_id).exists()


@pytest.mark.local_only(
    "a running clean job on Ray is covered by test_an_instance_being_cleaned_cannot_be_deleted"
)
def test_terminate_is_conflict_while_a_terminated_instance_is_cleaned(
    client, driver, settings, as_alice, go
):
    twin = write_twin(
        settings,
        "alice/digital_twins/slow-clean",
        {"execute": "#!/bin/bash\necho run\n", "clean": WAITER},
    )
    instance_id = new_instance(client, as_alice, twin)
    assert (
        client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice).json()["state"]
        == "terminated"
    )
    client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    clean_job = read_instance(client, as_alice, instance_id)["jobs"][-1]["id"]
    driver.run_until(lambda: read_job(client, as_alice, clean_job)["state"] == "running")

    again = client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)
    go.touch()
    for job in read_instance(client, as_alice, instance_id)["jobs"]:
        finish(driver, client, as_alice, job["id"])

    # A terminated instance is never terminated again (its terminate script would run
    # once more), whatever it is doing meanwhile.
    assert again.status_code == 409, again.text
    assert error_of(again)["type"] == "conflict"


def test_cancelling_the_clean_of_a_terminated_instance_keeps_it_terminated(
    client, settings, as_alice
):
    twin = write_twin(
        settings,
        "alice/digital_twins/slow-clean",
        {"execute": "#!/bin/bash\necho run\n", "clean": WAITER},
    )
    instance_id = new_instance(client, as_alice, twin)
    client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)
    client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    clean_job = read_instance(client, as_alice, instance_id)["jobs"][-1]["id"]

    cancelled = client.post(f"{API}/jobs/{clean_job}/cancel", headers=as_alice)
    state = state_of(client, as_alice, instance_id)
    execute = run_phase(client, as_alice, instance_id, "execute")

    assert cancelled.status_code == 202
    assert state == "terminated"
    assert execute.status_code == 409, execute.text


def test_unknown_phase_is_422_listing_the_phases(client, as_alice, hello):
    instance_id = new_instance(client, as_alice, hello)

    unknown = run_phase(client, as_alice, instance_id, "simulate")
    malformed = run_phase(client, as_alice, instance_id, "Not A Phase!")

    assert unknown.status_code == 422
    error = error_of(unknown)
    assert error["type"] == "invalid_input"
    assert error["msg"] == (
        f"{hello} has no phase 'simulate'; its phases are: create, execute, terminate, clean."
    )
    assert error["loc"] == ["phase"]
    assert malformed.status_code == 422
    assert error_of(malformed)["loc"] == ["body", "phase"]
    assert state_of(client, as_alice, instance_id) == "ready"


@pytest.mark.parametrize(
    "terminated",
    [
        pytest.param(False, id="ready"),
        pytest.param(
            True,
            id="terminated",
            marks=pytest.mark.local_only("the state a clean returns to is not the executor's"),
        ),
    ],
)
def test_a_failing_clean_keeps_the_working_copy_and_the_state_it_came_from(
    client, driver, settings, as_alice, terminated
):
    twin = write_twin(
        settings,
        "alice/digital_twins/bad-clean",
        {"execute": "#!/bin/bash\necho run\n", "clean": "#!/bin/bash\necho cannot >&2\nexit 3\n"},
    )
    instance_id = new_instance(client, as_alice, twin)
    if terminated:
        client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)
    cleaning = client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    clean_job = read_instance(client, as_alice, instance_id)["jobs"][-1]["id"]

    job = finish(driver, client, as_alice, clean_job)
    state_while_cleaning = cleaning.json()["state"]

    assert state_while_cleaning == "cleaning"
    assert (job["state"], job["exit_code"]) == ("failed", 3)
    assert state_of(client, as_alice, instance_id) == ("terminated" if terminated else "ready")
    assert ((service.instance_dir(settings, instance_id) / "dt") / "lifecycle" / "clean").is_file()
    again = client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    assert again.status_code == 202, again.text


def test_an_instance_being_cleaned_cannot_be_deleted(client, driver, settings, as_alice, go):
    twin = write_twin(
        settings,
        "alice/digital_twins/slow-clean",
        {"execute": "#!/bin/bash\necho run\n", "clean": WAITER},
    )
    instance_id = new_instance(client, as_alice, twin)
    client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)

    deleted = client.delete(f"{API}/instances/{instance_id}", headers=as_alice)
    go.touch()
    for job in read_instance(client, as_alice, instance_id)["jobs"]:
        finish(driver, client, as_alice, job["id"])

    assert deleted.status_code == 409
    assert error_of(deleted)["msg"] == (
        f"Instance {instance_id} is cleaning, so it cannot be deleted; in this state you can "
        "wait until clean has finished."
    )
    assert state_of(client, as_alice, instance_id) == "cleaned"
    assert not (service.instance_dir(settings, instance_id) / "dt").exists()


def test_clean_as_a_phase_without_a_clean_script_is_422_and_changes_nothing(
    client, settings, as_alice, waiter
):
    instance_id = new_instance(client, as_alice, waiter)

    response = run_phase(client, as_alice, instance_id, "clean")

    assert response.status_code == 422, response.text
    assert error_of(response)["msg"] == (f"{waiter} has no phase 'clean'; its phases are: execute.")
    assert state_of(client, as_alice, instance_id) == "ready"
    assert (service.instance_dir(settings, instance_id) / "dt").is_dir()


# --- parameters and validation ------------------------------------------------------------


def test_parameter_values_reach_the_job_as_params_json_and_environment(
    client, driver, settings, as_alice, executor
):
    twin = write_twin(
        settings,
        "alice/digital_twins/params",
        {"execute": "#!/bin/bash\ncat params.json\necho\nenv | grep ^DTAAS_PARAM_ | sort\n"},
        {"dt.yaml": PARAMETERS},
    )
    instance_id = new_instance(client, as_alice, twin, values={"label": "tank", "steps": 3})
    job_id = queue_phase(client, as_alice, instance_id, "execute")

    job = finish(driver, client, as_alice, job_id)

    assert (job["state"], job["executor"]) == ("succeeded", executor)
    params, environment = read_log(client, as_alice, job_id).split("\n}\n")
    assert json.loads(params + "}") == {
        "speed": 2.5,
        "verbose": False,
        "label": "tank",
        "steps": 3,
    }
    assert environment.splitlines() == [
        "DTAAS_PARAM_LABEL=tank",
        "DTAAS_PARAM_SPEED=2.5",
        "DTAAS_PARAM_STEPS=3",
        "DTAAS_PARAM_VERBOSE=false",
    ]
    assert job["provenance"]["values"] == {
        "speed": 2.5,
        "verbose": False,
        "label": "tank",
        "steps": 3,
    }


def test_bad_parameter_values_are_422_per_field(client, settings, as_alice):
    twin = write_twin(
        settings,
        "alice/digital_twins/params",
        {"execute": "#!/bin/bash\ntrue\n"},
        {"dt.yaml": PARAMETERS},
    )

    response = create_instance(
        client, as_alice, twin, values={"speed": 20, "label": "Tank", "steps": 0, "colour": "red"}
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {tuple(item["loc"]) for item in detail} == {
        ("values", "speed"),
        ("values", "label"),
        ("values", "steps"),
        ("values", "colour"),
    }
    assert {item["type"] for item in detail} == {"invalid_input"}
    by_field = {item["loc"][1]: item["msg"] for item in detail}
    assert by_field["colour"] == (
        "unknown parameter 'colour'; this DT declares: speed, label, steps, verbose"
    )
    assert by_field["speed"].startswith("speed: ")
    assert client.get(f"{API}/instances", headers=as_alice).json() == []


def test_missing_required_value_is_422(client, settings, as_alice):
    twin = write_twin(
        settings,
        "alice/digital_twins/params",
        {"execute": "#!/bin/bash\ntrue\n"},
        {"dt.yaml": PARAMETERS},
    )

    response = create_instance(client, as_alice, twin, values={"steps": 2})

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "invalid_input", "msg": "label: a value is required", "loc": ["values", "label"]}
    ]


def test_invalid_dt_is_conflict_naming_the_first_error(client, settings, as_alice):
    twin = write_twin(
        settings,
        "alice/digital_twins/broken",
        {"execute": "#!/bin/bash\ntrue\n"},
        {"dt.yaml": BROKEN},
    )

    response = create_instance(client, as_alice, twin)

    assert response.status_code == 409
    error = error_of(response)
    assert error["type"] == "conflict"
    assert error["loc"] == ["twin_path"]
    assert error["msg"].startswith(f"{twin} has 1 error(s), e.g. dt.yaml:4:")
    assert "velocity" in error["msg"]
    assert error["msg"].endswith("fix them first.")
    assert client.get(f"{API}/instances", headers=as_alice).json() == []


# --- who may do what ----------------------------------------------------------------------


@pytest.mark.local_only("who may see an instance is checked before any executor takes part")
def test_another_users_instance_and_job_are_not_found(client, driver, as_alice, as_bob, hello):
    instance_id = new_instance(client, as_alice, hello)
    job_id = queue_phase(client, as_alice, instance_id, "create")
    finish(driver, client, as_alice, job_id)

    attempts = {
        "read instance": client.get(f"{API}/instances/{instance_id}", headers=as_bob),
        "run phase": run_phase(client, as_bob, instance_id, "execute"),
        "terminate": client.post(f"{API}/instances/{instance_id}/terminate", headers=as_bob),
        "clean": client.post(f"{API}/instances/{instance_id}/clean", headers=as_bob),
        "delete": client.delete(f"{API}/instances/{instance_id}", headers=as_bob),
        "read job": client.get(f"{API}/jobs/{job_id}", headers=as_bob),
        "cancel": client.post(f"{API}/jobs/{job_id}/cancel", headers=as_bob),
        "logs": client.get(f"{API}/jobs/{job_id}/logs", headers=as_bob),
        "events": client.get(f"{API}/jobs/{job_id}/events", headers=as_bob),
    }

    assert {name: r.status_code for name, r in attempts.items()} == dict.fromkeys(attempts, 404)
    assert {error_of(r)["type"] for r in attempts.values()} == {"not_found"}
    assert error_of(attempts["read instance"])["msg"] == f"There is no instance {instance_id}."
    assert error_of(attempts["read job"])["msg"] == f"There is no job {job_id}."
    assert client.get(f"{API}/instances", headers=as_bob).json() == []
    assert state_of(client, as_alice, instance_id) == "ready"


def test_viewer_cannot_create_instances(client, as_viewer, hello):
    response = create_instance(client, as_viewer, hello)

    assert response.status_code == 403
    assert error_of(response)["type"] == "permission_denied"
    assert "'viewer'" in error_of(response)["msg"]


def test_requests_without_credentials_are_401(client):
    response = client.get(f"{API}/instances")

    assert response.status_code == 401
    assert error_of(response)["type"] == "not_authenticated"


# --- cancel -------------------------------------------------------------------------------


def test_cancel_running_job_ends_cancelled_and_instance_ready(client, driver, as_alice, sleeper):
    instance_id = new_instance(client, as_alice, sleeper)
    job_id = queue_phase(client, as_alice, instance_id, "execute")
    driver.run_until(lambda: read_log(client, as_alice, job_id) == "ready\n")

    cancelling = client.post(f"{API}/jobs/{job_id}/cancel", headers=as_alice)
    job = finish(driver, client, as_alice, job_id)
    again = client.post(f"{API}/jobs/{job_id}/cancel", headers=as_alice)

    assert cancelling.status_code == 202
    assert cancelling.json()["state"] == "cancelling"
    assert (job["state"], job["reason"]) == ("cancelled", "cancelled")
    assert job["wall_seconds"] is not None and job["wall_seconds"] < 30
    assert state_of(client, as_alice, instance_id) == "ready"
    assert again.status_code == 409
    assert error_of(again)["msg"] == f"Job {job_id} is already cancelled; nothing to cancel."


def test_cancel_queued_job_needs_no_process(client, driver, as_alice, sleeper):
    instance_id = new_instance(client, as_alice, sleeper)
    job_id = queue_phase(client, as_alice, instance_id, "execute")

    cancelled = client.post(f"{API}/jobs/{job_id}/cancel", headers=as_alice)
    driver.tick()

    assert cancelled.status_code == 202
    assert cancelled.json()["state"] == "cancelled"
    assert read_job(client, as_alice, job_id)["reason"] == "cancelled before it started"
    assert read_job(client, as_alice, job_id)["started_at"] is None
    assert state_of(client, as_alice, instance_id) == "ready"


# --- the queue ----------------------------------------------------------------------------


@pytest.mark.local_only("the queue is the supervisor's; five more Ray jobs would take ~9 s")
def test_queue_respects_the_per_user_limit_and_runs_everything(
    client, make_driver, session, settings, as_alice, waiter, go
):
    driver = make_driver(jobs_max_running_per_user=2)
    instances = [new_instance(client, as_alice, waiter) for _ in range(5)]
    jobs = [queue_phase(client, as_alice, i, "execute") for i in instances]

    driver.run_until(lambda: running_jobs(session) == 2, message="two jobs running")
    driver.tick()  # another tick starts nothing more
    first = {job_id: read_job(client, as_alice, job_id) for job_id in jobs}
    running_at_most = 0

    def all_ended() -> bool:
        nonlocal running_at_most
        running_at_most = max(running_at_most, running_jobs(session))
        running_at_most = max(running_at_most, sandboxes_of(settings.data_dir.resolve()))
        return all(ended(client, as_alice, job_id) for job_id in jobs)

    go.touch()
    driver.run_until(all_ended, message="every job ending")

    assert [first[j]["state"] for j in jobs] == ["running"] * 2 + ["queued"] * 3
    assert [first[j]["queue_position"] for j in jobs] == [None, None, 1, 2, 3]
    assert running_at_most <= 2
    for instance_id, job_id in zip(instances, jobs, strict=True):
        assert read_job(client, as_alice, job_id)["state"] == "succeeded"
        assert read_log(client, as_alice, job_id) == f"waiting {instance_id}\nwent {instance_id}\n"


# --- live logs ----------------------------------------------------------------------------


def parse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_events_stream_the_logs_and_end(client, driver, settings, as_alice, executor):
    twin = write_twin(
        settings,
        "alice/digital_twins/talker",
        {"execute": "#!/bin/bash\necho 'to stdout'\necho 'to stderr' >&2\n"},
    )
    instance_id = new_instance(client, as_alice, twin)
    job_id = queue_phase(client, as_alice, instance_id, "execute")
    finish(driver, client, as_alice, job_id)

    with client.stream("GET", f"{API}/jobs/{job_id}/events", headers=as_alice) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())

    events = parse_events(body)
    logs = [
        ("log", {"stream": "stdout", "text": "to stdout\n"}),
        ("log", {"stream": "stderr", "text": "to stderr\n"}),
    ]
    if executor == "ray":  # Ray keeps one log, stdout and stderr merged (docs/ray.md)
        logs = [("log", {"stream": "stdout", "text": "to stdout\nto stderr\n"})]
    assert events == [*logs, ("state", {"state": "succeeded"}), ("end", {})]


@pytest.mark.skipif(bubblewrap_path() is None, reason="common/ is read-only only in the sandbox")
@pytest.mark.local_only("common/ is read-only only in the sandbox")
def test_a_job_may_write_common_only_when_its_owner_may(
    client, driver, session, settings, as_alice, admin
):
    as_admin = bearer(session, settings, admin)
    writer = (
        "#!/bin/bash\necho $DTAAS_JOB_ID > /workspace/common/data/by-job-$DTAAS_JOB_ID && echo ok\n"
    )
    outcomes = {}
    for owner, headers in (("alice", as_alice), (admin.username, as_admin)):
        twin = write_twin(settings, f"{owner}/digital_twins/publisher", {"execute": writer})
        job_id = queue_phase(client, headers, new_instance(client, headers, twin), "execute")
        job = finish(driver, client, headers, job_id)
        written = settings.resolved_files_dir / "common" / "data" / f"by-job-{job_id}"
        outcomes[owner] = (job["state"], written.exists())

    assert outcomes == {"alice": ("failed", False), admin.username: ("succeeded", True)}
