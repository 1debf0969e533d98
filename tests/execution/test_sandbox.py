"""What a job sees under bubblewrap: its owner's library, common read-only, nothing else.

Jobs are built by the supervisor's ``build_spec`` (the mounts and environment a real
phase gets) and run by ``LocalExecutor(sandbox="bwrap")``. The site lives outside /tmp
so that the job's private /tmp cannot be what hides it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dtaas.config import Settings
from dtaas.execution.base import JobOutcome, JobSpec
from dtaas.execution.local import LocalExecutor
from dtaas.library.access import ensure_area
from dtaas.lifecycle import service
from dtaas.lifecycle.models import Instance, Job
from dtaas.lifecycle.supervisor import build_spec
from tests.execution.processes import assert_no_processes_of, wait_until

TWIN = "probe"
COMMON_MESSAGE = "hello from common"
BOB_SECRET = "bob's private notes"


@dataclass
class Site:
    """A platform's data directory with alice's DT ``probe``, bob's library and common."""

    settings: Settings
    root: Path
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def files(self) -> Path:
        return self.settings.resolved_files_dir

    @property
    def twin(self) -> Path:
        return self.files / "alice" / "digital_twins" / TWIN

    def run(
        self, script: str, *, common_writable: bool = False
    ) -> tuple[JobOutcome, str, str, JobSpec]:
        """Run ``script`` as the execute phase of a new instance of alice's DT."""
        execute = self.twin / "lifecycle" / "execute"
        execute.write_text("#!/bin/sh\n" + script)
        execute.chmod(0o755)
        number = next(self.ids)
        instance = Instance(
            id=number, owner_name="alice", twin_path=f"alice/digital_twins/{TWIN}", values={}
        )
        job = Job(id=number, instance_id=number, phase="execute")
        shutil.copytree(self.twin, service.working_copy(self.settings, instance))
        spec = build_spec(
            self.settings, instance, job, sandboxed=True, common_writable=common_writable
        )
        spec.stdout.parent.mkdir(parents=True, exist_ok=True)
        executor = LocalExecutor(work_dir=self.root / "executor", sandbox="bwrap")
        handle = executor.start(spec)
        outcome = wait_until(lambda: executor.poll(handle), timeout=30, message="the job's end")
        return outcome, spec.stdout.read_text(), spec.stderr.read_text(), spec


