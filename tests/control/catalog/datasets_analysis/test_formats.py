"""Format detection and the streaming readers, hostile files included."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import (
    CorruptParquet,
    EmptyFile,
    FormatMismatch,
    InvalidEncoding,
    InvalidHeader,
    InvalidJsonLine,
    LineTooLong,
    NonObjectLine,
    RaggedRow,
    ReadOptions,
    UnsupportedFormat,
    detect_format,
    iter_batches,
)
from tests.control.catalog.datasets_analysis._files import Writer


def _rows(path: Path, fmt: str, **opts: int) -> list[dict]:
    return [row for b in iter_batches(path, fmt, ReadOptions(**opts)) for row in b.to_pylist()]  # type: ignore[arg-type]


# --- detection -----------------------------------------------------------------------------------

def test_detects_each_format_by_name_and_content(write_csv: Writer, write_jsonl: Writer, write_parquet: Writer) -> None:
    assert detect_format(write_csv("a\n1\n")) == "csv"
    assert detect_format(write_jsonl([{"a": 1}])) == "jsonl"
    assert detect_format(write_parquet([{"a": 1}])) == "parquet"
    assert detect_format(write_jsonl([{"a": 1}], name="upload.bin")) == "jsonl"  # content decides
    assert detect_format(write_parquet([{"a": 1}], name="noext")) == "parquet"


def test_client_file_name_must_have_a_known_extension(write_csv: Writer) -> None:
    path = write_csv("a\n1\n", name="stored-object")
    assert detect_format(path, filename="train.CSV") == "csv"
    with pytest.raises(UnsupportedFormat, match=r"\.xlsx"):
        detect_format(path, filename="train.xlsx")
    with pytest.raises(UnsupportedFormat):
        detect_format(path, declared="xml")


def test_name_and_declared_format_must_agree(write_csv: Writer, write_parquet: Writer) -> None:
    with pytest.raises(FormatMismatch):
        detect_format(write_csv("a\n1\n"), filename="x.csv", declared="jsonl")
    with pytest.raises(FormatMismatch, match="content is Parquet"):
        detect_format(write_parquet([{"a": 1}]), filename="x.csv")


def test_empty_and_whitespace_files(write_csv: Writer) -> None:
    with pytest.raises(EmptyFile) as info:
        detect_format(write_csv(b""))
    assert info.value.code == "empty_file"
    with pytest.raises(EmptyFile, match="whitespace"):
        detect_format(write_csv(b" \n\r\n\t"))


def test_binary_content_is_refused_with_line(write_csv: Writer) -> None:
    with pytest.raises(InvalidEncoding) as info:
        detect_format(write_csv(b"a,b\n1,2\n\x89PNG\x00\x00", name="img.csv"))
    assert info.value.line == 3


# --- Parquet -------------------------------------------------------------------------------------

def test_truncated_parquet(write_parquet: Writer) -> None:
    path = write_parquet([{"a": i, "b": "x" * 20} for i in range(1000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptParquet, match="truncated"):
        detect_format(path)
    with pytest.raises(CorruptParquet):
        list(iter_batches(path, "parquet"))


def test_parquet_declared_but_not_parquet(write_csv: Writer) -> None:
    with pytest.raises(CorruptParquet, match="magic"):
        detect_format(write_csv("a\n1\n", name="x.parquet"))


def test_parquet_with_corrupt_pages_reports_row(write_parquet: Writer) -> None:
    table = pa.table({"a": list(range(50_000)), "b": [f"v{i}" for i in range(50_000)]})
    path = write_parquet(table, row_group_size=10_000, compression="snappy")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)  # zero out pages in a middle row group, keep the footer
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptParquet) as info:
        list(iter_batches(path, "parquet", ReadOptions(batch_rows=10_000)))
    assert info.value.row is not None and info.value.row > 1


def test_parquet_streams_in_batches(write_parquet: Writer) -> None:
    path = write_parquet(pa.table({"a": list(range(25_000))}))
    sizes = [b.num_rows for b in iter_batches(path, "parquet", ReadOptions(batch_rows=10_000))]
    assert sizes == [10_000, 10_000, 5_000]


def test_parquet_dictionary_columns_are_decoded(write_parquet: Writer) -> None:
    table = pa.table({"c": pa.array(["x", "y", "x"]).dictionary_encode()})
    (batch,) = iter_batches(write_parquet(table), "parquet")
    assert batch.column("c").type == pa.string()


# --- CSV -----------------------------------------------------------------------------------------

def test_ragged_csv_row_reports_physical_line(write_csv: Writer) -> None:
    path = write_csv('a,b,c\n1,2,3\n"multi\nline",5,6\n7,8\n9,10,11\n')
    with pytest.raises(RaggedRow) as info:
        list(iter_batches(path, "csv"))
    assert (info.value.line, info.value.expected, info.value.actual) == (5, 3, 2)
    assert "line 5" in str(info.value)


def test_ragged_csv_row_far_into_the_file(write_csv: Writer) -> None:
    body = "".join(f"{i},x\n" for i in range(30_000))
    path = write_csv("n,s\n" + body + "1,2,3\n")
    with pytest.raises(RaggedRow) as info:
        list(iter_batches(path, "csv", ReadOptions(csv_block_bytes=64 * 1024)))
    assert info.value.line == 30_002


def test_invalid_utf8_in_csv_reports_line(write_csv: Writer) -> None:
    path = write_csv(b"a,b\n1,ok\n2,caf\xe9\n")
    with pytest.raises(InvalidEncoding) as info:
        list(iter_batches(path, "csv"))
    assert info.value.line == 3


def test_csv_record_longer_than_block_is_refused(write_csv: Writer) -> None:
    path = write_csv("a,b\n1,short\n2," + "x" * 5000 + "\n")
    with pytest.raises(LineTooLong) as info:
        list(iter_batches(path, "csv", ReadOptions(csv_block_bytes=1024)))
    assert info.value.line == 3


@pytest.mark.parametrize(("header", "why"), [("a,,c", "empty name"), ("a,b,a", "twice")])
def test_bad_csv_header(write_csv: Writer, header: str, why: str) -> None:
    with pytest.raises(InvalidHeader, match=why):
        list(iter_batches(write_csv(header + "\n1,2,3\n"), "csv"))


def test_csv_types_widen_across_batches(write_csv: Writer) -> None:
    # 'n' is integer for many rows, then float; 's' is integer, then text; 'z' keeps leading zeros.
    rows = [f"{i},{i},00{i},true" for i in range(3000)] + ["1.5,abc,007,false"]
    path = write_csv("n,s,z,flag\n" + "\n".join(rows) + "\n")
    batches = list(iter_batches(path, "csv", ReadOptions(csv_block_bytes=4096)))
    assert len(batches) > 3
    assert batches[0].schema.field("n").type == pa.int64()
    assert batches[-1].schema.field("n").type == pa.float64()
    assert batches[-1].schema.field("s").type == pa.string()
    assert all(b.schema.field("z").type == pa.string() for b in batches)
    assert all(b.schema.field("flag").type == pa.bool_() for b in batches)
    assert batches[-1].column("s").to_pylist()[-1] == "abc"


def test_csv_column_empty_at_first_takes_the_type_of_later_values(write_csv: Writer) -> None:
    rows = ["x,"] * 2000 + ["y,7"]
    batches = list(iter_batches(write_csv("k,v\n" + "\n".join(rows) + "\n"), "csv", ReadOptions(csv_block_bytes=2048)))
    assert pa.types.is_null(batches[0].schema.field("v").type)
    assert batches[-1].schema.field("v").type == pa.int64()


def test_csv_nulls_and_bom(write_csv: Writer) -> None:
    path = write_csv(b"\xef\xbb\xbfname,age\nann,\nbob,NA\n,3\n")
    assert _rows(path, "csv") == [
        {"name": "ann", "age": None}, {"name": "bob", "age": "NA"}, {"name": None, "age": "3"}
    ]


# --- JSONL ---------------------------------------------------------------------------------------

def test_jsonl_invalid_utf8_reports_line(write_csv: Writer) -> None:
    path = write_csv(b'{"a": 1}\n{"a": "\xff\xfe"}\n', name="x.jsonl")
    with pytest.raises(InvalidEncoding) as info:
        list(iter_batches(path, "jsonl"))
    assert info.value.line == 2


@pytest.mark.parametrize("error", ["unicode", "decode"])
def test_jsonl_invalid_utf8_same_answer_for_either_msgspec_behaviour(
    write_csv: Writer, monkeypatch: pytest.MonkeyPatch, error: str
) -> None:
    """msgspec < 0.19 raises UnicodeDecodeError for invalid UTF-8 in a string, 0.19+ a DecodeError."""
    from control.catalog.datasets_analysis import _jsonl

    real = _jsonl._decoder

    class _Decoder:
        def decode(self, text: bytes) -> object:
            if b"\xff" not in text:
                return real.decode(text)
            if error == "unicode":
                raise UnicodeDecodeError("utf-8", text, text.index(b"\xff"), text.index(b"\xff") + 1, "invalid")
            raise msgspec.DecodeError("JSON is malformed: invalid character (byte 7)")

    monkeypatch.setattr(_jsonl, "_decoder", _Decoder())
    path = write_csv(b'{"a": 1}\n{"a": "\xff\xfe"}\n', name="x.jsonl")
    with pytest.raises(InvalidEncoding) as info:
        list(iter_batches(path, "jsonl"))
    assert info.value.line == 2


def test_jsonl_binary_line_with_nul(write_csv: Writer) -> None:
    path = write_csv(b'{"a": 1}\n\n{"a": 2}\n\x01\x00\x02garbage\n', name="x.jsonl")
    with pytest.raises(InvalidEncoding) as info:
        list(iter_batches(path, "jsonl"))
    assert info.value.line == 4


def test_jsonl_non_object_line(write_jsonl: Writer) -> None:
    with pytest.raises(NonObjectLine) as info:
        list(iter_batches(write_jsonl([{"a": 1}, [1, 2]]), "jsonl"))
    assert info.value.line == 2
    assert "array" in info.value.message
    with pytest.raises(NonObjectLine, match="string"):
        list(iter_batches(write_jsonl(["just text"]), "jsonl"))


def test_jsonl_invalid_json(write_csv: Writer) -> None:
    path = write_csv('{"a": 1}\n{"a": \n', name="x.jsonl")
    with pytest.raises(InvalidJsonLine) as info:
        list(iter_batches(path, "jsonl"))
    assert info.value.line == 2


def test_jsonl_huge_line_is_refused_without_reading_it_whole(write_csv: Writer) -> None:
    path = write_csv('{"a": 1}\n{"a": "' + "x" * 100_000 + '"}\n', name="x.jsonl")
    with pytest.raises(LineTooLong) as info:
        list(iter_batches(path, "jsonl", ReadOptions(max_line_bytes=10_000)))
    assert (info.value.line, info.value.limit_bytes) == (2, 10_000)


def test_jsonl_line_exactly_at_limit_is_accepted(write_csv: Writer) -> None:
    line = '{"a": "' + "x" * 93 + '"}'  # 102 bytes
    assert len(line) == 102
    path = write_csv(line + "\n", name="x.jsonl")
    assert _rows(path, "jsonl", max_line_bytes=102) == [{"a": "x" * 93}]


def test_jsonl_mixed_types_and_late_keys(write_jsonl: Writer) -> None:
    path = write_jsonl([{"a": 1, "m": 1}, {"a": 2, "m": "one"}, {"a": 3, "m": {"k": [1]}, "late": True}])
    (batch,) = iter_batches(path, "jsonl")
    assert batch.schema.names == ["a", "m", "late"]
    assert batch.column("m").to_pylist() == ["1", "one", '{"k":[1]}']
    assert batch.column("late").to_pylist() == [None, None, True]


def test_jsonl_nested_records_stay_nested(write_jsonl: Writer) -> None:
    path = write_jsonl([{"messages": [{"role": "user", "content": "hi"}]}])
    (batch,) = iter_batches(path, "jsonl")
    assert pa.types.is_list(batch.column("messages").type)


def test_jsonl_batches(write_jsonl: Writer) -> None:
    path = write_jsonl([{"i": i} for i in range(25)])
    assert [b.num_rows for b in iter_batches(path, "jsonl", ReadOptions(batch_rows=10))] == [10, 10, 5]
