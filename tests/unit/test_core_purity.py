"""`investo.core` is pure: it imports no I/O module and nothing else from investo.

Checked on the source (every import statement of every core module), so an
import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import investo.core

CORE = Path(investo.core.__file__).parent

# What core may import: the standard library's pure parts and msgspec.
ALLOWED = {
    "__future__",
    "abc",
    "bisect",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "math",
    "msgspec",
    "operator",
    "typing",
}
FORBIDDEN_EXAMPLES = {"os", "io", "time", "datetime", "random", "socket", "asyncio", "threading", "sqlite3"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.append("investo.core." + (node.module or ""))
    return names


def test_core_imports_only_pure_modules_and_itself() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if name == "investo.core" or name.startswith("investo.core."):
                continue
            if top not in ALLOWED:
                offenders.append(f"{path.name}: import {name}")
    assert offenders == [], "investo.core must stay pure:\n" + "\n".join(offenders)


def test_allowed_list_holds_no_io_module() -> None:
    assert not ALLOWED & FORBIDDEN_EXAMPLES
    assert all(name in sys.stdlib_module_names or name == "msgspec" for name in ALLOWED)


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    import time\n    from investo.api import units\n")
    assert _imports(module) == ["time", "investo.api"]
