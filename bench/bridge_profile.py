"""Profilers for ``bench/bridge.py --profile``: py-spy (the Python side: which functions the
threads running Python are in) and perf (every thread, native code included: which library
and symbol, by thread name), each read back as text.

py-spy runs ``--nonblocking`` by default: ``--native`` must stop the process for every sample,
and with the rtc SDK's ~40 threads that stalls the bridge so much that its streams starve
(tried: the main thread got no CPU at all). perf samples from the kernel without stopping
anything. Python frames show in perf as the interpreter's own functions."""

from __future__ import annotations

import bisect
import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

RATE = 100  # py-spy samples per second
PERF_RATE = 499  # perf samples per second of CPU per thread (cpu-clock)
# Inclusive time of these (any frame of the stack) says how much the rtc SDK's event fan-out
# costs: every FFI event goes to every subscriber (FfiQueue.put runs each filter and a
# call_soon_threadsafe per match on the SDK's callback thread; each woken queue's consumer
# runs on the event loop).
WATCH = {  # label -> what a frame contains (py-spy prints the last two path parts)
    "ffi_event_callback (SDK callback threads)": "ffi_event_callback (rtc/_ffi_client.py",
    "FfiQueue.put (fan-out to every subscriber)": "FfiQueue.put (rtc/_ffi_client.py",
    "  of which the subscribers' filters": "<lambda> (rtc/",
    "  of which call_soon_threadsafe": "call_soon_threadsafe (asyncio/base_events.py",
    "Room._listen_task (each room sees every event)": "Room._listen_task (rtc/room.py",
    "Queue.wait_for (capture_frame, connect, ...)": "Queue.wait_for (rtc/_utils.py",
    "AudioSource.capture_frame": "AudioSource.capture_frame (rtc/audio_source.py",
    "AudioStream (agent audio in)": "(rtc/audio_stream.py",
    "StreamSession._caller_audio (inbound)": "StreamSession._caller_audio (bridge/session.py",
    "StreamSession._agent_audio (outbound in)": "StreamSession._agent_audio (bridge/session.py",
    "Pacer.run (outbound out)": "Pacer.run (bridge/pacer.py",
    "StreamSession._next (socket read + parse)": "StreamSession._next (bridge/session.py",
    "codecs (G.711, soxr)": "(bridge/codecs.py",
    "garbage collection": "gc_collect_main (",
}  # fmt: skip


def spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def record(pid: int, seconds: float, path: Path, fmt: str, extra: list[str]) -> subprocess.Popen:
    """``py-spy record`` of ``pid`` into ``path`` (``raw`` also splits threads; the process's
    memory map goes beside it, to name libc's unnamed frames of a ``--native`` profile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.with_suffix(".maps").write_text(Path(f"/proc/{pid}/maps").read_text())
    threads = ["--threads"] if fmt == "raw" else []
    mode = [] if "--native" in extra else ["--nonblocking"]
    return subprocess.Popen(
        [spy(), "record", *mode, *threads, "-r", str(RATE), "-d", str(int(seconds)),
         "-f", fmt, "-o", str(path), "--pid", str(pid), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def perf_record(pid: int, seconds: float, path: Path) -> subprocess.Popen | None:
    """``perf record`` of every thread of ``pid`` (no call graphs: the leaf is what we read),
    or None without perf."""
    if shutil.which("perf") is None:
        return None
    return subprocess.Popen(
        ["perf", "record", "-F", str(PERF_RATE), "-p", str(pid), "-o", str(path), "--",
         "sleep", str(int(seconds))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def perf_summary(path: Path, seconds: float, top: int = 25) -> dict[str, object]:
    """% of one core by thread name, and by (thread name, library, symbol)."""

    def report(sort: str, limit: str = "0.2") -> list[tuple[int, list[str]]]:
        out = subprocess.run(
            ["perf", "report", "-i", str(path), "--stdio", "--no-children", "-n", "-g", "none",
             "--sort", sort, "--percent-limit", limit],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        rows = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith("%") and parts[1].isdigit():
                rows.append((int(parts[1]), parts[2:]))
        return rows

    scale = 100 / (PERF_RATE * seconds)
    by_thread = [[" ".join(r), round(n * scale, 1)] for n, r in report("comm")]
    by_library = [[" ".join(r), round(n * scale, 1)] for n, r in report("comm,dso")[:top]]
    symbols: Counter[str] = Counter()
    for n, r in report("dso,sym", "0"):  # a stripped library's addresses count as one
        dso, sym = r[0], " ".join(r[1:]).replace("[.] ", "").replace("[k] ", "")
        symbols[f"{dso} {'(unnamed)' if sym.startswith('0x') else sym}"] += n
    return {"pct_by_thread_name": by_thread, "pct_by_thread_and_library": by_library,
            "top_pct_by_library_symbol": [[k, round(n * scale, 1)]
                                          for k, n in symbols.most_common(top)]}  # fmt: skip


class Symbols:
    """Unnamed native frames (``0x7f.. (libc.so.6)``: py-spy finds no symbol in a stripped
    library) named after the nearest exported symbol below them: approximate, but enough to
    tell a futex wait (the GIL) from a write or malloc."""

    def __init__(self, maps: Path) -> None:
        self.bases: dict[str, tuple[int, str]] = {}
        self.tables: dict[str, tuple[list[int], list[str]]] = {}
        if not maps.exists():
            return
        for line in maps.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/") and parts[2] == "00000000":
                name = parts[5].rsplit("/", 1)[-1]
                self.bases.setdefault(name, (int(parts[0].split("-")[0], 16), parts[5]))

    def name(self, address: int, library: str) -> str | None:
        if library not in self.bases:
            return None
        base, path = self.bases[library]
        if library not in self.tables:
            out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True,
                                 text=True).stdout  # fmt: skip
            rows = sorted((int(a, 16), n.split("@")[0]) for a, t, n in
                          (r.split() for r in out.splitlines() if len(r.split()) == 3)
                          if t in "TtWi")  # fmt: skip
            self.tables[library] = ([a for a, _ in rows], [n for _, n in rows])
        addresses, names = self.tables[library]
        i = bisect.bisect_right(addresses, address - base) - 1
        return f"~{names[i]}+{address - base - addresses[i]:#x}" if i >= 0 else None


UNNAMED = re.compile(r"^0x([0-9a-f]+) \((.+)\)$")


def _frame(frame: str) -> tuple[str, str]:
    """("name (dir/file)", "dir/file") of one py-spy frame, the line number dropped."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    short = "/".join(where.split("/")[-3:]) if "/" in where else where
    return f"{name} ({short})", where


