"""Timing and memory figures: medians of repeated calls, peak RSS of a process."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimingPlan:
    threads: int
    warmup: int
    iterations: int
    load_repeats: int


def summarize(samples_s: list[float]) -> dict[str, float]:
    """P50/P95/max of a list of seconds, in milliseconds."""
    ordered = sorted(samples_s)
    p95_index = min(len(ordered) - 1, max(0, int(np.ceil(0.95 * len(ordered))) - 1))
    return {
        "p50_ms": statistics.median(ordered) * 1e3,
        "p95_ms": ordered[p95_index] * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }


def time_calls(call: Callable[[], Any], warmup: int, iterations: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return summarize(samples)


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the process image: ru_maxrss would carry the
    parent's peak over fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20
