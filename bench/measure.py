"""Measuring what a process costs: CPU seconds and peak resident memory over a phase of work."""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Usage:
    """What one process used over one phase."""

    cpu_seconds: float
    peak_rss_bytes: int
    wall_seconds: float


class ProcessMeter:
    """CPU time and peak RSS of one process (and optionally only some of its threads) over a phase.

    Peak RSS is the kernel's high-water mark (VmHWM), reset at the start of the phase through
    ``/proc/<pid>/clear_refs`` where allowed; a 20 ms sampler backs it up where it is not.
    """

    def __init__(self, pid: int, *, thread_ids: Iterable[int] | None = None) -> None:
        self.process = psutil.Process(pid)
        self.thread_ids = set(thread_ids) if thread_ids is not None else None
        self._cpu0 = 0.0
        self._t0 = 0.0
        self._sampled_peak = 0
        self._hwm_reset = False
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _cpu(self) -> float:
        if self.thread_ids is None:
            times = self.process.cpu_times()
            return float(times.user + times.system)
        return float(
            sum(t.user_time + t.system_time for t in self.process.threads() if t.id in self.thread_ids)
        )

    def _rss(self) -> int:
        try:
            return int(self.process.memory_info().rss)
        except psutil.Error:
            return 0

    def _hwm(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> ProcessMeter:
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self._sampled_peak = self._rss()
        self._cpu0 = self._cpu()
        self._t0 = time.monotonic()
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._sampled_peak = max(self._sampled_peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        self.usage = self.read()

    def read(self) -> Usage:
        peak = self._sampled_peak
        hwm = self._hwm() if self._hwm_reset and self.thread_ids is None else None
        if hwm is not None:
            peak = max(peak, hwm)
        return Usage(
            cpu_seconds=self._cpu() - self._cpu0,
            peak_rss_bytes=peak,
            wall_seconds=time.monotonic() - self._t0,
        )


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    fraction = position - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs; NaN when either side is missing or theirs is zero."""
    if theirs == 0 or math.isnan(ours) or math.isnan(theirs):
        return math.nan
    return ours / theirs
