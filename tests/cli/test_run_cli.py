"""`dtaas run` and `dtaas instance ...`: real jobs on a live server's supervisor."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from dtaas.cli import EXIT_INTERRUPTED, app
from dtaas.client import Client
from dtaas.lifecycle.models import InstanceState, JobState
from tests.execution.processes import wait_until
from tests.live import LiveServer, kept_logging

HELLO = "alice/digital_twins/hello"
# The reference format: lifecycle scripts only, no dt.yaml.
REFERENCE = {
    "create": "#!/bin/bash\necho 'create: preparing'\nmkdir -p output\n",
    "execute": (
        "#!/bin/bash\n"
        "echo 'execute: hello from the twin'\n"
        "echo 'execute: progress' >&2\n"
        'for step in 1 2 3; do echo "step $step of 3"; done\n'
    ),
    "terminate": "#!/bin/bash\necho 'terminate: done'\n",
    "clean": "#!/bin/bash\necho 'clean: removed'\n",
}
HELLO_STDOUT = "execute: hello from the twin\nstep 1 of 3\nstep 2 of 3\nstep 3 of 3\n"
PARAMETERS = """\
manifest: 1
name: params
description: Prints its parameters.
parameters:
  speed: {type: float, min: 0, max: 10, default: 2.5}
  label: {type: string, pattern: "^[a-z ]+$"}
  steps: {type: int, min: 1}
  verbose: {type: bool, default: false}
"""
PRINT_PARAMETERS = "#!/bin/bash\nenv | grep '^DTAAS_PARAM_' | sort\n"
SLEEPER = "#!/bin/bash\necho ready\nexec sleep 300\n"


def run(runner: CliRunner, *args: str) -> Result:
    """Invoke the CLI; tracebacks must never reach the user, whatever the outcome."""
    with kept_logging():
        result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def signed_in(live: LiveServer) -> LiveServer:
    """The live server with alice's DT ``hello`` (reference format), her token stored."""
    live.store_credentials("alice")
    live.add_twin(HELLO, scripts=REFERENCE)
    return live


@pytest.fixture
def api(signed_in: LiveServer) -> Iterator[Client]:
    """Alice's client for what the test checks behind the CLI's back; one token for all."""
    with signed_in.client_for("alice") as client:
        yield client


def job_state(api: Client, job_id: int) -> JobState:
    return api.get_job(job_id=job_id).state


def wait_for_output(api: Client, job_id: int, text: str) -> None:
    """Wait until a running job has written ``text`` to its stdout."""
    wait_until(
        lambda: job_state(api, job_id) == JobState.RUNNING and text in api.job_logs(job_id=job_id),
        message=f"job {job_id} writing {text!r}",
    )


# --- run ----------------------------------------------------------------------------------


def test_run_follow_streams_the_output_and_exits_0(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "run", HELLO, "--follow")

    assert result.exit_code == 0, result.output
    assert result.stdout == HELLO_STDOUT
    assert result.stderr == (
        "Created instance 1 (hello); job 1 runs execute.\n"
        "execute: progress\n"
        "Job 1 (execute) succeeded: exited with status 0.\n"
    )


def test_run_follow_exits_with_the_jobs_exit_status(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/three", scripts={"execute": "#!/bin/bash\necho failing\nexit 3\n"}
    )

    result = run(runner, "run", "alice/digital_twins/three", "--follow")

    assert result.exit_code == 3
    assert result.stdout == "failing\n"
    assert result.stderr.endswith("Job 1 (execute) failed: exited with status 3.\n")


def test_run_follow_of_a_job_stopped_without_an_exit_status_exits_1(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/slow",
        scripts={"execute": SLEEPER},
        manifest="manifest: 1\nname: slow\ndescription: Too slow.\nresources: {wall_time: 1}\n",
    )

    result = run(runner, "run", "alice/digital_twins/slow", "--follow")

    assert result.exit_code == 1
    assert result.stdout == "ready\n"
    assert result.stderr.endswith(
        "Job 1 (execute) failed: stopped: the wall-time limit of 1 s was reached.\n"
    )


def test_run_without_follow_says_how_to_follow(runner: CliRunner, signed_in: LiveServer) -> None:
    result = run(runner, "run", HELLO, "--phase", "create")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Created instance 1 (hello); job 1 is queued to run create.\n"
        "Follow it with: dtaas instance logs 1 --follow\n"
    )
    followed = run(runner, "instance", "logs", "1", "--follow")
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == "create: preparing\n"


def test_run_param_values_are_json_when_they_parse_and_text_otherwise(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/params", scripts={"execute": PRINT_PARAMETERS}, manifest=PARAMETERS
    )

    result = run(
        runner,
        "run",
        "alice/digital_twins/params",
        "--param",
        "steps=3",
        "-p",
        "verbose=true",
        "-p",
        'label="two words"',
        "-p",
        "speed=0.5",
        "--follow",
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "DTAAS_PARAM_LABEL=two words\n"
        "DTAAS_PARAM_SPEED=0.5\n"
        "DTAAS_PARAM_STEPS=3\n"
        "DTAAS_PARAM_VERBOSE=true\n"
    )
    [instance] = api.list_instances()
    assert instance.values == {"steps": 3, "verbose": True, "label": "two words", "speed": 0.5}


