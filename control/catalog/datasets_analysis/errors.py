"""Why a dataset file could not be read.

Every error carries a stable ``code``, an HTTP-ish ``status`` and, where the
problem sits at one place, the 1-based physical ``line`` (CSV, JSONL) or data
``row`` it was found at, so the admin API can answer precisely.

    DatasetError                  422 dataset_error
    ├── UnsupportedFormat         415 unsupported_format
    ├── FormatMismatch            415 format_mismatch   (name says one format, bytes another)
    ├── EmptyFile                 422 empty_file
    ├── CorruptParquet            422 corrupt_parquet   (truncated, bad magic, bad pages)
    ├── InvalidEncoding           422 invalid_encoding  (binary or invalid UTF-8)
    ├── LineTooLong               422 line_too_long
    ├── InvalidHeader             422 invalid_header    (CSV: empty or duplicate names)
    ├── RaggedRow                 422 ragged_row        (CSV: wrong number of fields)
    ├── InvalidJsonLine           422 invalid_json
    ├── NonObjectLine             422 non_object_line   (JSONL: a line is not a JSON object)
    ├── TooManyColumns            422 too_many_columns  (more columns or distinct keys than allowed)
    ├── TooDeep                   422 too_deep          (JSON or Parquet nesting deeper than allowed)
    ├── TooLargeToAnalyse         413 too_large_to_analyse (declared decompressed size or ratio too high)
    ├── OutOfAnalysisMemory       413 analysis_memory_limit (the analysis worker hit its memory limit)
    └── MalformedData             422 malformed_data    (anything else the parser refused)

``InvalidSchemaSpec`` (a ``ValueError``) is different: the caller's expected schema is wrong.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CorruptParquet",
    "DatasetError",
    "EmptyFile",
    "FormatMismatch",
    "InvalidEncoding",
    "InvalidHeader",
    "InvalidJsonLine",
    "InvalidSchemaSpec",
    "LineTooLong",
    "MalformedData",
    "NonObjectLine",
    "OutOfAnalysisMemory",
    "RaggedRow",
    "TooDeep",
    "TooLargeToAnalyse",
    "TooManyColumns",
    "UnsupportedFormat",
]


class DatasetError(Exception):
    status: ClassVar[int] = 422
    code: ClassVar[str] = "dataset_error"

    def __init__(self, message: str, *, line: int | None = None, row: int | None = None) -> None:
        where = f" (line {line})" if line is not None else f" (row {row})" if row is not None else ""
        super().__init__(message + where)
        self.message = message + where
        self.line = line
        self.row = row


class UnsupportedFormat(DatasetError):
    status = 415
    code = "unsupported_format"


class FormatMismatch(DatasetError):
    status = 415
    code = "format_mismatch"


class EmptyFile(DatasetError):
    code = "empty_file"


class CorruptParquet(DatasetError):
    code = "corrupt_parquet"


class InvalidEncoding(DatasetError):
    code = "invalid_encoding"


class LineTooLong(DatasetError):
    code = "line_too_long"

    def __init__(self, limit_bytes: int, *, line: int) -> None:
        super().__init__(f"a record is longer than the limit of {limit_bytes} bytes", line=line)
        self.limit_bytes = limit_bytes


class InvalidHeader(DatasetError):
    code = "invalid_header"


class RaggedRow(DatasetError):
    code = "ragged_row"

    def __init__(self, *, line: int, expected: int, actual: int) -> None:
        super().__init__(f"expected {expected} fields as in the header, found {actual}", line=line)
        self.expected = expected
        self.actual = actual


class InvalidJsonLine(DatasetError):
    code = "invalid_json"


class NonObjectLine(DatasetError):
    code = "non_object_line"


class MalformedData(DatasetError):
    code = "malformed_data"


class TooManyColumns(DatasetError):
    code = "too_many_columns"


class TooDeep(DatasetError):
    code = "too_deep"


class TooLargeToAnalyse(DatasetError):
    """What the file declares (decompressed bytes, compression ratio) is past the analysis limits."""

    status = 413
    code = "too_large_to_analyse"


class OutOfAnalysisMemory(DatasetError):
    """The analysis needed more memory than its worker may use (raised by the catalog's analysis pool)."""

    status = 413
    code = "analysis_memory_limit"


class InvalidSchemaSpec(ValueError):
    """The expected schema or required columns handed to the analysis are themselves invalid."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_schema_spec"
