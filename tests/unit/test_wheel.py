"""A wheel built from the repository carries the built trading screen (web/ -> src/investo/web_dist)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_includes_the_built_trading_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (ROOT / "src" / "investo" / "web_dist" / "index.html").exists():
        message = "the trading screen is not built (scripts/build-ui)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; .ci/run builds it before the tests")
        pytest.skip(message)
    from hatchling.build import build_wheel

    monkeypatch.chdir(ROOT)
    name = build_wheel(str(tmp_path))
    with zipfile.ZipFile(tmp_path / name) as wheel:
        names = set(wheel.namelist())
    assert "investo/web_dist/index.html" in names
    assert any(n.startswith("investo/web_dist/assets/") and n.endswith(".js") for n in names)
    assert "investo/markets.toml" in names  # the built-in markets ship too
    assert not any("node_modules" in n or n.endswith(".ts") for n in names)
