"""Dataset analysis for the catalog: format checks, validation, PII scan, quality score, profile, compare.

Pure and synchronous; every reader streams record batches so no file is ever
loaded whole, and ``ReadOptions`` caps what a file may declare (columns, nesting,
decompressed size, rows analysed). The catalog runs ``analyze`` in worker
processes of its own with a memory limit (``control.catalog.datasets.analysis_pool``).
"""

from control.catalog.datasets_analysis.analysis import DatasetAnalysis, analyze
from control.catalog.datasets_analysis.compare import ProfileDiff, compare_profiles
from control.catalog.datasets_analysis.errors import (
    CorruptParquet,
    DatasetError,
    EmptyFile,
    FormatMismatch,
    InvalidEncoding,
    InvalidHeader,
    InvalidJsonLine,
    InvalidSchemaSpec,
    LineTooLong,
    MalformedData,
    NonObjectLine,
    OutOfAnalysisMemory,
    RaggedRow,
    TooDeep,
    TooLargeToAnalyse,
    TooManyColumns,
    UnsupportedFormat,
)
from control.catalog.datasets_analysis.formats import Batches, DatasetFormat, ReadOptions, detect_format, iter_batches
from control.catalog.datasets_analysis.logical import LOGICAL_TYPES, ColumnInfo
from control.catalog.datasets_analysis.pii import Finding, PiiDetector, PiiReport, PiiScanner, scan
from control.catalog.datasets_analysis.profile import ColumnProfile, DatasetProfile, Profiler
from control.catalog.datasets_analysis.quality import QualityReport, score_quality
from control.catalog.datasets_analysis.validation import (
    SchemaValidator,
    ValidationIssue,
    ValidationReport,
    report_for_error,
)
from policies.pii import BUILTIN_RULES, PiiRule, default_rules

__all__ = [
    "BUILTIN_RULES",
    "LOGICAL_TYPES",
    "Batches",
    "ColumnInfo",
    "ColumnProfile",
    "CorruptParquet",
    "DatasetAnalysis",
    "DatasetError",
    "DatasetFormat",
    "DatasetProfile",
    "EmptyFile",
    "Finding",
    "FormatMismatch",
    "InvalidEncoding",
    "InvalidHeader",
    "InvalidJsonLine",
    "InvalidSchemaSpec",
    "LineTooLong",
    "MalformedData",
    "NonObjectLine",
    "OutOfAnalysisMemory",
    "PiiDetector",
    "PiiReport",
    "PiiRule",
    "PiiScanner",
    "ProfileDiff",
    "Profiler",
    "QualityReport",
    "RaggedRow",
    "ReadOptions",
    "SchemaValidator",
    "TooDeep",
    "TooLargeToAnalyse",
    "TooManyColumns",
    "UnsupportedFormat",
    "ValidationIssue",
    "ValidationReport",
    "analyze",
    "compare_profiles",
    "default_rules",
    "detect_format",
    "iter_batches",
    "report_for_error",
    "scan",
    "score_quality",
]
