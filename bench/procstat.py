"""CPU accounting from /proc for the benchmarks: a process's ticks (all its threads), its
threads' ticks by name, the machine's busy and stolen ticks. Differences of two readings over a
window give "% of one core" (100 = one core fully busy)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stat(path: str) -> tuple[str, list[str]] | None:
    """(comm, the fields after it) of a /proc stat file, or None if the task is gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def process_ticks(pid: int) -> int:
    """utime + stime of the whole process (every thread, living or ended), 0 if it is gone."""
    found = stat(f"/proc/{pid}/stat")
    return int(found[1][11]) + int(found[1][12]) if found else 0


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """utime + stime per living thread: {tid: (name, ticks)}."""
    out: dict[int, tuple[str, int]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        if (found := stat(f"/proc/{pid}/task/{tid}/stat")) is not None:
            out[int(tid)] = (found[0], int(found[1][11]) + int(found[1][12]))
    return out


def by_thread_name(
    pid: int, before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], seconds: float
) -> dict[str, float]:
    """% of one core per kind of thread between two ``thread_ticks``: the main thread (the
    event loop, for an asyncio program) apart, the others by name; threads born in the window
    count whole, threads that ended in it are lost (rare: the SDKs keep theirs)."""
    used: Counter[str] = Counter()
    for tid, (name, n) in after.items():
        label = "main thread (event loop)" if tid == pid else name.strip()
        used[label] += n - before.get(tid, (name, 0))[1]
    return {k: percent(n, seconds) for k, n in used.most_common() if n > 0}


def machine_ticks() -> tuple[int, int]:
    """(busy, steal) ticks of the whole machine: user + nice + system + irq + softirq."""
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(cpu[:3]) + cpu[5] + cpu[6], cpu[7]


def all_process_ticks() -> dict[int, tuple[str, int]]:
    """{pid: (name, utime + stime)} of every process now living (those that end in a window
    are lost)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := stat(f"/proc/{entry}/stat")) is not None:
            out[int(entry)] = (found[0], int(found[1][11]) + int(found[1][12]))
    return out


def pids_named(comm: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := stat(f"/proc/{entry}/stat")) and found[0] == comm:
            out.append(int(entry))
    return out


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def percent(ticks: int, seconds: float) -> float:
    return round(100 * ticks / TICK / seconds, 1) if seconds > 0 else 0.0


class Window:
    """CPU over a measurement window: the named processes (``pids``; the first one's threads
    too), the machine, and everything else. ``since()`` gives % of one core for each."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.ticks = {name: process_ticks(pid) for name, pid in pids.items()}
        self.main = next(iter(pids))
        self.threads = thread_ticks(pids[self.main])
        self.machine = machine_ticks()
        self.everyone = all_process_ticks()
        self.started = time.monotonic()

    def since(self) -> tuple[dict[str, float], dict[str, float]]:
        seconds = time.monotonic() - self.started
        out = {name: percent(process_ticks(pid) - self.ticks[name], seconds)
               for name, pid in self.pids.items()}  # fmt: skip
        busy, steal = machine_ticks()
        out["machine"] = percent(busy - self.machine[0], seconds)
        out["steal"] = percent(steal - self.machine[1], seconds)
        used = {pid: (name, n - self.everyone.get(pid, (name, 0))[1])
                for pid, (name, n) in all_process_ticks().items()}  # fmt: skip
        out["all_processes"] = percent(sum(n for _, n in used.values()), seconds)
        ours = set(self.pids.values())
        others = sorted(((n, name) for pid, (name, n) in used.items() if pid not in ours),
                        reverse=True)  # fmt: skip
        out["others"] = percent(sum(n for n, _ in others), seconds)
        self.top_others: list[str] = [f"{name} {percent(n, seconds):g}%" for n, name in others[:3]]
        pid = self.pids[self.main]
        threads = by_thread_name(pid, self.threads, thread_ticks(pid), seconds)
        return out, threads
