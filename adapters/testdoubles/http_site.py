"""How a test double serves its aiohttp app on a port: one way for every double (no access log, a quick shutdown,
and a port that cannot be bound leaves nothing set up behind)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web

__all__ = ["SiteServer"]


class SiteServer:
    """Mixin for a double served over HTTP: its ``start`` builds the app and calls ``_serve``; ``stop()`` (or
    leaving ``async with``) ends it. The class sets ``host``, ``port`` (0) and ``_runner`` (None) in ``__init__``."""

    host: str
    port: int
    _runner: web.AppRunner | None

    async def _serve(self, app: web.Application, port: int = 0, *, handler_cancellation: bool = False) -> None:
        """Serve ``app`` on ``host:port`` (0: a free port, then in ``port``), returning once the socket accepts
        connections. ``handler_cancellation``: a client that hangs up cancels its handler (aiohttp's default is to
        let it run on)."""
        runner = web.AppRunner(app, handler_cancellation=handler_cancellation, access_log=None,
                               shutdown_timeout=0.25)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
