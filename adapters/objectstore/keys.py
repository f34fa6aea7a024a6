"""Key and file-name hygiene shared by every backend.

Keys are POSIX-style relative paths (``datasets/12/3/train.csv``). They are
checked before any backend touches storage, so a hostile key can never escape
the local root or address another tenant's S3 prefix.
"""

from __future__ import annotations

import re
import unicodedata

from adapters.objectstore.errors import InvalidKey

__all__ = ["MAX_KEY_BYTES", "safe_filename", "validate_key", "validate_prefix"]

MAX_KEY_BYTES = 1024  # S3's own limit
_MAX_SEGMENT_BYTES = 255  # common file-system limit on one name
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Characters Windows forbids in names; uploads may be downloaded there later.
_FILENAME_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe relative key, else raise ``InvalidKey``."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("object key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"object key is longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidKey("object key contains NUL or control characters")
    if "\\" in key:
        raise InvalidKey("object key contains a backslash")
    if key.startswith("/") or _DRIVE.match(key):
        raise InvalidKey("object key must be relative, not absolute")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey("object key has an empty path segment")
        if segment in (".", ".."):
            raise InvalidKey("object key contains a '.' or '..' segment")
        if len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
            raise InvalidKey(f"object key segment is longer than {_MAX_SEGMENT_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key-like string that may end with '/'."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def safe_filename(name: str) -> str:
    """Return a client-supplied upload file name, NFC-normalised, or raise ``InvalidKey``.

    A file name is one path segment; anything that could traverse, hide, or be
    special on some OS is refused rather than silently rewritten, so the client
    learns its name was not accepted instead of finding a different one stored.
    """
    if not isinstance(name, str):
        raise InvalidKey("file name must be a string")
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise InvalidKey("file name is empty")
    if name != name.strip():
        raise InvalidKey("file name has leading or trailing whitespace")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise InvalidKey(f"file name {name!r} would traverse directories")
    if name.startswith("."):
        raise InvalidKey(f"file name {name!r} is hidden (starts with '.')")
    if name.endswith("."):
        raise InvalidKey(f"file name {name!r} ends with '.'")
    bad = _FILENAME_FORBIDDEN.search(name)
    if bad:
        raise InvalidKey(f"file name contains the forbidden character {bad.group()!r}")
    if any(unicodedata.category(ch) in ("Cf", "Cs", "Co", "Cn") for ch in name):
        # Bidi overrides and friends make 'evil\u202egnp.exe' look like 'evilexe.png'.
        raise InvalidKey("file name contains invisible or unassigned characters")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        raise InvalidKey(f"file name {name!r} is a reserved device name")
    if len(name.encode("utf-8")) > _MAX_SEGMENT_BYTES:
        raise InvalidKey(f"file name is longer than {_MAX_SEGMENT_BYTES} bytes")
    return name
