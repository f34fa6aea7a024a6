"""What the section modules share: list queries from the page's URL, and re-rendering a refused form."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.console.api import ApiError, Listing
from gateway.console.forms import Form
from gateway.console.session import Console

__all__ = ["PAGE_SIZE", "filtered_list", "list_query"]

PAGE_SIZE = 25


def list_query(console: Console, filters: Iterable[str], *, page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """The list endpoint's query from this page's URL: the named filters that are set, `page`, `pageSize`.

    A `page` that is not a positive number is page 1 (the API would refuse it; a hand-edited URL should not
    end on an error page)."""
    params = console.request.query_params
    query: dict[str, Any] = {name: params[name] for name in filters if params.get(name)}
    raw = params.get("page", "1")
    query["page"] = int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1
    query["pageSize"] = page_size
    return query


async def filtered_list(console: Console, path: str, filters: Sequence[str],
                        query: dict[str, Any] | None = None) -> tuple[Listing | None, Form]:
    """One page of a list endpoint and its filter form. A filter the API refuses (400: a malformed date, a
    hand-edited status) is shown beside its field and the list left out, rather than an error page."""
    form = Form.of(console.request.query_params)
    try:
        return await console.api.list(path, list_query(console, filters) if query is None else query), form
    except ApiError as err:
        if err.status != 400:
            raise
        form.fail(err, filters)
        return None, form
