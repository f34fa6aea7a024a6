"""uvicorn's httptools protocol, except that a client's half-close is not a disconnect.

A client may send a complete request and then shut down its sending side
(`shutdown(SHUT_WR)`, `nc -N`, some proxies and load-test tools). asyncio's
default answer to that EOF is to close the whole transport, so uvicorn marks the
request disconnected and the answer is dropped. Here the transport stays open
for writing when a complete request is pending: the gateway answers it, then
closes the connection (no further request can arrive on it). An EOF in the
middle of a request (headers or body incomplete) still closes as before, and a
real disconnect (reset, failed write) still cancels the request.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HalfCloseHttpToolsProtocol"]


class HalfCloseHttpToolsProtocol(HttpToolsProtocol):
    # uvicorn types the hook as returning None; asyncio's contract is `bool | None`.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.more_body or self.pipeline:
            return None  # nothing complete is waiting for an answer: close, as asyncio does
        cycle.keep_alive = False  # answer with `connection: close`, then close the transport
        return True  # keep the transport open for writing
