"""The machine's load: waiting for a quiet machine, and what other processes kept busy."""

from __future__ import annotations

import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def wait_for_load_below(
    threshold: float, poll_s: float, max_wait_s: float, log: Callable[[str], None]
) -> float:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_wait_s``).

    Returns:
        The seconds waited.
    """
    start = time.time()
    while True:
        load = os.getloadavg()[0]
        waited = time.time() - start
        if load < threshold:
            log(f"load {load:.2f} < {threshold}: starting after {waited:.0f} s")
            return waited
        if waited >= max_wait_s:
            log(f"load {load:.2f} still >= {threshold} after {waited:.0f} s: starting anyway")
            return waited
        log(f"load {load:.2f}: waiting")
        time.sleep(poll_s)


def busy_jiffies() -> int:
    """Clock ticks every core has spent busy since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


def own_jiffies() -> int:
    """Clock ticks this process has spent on the cores, all threads together."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (all threads)


class LoadMonitor:
    """Samples the 1-minute load average and how many cores other processes keep busy."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        wall, busy, own = time.monotonic(), busy_jiffies(), own_jiffies()
        while not self._stop.wait(self.every):
            now, busy_now, own_now = time.monotonic(), busy_jiffies(), own_jiffies()
            elapsed = max(now - wall, 1e-9)
            self.samples.append(
                {
                    "load1": os.getloadavg()[0],
                    "busy_cores": (busy_now - busy) / self._tick / elapsed,
                    "own_cores": (own_now - own) / self._tick / elapsed,
                    "other_cores": max(0.0, (busy_now - busy) - (own_now - own))
                    / self._tick
                    / elapsed,
                    "attribution_benchmark_running": float(attribution_benchmark_running()),
                }
            )
            wall, busy, own = now, busy_now, own_now

    def start(self) -> LoadMonitor:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        if not self.samples:
            return {"samples": 0}

        def summary(key: str) -> dict[str, float]:
            values = [s[key] for s in self.samples]
            return {
                "min": round(min(values), 2),
                "mean": round(statistics.fmean(values), 2),
                "max": round(max(values), 2),
            }

        return {
            "samples": len(self.samples),
            "every_s": self.every,
            "load1": summary("load1"),
            "own_cores": summary("own_cores"),
            "other_cores": summary("other_cores"),
            "attribution_benchmark_seen": any(
                s["attribution_benchmark_running"] for s in self.samples
            ),
        }


def other_cores_over(seconds: float) -> float:
    """Cores kept busy by other processes over the next ``seconds``."""
    busy, own = busy_jiffies(), own_jiffies()
    time.sleep(seconds)
    delta = (busy_jiffies() - busy) - (own_jiffies() - own)
    return max(0, delta) / os.sysconf("SC_CLK_TCK") / seconds


def attribution_benchmark_running() -> bool:
    """Whether another process runs ``benchmarks/attribution.py``."""
    try:
        found = subprocess.run(
            ["pgrep", "-f", "benchmarks/attribution.py"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return False
    pids = [int(p) for p in found.stdout.split() if p.strip().isdigit()]
    return any(pid != os.getpid() for pid in pids)


def wait_for_quiet(minutes: float, max_load: float) -> dict[str, Any]:
    """Poll every minute until no attribution benchmark runs and the load is below ``max_load``."""
    started = time.monotonic()
    polls = 0
    while True:
        load = os.getloadavg()[0]
        busy = attribution_benchmark_running()
        others = other_cores_over(5.0)
        polls += 1
        quiet = not busy and load < max_load and others < 0.3
        if quiet or time.monotonic() - started >= minutes * 60:
            state = {
                "waited_s": time.monotonic() - started,
                "quiet": quiet,
                "load1": load,
                "other_cores": others,
                "polls": polls,
            }
            return state if quiet else {**state, "attribution_benchmark_running": busy}
        print(
            f"waiting for a quiet machine: load {load:.2f}, other processes {others:.2f} cores, "
            f"attribution benchmark running: {busy}",
            flush=True,
        )
        time.sleep(60)
