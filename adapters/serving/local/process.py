"""One supervised server process: spawn, follow readiness, restart with backoff, stop.

Lifecycle (``state``): ``starting`` until ``GET /health`` and ``GET /v1/models`` both answer 200 (readiness
includes ``/v1/models``, like the Kubernetes runtime's probe), then ``ready``. A process that exits is started
again after ``backoff_s * 2**n`` (state ``restarting``, reason ``ProcessExited``) up to ``max_restarts`` times,
then it is ``failed`` with ``CrashLoopBackOff``; one that is not ready within ``ready_timeout_s`` is killed and
``failed`` with ``StartupTimeout``; one whose command cannot be executed fails with ``ImageNotRunnable``.
``retire()`` turns restarts off (a process draining after a revision change); ``stop()`` ends it for good.

No orphans: each child asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a control
plane killed with SIGKILL leaves no server behind. A ``preexec_fn`` could set it, but that forces a plain
``fork()`` holding the GIL: 12-80 ms of stalled event loop (and gateway) per start in a 100-500 MB process. So the
child is spawned with ``vfork`` through a few-line launcher (``python -S -I -c``, ~15 ms) that sets the flag,
checks its parent is still the one that spawned it, and ``exec``s the server (the flag survives ``exec``).
``Popen`` still waits for that ``exec`` (several ms under load), so it runs on the runtime's one spawner thread,
not on the event loop. The kernel sends the signal when the thread that spawned exits: the spawner thread lives
until the runtime is closed, after its children are stopped. Each child leads its own process group, which
``stop`` signals whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from adapters.serving.local.logs import ProcessLogs

__all__ = ["ProcessOptions", "ServerProcess", "StartFailure"]

ProcState = Literal["starting", "ready", "restarting", "failed", "stopped"]
_STABLE_S = 60.0  # a process up this long has its crash count (and so its backoff) reset, as kubelet does
_TRIM_EVERY_S = 5.0
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)

_NOT_RUNNABLE = 127  # the launcher's exit code when the server's executable cannot be run, as a shell's
# argv: parent pid, the signal, then the server's command line. Only the standard library, no site: it is quick.
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(None).prctl(1, int(sys.argv[2]), 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass  # not Linux: no parent-death signal\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)  # the parent died before the flag was set\n"
    "try:\n"
    "    os.execvp(sys.argv[3], sys.argv[3:])\n"
    "except OSError as exc:\n"
    "    sys.stderr.write(f'cannot run {sys.argv[3]}: {exc.strerror}\\n')\n"
    f"    os._exit({_NOT_RUNNABLE})\n"
)


class StartFailure(Exception):
    """Raised by a ``prepare`` step (e.g. fetching model files): the slot fails with ``reason``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ProcessOptions:
    ready_timeout_s: float
    max_restarts: int = 3
    backoff_s: float = 0.5
    stop_grace_s: float = 5.0
    probe_interval_s: float = 0.05


