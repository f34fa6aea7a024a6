"""The lock is the install: every package pinned with hashes, and a stale lock is caught."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".tools" / "bin" / "uv"  # installed by ./dev from tools/uv.txt


def _uv() -> str:
    assert UV.exists(), "uv is missing: run ./dev test, which installs it from tools/uv.txt"
    return str(UV)


def _check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_uv(), "lock", "--check", "--offline", "--project", str(project)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_lock_matches_pyproject() -> None:
    result = _check(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_dependency_missing_from_the_lock_is_caught(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"redis>=5",', '"redis>=5",\n  "six>=1.16",', 1))
    result = _check(tmp_path)
    assert result.returncode != 0
    # With uv's cache warm it says so; with a cold cache (a fresh machine) it must re-resolve to tell,
    # which --offline forbids. Either way the lock was found stale: the unchanged copy passes offline.
    assert "needs to be updated" in result.stderr or "network was disabled" in result.stderr


def test_every_locked_package_is_pinned_with_hashes() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    unhashed = []
    for pkg in lock["package"]:
        if "registry" not in pkg.get("source", {}):
            continue  # the project itself (editable)
        files = [*pkg.get("wheels", []), *([pkg["sdist"]] if "sdist" in pkg else [])]
        if not files or any(not f.get("hash", "").startswith("sha256:") for f in files):
            unhashed.append(pkg["name"])
    assert lock["package"] and not unhashed

