"""Decode benchmark of a KV-cache talker: one step per cache length, prefill, first code, utterance.

Each graph is timed in a child that imports numpy and onnxruntime only
(:func:`bench_decode_onnx`); PyTorch eager is timed once per component in a child of its own
(:func:`bench_decode_torch`), so no process holds two copies of the weights. A graph with a
baseline (the fused talker against the plain graph of the same variant) is timed in the same
child as the baseline, in short alternating blocks on one shared thread pool, so their ratio
is measured side by side (the median of the blocks' ratios); so is the reference (one plain
graph every fused talker is also set against) when it is another.
A decode step is set against its memory-bandwidth floor: (bytes of weights + KV cache read) /
read bandwidth measured around the timing; a prompt against its compute floor: its weight
multiply-adds / the rate of onnxruntime's int8 GEMM measured around the timing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.artifacts import model_path
from omniforge.benchmark.bandwidth import (
    BandwidthProbe,
    decode_weight_bytes,
    kv_bytes,
    torch_decode_bytes,
)
from omniforge.benchmark.compute import Int8GemmProbe, weight_multiply_adds
from omniforge.benchmark.timing import peak_rss_mb, time_calls, time_side_by_side
from omniforge.talker_io import (
    CODES_PER_SECOND,
    TalkerDims,
    generation_inputs,
    prompt_codec_ids,
    step_inputs,
)

log = logging.getLogger(__name__)

# Whole generations and first codes timed (median), and the seeds of their inputs.
REPEATS = 5
# The graphs a variant can be timed beside: <name>_p50_ms and speedup_vs_<name> in its rows.
BASELINE, REFERENCE = "baseline", "reference"
BESIDE = (BASELINE, REFERENCE)
PREFILL_SEED, GENERATION_SEED = 7, 3


def decode_pasts(lengths: list[int], reference: int) -> list[int]:
    return sorted({*lengths, reference})


def bench_decode_onnx(
    params_dict: dict[str, Any],
    component: str,
    model_dir: str,
    variant: str,
    beside_dirs: dict[str, str] | None = None,
    prefill_dir: str | None = None,
) -> dict[str, Any]:
    """Child entry point (numpy and onnxruntime only): one graph, or a prefill/decode pair.

    ``beside_dirs``: the graphs timed beside this one, by role (:data:`BESIDE`): the plain
    graph of the same variant (what fusion gains) and a fixed reference graph.
    """
    from omniforge.params import parse_params
    from omniforge.runtime.session import share_thread_pool
    from omniforge.runtime.talker import open_unverified_talker

    params = parse_params(params_dict)
    timing, settings = params.benchmark, params.talker_kv
    # The graphs timed side by side (and a pair's two) run on one pool: with a pool each,
    # the idle one's spinning threads slow the other down.
    share_thread_pool(timing.threads)
    runtime = open_unverified_talker(model_dir, timing.threads, prefill=prefill_dir)
    beside = {
        role: open_unverified_talker(directory, timing.threads)
        for role, directory in (beside_dirs or {}).items()
    }
    dims = runtime.layout.dims
    batch = timing.batch
    probe = BandwidthProbe(timing.threads, settings.bandwidth_mib << 20)
    weights = decode_weight_bytes(model_path(Path(model_dir)), rows=batch)["weight_bytes"]
    report: dict[str, Any] = {"decode": {}}
    for past in decode_pasts(timing.lengths[component], settings.bench_reference_past):
        log.info("%s: decode step at past %d", variant, past)
        inputs = step_inputs(dims, batch, 1, past, seed=past)
        calls = {"graph": runtime.timed_step(inputs)}
        calls |= {name: talker.timed_step(inputs) for name, talker in beside.items()}
        before = probe.measure()["read_bytes_per_s"]
        timed = time_side_by_side(calls, timing.warmup, timing.iterations)
        # The fastest read around the timing: the floor is a lower bound on the step.
        read_bw = max(before, probe.measure()["read_bytes_per_s"])
        plain = time_calls(
            lambda i=inputs: runtime.session.run(None, runtime.feeds(i)),
            timing.warmup,
            timing.iterations,
        )
        cache_bytes = kv_bytes(dims, batch, past)
        floor_ms = (weights + cache_bytes) / read_bw * 1e3
        row = {
            "p50_ms": timed.summary["graph"]["p50_ms"],
            "p95_ms": timed.summary["graph"]["p95_ms"],
            "session_run_p50_ms": plain["p50_ms"],
            "floor_ms": floor_ms,
            "floor_multiple": timed.summary["graph"]["p50_ms"] / floor_ms,
            "kv_bytes": cache_bytes,
            "memory_read_gb_s": read_bw / 1e9,
        }
        for name in beside:
            row[f"{name}_p50_ms"] = timed.summary[name]["p50_ms"]
            row[f"speedup_vs_{name}"] = timed.speedup(name, over="graph")
        report["decode"][f"past_{past}"] = row
    prompt_graph = model_path(Path(prefill_dir or model_dir))
    report |= prefill(runtime, beside, dims, params, weight_multiply_adds(prompt_graph))
    report |= first_code_and_utterance(runtime, dims, params)
    report |= headline(report, weights, probe, params)
    report["decode_peak_rss_mb"] = peak_rss_mb()
    return report


def prefill(
    runtime: Any,
    beside: dict[str, Any],
    dims: TalkerDims,
    params: Any,
    multiply_adds_per_row: int,
) -> dict[str, Any]:
    """The prompt in one call (positions 0 .. length-1); beside the graphs in ``beside``.

    Set against its compute floor: the prompt's weight multiply-adds at the rate of
    onnxruntime's int8 GEMM, measured around the timing at the prompt's row count.
    """
    timing, length = params.benchmark, params.talker_kv.bench_prefill_length
    batch = timing.batch
    inputs = step_inputs(
        dims, batch, length, 0, seed=PREFILL_SEED, codec_ids=prompt_codec_ids(batch, length)
    )
    calls = {"graph": runtime.timed_step(inputs)}
    calls |= {name: talker.timed_step(inputs) for name, talker in beside.items()}
    gemm = Int8GemmProbe(timing.threads, batch * length)
    log.info("prefill of %d positions", length)
    gemm.measure()
    timed = time_side_by_side(calls, 1, max(4, timing.iterations // 4))
    gemm.measure()
    # The fastest rate around the timing: the floor is a lower bound on the prompt.
    rate = gemm.best
    multiply_adds = multiply_adds_per_row * batch * length
    floor_ms = multiply_adds / rate * 1e3
    report = {
        "prefill_length": length,
        "prefill_p50_ms": timed.summary["graph"]["p50_ms"],
        "prefill_p95_ms": timed.summary["graph"]["p95_ms"],
        "prefill_multiply_adds": multiply_adds,
        "int8_gemm_gmac_per_s": rate / 1e9,
        "prefill_floor_ms": floor_ms,
        "prefill_floor_multiple": timed.summary["graph"]["p50_ms"] / floor_ms,
    }
    for name in beside:
        report[f"{name}_prefill_p50_ms"] = timed.summary[name]["p50_ms"]
        report[f"prefill_speedup_vs_{name}"] = timed.speedup(name, over="graph")
    return report


def first_code_and_utterance(runtime: Any, dims: TalkerDims, params: Any) -> dict[str, Any]:
    """Time to the first code of a prompt, and a whole utterance, as the pipeline runs them."""
    from omniforge.runtime.generation import GenerationConfig

    settings, batch = params.talker_kv, params.benchmark.batch
    steps = settings.bench_generation_steps
    prompt, reply = generation_inputs(
        dims, batch, settings.bench_prefill_length, settings.reply_length, GENERATION_SEED
    )
    one = GenerationConfig(max_new_tokens=1)
    utterance = GenerationConfig(max_new_tokens=steps, min_new_tokens=steps)
    runtime.generate(prompt, reply, GenerationConfig(max_new_tokens=2))  # warm-up
    first, whole = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        runtime.generate(prompt, reply, one)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        runtime.generate(prompt, reply, utterance)
        whole.append(time.perf_counter() - started)
    seconds = float(np.median(whole))
    return {
        "first_code_prompt_length": settings.bench_prefill_length,
        "time_to_first_code_ms": float(np.median(first)) * 1e3,
        "utterance_codes": steps,
        "utterance_s": seconds,
        "utterance_codes_per_s": batch * steps / seconds,
        # Seconds of compute per second of audio, prompt included: below 1 is real time.
        "utterance_real_time_factor": seconds / steps * CODES_PER_SECOND,
    }


def headline(
    report: dict[str, Any], weights: int, probe: BandwidthProbe, params: Any
) -> dict[str, Any]:
    """The decode figures at the reference cache length, and the run's best bandwidths."""
    timing, past = params.benchmark, params.talker_kv.bench_reference_past
    reference = report["decode"][f"past_{past}"]
    seconds_per_code = reference["p50_ms"] / 1e3
    figures = {
        "decode_threads": timing.threads,
        "decode_batch": timing.batch,
        "decode_reference_past": past,
        "decode_p50_ms": reference["p50_ms"],
        "decode_p95_ms": reference["p95_ms"],
        "decode_session_run_p50_ms": reference["session_run_p50_ms"],
        "decode_tokens_per_s": timing.batch / seconds_per_code,
        # Seconds of compute per second of audio: below 1 is faster than real time.
        "decode_real_time_factor": seconds_per_code * CODES_PER_SECOND,
        "decode_floor_ms": reference["floor_ms"],
        "decode_floor_multiple": reference["floor_multiple"],
        "weight_bytes_per_step": weights,
        # The row's own bandwidth gives its floor; these are the best over the whole run.
        "memory_read_gb_s": reference["memory_read_gb_s"],
        "memory_best_read_gb_s": probe.best["read_bytes_per_s"] / 1e9,
        "memory_best_sum_read_gb_s": probe.best["sum_read_bytes_per_s"] / 1e9,
        "memory_best_gemv_read_gb_s": probe.best["gemv_read_bytes_per_s"] / 1e9,
        "memory_best_copy_gb_s": probe.best["copy_bytes_per_s"] / 1e9,
    }
    for name in BESIDE:
        if f"speedup_vs_{name}" in reference:
            figures[f"decode_speedup_vs_{name}"] = reference[f"speedup_vs_{name}"]
            figures[f"{name}_decode_p50_ms"] = reference[f"{name}_p50_ms"]
    return figures


