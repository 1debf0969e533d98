"""Ray's log of a job, turned into the job's own output and streamed into its log file.

Ray keeps one log per job, stdout and stderr merged, on the node that ran it. While a job
runs, a follower streams that log into the job's stdout file; once it has ended, the file
is brought up to date from Ray's whole log, so it is complete also after a restart of the
platform. The stderr file gets the platform's own notes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

# A log stream that broke is opened again after this long, not at every poll.
RESTREAM_SECONDS = 5.0


def marker(submission_id: str) -> str:
    return f"dtaas-output-of-{submission_id}\n"


def _header(submission_id: str, entrypoint: str) -> str:
    return f"Running entrypoint for job {submission_id}: {entrypoint}\n"


def _line_start(text: str, line: str) -> int:
    if text.startswith(line):
        return 0
    found = text.find("\n" + line)
    return found + 1 if found >= 0 else -1


class _OutputFilter:
    """Turns Ray's log of a job into the job's own output, piece by piece.

    Before the command's output Ray logs its own lines, and its "Running entrypoint" line
    lands wherever its buffered write falls, even amid the output. The entrypoint prints
    a marker line first: the output is what follows it, less Ray's line.
    """

    def __init__(self, *, header: str, marker: str) -> None:
        self._header = header
        self._marker = marker
        self._pending = ""
        self._header_found = False
        self.marker_found = False

    def feed(self, text: str) -> str:
        """The output ``text`` completes; a possible start of Ray's line is held back."""
        self._pending += text
        if not self._header_found and self._header in self._pending:
            self._pending = self._pending.replace(self._header, "", 1)
            self._header_found = True
        if not self.marker_found:
            at = _line_start(self._pending, self._marker)
            if at < 0:
                return ""
            self._pending = self._pending[at + len(self._marker) :]
            self.marker_found = True
        keep = 0 if self._header_found else len(self._header) - 1
        ready = self._pending[: max(0, len(self._pending) - keep)]
        self._pending = self._pending[len(ready) :]
        return ready

    def rest(self) -> str:
        """What was held back, once the log is complete."""
        rest, self._pending = self._pending, ""
        return rest


def job_output(ray_log: str, *, submission_id: str, entrypoint: str) -> str:
    """The job's output in Ray's whole log; the whole log if the command never ran."""
    output = _OutputFilter(header=_header(submission_id, entrypoint), marker=marker(submission_id))
    text = output.feed(ray_log)
    return text + output.rest() if output.marker_found else ray_log


# --- following logs -----------------------------------------------------------------


@dataclass
class _Stream:
    """One job's log on its way into its stdout file."""

    path: Path
    output: _OutputFilter
    had: int  # characters the file held when this stream began; they are not written again
    emitted: int = 0
    closed: bool = False
    ended_at: float | None = None
    future: concurrent.futures.Future[None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, text: str) -> None:
        with self.lock:
            if self.closed:
                return
            out = self.output.feed(text)
            start, self.emitted = self.emitted, self.emitted + len(out)
            new = out[max(0, self.had - start) :]
            if new:
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(new)

    def close(self) -> None:
        """No more writes once this returns, whatever the stream's task is doing."""
        with self.lock:
            self.closed = True
        if self.future is not None:
            self.future.cancel()


class LogFollower:
    """Streams the logs of running jobs into their stdout files, from one asyncio thread.

    The jobs API's websocket sends a job's log from its start, then what is added until
    the job ends. It is read with aiohttp directly: Ray's ``tail_job_logs`` passes
    ``ssl=None``, which aiohttp deprecates, and so fails where warnings are errors.
    """

    def __init__(self, *, address: str, headers: dict[str, str]) -> None:
        self._address = address
        self._headers = headers
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=loop.run_forever, name="dtaas-ray-logs", daemon=True
            )
            self._thread.start()
            self._loop = loop
        return self._loop

    def follow(self, submission_id: str, path: Path, *, entrypoint: str) -> None:
        """Stream the job's log into ``path`` unless that already happens."""
        with self._lock:
            stream = self._streams.get(submission_id)
            if stream is not None and (
                stream.ended_at is None or time.monotonic() - stream.ended_at < RESTREAM_SECONDS
            ):
                return
            output = _OutputFilter(
                header=_header(submission_id, entrypoint), marker=marker(submission_id)
            )
            stream = _Stream(path=path, output=output, had=_characters_in(path))
            self._streams[submission_id] = stream
            stream.future = asyncio.run_coroutine_threadsafe(
                self._copy(submission_id, stream), self._running_loop()
            )

    def end(self, submission_id: str) -> None:
        """Stop streaming the job's log; nothing more is written once this returns."""
        with self._lock:
            stream = self._streams.pop(submission_id, None)
        if stream is not None:
            stream.close()

    async def _copy(self, submission_id: str, stream: _Stream) -> None:
        url = f"{self._address}/api/jobs/{submission_id}/logs/tail"
        try:
            async with (
                aiohttp.ClientSession(headers=self._headers) as session,
                session.ws_connect(url, heartbeat=30) as socket,
            ):
                async for message in socket:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    stream.write(message.data)
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("log stream broke submission_id=%s error=%s", submission_id, exc)
        finally:
            stream.ended_at = time.monotonic()

    def close(self) -> None:
        """End every stream and the thread."""
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.close()
        loop, self._loop = self._loop, None
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(_cancel_tasks(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        loop.close()


async def _cancel_tasks() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def _characters_in(path: Path) -> int:
    try:
        return len(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return 0


def bring_up_to_date(path: Path, text: str) -> None:
    """Make the file hold ``text``, appending when it holds a beginning of it."""
    try:
        current = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        current = ""
    if current == text:
        return
    # Append rather than rewrite: a reader following the file keeps its place.
    mode, new = ("a", text[len(current) :]) if text.startswith(current) else ("w", text)
    with path.open(mode, encoding="utf-8") as file:
        file.write(new)


def add_note(path: Path, note: str) -> None:
    """Append ``[dtaas] note`` to the file once, also across platform restarts."""
    line = f"[dtaas] {note}\n"
    try:
        if line in path.read_text(encoding="utf-8", errors="replace"):
            return
    except FileNotFoundError:
        pass
    with path.open("a", encoding="utf-8") as file:
        file.write(line)
