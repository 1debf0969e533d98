"""The Ray executor: each job a Ray job on a Ray cluster, through the Ray Jobs API.

A job's submission id is ``dtaas-<site>-job-<id>``, so the platform finds a job it started
without its handle (``find``), and the handle is rebuilt from the job's Ray metadata.

The entrypoint runs the phase's command in the instance's working copy: in place when the
copy lies under ``shared_dir`` (storage every Ray node mounts at the same path), so what
the job writes lands in the copy; otherwise Ray uploads the copy
(``runtime_env.working_dir``) and the job runs in an unpacked copy on its node, where
what it writes stays.

The job's log goes into its stdout file (``ray_logs``); its stderr file gets the platform's
notes: why a job waits, or why Ray could not run it. docs/ray.md tells the whole story.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shlex
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ray.exceptions import AuthenticationError
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from dtaas.errors import BackendUnavailable
from dtaas.execution.base import EndReason, Executor, JobOutcome, JobSpec
from dtaas.execution.ray_logs import LogFollower, add_note, bring_up_to_date, job_output, marker

log = logging.getLogger(__name__)

MiB = 1024**2
# How long a job may wait for a node before its log says what it waits for.
PENDING_NOTE_SECONDS = 30.0
_HTTP_TIMEOUT = 10.0
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_MOUNTED = (
    "[dtaas] the working copy {cwd} is not on this Ray node: every node must mount "
    "DTAAS_RAY_SHARED_DIR at the same path"
)


class JobRefused(OSError):
    """Raised when the cluster cannot take a job as asked: too big to upload, or it asks
    for more than any node has. An ``OSError``, as any job that cannot start."""


@dataclass(frozen=True, slots=True)
class Resources:
    """What Ray reserves for a job on the node its entrypoint runs on; None: nothing."""

    cpus: float | None = None
    gpus: float | None = None
    memory_bytes: int | None = None
    custom: Mapping[str, float] = field(default_factory=dict)

    def as_ray(self) -> dict[str, float]:
        """The request in Ray's resource names, without what is not asked for."""
        asked = {"CPU": self.cpus, "GPU": self.gpus, "memory": self.memory_bytes}
        named = {name: float(value) for name, value in asked.items() if value}
        return {**named, **{name: value for name, value in self.custom.items() if value}}


@dataclass(frozen=True, slots=True)
class RayJobSpec(JobSpec):
    """A job with what it asks Ray to reserve (from the manifest's ``resources``)."""

    resources: Resources = field(default_factory=Resources)


def site_id_for(data_dir: Path) -> str:
    """A short random id of this site's data directory, made once and kept in it.

    Random rather than derived from the path, so a site started afresh in the same
    place never takes a job of its predecessor for its own.
    """
    path = data_dir / "executor" / "ray-site-id"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as created:
            created.write(secrets.token_hex(4))
    except FileExistsError:
        pass  # made before, maybe by another process at the same moment
    return path.read_text().strip()


# --- sizes and resources ----------------------------------------------------------------


