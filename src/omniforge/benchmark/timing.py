"""Timing and memory figures: medians of repeated calls, calls timed side by side, peak RSS
of a process."""

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


def seconds_of_calls(call: Callable[[], Any], warmup: int, iterations: int) -> list[float]:
    """Seconds of each of ``iterations`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def time_calls(call: Callable[[], Any], warmup: int, iterations: int) -> dict[str, float]:
    return summarize(seconds_of_calls(call, warmup, iterations))


# Timed calls in each block when calls alternate. A shared machine's speed drifts by up to 2x
# within a minute (measured here): short blocks put each call's block beside the other's in
# the same conditions, so their ratio is taken block by block.
SIDE_BY_SIDE_BLOCK = 2


@dataclass(frozen=True)
class SideBySide:
    """Calls timed in alternating blocks: each call's figures and its blocks' medians."""

    summary: dict[str, dict[str, float]]
    block_medians_s: dict[str, list[float]]

    def speedup(self, name: str, over: str) -> float:
        """How many times faster ``over`` ran than ``name``: the median of their ratios in
        blocks timed one after the other (paired), which drift between blocks cancels out of."""
        pairs = zip(self.block_medians_s[name], self.block_medians_s[over], strict=True)
        return statistics.median(slow / fast for slow, fast in pairs)


def time_side_by_side(
    calls: dict[str, Callable[[], Any]], warmup: int, iterations: int
) -> SideBySide:
    """``iterations`` timed calls of each, in alternating blocks after ``warmup`` calls each.

    With more than one call, every block starts with one untimed call: the first call after
    another session ran is slower (its caches and idle threads), and a pipeline runs one
    session at a time.
    """
    for call in calls.values():
        seconds_of_calls(call, warmup, 0)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    blocks: dict[str, list[float]] = {name: [] for name in calls}
    rounds = max(1, -(-iterations // SIDE_BY_SIDE_BLOCK))
    rewarm = 1 if len(calls) > 1 else 0
    for _ in range(rounds):
        for name, call in calls.items():
            block = seconds_of_calls(call, rewarm, SIDE_BY_SIDE_BLOCK)
            samples[name] += block
            blocks[name].append(statistics.median(block))
    return SideBySide({name: summarize(values) for name, values in samples.items()}, blocks)


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
