"""One entry point: read the file once and feed validation, PII scan, quality and profile together.

Sync and CPU-bound by design; the catalog runs it in a worker process of its
own (``control.catalog.datasets.analysis_pool``). Memory is bounded by one record
batch plus the per-column summaries (and the 8-bytes-per-row duplicate hashes,
see ``quality``), whatever the file size. With ``options.max_rows`` set, only
that many rows are validated, scanned and profiled; the reports then say
``sampled`` and ``rowsAnalysed``, while ``row_count`` is the file's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from control.catalog.datasets_analysis.formats import DatasetFormat, ReadOptions, detect_format, iter_batches
from control.catalog.datasets_analysis.pii import PiiDetector, PiiReport, PiiScanner
from control.catalog.datasets_analysis.profile import DatasetProfile, Profiler
from control.catalog.datasets_analysis.quality import DuplicateCounter, QualityReport, score_quality
from control.catalog.datasets_analysis.validation import SchemaValidator, ValidationReport
from policies.pii import PiiRule

__all__ = ["DatasetAnalysis", "analyze"]


class DatasetAnalysis(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    format: str
    row_count: int
    validation: ValidationReport
    pii: PiiReport
    quality: QualityReport
    profile: DatasetProfile


def analyze(
    path: str | os.PathLike[str],
    fmt: DatasetFormat | None = None,
    *,
    filename: str | None = None,
    expected_schema: Mapping[str, str] | None = None,
    required_columns: Iterable[str] = (),
    pii_rules: Sequence[PiiRule] | None = None,
    detectors: Sequence[PiiDetector] = (),
    sample_rows: int = 20,
    options: ReadOptions | None = None,
) -> DatasetAnalysis:
    """Analyse one dataset file in a single streaming pass.

    ``fmt`` (or the extension of ``filename``, the client's original name) is
    checked against the content; with neither, the content decides. Raises a
    ``DatasetError`` subclass when the file cannot be parsed (with its line or
    row), ``InvalidSchemaSpec`` when ``expected_schema`` is itself invalid.
    Schema problems found in a parseable file are in ``validation.errors``.
    """
    validator = SchemaValidator(expected_schema, required_columns)  # bad specs fail before any I/O
    fmt = detect_format(path, filename=filename, declared=fmt)
    scanner = PiiScanner(pii_rules, detectors)
    profiler = Profiler(sample_rows=sample_rows)
    duplicates = DuplicateCounter()
    batches = iter_batches(path, fmt, options)
    for batch in batches:
        validator.feed(batch)
        scanner.feed(batch)
        profiler.feed(batch)
        duplicates.feed(batch)
    total = batches.total_rows if batches.total_rows is not None else profiler.row_count
    profile = profiler.finish(fmt, total_rows=total)
    validation = validator.report(fmt, total_rows=total)
    return DatasetAnalysis(
        format=fmt,
        row_count=total,
        validation=validation,
        pii=scanner.report(),
        quality=score_quality(profile, duplicates, validation.schema_compliance),
        profile=profile,
    )
