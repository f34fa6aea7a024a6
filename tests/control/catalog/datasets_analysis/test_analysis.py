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
from tests.control.catalog.datasets_analysis.conftest import Writer

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


def test_large_file_is_streamed_in_bounded_memory(write_csv: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    """200k rows (~6 MB) analysed batch by batch; neither Arrow nor Python memory grows with the file."""
    body = "".join(f"{i},user {i % 1000} says hello number {i},{i % 7 == 0}\n" for i in range(200_000))
    path = write_csv("id,text,flag\n" + body)
    size = path.stat().st_size
    batches, arrow_peak = 0, 0
    real_iter = analysis_module.iter_batches

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal batches, arrow_peak
        for batch in real_iter(*args, **kwargs):
            batches += 1
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
            yield batch

    monkeypatch.setattr(analysis_module, "iter_batches", counting)
    tracemalloc.start()
    try:
        result = analyze(path, "csv", options=ReadOptions(csv_block_bytes=256 * 1024))
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.row_count == 200_000
    assert batches >= 20
    assert arrow_peak < size / 3, (arrow_peak, size)
    assert python_peak < size / 2, (python_peak, size)
