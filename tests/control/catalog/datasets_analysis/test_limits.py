"""What a file may declare: columns, nesting, decompressed size, NUL bytes, and rows analysed (a sample)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from control.catalog.datasets_analysis import (
    InvalidEncoding,
    InvalidJsonLine,
    ReadOptions,
    TooDeep,
    TooLargeToAnalyse,
    TooManyColumns,
    analyze,
    iter_batches,
)
from tests.control.catalog.datasets_analysis._files import Writer


def test_jsonl_with_too_many_distinct_keys_is_refused_at_the_line(write_jsonl: Writer) -> None:
    path = write_jsonl([{f"key_{i}": i} for i in range(10_000)])
    with pytest.raises(TooManyColumns) as info:
        analyze(path, "jsonl", options=ReadOptions(max_columns=100))
    assert info.value.line == 101 and info.value.status == 422 and "100" in info.value.message


def test_jsonl_batches_flush_by_cells_so_sparse_keys_stay_small(write_jsonl: Writer) -> None:
    path = write_jsonl([{f"key_{i}": i} for i in range(2_000)])
    sizes = [b.num_rows for b in iter_batches(path, "jsonl", ReadOptions(max_columns=5_000))]
    assert sum(sizes) == 2_000 and max(sizes) <= 1_025, sizes  # rows x keys < 2^20 cells


@pytest.mark.parametrize("levels", [100, 1_000, 100_000])
def test_deep_jsonl_is_refused_with_its_line(tmp_path: Path, levels: int) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text('{"a": 1}\n' + '{"x": ' + "[" * levels + "]" * levels + "}\n")
    with pytest.raises(TooDeep) as info:
        analyze(path, "jsonl")
    assert info.value.line == 2 and info.value.status == 422


def test_jsonl_within_the_depth_limit_and_bracket_heavy_lines_pass(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"x": ' + "[" * 60 + "]" * 60 + ', "many": [' + ",".join(["[]"] * 500) + "]}\n")
    assert analyze(path, "jsonl").row_count == 1


def test_csv_with_too_many_columns_is_refused(write_csv: Writer) -> None:
    header = ",".join(f"c{i}" for i in range(60_000))
    with pytest.raises(TooManyColumns) as info:
        analyze(write_csv(header + "\n" + ",".join("1" * 60_000) + "\n"), "csv")
    assert info.value.line == 1 and "60000" in info.value.message


def test_csv_nul_byte_anywhere_is_binary(write_csv: Writer) -> None:
    rows = "".join(f"q{i},a{i}\n" for i in range(10_000))  # ~100 KB, past the 64 KiB format sniff
    path = write_csv(("question,answer\n" + rows).encode() + b"q,a\x00b\n")
    with pytest.raises(InvalidEncoding) as info:
        analyze(path, "csv")
    assert info.value.line == 10_002


def test_parquet_decompression_bomb_is_refused_from_its_footer(tmp_path: Path) -> None:
    path = tmp_path / "bomb.parquet"
    cells = pa.table({"text": ["a" * (40 << 20)] * 5})
    pq.write_table(cells, path, compression="zstd", compression_level=19, use_dictionary=False, row_group_size=1)
    assert path.stat().st_size < 100_000
    with pytest.raises(TooLargeToAnalyse) as info:
        analyze(path, "parquet")
    assert info.value.status == 413 and "x" in info.value.message
    with pytest.raises(TooLargeToAnalyse, match="limit is 1000"):
        analyze(path, "parquet", options=ReadOptions(max_decompressed_bytes=1000, max_compression_ratio=1e12))


def test_parquet_width_and_depth_are_capped(write_parquet: Writer) -> None:
    wide = write_parquet(pa.table({f"c{i}": [1] for i in range(50)}), name="wide.parquet")
    with pytest.raises(TooManyColumns):
        analyze(wide, "parquet", options=ReadOptions(max_columns=10))
    deep_type: pa.DataType = pa.int64()
    for _ in range(10):
        deep_type = pa.list_(deep_type)
    value: object = 1
    for _ in range(10):
        value = [value]
    deep = write_parquet(pa.table({"x": pa.array([value], deep_type)}), name="deep.parquet")
    with pytest.raises(TooDeep, match="11 levels"):
        analyze(deep, "parquet", options=ReadOptions(max_depth=8))
    assert analyze(deep, "parquet").row_count == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_rows_beyond_the_limit_are_counted_not_analysed(tmp_path: Path, fmt: str) -> None:
    rows = [{"id": i, "text": f"row {i}"} for i in range(2_500)]
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        path.write_text("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(f'{{"id": {r["id"]}, "text": "{r["text"]}"}}\n' for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    result = analyze(path, fmt, options=ReadOptions(max_rows=1_100, batch_rows=500))  # type: ignore[arg-type]
    assert result.row_count == 2_500 and result.profile.row_count == 2_500
    assert result.validation.sampled and result.validation.rows_analysed == 1_100
    assert result.profile.rows_analysed == 1_100
    assert [w.code for w in result.validation.warnings] == ["sampled"]
    id_column = next(c for c in result.profile.columns if c.name == "id")
    assert id_column.max == 1_099 and id_column.null_count == 0
    whole = analyze(path, fmt)  # type: ignore[arg-type]
    assert not whole.validation.sampled and whole.validation.rows_analysed == 2_500


def test_lines_past_the_sample_are_still_checked(tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl"
    path.write_text('{"a": 1}\n' * 50 + "{oops\n")
    with pytest.raises(InvalidJsonLine, match="line 51"):
        analyze(path, "jsonl", options=ReadOptions(max_rows=10))
