"""PII detectors that misbehave on cue, loaded by the analysis workers (``pii_detectors: [...:make]``).

A cell ``WHOAMI`` is reported as PII of rule ``pid_<worker pid>``; ``ALLOCATE``
asks for 8 GiB (a ``MemoryError`` under the worker's limit); ``DIE`` kills the
worker outright, as the kernel's OOM killer would.
"""

from __future__ import annotations

import os
import signal

from control.catalog.datasets_analysis import Finding


class _Misbehaving:
    def detect(self, text: str) -> list[Finding]:
        if text == "WHOAMI":
            return [Finding(rule=f"pid_{os.getpid()}", start=0, end=len(text))]
        if text == "ALLOCATE":
            bytearray(8 << 30)
        if text == "DIE":
            os.kill(os.getpid(), signal.SIGKILL)
        return []


def make() -> _Misbehaving:
    return _Misbehaving()
