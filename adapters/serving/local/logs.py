"""A local server's stdout and stderr files: bounded, and the tail of stderr for a status message.

The child writes straight into the files (opened ``O_APPEND``), so the control plane never copies its
output. ``trim`` bounds them: past ``max_bytes`` the file is copied to ``<name>.1`` (replacing the previous
one) and truncated; with ``O_APPEND`` the child's next write lands at the new end, so nothing is lost but the
oldest generation.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from adapters.serving.local.commands import redact_text

__all__ = ["DEFAULT_MAX_BYTES", "ProcessLogs"]

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_TAIL_BYTES = 8192


@dataclass(frozen=True)
class ProcessLogs:
    stdout: Path
    stderr: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def under(cls, directory: Path, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> ProcessLogs:
        return cls(directory / f"{name}.stdout.log", directory / f"{name}.stderr.log", max_bytes)

    def open(self) -> tuple[IO[bytes], IO[bytes]]:
        """Append-mode handles for a new child; the caller closes them once the child has them."""
        self.stdout.parent.mkdir(parents=True, exist_ok=True)
        self.trim()
        out = open(self.stdout, "ab")  # noqa: SIM115 - handed to the child, closed by the caller
        try:
            return out, open(self.stderr, "ab")
        except OSError:
            out.close()
            raise

    def note(self, line: str) -> None:
        """A line from the runtime itself (start, exit) in the stdout file, for whoever reads the log."""
        with open(self.stdout, "ab") as f:
            f.write(f"--- llmops local runtime: {line}\n".encode())

    def trim(self) -> None:
        for path in (self.stdout, self.stderr):
            try:
                if path.stat().st_size <= self.max_bytes:
                    continue
                shutil.copyfile(path, path.with_name(path.name + ".1"))
                os.truncate(path, 0)
            except FileNotFoundError:
                continue

    def stderr_tail(self, lines: int = 5) -> str:
        """The last ``lines`` lines of stderr, redacted of anything key-like; "" when there are none."""
        try:
            with open(self.stderr, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - _TAIL_BYTES))
                data = f.read()
        except OSError:
            return ""
        text = data.decode("utf-8", "replace")
        kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
        return redact_text("\n".join(kept))[:2000]