def test_run_param_text_that_is_not_json_stays_text(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/params", scripts={"execute": PRINT_PARAMETERS}, manifest=PARAMETERS
    )

    result = run(runner, "run", "alice/digital_twins/params", "-p", "steps=1", "-p", "label=abc")

    assert result.exit_code == 0, result.output
    [instance] = api.list_instances()
    assert instance.values["label"] == "abc"


def test_run_with_bad_param_values_prints_each_fields_message(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/params", scripts={"execute": PRINT_PARAMETERS}, manifest=PARAMETERS
    )

    result = run(
        runner,
        "run",
        "alice/digital_twins/params",
        "-p",
        "steps=many",
        "-p",
        "speed=11",
        "-p",
        "label=abc",
        "--follow",
    )

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("error: steps: expected a whole number; speed: must be at most 10\n")
    assert api.list_instances() == []


def test_run_param_without_a_value_is_a_usage_error(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "run", HELLO, "--param", "steps")

    assert result.exit_code == 2
    assert "'steps' is not NAME=VALUE, e.g. speed=2.5" in result.stderr


def test_run_with_a_saved_configuration_uses_its_values(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/params", scripts={"execute": PRINT_PARAMETERS}, manifest=PARAMETERS
    )
    api.save_configuration(
        path="alice/digital_twins/params", name="slow", values={"steps": 2, "label": "slow"}
    )

    result = run(
        runner, "run", "alice/digital_twins/params", "--config", "slow", "-p", "steps=5", "-f"
    )
    unknown = run(runner, "run", "alice/digital_twins/params", "--config", "fast")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "DTAAS_PARAM_LABEL=slow\n"
        "DTAAS_PARAM_SPEED=2.5\n"
        "DTAAS_PARAM_STEPS=5\n"
        "DTAAS_PARAM_VERBOSE=false\n"
    )
    assert unknown.exit_code == 1
    assert unknown.stderr == (
        "error: There is no configuration 'fast' of alice/digital_twins/params; "
        "yours are: 'slow'.\n"
    )


def test_run_of_a_phase_the_dt_lacks_names_its_phases(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "run", HELLO, "--phase", "analyze")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: alice/digital_twins/hello has no phase 'analyze'; its phases are: create, "
        "execute, terminate, clean.\n"
    )


