"""The single-pass entry point, end to end on real files of each format."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

import control.catalog.datasets_analysis as da
from control.catalog.datasets_analysis import (
    DatasetAnalysis,
    DatasetProfile,
    InvalidSchemaSpec,
    RaggedRow,
    ReadOptions,
    analyze,
    compare_profiles,
)
from control.catalog.datasets_analysis import analysis as analysis_module
from tests.control.catalog.datasets_analysis._files import Writer

ROWS = [
    {"prompt": "Contact me at ann@example.com", "completion": "Sure.", "label": 1},
    {"prompt": "What is 2+2?", "completion": "4", "label": 0},
    {"prompt": "What is 2+2?", "completion": "4", "label": 0},
    {"prompt": "Card 4111 1111 1111 1111", "completion": None, "label": 1},
]
SCHEMA = {"prompt": "string", "completion": "string", "label": "integer"}


def _csv_text(rows: list[dict]) -> str:
    lines = ["prompt,completion,label"]
    lines += [f'"{r["prompt"]}",{r["completion"] or ""},{r["label"]}' for r in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture
def files(write_csv: Writer, write_jsonl: Writer, write_parquet: Writer) -> dict[str, Path]:
    return {
        "csv": write_csv(_csv_text(ROWS)),
        "jsonl": write_jsonl(ROWS),
        "parquet": write_parquet(ROWS),
    }


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_every_format_gives_the_same_findings(files: dict[str, Path], fmt: str) -> None:
    result = analyze(files[fmt], fmt, expected_schema=SCHEMA, required_columns=("prompt",))  # type: ignore[arg-type]
    assert (result.format, result.row_count) == (fmt, 4)
    assert result.validation.ok, result.validation.errors
    assert result.pii.pii_status == "detected"
    assert {(f.column, f.rule, f.count) for f in result.pii.findings} == {
        ("prompt", "email", 1), ("prompt", "credit_card", 1)
    }
    q = result.quality.breakdown
    assert (q.duplicate_rows, q.missing_ratio, q.schema_compliance) == (1, pytest.approx(1 / 12), 1.0)
    assert [c.name for c in result.profile.columns] == ["prompt", "completion", "label"]
    assert len(result.profile.preview) == 4


def test_schema_problems_land_in_the_report_not_an_exception(files: dict[str, Path]) -> None:
    result = analyze(files["csv"], "csv", expected_schema={"label": "boolean"}, required_columns=("completion",))
    assert not result.validation.ok
    assert {(e.code, e.column, e.row) for e in result.validation.errors} == {
        ("null_in_required_column", "completion", 4), ("type_mismatch", "label", 1)
    }
    assert result.quality.breakdown.schema_compliance == 0.0


def test_parse_errors_raise_with_their_line(write_csv: Writer) -> None:
    with pytest.raises(RaggedRow) as info:
        analyze(write_csv("a,b\n1,2\n3\n"), "csv")
    assert info.value.line == 3


def test_bad_schema_spec_fails_before_reading(tmp_path: Path) -> None:
    with pytest.raises(InvalidSchemaSpec):
        analyze(tmp_path / "does-not-exist.csv", "csv", expected_schema={"a": "nonsense"})


def test_client_filename_is_checked(files: dict[str, Path]) -> None:
    with pytest.raises(da.FormatMismatch):
        analyze(files["parquet"], None, filename="train.jsonl")


def test_result_is_camel_case_json_and_round_trips(files: dict[str, Path]) -> None:
    result = analyze(files["jsonl"], "jsonl")
    body = msgspec.json.decode(msgspec.json.encode(result))
    assert set(body) == {"format", "rowCount", "validation", "pii", "quality", "profile"}
    assert body["pii"]["piiStatus"] == "detected"
    assert "schemaCompliance" in body["validation"]
    assert "ann@example.com" not in msgspec.json.encode(result.pii).decode()
    again = msgspec.json.decode(msgspec.json.encode(result), type=DatasetAnalysis)
    assert compare_profiles(again.profile, result.profile).identical


def test_two_versions_compare(write_jsonl: Writer) -> None:
    v1 = analyze(write_jsonl(ROWS, name="v1.jsonl"), "jsonl").profile
    v2 = analyze(write_jsonl([*ROWS, {"prompt": "new", "completion": "x", "label": 2, "source": "web"}],
                             name="v2.jsonl"), "jsonl").profile
    diff = compare_profiles(v1, v2)
    assert [c.name for c in diff.schema.added] == ["source"]
    assert diff.row_count.delta == 1


def test_public_names() -> None:
    assert all(hasattr(da, name) for name in da.__all__)
    assert isinstance(DatasetProfile, type)


def _watch_batches(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the batches analyze pulls and the most Arrow memory allocated while it runs."""
    seen = {"batches": 0, "arrow_peak": 0}
    real_iter = analysis_module.iter_batches

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        batches = real_iter(*args, **kwargs)
        for batch in batches:
            seen["batches"] += 1
            seen["arrow_peak"] = max(seen["arrow_peak"], pa.total_allocated_bytes())
            yield batch
        return batches.total_rows

    monkeypatch.setattr(analysis_module, "iter_batches", lambda *a, **kw: da.Batches(counting(*a, **kw)))
    return seen


def test_large_csv_is_streamed_in_bounded_memory(write_csv: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    """200k rows (~9 MB) in 64 KiB blocks: Arrow holds its 32-block prefetch and the 8-byte
    row hashes of the duplicate check, never the file."""
    rows, block = 200_000, 64 * 1024
    body = "".join(f"{i},user {i % 1000} says hello number {i},{i % 7 == 0}\n" for i in range(rows))
    path = write_csv("id,text,flag\n" + body)
    size = path.stat().st_size
    seen = _watch_batches(monkeypatch)
    result = analyze(path, "csv", options=ReadOptions(csv_block_bytes=block))
    assert result.row_count == rows
    assert result.quality.breakdown.duplicate_rows == 0
    assert seen["batches"] > 100
    assert seen["arrow_peak"] < 33 * block + 8 * rows + 512 * 1024 < size / 2, (seen["arrow_peak"], size)


def _python_peak(path: Path) -> int:
    tracemalloc.start()
    try:
        analyze(path, "jsonl", options=ReadOptions(batch_rows=500))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_jsonl_python_memory_does_not_grow_with_the_file(write_jsonl: Writer) -> None:
    """JSONL is parsed in Python; tracemalloc's peak tracks one batch, so 4x the rows is not 4x the memory."""
    def rows(n: int) -> list[dict]:
        return [{"id": i, "text": f"row {i} " + "lorem ipsum " * 8} for i in range(n)]

    small, big = write_jsonl(rows(5_000), name="small.jsonl"), write_jsonl(rows(20_000), name="big.jsonl")
    small_peak, big_peak = _python_peak(small), _python_peak(big)
    assert big_peak < 1.5 * small_peak, (small_peak, big_peak)
    assert big_peak < big.stat().st_size / 2