def _size_over(folder: Path, limit: int) -> int | None:
    """The folder's size if it is over ``limit`` bytes (counting stops there), else None."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue  # gone meanwhile
            if total > limit:
                return total
    return None


def _amount(name: str, value: float) -> str:
    if name == "memory":
        return f"{value / 1024**3:.1f} GiB memory"
    number = f"{value:g}"
    if name in ("CPU", "GPU"):
        return f"{number} {name}s" if value != 1 else f"{number} {name}"
    return f"{number} {name}"


def _describe(request: Mapping[str, float], resources: Mapping[str, float]) -> str:
    return ", ".join(_amount(name, resources.get(name, 0.0)) for name in request)


def _fit_problem(request: Mapping[str, float], nodes: list[dict[str, float]]) -> str | None:
    """Why no node can take ``request``; None if one can (free or busy)."""
    if any(all(node.get(name, 0.0) >= value for name, value in request.items()) for node in nodes):
        return None
    if not nodes:
        return f"the job needs {_describe(request, request)}; the Ray cluster has no node alive"
    largest = max(nodes, key=lambda node: tuple(node.get(name, 0.0) for name in request))
    return (
        f"the job needs {_describe(request, request)}; no node of the Ray cluster has that "
        f"much: the largest has {_describe(request, largest)} ({len(nodes)} node(s) alive)"
    )


# --- the executor -----------------------------------------------------------------------


class RayExecutor(Executor):
    """Runs jobs on a Ray cluster through its jobs API (the dashboard's HTTP address)."""

    name = "ray"

    def __init__(
        self,
        *,
        address: str,
        site_id: str,
        auth_token: str | None = None,
        shared_dir: Path | None = None,
        max_upload_bytes: int = 100 * MiB,
        grace_seconds: float = 5.0,
        autoscaling: bool = False,
        pending_note_seconds: float = PENDING_NOTE_SECONDS,
    ) -> None:
        """``site_id`` keeps this site's submission ids apart from others' on the cluster."""
        self.address = address.rstrip("/")
        self.site_id = site_id
        self.shared_dir = shared_dir.resolve() if shared_dir is not None else None
        self.max_upload_bytes = max_upload_bytes
        self.grace_seconds = grace_seconds
        self.autoscaling = autoscaling
        self.pending_note_seconds = pending_note_seconds
        self._headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else {}
        self._client: JobSubmissionClient | None = None
        self._follower = LogFollower(address=self.address, headers=self._headers)
        self._stopping: set[str] = set()
        self._waiting_checked: dict[str, float] = {}
        for variable in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            if os.environ.get(variable):
                # Ray's client prefers these to the address it is given.
                log.warning("%s is set and overrides DTAAS_RAY_ADDRESS for Ray jobs", variable)

    def submission_id(self, job_id: int) -> str:
        """The Ray submission id of job ``job_id`` of this site."""
        return f"dtaas-{self.site_id}-job-{job_id}"

    def close(self) -> None:
        """Stop following logs (the jobs run on)."""
        self._follower.close()

    # --- talking to the cluster ---------------------------------------------------------

    @contextmanager
    def _talking(self) -> Iterator[None]:
        """Turn the client's failures into ``BackendUnavailable`` with a sentence.

        Ray's client raises ``RuntimeError`` for any answer but 200, with the status only
        in its message; callers that expect one (404: no such job) catch it first.
        """
        try:
            yield
        except AuthenticationError as exc:
            raise self._refused_token() from exc
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 403):
                raise self._refused_token() from exc
            raise self._answered_error(exc) from exc
        except (OSError, httpx.HTTPError) as exc:  # requests' errors are OSErrors
            raise BackendUnavailable(
                f"the Ray cluster at {self.address} is unreachable ({type(exc).__name__}); "
                "check DTAAS_RAY_ADDRESS and that the cluster's head node runs"
            ) from exc
        except RuntimeError as exc:
            raise self._answered_error(exc) from exc

    def _refused_token(self) -> BackendUnavailable:
        return BackendUnavailable(
            f"the Ray cluster at {self.address} refused the platform's token; set "
            "DTAAS_RAY_AUTH_TOKEN to the token the cluster was started with"
        )

    def _answered_error(self, exc: Exception) -> BackendUnavailable:
        log.warning("the Ray cluster answered with an error address=%s error=%s", self.address, exc)
        return BackendUnavailable(
            f"the Ray cluster at {self.address} answered with an error; "
            "the platform's log has the details"
        )

    def _jobs(self) -> JobSubmissionClient:
        if self._client is None:
            with self._talking():
                self._client = JobSubmissionClient(self.address, headers=dict(self._headers))
        return self._client

    def _info(self, submission_id: str) -> JobDetails | None:
        """The job as Ray knows it; None if Ray knows no such job."""
        client = self._jobs()
        with self._talking():
            try:
                return client.get_job_info(submission_id)
            except RuntimeError as exc:
                if _answered(exc, 404):
                    return None
                raise

    def _nodes(self) -> list[dict[str, float]]:
        """The total resources of each node alive."""
        with self._talking():
            response = httpx.get(
                f"{self.address}/api/v0/nodes",
                params={"limit": 10_000},
                headers=self._headers,
                timeout=_HTTP_TIMEOUT,
            )
            response.raise_for_status()
        nodes = response.json()["data"]["result"]["result"]
        return [node["resources_total"] for node in nodes if node.get("state") == "ALIVE"]

    # --- start -----------------------------------------------------------------------

    def _runs_in_place(self, cwd: Path) -> bool:
        return self.shared_dir is not None and cwd.resolve().is_relative_to(self.shared_dir)

    def _check_upload(self, cwd: Path) -> None:
        size = _size_over(cwd, self.max_upload_bytes)
        if size is not None:
            raise JobRefused(
                f"the working copy is {size / MiB:.0f} MiB or more, over the "
                f"{self.max_upload_bytes / MiB:.0f} MiB that may be uploaded to Ray; "
                "set DTAAS_RAY_SHARED_DIR to a directory the Ray workers mount (at the same "
                "path) that holds the platform's data directory, so jobs run in place"
            )

    def _check_fits(self, request: Mapping[str, float]) -> None:
        problem = _fit_problem(request, self._nodes())
        if problem is not None:
            raise JobRefused(
                f"{problem}. Ask for less (resources: in dt.yaml), add a larger node, or "
                "set DTAAS_RAY_AUTOSCALING=true if the cluster adds nodes on demand"
            )

    def _entrypoint(self, spec: JobSpec, in_place: bool) -> tuple[str, dict[str, str]]:
        """The shell command Ray runs, and the environment it gets from Ray."""
        sid = self.submission_id(spec.job_id)
        steps = [f"printf '%s\\n' {shlex.quote(marker(sid).strip())}"]
        env = dict(spec.env)
        cwd = str(spec.cwd)
        if in_place:
            not_mounted = shlex.quote(_NOT_MOUNTED.format(cwd=cwd))
            steps.append(f"cd {shlex.quote(cwd)} || {{ echo {not_mounted} >&2; exit 127; }}")
        else:
            # Paths into the copy point into Ray's unpacked copy: the job's working directory.
            for key, value in spec.env.items():
                if _SHELL_NAME.fullmatch(key) and (value == cwd or value.startswith(cwd + "/")):
                    del env[key]
                    rest = value[len(cwd) :]
                    steps.append(f'export {key}="$PWD"{shlex.quote(rest) if rest else ""}')
        # Ray reads its stop grace from the job's environment: SIGKILL that long after SIGTERM.
        env["RAY_JOB_STOP_WAIT_TIME_S"] = str(max(1, math.ceil(self.grace_seconds)))
        steps.append(f"exec {shlex.join(spec.argv)}")
        return "; ".join(steps), env

    def start(self, spec: JobSpec) -> dict[str, Any]:
        """Submit the job; returns its submission id and where its logs go.

        Raises: JobRefused (too big to upload, or no node can ever take it),
        BackendUnavailable (the cluster is unreachable or refuses the token).
        """
        sid = self.submission_id(spec.job_id)
        resources = spec.resources if isinstance(spec, RayJobSpec) else Resources()
        in_place = self._runs_in_place(spec.cwd)
        if not in_place:
            self._check_upload(spec.cwd)
        request = resources.as_ray()
        if request and not self.autoscaling:
            self._check_fits(request)
        entrypoint, env = self._entrypoint(spec, in_place)
        runtime_env: dict[str, Any] = {"env_vars": env}
        if not in_place:
            runtime_env["working_dir"] = str(spec.cwd)
        handle = {
            "submission_id": sid,
            "stdout": str(spec.stdout),
            "stderr": str(spec.stderr),
            "cwd": str(spec.cwd),
            "wall_time_seconds": spec.limits.wall_time_seconds,
            "in_place": in_place,
            "request": request,
        }
        client = self._jobs()
        with self._talking():
            try:
                client.submit_job(
                    entrypoint=entrypoint,
                    submission_id=sid,
                    runtime_env=runtime_env,
                    metadata={f"dtaas_{key}": json.dumps(value) for key, value in handle.items()},
                    entrypoint_num_cpus=resources.cpus,
                    entrypoint_num_gpus=resources.gpus,
                    entrypoint_memory=resources.memory_bytes,
                    entrypoint_resources=dict(resources.custom) or None,
                )
                submitted_before = False
            except RuntimeError as exc:
                if "already exists" not in str(exc):
                    raise
                submitted_before = True
        if submitted_before:
            return self._submitted_before(spec, sid)
        for path in (spec.stdout, spec.stderr):
            path.write_text("")
        self._follower.follow(sid, spec.stdout, entrypoint=entrypoint)
        log.info("job submitted job_id=%s submission_id=%s in_place=%s", spec.job_id, sid, in_place)
        return handle

    def _submitted_before(self, spec: JobSpec, sid: str) -> dict[str, Any]:
        """The handle of a job submitted before the platform could record it."""
        found = self.find(spec.job_id)
        if found is None or found["cwd"] != str(spec.cwd):
            raise JobRefused(
                f"the Ray cluster already has a job {sid} of another working copy; give this "
                "site its own site id (delete <data_dir>/executor/ray-site-id)"
            )
        log.warning(
            "job was submitted before a restart job_id=%s submission_id=%s", spec.job_id, sid
        )
        return found

    # --- find, poll, stop ------------------------------------------------------------

    def find(self, job_id: int) -> dict[str, Any] | None:
        """The handle of the job from its Ray metadata; None if Ray has no such job."""
        info = self._info(self.submission_id(job_id))
        if info is None:
            return None
        # Ray keeps metadata as strings: each value of the handle is JSON.
        return {
            key.removeprefix("dtaas_"): json.loads(value)
            for key, value in (info.metadata or {}).items()
            if key.startswith("dtaas_")
        }

    def poll(self, handle: dict[str, Any]) -> JobOutcome | None:
        """None while the job waits or runs; its outcome, with its whole log, after.

        Raises: BackendUnavailable (the cluster is unreachable).
        """
        sid = handle["submission_id"]
        info = self._info(sid)
        if info is None:
            self._follower.end(sid)
            add_note(Path(handle["stderr"]), f"Ray has no job {sid} (was the cluster restarted?)")
            return _outcome(EndReason.LOST, wall_seconds=None)
        if not info.status.is_terminal():
            self._follower.follow(sid, Path(handle["stdout"]), entrypoint=info.entrypoint)
            self._enforce_wall_time(handle, info)
            self._note_waiting(handle, info)
            return None
        self._follower.end(sid)
        self._stopping.discard(sid)
        self._waiting_checked.pop(sid, None)
        self._complete_log(handle, info)
        return self._outcome(handle, info)

    def _enforce_wall_time(self, handle: dict[str, Any], info: JobDetails) -> None:
        # Counted from submission: Ray tells when a job was submitted, not when it began.
        limit = handle.get("wall_time_seconds")
        sid = handle["submission_id"]
        if limit is None or sid in self._stopping or _age(info) < limit:
            return
        self._stopping.add(sid)
        with self._talking():
            self._jobs().stop_job(sid)
        log.info("job over its wall time submission_id=%s limit=%s", sid, limit)

    def _note_waiting(self, handle: dict[str, Any], info: JobDetails) -> None:
        if info.status != JobStatus.PENDING or _age(info) < self.pending_note_seconds:
            return
        sid = handle["submission_id"]
        checked = self._waiting_checked.get(sid)
        if checked is not None and time.monotonic() - checked < self.pending_note_seconds:
            return  # the nodes are asked now and then, not at every poll
        self._waiting_checked[sid] = time.monotonic()
        problem = _fit_problem(handle["request"], self._nodes())
        if problem is not None:
            # Only Ray's RAY_JOB_START_TIMEOUT_SECONDS ends it: a pending job cannot be stopped.
            add_note(
                Path(handle["stderr"]),
                f"waiting for a node: {problem}; the cluster's autoscaler may add one",
            )

    def _complete_log(self, handle: dict[str, Any], info: JobDetails) -> None:
        sid = handle["submission_id"]
        try:
            with self._talking():
                ray_log = self._jobs().get_job_logs(sid)
        except BackendUnavailable:
            # E.g. the node that ran it is gone, and its log with it.
            add_note(Path(handle["stderr"]), "Ray no longer has the job's log; it may be cut")
            return
        text = job_output(ray_log, submission_id=sid, entrypoint=info.entrypoint)
        bring_up_to_date(Path(handle["stdout"]), text)

    def _outcome(self, handle: dict[str, Any], info: JobDetails) -> JobOutcome:
        wall = (
            (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        )
        if info.status == JobStatus.STOPPED:
            limit = handle.get("wall_time_seconds")
            over = limit is not None and wall is not None and wall >= limit
            return _outcome(EndReason.WALL_TIME if over else EndReason.CANCELLED, wall_seconds=wall)
        code = info.driver_exit_code
        if info.status == JobStatus.SUCCEEDED:
            code = 0
        if code is None:
            self._note_failure(handle, info)
            return _outcome(EndReason.LOST, wall_seconds=wall)
        if code < 0:  # the command died of signal -code
            return _outcome(EndReason.EXITED, wall_seconds=wall, signal=-code)
        return _outcome(EndReason.EXITED, wall_seconds=wall, exit_code=code)

    def _note_failure(self, handle: dict[str, Any], info: JobDetails) -> None:
        stderr = Path(handle["stderr"])
        if info.error_type == "JOB_SUPERVISOR_ACTOR_START_TIMEOUT":
            problem = _fit_problem(handle["request"], self._nodes())
            add_note(
                stderr, f"no Ray node took the job in time: {problem or 'the cluster was busy'}"
            )
            return
        # Ray's first line says what failed; what follows may be a traceback.
        first = (info.message or "no reason given").strip().splitlines()[0]
        add_note(stderr, f"Ray could not run the job: {first}")

    def stop(self, handle: dict[str, Any], *, grace: float) -> None:  # noqa: ARG002
        """Ask Ray to stop the job: SIGTERM, SIGKILL after the grace fixed at submission.

        A job still waiting for a node stops only once it gets one (a Ray limitation).
        """
        sid = handle["submission_id"]
        client = self._jobs()
        with self._talking():
            try:
                client.stop_job(sid)
            except RuntimeError as exc:
                if not _answered(exc, 404):
                    raise
                return  # Ray has no such job: nothing runs
        log.info("job stop requested submission_id=%s", sid)


def _answered(exc: RuntimeError, status: int) -> bool:
    """Whether Ray's client raised ``exc`` for an HTTP answer with ``status``."""
    return f"status code {status}:" in str(exc)


def _age(info: JobDetails) -> float:
    """Seconds since the job was submitted."""
    return time.time() - (info.start_time or 0) / 1000


def _outcome(
    reason: EndReason,
    *,
    wall_seconds: float | None,
    exit_code: int | None = None,
    signal: int | None = None,
) -> JobOutcome:
    # Ray measures no usage of a job's command; the wall time includes its wait for a node.
    return JobOutcome(
        exit_code=exit_code,
        signal=signal,
        reason=reason,
        cpu_seconds=None,
        max_rss_bytes=None,
        wall_seconds=wall_seconds,
    )
