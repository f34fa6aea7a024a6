"""One rule for client-supplied ``x-request-id`` values, shared by the data plane and the admin API.

The **first** ``x-request-id`` header of a request counts; it is honoured when it is 1 to
``MAX_REQUEST_ID_CHARS`` characters of ``[A-Za-z0-9._:-]``. Anything else (too long, control
characters, spaces, non-ASCII) is replaced by a freshly minted id, so a hostile value never reaches
logs, audit rows or response headers.
"""

from __future__ import annotations

import re

__all__ = ["MAX_REQUEST_ID_CHARS", "REQUEST_ID_HEADER", "SAFE_REQUEST_ID", "SAFE_REQUEST_ID_BYTES"]

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_CHARS = 128
SAFE_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_CHARS}}}")
SAFE_REQUEST_ID_BYTES = re.compile(SAFE_REQUEST_ID.pattern.encode())
