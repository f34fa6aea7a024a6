"""litellm's bundled model price map, read offline without importing litellm.

``import litellm`` costs ~5 s and ~165 MB, and without ``LITELLM_LOCAL_MODEL_COST_MAP=True`` it
downloads the map at import. The gateway needs only the prices, so it finds the installed package
with ``importlib.util.find_spec`` (which does not import it) and decodes the JSON file litellm ships
as its own offline fallback, ``model_prices_and_context_window_backup.json``: what litellm itself
uses with ``LITELLM_LOCAL_MODEL_COST_MAP=True``. Nothing here reaches the network.

The map (~3 MB, ~4,000 models) is decoded once per process, prices straight from the JSON text
into ``Decimal`` (no float on the way), and shared read-only by every config generation. When
litellm is not installed (or its file is unreadable) the map is empty, logged once, and configured
prices still work.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import msgspec

from policies.pricing import MapEntry

__all__ = ["MAP_FILE", "decode_price_map", "litellm_map_path", "load_price_map"]

MAP_FILE = "model_prices_and_context_window_backup.json"

log = logging.getLogger("llmops.pricing")

_decode_raw = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_decode_entry = msgspec.json.Decoder(MapEntry).decode
_lock = threading.Lock()
_cached: Mapping[str, MapEntry] | None = None


def litellm_map_path() -> Path | None:
    """Where the installed litellm keeps its bundled map, or None when litellm is not installed."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / MAP_FILE


def decode_price_map(data: bytes) -> dict[str, MapEntry]:
    """Each entry on its own: one malformed entry (a string where a price should be) is skipped,
    not the whole map. Raises ``msgspec.DecodeError`` when the file is not a JSON object."""
    entries: dict[str, MapEntry] = {}
    skipped = 0
    for name, raw in _decode_raw(data).items():
        if name == "sample_spec":  # litellm's documentation of the format, not a model
            continue
        try:
            entries[name] = _decode_entry(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            skipped += 1
    if skipped:
        log.warning("litellm price map: %d malformed entries skipped", skipped)
    return entries


def load_price_map(path: Path | None = None) -> Mapping[str, MapEntry]:
    """The bundled map, decoded on the first call and cached for the process (a read-only view).
    ``path``: another file (tests); read every time, not cached."""
    global _cached
    if path is not None:
        return MappingProxyType(_read(path))
    with _lock:  # a reload and start-up may ask at once; decode once
        if _cached is None:
            found = litellm_map_path()
            if found is None:
                log.warning("litellm is not installed: no model price map, only configured prices apply")
                _cached = MappingProxyType({})
            else:
                _cached = MappingProxyType(_read(found))
        return _cached


def _read(path: Path) -> dict[str, MapEntry]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.warning("litellm price map %s unreadable (%s): only configured prices apply", path, exc.strerror)
        return {}
    try:
        return decode_price_map(data)
    except msgspec.DecodeError:
        log.warning("litellm price map %s is not a JSON object: only configured prices apply", path)
        return {}
