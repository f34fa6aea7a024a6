"""redact_url: the last line of defence wherever an upstream URL is shown."""

from __future__ import annotations

import pytest

from adapters.upstream.urls import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:s3cret@host:8000/v1?api_key=k#frag", "http://host:8000/v1"),
        ("https://s3cret@api.example.com/v1", "https://api.example.com/v1"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("http://host:s3cret/v1", "<invalid url>"),
        ("http://host/v1", "http://host/v1"),
        ("litellm", "litellm"),
    ],
)
def test_redact_url_drops_userinfo_query_and_fragment(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)
