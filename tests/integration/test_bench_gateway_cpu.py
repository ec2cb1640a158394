"""`bench/gateway_cpu.py` runs as its docstring says: real Redis and Postgres, every order answered."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from postgres_fixtures import POSTGRES_ADMIN_URL, require_postgres
from redis_fixtures import HOST, PORT, require_redis

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gateway_cpu.py"


def test_gateway_cpu_prints_a_figure_per_round_with_every_order_answered() -> None:
    require_redis()
    require_postgres()
    done = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--orders", "200", "--rounds", "2", "--warmup", "50",
            "--concurrency", "4", "--users", "3", "--redis", f"redis://{HOST}:{PORT}/0",
            "--postgres", POSTGRES_ADMIN_URL,
        ],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rounds = re.findall(
        r"round=(\d) orders=200 concurrency=4 cpu_us_per_order=([\d.]+) .* not_ok=(\d+)", done.stdout
    )
    assert [number for number, _, _ in rounds] == ["1", "2"], done.stdout
    assert all(float(cpu) > 0 and not_ok == "0" for _, cpu, not_ok in rounds), done.stdout
