"""Small dataset files written fresh into tmp_path for each test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.control.catalog.datasets_analysis._files import Writer


@pytest.fixture
def write_csv(tmp_path: Path) -> Writer:
    def write(text: str | bytes, name: str = "data.csv") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path
    return write


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Writer:
    def write(rows: list[Any], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path
    return write


@pytest.fixture
def write_parquet(tmp_path: Path) -> Writer:
    def write(table: pa.Table | list[dict[str, Any]], name: str = "data.parquet", **kwargs: Any) -> Path:
        path = tmp_path / name
        pq.write_table(table if isinstance(table, pa.Table) else pa.Table.from_pylist(table), path, **kwargs)
        return path
    return write