def bench_decode_torch(params_dict: dict[str, Any], component: str) -> dict[str, Any]:
    """Child entry point: PyTorch eager with its DynamicCache, per cache length and prefill.

    At ``threads`` threads and at one (torch's OpenMP pool can be slower with more on small
    steps: 4x on the 2-core machines we measured); speedups use the faster of the two, so
    they never flatter the ONNX graph.
    """
    import torch

    from omniforge.components.base import talker_dims
    from omniforge.params import parse_params
    from omniforge.sources import open_source

    params = parse_params(params_dict)
    timing, settings = params.benchmark, params.talker_kv
    source = open_source(params.model)
    dims = talker_dims(source.configs)
    torch.set_num_threads(timing.threads)
    talker = source.talker()
    report: dict[str, Any] = {
        "decode": {},
        "torch_weight_bytes_per_step": torch_decode_bytes(talker, timing.batch),
    }
    for past in decode_pasts(timing.lengths[component], settings.bench_reference_past):
        log.info("torch: decode step at past %d", past)
        inputs = step_inputs(dims, timing.batch, 1, past, seed=past)
        report["decode"][f"past_{past}"] = time_torch(
            talker, inputs, timing.threads, timing.warmup, timing.iterations
        )
    length = settings.bench_prefill_length
    inputs = step_inputs(
        dims,
        timing.batch,
        length,
        0,
        seed=PREFILL_SEED,
        codec_ids=prompt_codec_ids(timing.batch, length),
    )
    report["prefill"] = time_torch(
        talker, inputs, timing.threads, 1, max(4, timing.iterations // 4)
    )
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def torch_timer(talker: Any, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
    """PyTorch eager on the same inputs with a DynamicCache, cropped back after each call."""
    import torch
    from transformers import DynamicCache

    from omniforge.components.talker_kv import talker_step
    from omniforge.talker_io import past_names

    names = past_names(talker.config.num_hidden_layers)
    pairs = [
        (torch.from_numpy(inputs[names[2 * i]]), torch.from_numpy(inputs[names[2 * i + 1]]))
        for i in range(len(names) // 2)
    ]
    past = pairs[0][0].shape[2]
    cache = DynamicCache(ddp_cache_data=pairs, config=talker.config) if past else None
    embeds = torch.from_numpy(inputs["inputs_embeds"])
    codec_ids = torch.from_numpy(inputs["codec_ids"])
    positions = torch.from_numpy(inputs["position_ids"])
    seq = codec_ids.shape[1]

    def call() -> None:
        step_cache = cache if cache is not None else DynamicCache(config=talker.config)
        with torch.inference_mode():
            talker_step(talker, embeds, codec_ids, positions, step_cache)
        if cache is not None:
            # Back to `past` positions: every timed call sees the same cache length.
            cache.crop(-seq)

    return call


def time_torch(
    talker: Any, inputs: dict[str, np.ndarray], threads: int, warmup: int, iterations: int
) -> dict[str, float]:
    """PyTorch eager at ``threads`` threads and at one: both, and the faster."""
    import torch

    timings = {}
    for count in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(count)
        timings[count] = time_calls(torch_timer(talker, inputs), warmup, iterations)
    torch.set_num_threads(threads)
    best = min(timings, key=lambda count: timings[count]["p50_ms"])
    return {
        "torch_p50_ms": timings[threads]["p50_ms"],
        "torch_p95_ms": timings[threads]["p95_ms"],
        "torch_1thread_p50_ms": timings[1]["p50_ms"],
        "torch_best_p50_ms": timings[best]["p50_ms"],
        "torch_best_threads": best,
    }


def with_torch(report: dict[str, Any], eager: dict[str, Any]) -> dict[str, Any]:
    """A graph's decode report with PyTorch eager's figures (timed in the same stage run)."""
    reference = f"past_{report['decode_reference_past']}"
    weights = eager["torch_weight_bytes_per_step"]
    for key, row in report["decode"].items():
        torch_row = eager["decode"][key]
        torch_floor_ms = (weights + row["kv_bytes"]) / (row["memory_read_gb_s"] * 1e9) * 1e3
        row |= torch_row | {
            "speedup_vs_torch": torch_row["torch_best_p50_ms"] / row["p50_ms"],
            "torch_floor_multiple": torch_row["torch_best_p50_ms"] / torch_floor_ms,
        }
    at_reference = report["decode"][reference]
    prefill = eager["prefill"]
    return report | {
        "torch_decode_p50_ms": at_reference["torch_p50_ms"],
        "torch_decode_1thread_p50_ms": at_reference["torch_1thread_p50_ms"],
        "torch_decode_best_p50_ms": at_reference["torch_best_p50_ms"],
        "torch_decode_best_threads": at_reference["torch_best_threads"],
        "decode_speedup_vs_torch": at_reference["speedup_vs_torch"],
        "torch_decode_floor_multiple": at_reference["torch_floor_multiple"],
        "torch_weight_bytes_per_step": weights,
        "torch_prefill_p50_ms": prefill["torch_p50_ms"],
        "torch_prefill_best_p50_ms": prefill["torch_best_p50_ms"],
        "prefill_speedup_vs_torch": prefill["torch_best_p50_ms"] / report["prefill_p50_ms"],
    }
