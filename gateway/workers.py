"""`llmops serve --workers N`: one listening socket, N forked worker processes, one supervisor.

The parent validates the config, applies control-plane migrations once, binds the
socket, switches metrics to multiprocess mode, then forks N workers. Each worker
builds its own app and runs uvicorn on the inherited socket with the gateway's own
HTTP protocol (gateway/server.py); the kernel hands each new connection to one of
them. The parent serves nothing; it only relays signals and replaces workers:

* SIGHUP: re-read the config file (kept for workers started later, when valid) and
  forward SIGHUP to every worker, each of which reloads as a single process does.
  A worker still starting when it arrives reloads as soon as it is up.
* `POST /llm-ops/v1/gateway/reload` answered by one worker: once that worker has
  reloaded, it writes its pid to a pipe the supervisor watches (`reload_others`), and
  the supervisor does what SIGHUP does, skipping that worker.
* SIGTERM / SIGINT: forward SIGTERM; every worker stops accepting, lets in-flight
  requests finish (uvicorn's graceful timeout, then the generation drain) and
  exits; past `STOP_TIMEOUT_S` the rest are killed. A second signal forwards SIGINT,
  uvicorn's "stop now".
* A worker that dies is replaced (after a back-off when it keeps dying young), and
  its live gauges are dropped from /metrics. One whose start-up failed (exit 3:
  lifespan error, e.g. the database refused) stops the whole server with that
  status, as a single process would.

Why fork over uvicorn's own `workers=`: that supervisor spawns fresh interpreters
from an import string (our protocol class is built per config and cannot be
pickled), and its SIGHUP restarts workers instead of reloading them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.metrics import MULTIPROC_ENV, enable_multiprocess

if TYPE_CHECKING:
    from gateway.config import GatewayCfg

__all__ = ["STOP_TIMEOUT_S", "cpu_count", "parse_workers", "reload_others", "serve_workers"]

log = logging.getLogger("llmops.workers")

STARTUP_FAILURE = 3  # uvicorn's exit status when the lifespan start-up fails
STOP_TIMEOUT_S = 75.0  # uvicorn's 30 s for connections + the 30 s generation drain + margin
_PUBLISH_INTERVAL_S = 1.0
_YOUNG_S = 10.0  # a worker that dies younger than this counts towards the restart back-off
_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)

# In a worker: the write end of the supervisor's reload-request pipe (None in a single process).
_reload_fd: int | None = None


def reload_others() -> bool:
    """Ask the supervisor to reload every other worker (this one has already reloaded).

    False when not running under `serve --workers`, or when the request could not be queued."""
    if _reload_fd is None:
        return False
    try:
        os.write(_reload_fd, b"%d\n" % os.getpid())  # under PIPE_BUF: one atomic write
    except OSError as exc:  # full (the supervisor is stuck) or gone
        log.error("could not ask the supervisor to reload the other workers: %s", exc)
        return False
    return True


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask a container sets), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_workers(value: str) -> int:
    """`--workers`: a positive integer or `auto` (one per core)."""
    if value == "auto":
        return cpu_count()
    n = int(value)
    if n < 1:
        raise ValueError("workers must be at least 1")
    return n


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # uvicorn's default backlog
    sock.setblocking(False)
    return sock


def _migrate_once(cfg: GatewayCfg) -> None:
    """Apply (or, with auto_migrate off, check) control-plane migrations before any worker exists,
    so N workers do not race to migrate one database. Raises when the schema is not usable."""
    if not cfg.control.enabled:
        return
    from adapters.adminapi import load_control_plane
    from adapters.store import ensure_schema

    plane = load_control_plane(cfg.control)

    async def run() -> None:
        store = plane.open_store()
        try:
            for m in await ensure_schema(store, plane.migration_plan(), auto_migrate=plane.cfg.auto_migrate):
                log.info("applied migration %s v%d: %s", m.module, m.version, m.description)
        finally:
            await store.aclose()

    asyncio.run(run())


@dataclass
class _WorkerState:
    """What a worker's signal handlers touch before and while uvicorn runs."""

    server: Any = None
    stop: bool = False
    reload_pending: bool = False


def _worker_main(sock: socket.socket, cfg: GatewayCfg, config_path: Path | None,
                 default_config: Callable[[], GatewayCfg] | None) -> int:
    """Body of one forked worker; returns its exit status."""
    import uvicorn

    from gateway.app import create_app
    from gateway.config import ConfigError
    from gateway.server import uvicorn_options

    state = _WorkerState()

    def on_stop(_sig: int, _frame: object) -> None:
        state.stop = True
        if state.server is not None:
            state.server.should_exit = True

    def on_hup(_sig: int, _frame: object) -> None:
        state.reload_pending = True  # replaced by the app's own handler once it is up

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    app = create_app(cfg, config_path=config_path, default_config=default_config, install_signal_handlers=True)
    gw = app.state.gateway
    config = uvicorn.Config(app, **uvicorn_options(cfg.server))
    server = state.server = uvicorn.Server(config)
    server.should_exit = state.stop

    async def publish_metrics() -> None:
        while True:
            await asyncio.sleep(_PUBLISH_INTERVAL_S)
            gw.metrics.publish()

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        publisher = asyncio.create_task(publish_metrics())
        try:
            # Start-up is short and happens once: polling keeps the app free of a "started" hook.
            while not server.started and not serving.done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if server.started:
                log.info("worker %d serving", os.getpid())
            if state.reload_pending and server.started:
                state.reload_pending = False
                try:
                    await gw.reload()
                except ConfigError as exc:
                    log.error("SIGHUP reload rejected, old config kept: %s", exc)
            await serving
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            gw.metrics.publish()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())
    return 0 if server.started else STARTUP_FAILURE


