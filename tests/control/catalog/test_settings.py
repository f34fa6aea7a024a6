"""Catalog settings: PII rule configuration, detector loading, and failing start-up on bad settings."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow as pa
import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import admin_test_app
from control.catalog import CatalogModule
from control.catalog.datasets_analysis import Finding, scan
from control.catalog.settings import CatalogSettings, PiiConfig, load_detectors


class ShoutDetector:
    def detect(self, text: str) -> list[Finding]:
        return [Finding(rule="shout", start=0, end=len(text))] if text.isupper() else []


def make_detector() -> ShoutDetector:
    return ShoutDetector()


def test_rules_can_be_disabled_added_and_selected_per_dataset() -> None:
    settings = msgspec.convert({"disabled_pii_rules": ["ipv6"],
                                "custom_pii_rules": [{"name": "employee_id", "pattern": r"EMP-\d{6}"}]},
                               CatalogSettings)
    pii = PiiConfig(settings, load_detectors(["tests.control.catalog.test_settings:make_detector"]))
    assert "ipv6" not in pii.rules and "employee_id" in pii.rules and "email" in pii.rules
    assert [r.name for r in pii.select(["employee_id", "email"])] == ["email", "employee_id"]
    assert len(pii.select(None)) == len(pii.rules)
    batch = pa.record_batch({"note": ["badge EMP-123456", "a@b.io", "HELLO"]})
    report = scan([batch], pii.select(["employee_id"]), pii.detectors)
    assert {(f.rule, f.count) for f in report.findings} == {("employee_id", 1), ("shout", 1)}


@pytest.mark.parametrize("settings", [
    {"disabled_pii_rules": ["nope"]},
    {"custom_pii_rules": [{"name": "email", "pattern": "x"}]},
    {"custom_pii_rules": [{"name": "bad", "pattern": "("}]},
    {"preview_rows": 0},
    {"previewRows": 5},
    {"analysis": {"workerz": 2}},
    {"analysis": {"memory_limit_mb": 100}},
    {"analysis": {"workers": 0}},
    {"stale_upload_s": 1},
])
def test_bad_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(settings, CatalogSettings)


def test_bad_detector_specs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"package\.module:factory"):
        load_detectors(["no-colon"])
    with pytest.raises(ValueError, match="detect"):
        load_detectors(["builtins:dict"])


async def test_a_typo_in_module_settings_fails_start_up(tmp_path: Path) -> None:
    cfg = ControlCfg(data_dir=str(tmp_path), change_feed="local", module_settings={"catalog": {"preview_rowz": 3}})
    with pytest.raises(msgspec.ValidationError, match="preview_rowz"):
        async with admin_test_app(cfg, modules=[CatalogModule()]):
            pass