@pytest.fixture
def site() -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="dtaas-sandbox-", dir="/var/tmp"))  # not /tmp on purpose
    try:
        settings = Settings(
            data_dir=root / "data", secret_key="test-secret-key-not-for-production", demo=False
        )
        for area in ("alice", "bob", "common"):
            ensure_area(settings=settings, area=area)
        files = settings.resolved_files_dir
        (files / "common" / "data" / "shared").mkdir()
        (files / "common" / "data" / "shared" / "message.txt").write_text(COMMON_MESSAGE)
        (files / "bob" / "data" / "notes").mkdir()
        (files / "bob" / "data" / "notes" / "bob-secret.txt").write_text(BOB_SECRET)
        (files / "alice" / "data" / "input.txt").write_text("alice's input")
        (files / "alice" / "digital_twins" / TWIN / "lifecycle").mkdir(parents=True)
        (settings.data_dir / "dtaas.db").write_text("the platform's database")
        settings.signing_key()  # writes <data>/secret_key as a real site has
        yield Site(settings=settings, root=root)
        assert_no_processes_of(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lines(stdout: str) -> dict[str, str]:
    """``key=value`` lines of a probe's output."""
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def test_workspace_is_the_owners_library_and_writable(site):
    outcome, stdout, _, _ = site.run(
        "echo input=$(cat /workspace/data/input.txt)\n"
        "echo written > /workspace/data/from-job.txt && echo write=ok\n"
    )

    assert outcome.succeeded
    assert lines(stdout) == {"input": "alice's input", "write": "ok"}
    assert (site.files / "alice" / "data" / "from-job.txt").read_text() == "written\n"


def test_common_is_visible_and_read_only(site):
    outcome, stdout, stderr, _ = site.run(
        "echo message=$(cat /workspace/common/data/shared/message.txt)\n"
        "if echo x > /workspace/common/data/shared/new.txt; then echo write=ok;"
        " else echo write=refused; fi\n"
    )

    assert outcome.succeeded
    assert lines(stdout) == {"message": COMMON_MESSAGE, "write": "refused"}
    assert "Read-only file system" in stderr
    assert not (site.files / "common" / "data" / "shared" / "new.txt").exists()


def test_common_is_writable_for_an_owner_who_may_write_it(site):
    outcome, stdout, _, _ = site.run(
        "echo published > /workspace/common/data/shared/new.txt && echo write=ok\n",
        common_writable=True,
    )

    assert outcome.succeeded
    assert lines(stdout) == {"write": "ok"}
    assert (site.files / "common" / "data" / "shared" / "new.txt").read_text() == "published\n"


def test_the_working_copy_is_at_the_dts_place_in_the_library(site):
    outcome, stdout, _, spec = site.run(
        "echo pwd=$PWD\necho script=$(head -c 9 lifecycle/execute)\necho result > result.txt\n"
    )

    assert outcome.succeeded
    assert lines(stdout) == {"pwd": f"/workspace/digital_twins/{TWIN}", "script": "#!/bin/sh"}
    # The job wrote into its instance's working copy, never into the library's DT.
    assert (spec.cwd / "result.txt").read_text() == "result\n"
    assert not (site.twin / "result.txt").exists()


def test_a_job_leaves_the_owners_library_as_it_was(site):
    library = site.files / "alice"
    before = sorted(entry.name for entry in library.iterdir())

    outcome, _, _, _ = site.run("ls /workspace/common > /dev/null\n")

    assert outcome.succeeded
    # bwrap makes the mount point of /workspace/common inside the writable bind of the
    # library, i.e. in the user's real library folder on the host.
    assert sorted(entry.name for entry in library.iterdir()) == before


def test_another_users_library_is_not_visible(site):
    bob = site.files / "bob"
    outcome, stdout, _, _ = site.run(
        f"if [ -e {bob} ]; then echo bob=visible; else echo bob=absent; fi\n"
        "echo found=$(find / -name 'bob-secret*' 2>/dev/null | wc -l)\n"
        "echo workspace=$(ls /workspace | tr '\\n' ' ')\n"
    )

    assert outcome.succeeded
    assert lines(stdout) == {
        "bob": "absent",
        "found": "0",
        "workspace": "common data digital_twins functions models tools",
    }


def test_platform_data_database_and_shadow_are_not_readable(site):
    data = site.settings.data_dir.resolve()
    probes = {
        "data": f"ls {data}",
        "database": f"cat {data / 'dtaas.db'}",
        "key": f"cat {data / 'secret_key'}",
        "shadow": "cat /etc/shadow",
    }
    script = "".join(
        f"if {command} >/dev/null 2>&1; then echo {name}=read; else echo {name}=denied; fi\n"
        for name, command in probes.items()
    )

    outcome, stdout, _, _ = site.run(script)

    assert outcome.succeeded
    assert lines(stdout) == dict.fromkeys(probes, "denied")


def test_tmp_is_private(site):
    name = f"dtaas-probe-{uuid.uuid4().hex}"
    outcome, stdout, _, _ = site.run(
        f"echo x > /tmp/{name} && echo write=ok\necho tmp=$(ls -A /tmp | tr '\\n' ' ')\n"
    )

    assert outcome.succeeded
    assert lines(stdout) == {"write": "ok", "tmp": name}
    assert not Path("/tmp", name).exists()  # noqa: S108  # the host's /tmp


def test_host_processes_are_not_visible(site):
    outcome, stdout, _, _ = site.run(
        "echo ps=$(ps -e -o comm= | sort | tr '\\n' ' ')\n"
        f"if kill -0 {os.getpid()} 2>/dev/null; then echo host=visible; else echo host=absent; fi\n"
    )

    assert outcome.succeeded
    found = lines(stdout)
    # bwrap's init, the job's shell and ps itself (and the subshells of $(...)).
    assert set(found["ps"].split()) <= {"bwrap", "execute", "ps", "sort", "tr", "sh"}
    assert found["host"] == "absent"


def test_the_environment_has_only_the_jobs_variables(site, monkeypatch):
    monkeypatch.setenv("DTAAS_SECRET_KEY", "platform-secret-value")
    monkeypatch.setenv("DTAAS_DATABASE_URL", "postgresql+psycopg://platform:pw@127.0.0.1/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret-value")

    outcome, stdout, _, spec = site.run("env\necho ---\ntr '\\0' '\\n' < /proc/1/environ\n")

    assert outcome.succeeded
    job_env, init_env = stdout.split("---\n")
    names = {line.split("=", 1)[0] for line in job_env.splitlines()}
    assert names <= {*spec.env, "PWD", "SHLVL", "OLDPWD", "_"}
    assert set(spec.env) <= names
    for secret in ("platform-secret-value", "cloud-secret-value", "platform:pw"):
        assert secret not in stdout
    assert {line.split("=", 1)[0] for line in init_env.splitlines()} <= set(spec.env)


def test_sudo_and_apt_get_fail_saying_why(site):
    outcome, stdout, stderr, _ = site.run(
        "sudo apt-get install -y openjdk-17-jdk || echo sudo=$?\napt-get update || echo apt=$?\n"
    )

    assert outcome.succeeded
    assert lines(stdout) == {"sudo": "126", "apt": "126"}
    assert stderr.count("cannot run in the job sandbox: jobs run without root") == 2
    assert "'sudo apt-get install -y openjdk-17-jdk' cannot run" in stderr
    assert "ask an administrator to install system packages" in stderr
