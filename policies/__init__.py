"""Pure policy logic both sides share: no I/O (``tests/test_import_boundaries.py`` enforces it).

``policies.documents``: typed policy documents and their validation.
``policies.pii``: PII detection and redaction on strings.
"""

__all__: list[str] = []
