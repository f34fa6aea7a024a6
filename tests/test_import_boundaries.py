"""Dependencies flow inward: adapters/ and policies/ never import gateway/ or control/,
and gateway/ and control/ never import each other. policies/ is pure: no I/O module and no open()."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"adapters": {"gateway", "control"}, "policies": {"gateway", "control"},
             "gateway": {"control"}, "control": {"gateway"}}
# What would let a "pure" policy touch the network, the disk, the database or other processes.
IO_MODULES = {
    "adapters", "aiofiles", "aiohttp", "aiosqlite", "asyncio", "asyncpg", "boto3", "botocore", "glob", "http",
    "httpx", "io", "litestar", "multiprocessing", "os", "pathlib", "redis", "requests", "selectors", "shutil",
    "socket", "sqlalchemy", "ssl", "subprocess", "tempfile", "threading", "urllib", "uvicorn",
}
IO_BUILTINS = {"open", "input", "exec", "eval", "__import__"}


def _imports(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _impurities(source: str) -> list[str]:
    tree = ast.parse(source)
    found = [f"imports {name}" for name in sorted(_imports(tree) & IO_MODULES)]
    found += [f"calls {node.func.id}() on line {node.lineno}" for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS]
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_outward_imports(package: str) -> None:
    bad = []
    for path in (ROOT / package).rglob("*.py"):
        hit = _imports(ast.parse(path.read_text(encoding="utf-8"))) & FORBIDDEN[package]
        if hit:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_policies_do_no_io() -> None:
    bad = [f"{path.relative_to(ROOT)} {problem}" for path in sorted((ROOT / "policies").rglob("*.py"))
           for problem in _impurities(path.read_text(encoding="utf-8"))]
    assert not bad, "policies/ must stay pure (no I/O):\n" + "\n".join(bad)


@pytest.mark.parametrize(("source", "problem"), [
    ("import asyncio", "imports asyncio"),
    ("from sqlalchemy.ext.asyncio import AsyncConnection", "imports sqlalchemy"),
    ("import aiohttp.client", "imports aiohttp"),
    ("from redis import asyncio as r", "imports redis"),
    ("from os import path", "imports os"),
    ("from pathlib import Path", "imports pathlib"),
    ("from adapters.store import Store", "imports adapters"),
    ("def load(p):\n    return open(p).read()", "calls open() on line 2"),
])
def test_the_purity_check_catches_io(source: str, problem: str) -> None:
    assert _impurities(source) == [problem]


def test_the_purity_check_allows_pure_modules() -> None:
    assert _impurities("import re, ipaddress, hashlib\nimport msgspec\nfrom typing import Protocol") == []
