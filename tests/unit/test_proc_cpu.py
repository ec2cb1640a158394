"""CPU seconds from /proc, the figure the cluster benchmark prints per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from investo.bench.proc_cpu import CpuMeter, cpu_seconds

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")


def busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_counts_this_process_and_not_a_sleeping_one() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)  # let it start up
        before, other = cpu_seconds(os.getpid()), cpu_seconds(sleeper.pid)
        busy(0.3)
        after, other_after = cpu_seconds(os.getpid()), cpu_seconds(sleeper.pid)
        assert before is not None and after is not None and other is not None
        assert 0.2 <= after - before <= 1.0
        assert other_after == other
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_process_that_does_not_exist_has_no_reading() -> None:
    assert cpu_seconds(2**22 + 12345) is None


def test_the_meter_reports_milliseconds_per_thousand_units_per_group() -> None:
    meter = CpuMeter()
    meter.add("me", [os.getpid()])
    meter.add("nobody", [2**22 + 12345])
    meter.start()
    busy(0.2)
    meter.stop()
    figures = meter.per_thousand(2_000)
    assert 80 <= figures["me"] <= 500  # 0.2 s over 2,000 units: 100 ms per 1,000
    assert figures["nobody"] == 0
    assert figures["total"] == figures["me"]
    assert meter.per_thousand(0) == {}


def test_cpu_outside_the_measured_processes_shows_as_others() -> None:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        meter = CpuMeter()
        meter.add("me", [os.getpid()])
        meter.start()
        time.sleep(0.5)  # the spinner burns a core meanwhile; this process sleeps
        meter.stop()
    finally:
        spinner.kill()
        spinner.wait()
    assert meter.others is not None and meter.others >= 0.3
    figures = meter.per_thousand(1_000)
    assert figures["others"] >= 300 > figures["me"]