def free_port() -> int:
    """A loopback port nobody listens on now (the child binds it a moment later; see the retry in ``_run``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch_argv(argv: list[str]) -> list[str]:
    return [sys.executable, "-S", "-I", "-c", _LAUNCHER, str(os.getpid()), str(int(signal.SIGTERM)), *argv]


class ServerProcess:
    """A server for one revision of one slot, on ``127.0.0.1:port``; drive it from one event loop."""

    def __init__(self, *, revision: int, argv: list[str], port: int, env: dict[str, str], cwd: str,
                 logs: ProcessLogs, options: ProcessOptions, session: Callable[[], aiohttp.ClientSession],
                 server: str = "mock", prepare: Callable[[], Awaitable[None]] | None = None,
                 unrunnable: str | None = None, spawner: Executor | None = None) -> None:
        self.revision = revision
        self.port = port
        self.server = server
        self.logs = logs
        self.state: ProcState = "starting"
        self.reason: str | None = None
        self.message = ""
        self.restarts = 0
        self.exit_code: int | None = None
        self.on_ready: Callable[[ServerProcess], None] | None = None
        self._argv, self._env, self._cwd, self._options = argv, env, cwd, options
        self._session, self._prepare, self._unrunnable = session, prepare, unrunnable
        self._spawner = spawner
        self._popen: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._exited = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retired = False
        self._stopping = False
        self._ever_ready = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self._pid if self.alive else None, "port": self.port, "server": self.server,
                               "restarts": self.restarts, "state": self.state, "log": str(self.logs.stdout)}
        if self.exit_code is not None:
            out["lastExitCode"] = self.exit_code
        return out

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"local-server:{self.port}")

    def retire(self) -> None:
        """Stop restarting: a draining process that exits stays down."""
        self._retired = True

    async def stop(self) -> tuple[Literal["deleted", "already_gone"], str]:
        """SIGTERM the process group, SIGKILL after the grace, reap; idempotent."""
        self._stopping = True
        self._retired = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        popen = self._popen
        label = f"process {popen.pid}" if popen is not None else f"process for revision {self.revision}"
        gone = popen is None or popen.poll() is not None
        if popen is not None and not gone:
            await self._terminate(popen)
        self._unwatch()
        if self.state != "failed":
            self.state = "stopped"
        return ("already_gone" if gone else "deleted"), label

    async def _terminate(self, popen: subprocess.Popen[bytes]) -> None:
        self._signal(popen, signal.SIGTERM)
        if not await self._wait_exit(popen, self._options.stop_grace_s):
            self._signal(popen, signal.SIGKILL)
            await self._wait_exit(popen, 10.0)

    @staticmethod
    def _signal(popen: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            popen.send_signal(sig)

    @staticmethod
    async def _wait_exit(popen: subprocess.Popen[bytes], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while popen.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def _fail(self, reason: str, message: str) -> None:
        self.state, self.reason, self.message = "failed", reason, message

    async def _supervise(self) -> None:
        try:
            await self._run()
        finally:
            self._unwatch()

    async def _run(self) -> None:
        if self._unrunnable is not None:
            self._fail("ImageNotRunnable", self._unrunnable)
            return
        try:
            if self._prepare is not None:
                self.message = "fetching model files"
                await self._prepare()
                self.message = ""
        except StartFailure as exc:
            self._fail(exc.reason, exc.message)
            return
        crashes = 0
        while True:
            try:
                popen = await self._spawn()
            except OSError as exc:
                self._fail("ImageNotRunnable", f"cannot run {os.path.basename(self._argv[0])}: {exc.strerror}")
                return
            ready = await self._await_ready(popen)
            if ready is None:
                self._unwatch()
                await self._terminate(popen)
                self._fail("StartupTimeout", f"not ready within {self._options.ready_timeout_s:g} s "
                           "(GET /health and /v1/models)")
                return
            up_since = time.monotonic()
            if ready:
                self._ever_ready = True
                self.state, self.reason, self.message = "ready", None, ""
                if self.on_ready is not None:
                    self.on_ready(self)
                await self._follow(popen)
            self.exit_code = popen.returncode
            self._unwatch()
            if self._stopping or self._retired:
                self.state = "stopped"
                return
            if time.monotonic() - up_since >= _STABLE_S:
                crashes = 0
            detail = self._exit_detail(popen.returncode)
            if popen.returncode == _NOT_RUNNABLE and not ready:
                self._fail("ImageNotRunnable", detail)
                return
            crashes += 1
            self.logs.note(f"revision {self.revision} pid {popen.pid} {detail.splitlines()[0]}")
            if crashes > self._options.max_restarts:
                self._fail("CrashLoopBackOff", f"{detail} (restarted {self.restarts} times)")
                return
            delay_s = self._options.backoff_s * 2 ** (crashes - 1)
            self.state, self.reason = "restarting", "ProcessExited"
            self.message = f"{detail}; restarting in {delay_s:g} s"
            await asyncio.sleep(delay_s)
            self.restarts += 1
            if not self._ever_ready:  # maybe someone took the port meanwhile; nothing has its URL yet
                self.port = free_port()

    def _exit_detail(self, code: int | None) -> str:
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        tail = self.logs.stderr_tail()
        return f"{how}: {tail}" if tail else how

    async def _spawn(self) -> subprocess.Popen[bytes]:
        if self._spawner is None:
            popen = self._start_child()
        else:
            started = asyncio.get_running_loop().run_in_executor(self._spawner, self._start_child)
            try:
                popen = await asyncio.shield(started)
            except asyncio.CancelledError:
                await asyncio.wait([started])  # the child exists once this returns: stop() finds and ends it
                raise
        self._watch(popen)
        return popen

    def _start_child(self) -> subprocess.Popen[bytes]:
        """Blocking (runs on the spawner thread): open the log files, start the child through the launcher."""
        argv = [str(self.port) if a == "{port}" else a for a in self._argv]
        if shutil.which(argv[0], path=self._env.get("PATH")) is None:
            raise FileNotFoundError(2, "no such executable")
        out, err = self.logs.open()
        try:
            popen = subprocess.Popen(
                _launch_argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=self._env,
                cwd=self._cwd, close_fds=True, start_new_session=True)
        finally:
            out.close()
            err.close()
        self._popen, self._pid, self.exit_code = popen, popen.pid, None
        self.logs.note(f"revision {self.revision} started as pid {popen.pid} on port {self.port}")
        return popen

    def _watch(self, popen: subprocess.Popen[bytes]) -> None:
        """Wake ``_exited`` when the child exits: a pidfd in the loop's selector, else a 50 ms poll."""
        self._exited = exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._poller = loop.create_task(self._poll_exit(popen, exited))
            return

        def readable() -> None:
            if popen.poll() is not None:
                self._unwatch()
                exited.set()

        self._pidfd = fd
        loop.add_reader(fd, readable)

    async def _poll_exit(self, popen: subprocess.Popen[bytes], exited: asyncio.Event) -> None:
        while popen.poll() is None:  # noqa: ASYNC110 - no pidfd on this kernel: polling is all there is
            await asyncio.sleep(0.05)
        exited.set()

    _pidfd: int | None = None
    _poller: asyncio.Task[None] | None = None

    def _unwatch(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()

    async def _await_ready(self, popen: subprocess.Popen[bytes]) -> bool | None:
        """True once ready; False when the process exited first; None past ``ready_timeout_s``."""
        deadline = time.monotonic() + self._options.ready_timeout_s
        while True:
            if popen.poll() is not None:
                return False
            if await self._probe():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), min(self._options.probe_interval_s, remaining))

    async def _probe(self) -> bool:
        root = f"http://127.0.0.1:{self.port}"
        try:
            for path in ("/health", "/v1/models"):
                async with self._session().get(root + path, timeout=_PROBE_TIMEOUT) as resp:
                    if resp.status != 200:
                        return False
                    await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return False
        return True

    async def _follow(self, popen: subprocess.Popen[bytes]) -> None:
        """Wait for the ready process to exit, keeping its log files bounded meanwhile."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), _TRIM_EVERY_S)
            if popen.poll() is not None:
                return
            await asyncio.to_thread(self.logs.trim)