def summarize(path: Path, seconds: float, top: int = 15) -> dict[str, object]:
    """Busy share per Python thread (samples / (rate * seconds): ~% of one core while the
    thread ran Python or native code below it), the top functions by own samples (the leaf
    frame: Python or native), and the inclusive share of the ``WATCH`` functions."""
    per_thread: Counter[str] = Counter()
    own: Counter[str] = Counter()
    own_by_thread: dict[str, Counter[str]] = defaultdict(Counter)
    watched: Counter[str] = Counter()
    symbols = Symbols(path.with_suffix(".maps"))
    named: dict[str, str] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith("thread ("):
            thread = frames[0].split(": ", 1)[-1]
            frames = frames[1:]
        if frames and not frames[0].startswith("0x") and "(" not in frames[0]:
            frames = frames[1:]  # the thread's name, py-spy's second element
        kind = "MainThread (event loop)" if thread == "MainThread" else f"thread {thread}"
        per_thread[kind] += n
        total += n
        leaf, _ = _frame(frames[-1]) if frames else ("?", "")
        if frames and (m := UNNAMED.match(frames[-1])):
            if frames[-1] not in named:
                named[frames[-1]] = f"{symbols.name(int(m[1], 16), m[2]) or m[0]} ({m[2]})"
            leaf = named[frames[-1]]
        own[leaf] += n
        own_by_thread[kind][leaf] += n
        for label, needle in WATCH.items():
            if any(needle in f for f in frames):
                watched[label] += n
    scale = 100 / (RATE * seconds)  # samples -> % of one core

    def pct(counter: Counter[str], limit: int | None = None) -> list[list[object]]:
        return [[name, round(n * scale, 1)] for name, n in counter.most_common(limit)]

    return {
        "samples": total, "seconds": seconds, "busy_pct_by_thread": dict(pct(per_thread)),
        "top_self_pct": pct(own, top),
        "top_self_pct_by_thread": {k: pct(c, 8) for k, c in own_by_thread.items()},
        "inclusive_pct": {k: round(watched[k] * scale, 1) for k in WATCH if watched[k]},
    }  # fmt: skip


def profile_text(profile: dict[str, object], top: int = 12) -> str:
    """A summary's lines as text: % of one core by thread, by function (own samples), and the
    watched functions (inclusive)."""
    if "error" in profile:
        return f"  py-spy failed: {profile['error']}"
    busy = profile["busy_pct_by_thread"]
    lines = ["  py-spy, busy by Python thread: " + ", ".join(f"{k} {v}%" for k, v in busy.items())]  # type: ignore[attr-defined]
    lines.append("  own samples (leaf frame), % of one core:")
    lines += [f"    {pct:5.1f}  {name}" for name, pct in profile["top_self_pct"][:top]]  # type: ignore[index]
    lines.append("  inclusive, % of one core:")
    lines += [f"    {pct:5.1f}  {name}" for name, pct in profile["inclusive_pct"].items()]  # type: ignore[attr-defined]
    if (perf := profile.get("perf")) and perf.get("error") is not None:  # type: ignore[attr-defined]
        lines.append(f"  perf recorded nothing usable: {perf['error']}")  # type: ignore[index]
    elif perf:
        lines.append("  perf, all threads, % of one core by thread name: " + ", ".join(
            f"{name} {pct}" for name, pct in perf["pct_by_thread_name"]))  # type: ignore[index]  # fmt: skip
        lines.append("  perf, by thread name and library:")
        lines += [f"    {pct:5.1f}  {name}"
                  for name, pct in perf["pct_by_thread_and_library"]]  # type: ignore[index]  # fmt: skip
        lines.append("  perf, by library and symbol (own samples):")
        lines += [f"    {pct:5.1f}  {name}"
                  for name, pct in perf["top_pct_by_library_symbol"]]  # type: ignore[index]  # fmt: skip
    if files := profile.get("files"):
        lines.append(f"  files: {', '.join(files)}")  # type: ignore[arg-type]
    return "\n".join(lines)