@dataclass
class _Slot:
    pid: int = 0
    started_at: float = 0.0
    young_deaths: int = 0
    restart_at: float | None = None


class _Supervisor:
    def __init__(self, sock: socket.socket, workers: int, cfg: GatewayCfg, config_path: Path | None,
                 default_config: Callable[[], GatewayCfg] | None, reload_cfg: Callable[[], GatewayCfg]) -> None:
        self.sock = sock
        self.cfg = cfg
        self.config_path = config_path
        self.default_config = default_config
        self.reload_cfg = reload_cfg
        self.slots = [_Slot() for _ in range(workers)]
        self.stopping_since: float | None = None
        self.status = 0
        self._wake: tuple[int, int] = (-1, -1)
        self._reload_req: tuple[int, int] = (-1, -1)  # workers write their pid: "reload the others"

    def _spawn(self, slot: _Slot) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # the supervisor's; the worker's event loop sets its own
                for fd in (*self._wake, self._reload_req[0]):
                    os.close(fd)
                global _reload_fd
                _reload_fd = self._reload_req[1]
                code = _worker_main(self.sock, self.cfg, self.config_path, self.default_config)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        slot.pid, slot.started_at, slot.restart_at = pid, time.monotonic(), None
        log.info("worker %d started", pid)

    def _signal_all(self, sig: int) -> None:
        for slot in self.slots:
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, sig)

    def _reload(self, skip: frozenset[int] = frozenset()) -> None:
        """Re-read the config for workers started later, and SIGHUP every running worker not in `skip`."""
        if self.stopping_since is not None:
            return
        from gateway.config import ConfigError

        try:
            self.cfg = self.reload_cfg()
        except ConfigError as exc:  # each worker refuses it too, and says so
            log.error("reload: config rejected for new workers, old config kept: %s", exc)
        for slot in self.slots:
            if slot.pid and slot.pid not in skip:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGHUP)

    def _read_reload_requests(self) -> None:
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._reload_req[0], 4096):
                data += chunk
        senders = frozenset(int(p) for p in data.split())
        if senders:
            log.info("reload requested by worker(s) %s; reloading the others", sorted(senders))
            self._reload(skip=senders)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP:
            self._reload()
        elif sig in (signal.SIGTERM, signal.SIGINT):
            if self.stopping_since is None:
                log.info("stopping %d workers (in-flight requests finish first)", len(self.slots))
                self.stopping_since = time.monotonic()
                self._signal_all(signal.SIGTERM)
            else:
                self._signal_all(signal.SIGINT)  # second signal: uvicorn's immediate stop

    def _reap(self) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            mark_process_dead(pid)
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = 0
            if self.stopping_since is not None:
                continue
            if code == STARTUP_FAILURE:
                log.error("worker %d failed to start; stopping", pid)
                self.status = STARTUP_FAILURE
                self._on_signal(signal.SIGTERM)
                continue
            now = time.monotonic()
            slot.young_deaths = slot.young_deaths + 1 if now - slot.started_at < _YOUNG_S else 0
            delay = min(30.0, 0.5 * 2 ** (slot.young_deaths - 1)) if slot.young_deaths else 0.0
            log.warning("worker %d exited (status %d); starting a new one in %.1fs", pid, code, delay)
            slot.restart_at = now + delay

    def run(self) -> int:
        wake_r, wake_w = self._wake = os.pipe()
        req_r, req_w = self._reload_req = os.pipe()
        for fd in (wake_r, wake_w, req_r, req_w):
            os.set_blocking(fd, False)
        received: list[int] = []
        # Signals are queued by a handler and handled in this loop, never inside the handler.
        for sig in _SIGNALS:
            signal.signal(sig, lambda s, _f: received.append(s))
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            for slot in self.slots:
                self._spawn(slot)
            while True:
                ready = select.select([wake_r, req_r], [], [], 0.5)[0]
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                if req_r in ready:
                    self._read_reload_requests()
                while received:
                    self._on_signal(received.pop(0))
                self._reap()
                if self.stopping_since is not None:
                    if not any(s.pid for s in self.slots):
                        return self.status
                    if time.monotonic() - self.stopping_since > STOP_TIMEOUT_S:
                        log.error("workers still running after %.0fs; killing them", STOP_TIMEOUT_S)
                        self._signal_all(signal.SIGKILL)
                        self.stopping_since = time.monotonic()
                    continue
                now = time.monotonic()
                for slot in self.slots:
                    if slot.pid == 0 and slot.restart_at is not None and now >= slot.restart_at:
                        self._spawn(slot)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for fd in (wake_r, wake_w, req_r, req_w):
                os.close(fd)


def serve_workers(cfg: GatewayCfg, *, workers: int, config_path: Path | None,
                  default_config: Callable[[], GatewayCfg] | None,
                  reload_cfg: Callable[[], GatewayCfg]) -> int:
    """Run the gateway in `workers` processes until SIGTERM/SIGINT; returns the exit status.

    `reload_cfg` re-reads the config (CLI overrides applied) for workers started after a SIGHUP."""
    _migrate_once(cfg)
    sock = _bind(cfg.server.host, cfg.server.port)
    own_dir = os.environ.get(MULTIPROC_ENV) is None
    metrics_dir = tempfile.mkdtemp(prefix="llmops-metrics-") if own_dir else os.environ[MULTIPROC_ENV]
    for stale in Path(metrics_dir).glob("*.db"):  # a previous run's counters must not be summed in
        stale.unlink()
    enable_multiprocess(metrics_dir)
    try:
        return _Supervisor(sock, workers, cfg, config_path, default_config, reload_cfg).run()
    finally:
        sock.close()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
