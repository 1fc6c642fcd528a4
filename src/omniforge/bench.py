"""The latency harness: every variant and PyTorch eager on the same shapes, in one run.

Each contender runs in a fresh child process, so its peak RSS is its own and one
variant's allocations do not slow the next.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.errors import OmniforgeError
from omniforge.onnx_io import artifact_bytes

if TYPE_CHECKING:
    from omniforge.components.base import BenchmarkCase

log = logging.getLogger(__name__)

# Qwen2.5-Omni's codec runs at 50 codes per second of audio (two mel frames per code,
# 240 samples per frame at 24 kHz).
CODES_PER_SECOND = 50


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


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the process image: ru_maxrss would carry the
    parent's peak over fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _bench_onnx(
    model_dir: str, cases: list[tuple[str, dict[str, np.ndarray]]], plan: TimingPlan
) -> dict[str, Any]:
    """Runs in a child that imports onnxruntime and numpy only: its RSS is the variant's."""
    from omniforge.runtime import open_session

    baseline = _current_rss_mb()
    load_times = []
    session = None
    for _ in range(plan.load_repeats):
        del session
        started = time.perf_counter()
        session = open_session(Path(model_dir), threads=plan.threads)
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
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_load_mb": baseline,
    }


def _bench_torch(
    component_name: str, model_params: dict[str, Any], cases: list[BenchmarkCase], plan: TimingPlan
) -> dict[str, Any]:
    import torch

    from omniforge.components import get_component
    from omniforge.params import ModelParams
    from omniforge.sources import open_source

    torch.set_num_threads(plan.threads)
    baseline = _current_rss_mb()
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
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_load_mb": baseline,
    }


def _bench_extra(
    params_dict: dict[str, Any], component_name: str, model_dir: str, variant: str, threads: int
) -> dict[str, Any]:
    from omniforge.components import get_component
    from omniforge.params import parse_params
    from omniforge.sources import open_source

    params = parse_params(params_dict)
    component = get_component(component_name).configure_from(params)
    return component.extra_benchmark(open_source(params.model), Path(model_dir), variant, threads)


def _in_child(what: str, function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    from omniforge.logs import setup_logging

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=setup_logging) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool as err:
            raise OmniforgeError(
                f"benchmark of {what}: the child process died (killed for memory?)"
            ) from err


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


def benchmark_component(
    component_name: str,
    params_dict: dict[str, Any],
    variant_dirs: dict[str, Path],
    cases: list[BenchmarkCase],
    plan: TimingPlan,
    batch: int,
    compare_torch: bool,
    emits_codes: bool,
) -> dict[str, Any]:
    """Size, load time, latency and peak RSS of every variant, beside PyTorch eager.

    ``emits_codes``: each case produces ``length`` codes (a full-sequence talker), so
    tokens/s and the real-time factor are reported. A component's own extra benchmark
    (the KV talker's decode steps) runs after the per-shape timings, in a child of its own.
    """
    from omniforge.components import Component, get_component

    model_params = params_dict["model"]
    plain_cases = [(case.label, case.inputs) for case in cases]
    largest = max(cases, key=lambda case: case.length).label
    has_extra = type(get_component(component_name)).extra_benchmark is not Component.extra_benchmark
    report: dict[str, Any] = {
        "threads": plan.threads,
        "iterations": plan.iterations,
        "batch": batch,
    }
    torch_latency: dict[str, dict[str, float]] = {}
    if compare_torch:
        log.info("%s: timing PyTorch eager", component_name)
        report["torch"] = _in_child(
            f"{component_name} (torch)", _bench_torch, component_name, model_params, cases, plan
        )
        torch_latency = report["torch"]["latency"]
    for variant, directory in variant_dirs.items():
        what = f"{component_name}-{variant}"
        log.info("%s: timing %s", component_name, variant)
        figures = _in_child(what, _bench_onnx, str(directory), plain_cases, plan)
        figures["size"] = artifact_bytes(directory)
        # What the latency budget gate reads: JSON keys are sorted, so name it explicitly.
        figures["largest_case"] = largest
        figures["largest_case_p50_ms"] = figures["latency"][largest]["p50_ms"]
        if torch_latency:
            figures["speedup_vs_torch"] = {
                label: torch_latency[label]["p50_ms"] / timing["p50_ms"]
                for label, timing in figures["latency"].items()
            }
        if emits_codes:
            figures["rates"] = {
                case.label: codec_rates(case, figures["latency"][case.label]["p50_ms"], batch)
                for case in cases
            }
        if has_extra:
            threads = plan.threads
            figures.update(
                _in_child(
                    what,
                    _bench_extra,
                    params_dict,
                    component_name,
                    str(directory),
                    variant,
                    threads,
                )
            )
        report[variant] = figures
    return report


def pop_decode_table(
    report: dict[str, Any], x: str = "past_sequence_length"
) -> list[dict[str, Any]]:
    """Remove the per-variant decode rows an extra benchmark left in ``report``; return them
    as one row per cache length: per variant the P50 with IO binding and the memory-bandwidth
    floor, and PyTorch eager's best P50 (of 1 and ``threads`` threads)."""
    wide: dict[int, dict[str, Any]] = {}
    for figures in report.values():
        if not isinstance(figures, dict) or "decode_table" not in figures:
            continue
        for row in figures.pop("decode_table"):
            out = wide.setdefault(row[x], {x: row[x]})
            out[f"{row['variant']}_iobinding_p50_ms"] = round(row["p50_ms"], 4)
            out[f"{row['variant']}_floor_ms"] = round(row["floor_ms"], 4)
            if "torch_best_p50_ms" in row:
                out["torch_best_p50_ms"] = round(row["torch_best_p50_ms"], 4)
    return [wide[key] for key in sorted(wide)]


def latency_table(
    report: dict[str, Any], cases: list[BenchmarkCase], length_name: str
) -> list[dict[str, Any]]:
    """Rows of P50 latency per length, one column per contender: the latency plot's data."""
    contenders = [k for k, v in report.items() if isinstance(v, dict) and "latency" in v]
    return [
        {length_name: case.length}
        | {
            f"{name}_p50_ms": round(report[name]["latency"][case.label]["p50_ms"], 4)
            for name in contenders
        }
        for case in cases
    ]


def merge_rows(
    rows: list[dict[str, Any]], extra: list[dict[str, Any]], key: str
) -> list[dict[str, Any]]:
    """``rows`` with the columns of the ``extra`` row of the same ``key`` value added."""
    by_key = {row[key]: row for row in extra}
    return [row | by_key.get(row[key], {}) for row in rows]


def plot_rows(
    report: dict[str, Any], cases: list[BenchmarkCase], length_name: str
) -> list[dict[str, Any]]:
    """The latency plot's rows: P50 per contender per length, with the decode columns an
    extra benchmark left in ``report`` (removed from it: they are plot data, not metrics)."""
    decode_rows = pop_decode_table(report)
    return merge_rows(latency_table(report, cases, length_name), decode_rows, length_name)


def write_latency_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
