"""Synchronous data parallelism for the reference trainer, with ``multiprocessing.connection`` alone.

Rank 0 listens on ``MASTER_ADDR:MASTER_PORT``; every other rank connects (retrying until ``connect_timeout_s``)
and says which rank it is. The authkey is derived from the job token, so only the job's own processes can join
(the messages are pickles: nobody else may send one). Rank 0 sends the starting state (weights, optimizer,
step) to all; then each step every rank sends its loss and gradients, rank 0 averages them with its own and
sends the average back, and each rank applies the same Adam step, so the weights stay identical. A rank that
cannot reach rank 0 in time, or a peer that goes silent or away, raises ``DistError``: the process exits
non-zero and the runtime (fail fast) stops the others.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

import numpy as np

__all__ = ["DistError", "Group", "join_group"]

_Grads = dict[str, np.ndarray]


class DistError(Exception):
    """The group cannot go on (a rank is unreachable, silent or gone)."""


def _authkey(token: str) -> bytes:
    return hmac.new(token.encode(), b"llmops-reference-trainer-data-parallel", hashlib.sha256).digest()


class Group:
    """This rank's links: rank 0 holds one connection per other rank, the others one to rank 0."""

    def __init__(self, rank: int, world_size: int, conns: list[Connection], step_timeout_s: float,
                 listener: Listener | None = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self._conns = conns
        self._timeout_s = step_timeout_s
        self._listener = listener

    def _recv(self, conn: Connection, what: str) -> Any:
        try:
            if not conn.poll(self._timeout_s):
                raise DistError(f"no {what} within {self._timeout_s:g} s")
            return conn.recv()
        except (EOFError, OSError) as exc:
            raise DistError(f"a peer went away while waiting for {what} ({type(exc).__name__})") from None

    def _send(self, conn: Connection, obj: Any) -> None:
        try:
            conn.send(obj)
        except (OSError, ValueError) as exc:
            raise DistError(f"a peer went away ({type(exc).__name__})") from None

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.rank == 0:
            for conn in self._conns:
                self._send(conn, obj)
            return obj
        return self._recv(self._conns[0], "starting state from rank 0")

    def average(self, loss: float, grads: _Grads) -> tuple[float, _Grads]:
        """The mean loss and gradients over all ranks (each rank's batch weighs the same)."""
        if self.rank != 0:
            self._send(self._conns[0], (loss, grads))
            out: tuple[float, _Grads] = self._recv(self._conns[0], "averaged gradients from rank 0")
            return out
        total_loss = loss
        total = {k: v.copy() for k, v in grads.items()}
        for conn in self._conns:
            other_loss, other = self._recv(conn, "gradients from a rank")
            total_loss += other_loss
            for k in total:
                total[k] += other[k]
        n = float(self.world_size)
        mean = (total_loss / n, {k: (v / n).astype(np.float32) for k, v in total.items()})
        for conn in self._conns:
            self._send(conn, mean)
        return mean

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        if self._listener is not None:
            self._listener.close()


def _listen(addr: str, port: int, key: bytes) -> Listener:
    try:
        return Listener((addr, port), authkey=key)
    except OSError:  # MASTER_ADDR may be a name for this host that cannot be bound as such
        return Listener(("0.0.0.0", port), authkey=key)


def join_group(rank: int, world_size: int, addr: str, port: int, token: str, *, connect_timeout_s: float,
               step_timeout_s: float) -> Group:
    """Rank 0: listen and wait for every other rank; the others: connect to rank 0. ``DistError`` on time-out."""
    key = _authkey(token)
    deadline = time.monotonic() + connect_timeout_s
    if rank != 0:
        while True:
            try:
                conn = Client((addr, port), authkey=key)
                break
            except AuthenticationError:
                raise DistError(f"rank 0 at {addr}:{port} refused this rank's key (another job?)") from None
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise DistError(f"rank 0 at {addr}:{port} unreachable for {connect_timeout_s:g} s "
                                    f"({type(exc).__name__})") from None
                time.sleep(0.1)
        conn.send(("hello", rank))
        return Group(rank, world_size, [conn], step_timeout_s)
    listener = _listen(addr, port, key)
    peers: dict[int, Connection] = {}
    done = threading.Event()

    def accept() -> None:  # Listener.accept has no timeout, so it waits in a thread the deadline outlives
        while len(peers) < world_size - 1:
            try:
                conn = listener.accept()
                if conn.poll(5.0):
                    kind, peer = conn.recv()
                    if kind == "hello" and isinstance(peer, int) and 0 < peer < world_size:
                        peers[peer] = conn
                        continue
                conn.close()
            except (OSError, EOFError, ValueError, TypeError, AuthenticationError):  # a stray or foreign peer
                if done.is_set():
                    return
        done.set()

    threading.Thread(target=accept, name="dist-accept", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        done.set()
        listener.close()
        raise DistError(f"only {len(peers)} of {world_size - 1} ranks joined within {connect_timeout_s:g} s")
    return Group(0, world_size, [peers[r] for r in sorted(peers)], step_timeout_s, listener)
