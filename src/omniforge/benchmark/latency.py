"""Per-shape latency of one contender, run inside a child process of its own.

The onnxruntime child imports numpy and onnxruntime only, so its peak RSS is the variant's;
the PyTorch child builds the component's module from the model source.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.benchmark.timing import TimingPlan, current_rss_mb, peak_rss_mb, time_calls
from omniforge.talker_io import CODES_PER_SECOND

if TYPE_CHECKING:
    from omniforge.components.base import BenchmarkCase

log = logging.getLogger(__name__)


def bench_onnx(
    model_dir: str, cases: list[tuple[str, dict[str, np.ndarray]]], plan: TimingPlan
) -> dict[str, Any]:
    """Session load time (median of ``load_repeats``), latency per case, peak RSS."""
    from omniforge.runtime.session import open_unverified_session

    baseline = current_rss_mb()
    load_times = []
    session = None
    for _ in range(plan.load_repeats):
        del session
        started = time.perf_counter()
        session = open_unverified_session(Path(model_dir), threads=plan.threads)
        load_times.append(time.perf_counter() - started)
    names = [o.name for o in session.get_outputs()]
    latency = {}
    for label, inputs in cases:
        log.info("  %s: %s", Path(model_dir).name, label)
        latency[label] = time_calls(
            lambda inputs=inputs: session.run(names, inputs), plan.warmup, plan.iterations
        )
    return {
        "load_s": statistics.median(load_times),
        "latency": latency,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_load_mb": baseline,
    }


def bench_torch(
    component_name: str, model_params: dict[str, Any], cases: list[BenchmarkCase], plan: TimingPlan
) -> dict[str, Any]:
    """The component's PyTorch module, eager, on the same cases."""
    import torch

    from omniforge.components import get_component
    from omniforge.params import ModelParams
    from omniforge.sources import open_source

    torch.set_num_threads(plan.threads)
    baseline = current_rss_mb()
    started = time.perf_counter()
    component = get_component(component_name)
    module = component.build_module(open_source(ModelParams.model_validate(model_params)))
    load_s = time.perf_counter() - started
    latency = {}
    for case in cases:
        log.info("  torch: %s", case.label)
        tensors = {name: torch.from_numpy(array) for name, array in case.inputs.items()}

        def call(tensors: dict[str, Any] = tensors) -> None:
            with torch.inference_mode():
                module(**tensors)

        latency[case.label] = time_calls(call, plan.warmup, plan.iterations)
    return {
        "load_s": load_s,
        "latency": latency,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_load_mb": baseline,
    }


def codec_rates(case: BenchmarkCase, p50_ms: float, batch: int) -> dict[str, float]:
    """Positions per second of one full-sequence pass, and its real-time factor.

    One pass scores ``case.length`` codec positions (prefill, or teacher-forced scoring):
    this is not generation, which takes one decode step per code (the KV talker's
    ``decode_real_time_factor``).
    """
    seconds = p50_ms / 1e3
    return {
        "positions_per_s": batch * case.length / seconds,
        "full_pass_real_time_factor": seconds / (case.length / CODES_PER_SECOND),
    }
