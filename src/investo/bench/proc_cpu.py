"""CPU seconds of processes, read from ``/proc/<pid>/stat`` (Linux), for benchmark figures.

CPU time per unit of work holds still on a shared machine where throughput does not:
a process that needs 40 ms of CPU per 1,000 commands needs it whatever else runs.
:class:`CpuMeter` takes a reading of named processes at two instants and reports the
difference per 1,000 units of work.

The meter also reads the whole machine's busy CPU (``/proc/stat``) and reports what the
measured processes do not account for as ``others``: on a shared host, a burst of CPU in a
process outside the benchmark (another job, a system service) can be what slowed a rare
run, and ``others`` above zero tells such a run apart.

A reading costs one small file read per process. Where ``/proc`` is missing (not
Linux) or a process is gone, its reading is ``None`` and it is left out of the figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far (its threads included), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _TICKS_PER_S


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot (``/proc/stat``: all but idle and iowait).

    Interrupt time counts: a process is charged for the interrupts served while it runs
    (its system time), as ``/proc/stat`` counts them under irq and softirq instead.
    """
    try:
        with open("/proc/stat", "rb") as handle:
            first = handle.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_S


@dataclass
class CpuMeter:
    """CPU used by groups of processes between :meth:`start` and :meth:`stop`.

    A group is a label and its pids (a Postgres database's backends are one group);
    pids may be added to a group until :meth:`stop` (one that starts later counts from 0).
    ``others`` is the CPU the whole machine was busy beyond the groups' (see the module).
    """

    groups: dict[str, set[int]] = field(default_factory=dict)
    others: float | None = None
    _start: dict[int, float] = field(default_factory=dict)
    _machine_start: float | None = None
    _used: dict[str, float] = field(default_factory=dict)

    def add(self, label: str, pids: Iterable[int]) -> None:
        self.groups.setdefault(label, set()).update(pids)

    def start(self) -> None:
        self._start = {pid: s for pid in self._pids() if (s := cpu_seconds(pid)) is not None}
        self._machine_start = machine_busy_seconds()

    def stop(self) -> None:
        self._used = {}
        for label, pids in self.groups.items():
            used = 0.0
            for pid in pids:
                now = cpu_seconds(pid)
                if now is not None:
                    used += now - self._start.get(pid, 0.0)
            self._used[label] = used
        machine_now = machine_busy_seconds()
        if machine_now is not None and self._machine_start is not None:
            self.others = max(machine_now - self._machine_start - sum(self._used.values()), 0.0)

    @property
    def used(self) -> Mapping[str, float]:
        """CPU seconds per group between start and stop."""
        return self._used

    def per_thousand(self, units: int) -> dict[str, float]:
        """CPU milliseconds per 1,000 units of work, per group, ``total``, and ``others`` when known."""
        if units <= 0:
            return {}
        figures = {label: used * 1e6 / units for label, used in self._used.items()}
        figures["total"] = sum(self._used.values()) * 1e6 / units
        if self.others is not None:
            figures["others"] = self.others * 1e6 / units
        return figures

    def _pids(self) -> set[int]:
        return set().union(*self.groups.values()) if self.groups else set()