def test_ctrl_c_while_following_cancels_the_job_and_exits_130(
    signed_in: LiveServer, api: Client
) -> None:
    signed_in.add_twin("alice/digital_twins/sleeper", scripts={"execute": SLEEPER})
    # A process of its own, so that SIGINT reaches it as Ctrl-C would.
    command = ["run", "alice/digital_twins/sleeper", "--follow"]
    process = subprocess.Popen(
        [sys.executable, "-c", "from dtaas.cli import main; main()", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the job's first line: the CLI is following
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == EXIT_INTERRUPTED
    assert first + rest == b"ready\n"
    assert stderr == (
        b"Created instance 1 (sleeper); job 1 runs execute.\nInterrupted; asking job 1 to stop.\n"
    )
    wait_until(lambda: job_state(api, 1) == JobState.CANCELLED, message="the cancel")


# --- instance -------------------------------------------------------------------------


def test_instance_ls_and_show_list_instances_and_their_jobs(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    assert run(runner, "run", HELLO, "--name", "first run", "-f").exit_code == 0

    listed = run(runner, "instance", "ls")
    shown = run(runner, "instance", "show", "1")

    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    header = [cell.strip() for cell in lines[1].strip("┃ ").split("┃")]
    assert header == ["id", "name", "dt", "state", "configuration", "created"]
    row = [cell.strip() for cell in lines[3].strip("│ ").split("│")]
    assert row[:5] == ["1", "first run", HELLO, "ready", "-"]
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[:7] == [
        "instance 1: first run",
        f"dt: {HELLO}",
        "state: ready",
        "phases: create, execute, terminate, clean",
        "executor: local",
        "configuration: -",
        "values: {}",
    ]
    job = [cell.strip() for cell in lines[-2].strip("│ ").split("│")]
    assert job[:5] == ["1", "execute", "succeeded", "local", "0"]
    assert job[-1] == "exited with status 0"


def test_instance_show_of_another_users_instance_is_not_found(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    signed_in.add_user("bob")
    signed_in.add_twin("bob/digital_twins/hello", scripts=REFERENCE)
    with signed_in.client_for("bob") as bob:
        bob.run(twin_path="bob/digital_twins/hello").wait(timeout=60)

    result = run(runner, "instance", "show", "1")

    assert result.exit_code == 1
    assert result.stderr == "error: There is no instance 1.\n"


def test_instance_logs_prints_stdout_or_stderr_of_a_job_or_an_instances_latest_job(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    assert run(runner, "run", HELLO, "--phase", "create", "-f").exit_code == 0
    assert run(runner, "instance", "phase", "1", "execute", "-f").exit_code == 0

    first = run(runner, "instance", "logs", "1")
    errors = run(runner, "instance", "logs", "2", "--stderr")
    latest = run(runner, "instance", "logs", "--instance", "1")
    missing = run(runner, "instance", "logs", "3")

    assert (first.exit_code, first.stdout) == (0, "create: preparing\n")
    assert (errors.exit_code, errors.stdout) == (0, "execute: progress\n")
    assert (latest.exit_code, latest.stdout) == (0, HELLO_STDOUT)
    assert missing.exit_code == 1
    assert missing.stderr == "error: There is no job 3.\n"


def test_instance_logs_follow_passes_both_streams_on_and_exits_with_the_status(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    assert run(runner, "run", HELLO).exit_code == 0

    followed = run(runner, "instance", "logs", "1", "--follow")
    only_errors = run(runner, "instance", "logs", "1", "--follow", "--stderr")

    assert followed.exit_code == 0, followed.output
    assert followed.stdout == HELLO_STDOUT
    assert followed.stderr == (
        "execute: progress\nJob 1 (execute) succeeded: exited with status 0.\n"
    )
    assert only_errors.stdout == ""
    assert only_errors.stderr == followed.stderr


def test_instance_logs_of_an_instance_without_jobs_says_so(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    api.create_instance(twin_path=HELLO)

    result = run(runner, "instance", "logs", "-i", "1")

    assert result.exit_code == 1
    assert result.stderr == "error: Instance 1 has run no phase yet.\n"


def test_instance_phase_queues_a_phase_and_follows_it(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    api.create_instance(twin_path=HELLO)

    queued = run(runner, "instance", "phase", "1", "create")
    wait_until(lambda: job_state(api, 1).is_terminal(), message="create ending")
    followed = run(runner, "instance", "phase", "1", "execute", "--follow")

    assert queued.exit_code == 0, queued.output
    assert queued.stdout == "Job 1 is queued to run create on instance 1.\n"
    assert followed.exit_code == 0, followed.output
    assert followed.stdout == HELLO_STDOUT
    assert followed.stderr.startswith("Job 2 runs execute on instance 1.\n")


def test_instance_phase_while_another_runs_is_a_conflict(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    signed_in.add_twin("alice/digital_twins/sleeper", scripts={"execute": SLEEPER})
    assert run(runner, "run", "alice/digital_twins/sleeper").exit_code == 0

    result = run(runner, "instance", "phase", "1", "execute")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Instance 1 is busy, so it cannot run execute; in this state you can wait for "
        "the running phase or terminate.\n"
    )


def test_instance_terminate_stops_a_long_job_then_clean_and_rm(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    signed_in.add_twin(
        "alice/digital_twins/sleeper",
        scripts={"execute": SLEEPER, "terminate": REFERENCE["terminate"]},
    )
    assert run(runner, "run", "alice/digital_twins/sleeper").exit_code == 0
    wait_for_output(api, 1, "ready")

    terminated = run(runner, "instance", "terminate", "1")
    ended = run(runner, "instance", "logs", "2", "--follow")
    stopped = job_state(api, 1)
    cleaned = run(runner, "instance", "clean", "1")
    removed = run(runner, "instance", "rm", "1")
    gone = run(runner, "instance", "show", "1")

    assert terminated.exit_code == 0, terminated.output
    assert terminated.stdout == "Instance 1 is terminating; see `dtaas instance show 1`.\n"
    assert (ended.exit_code, ended.stdout) == (0, "terminate: done\n")
    assert stopped == JobState.CANCELLED
    assert cleaned.exit_code == 0, cleaned.output
    assert cleaned.stdout == "Instance 1 cleaned; its working copy was removed.\n"
    assert removed.stdout == "Instance 1 deleted.\n"
    assert gone.exit_code == 1
    assert gone.stderr == "error: There is no instance 1.\n"


def test_instance_clean_runs_the_clean_script(
    runner: CliRunner, signed_in: LiveServer, api: Client
) -> None:
    api.create_instance(twin_path=HELLO)

    result = run(runner, "instance", "clean", "1")
    followed = run(runner, "instance", "logs", "1", "--follow")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Instance 1 is cleaning up: its clean script runs, then its working copy is removed.\n"
    )
    assert followed.stdout == "clean: removed\n"
    assert api.get_instance(instance_id=1).state == InstanceState.CLEANED


def test_instance_rm_while_a_job_runs_is_a_conflict(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    signed_in.add_twin("alice/digital_twins/sleeper", scripts={"execute": SLEEPER})
    assert run(runner, "run", "alice/digital_twins/sleeper").exit_code == 0

    result = run(runner, "instance", "rm", "1")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Instance 1 is busy, so it cannot be deleted; in this state you can wait for "
        "the running phase or terminate.\n"
    )


def test_instance_commands_need_credentials(runner: CliRunner, live: LiveServer) -> None:
    result = run(runner, "instance", "ls")

    assert result.exit_code == 1
    assert result.stderr == "error: You are not signed in; run `dtaas login` first.\n"
