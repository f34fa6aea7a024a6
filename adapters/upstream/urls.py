"""Render upstream URLs for people: logs, the admin API, error messages.

The config loader refuses credentials in provider URLs; this is the second line of
defence for every place a URL is shown, so a URL that somehow carries a password,
a query-string key or a fragment never reaches a log line or an API answer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """`scheme://host[:port]/path`: no userinfo, query or fragment. Unparseable input gives `<invalid url>`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if not parts.scheme or not parts.hostname:
        return "<invalid url>" if "://" in url or "@" in url or "?" in url else url
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}"
