"""Decode benchmark of a KV-cache talker graph: one step per cache length, prefill, generation.

Every figure is timed beside PyTorch eager in the same process and against the
memory-bandwidth floor of a decode step: (bytes of weights + KV cache read) / read
bandwidth measured around each timing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.benchmark.bandwidth import (
    BandwidthProbe,
    decode_weight_bytes,
    kv_bytes,
    torch_decode_bytes,
)
from omniforge.benchmark.timing import time_calls
from omniforge.components.base import Inputs
from omniforge.components.talker_kv import generation_inputs, step_inputs, talker_step
from omniforge.runtime.generation import GenerationConfig
from omniforge.runtime.session import BoundRun
from omniforge.runtime.talker import OnnxTalker
from omniforge.talker_io import CODES_PER_SECOND, past_names, prompt_codec_ids

if TYPE_CHECKING:
    from omniforge.params import BenchmarkParams, TalkerKVParams
    from omniforge.sources.base import ModelConfigs

log = logging.getLogger(__name__)

# Whole generations timed (median) and the seed of their inputs.
GENERATION_REPEATS = 5
GENERATION_SEED = 3
PREFILL_SEED = 7


def bench_decode(params_dict: dict[str, Any], model_dir: str, variant: str) -> dict[str, Any]:
    """Child entry point: the decode benchmark of one variant's graph."""
    from omniforge.params import parse_params
    from omniforge.sources import open_source

    params = parse_params(params_dict)
    return DecodeBenchmark(open_source(params.model), params.benchmark, params.talker_kv).run(
        Path(model_dir), variant
    )


def torch_timer(talker: Any, inputs: Inputs) -> Any:
    """PyTorch eager on the same inputs with a DynamicCache, cropped back after each call."""
    import torch
    from transformers import DynamicCache

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
    talker: Any, inputs: Inputs, threads: int, warmup: int, iterations: int
) -> dict[str, float]:
    """PyTorch eager at ``threads`` threads and, when that is more than one, at one thread.

    On small matrix-vector steps torch's OpenMP pool can be slower with more threads (on the
    2-core machines we measured, 4x slower with 2 than with 1): speedups are taken against the
    faster of the two, so they never flatter the ONNX graph.
    """
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


@dataclass
class DecodeBenchmark:
    source: Any
    timing: BenchmarkParams
    settings: TalkerKVParams

    @property
    def configs(self) -> ModelConfigs:
        return self.source.configs

    def run(self, model_dir: Path, variant: str) -> dict[str, Any]:
        """Decode-step latency per cache length, prefill and generation, vs PyTorch and floor."""
        import torch

        threads, batch = self.timing.threads, self.timing.batch
        probe = BandwidthProbe(threads, self.settings.bandwidth_mib << 20)
        weights = decode_weight_bytes(Path(model_dir) / "model.onnx", rows=batch)
        runtime = OnnxTalker.load(model_dir, threads=threads)
        saved_threads = torch.get_num_threads()
        talker = None
        if self.timing.compare_torch:
            torch.set_num_threads(threads)
            talker = self.source.talker()
        torch_weight_bytes = torch_decode_bytes(talker, batch) if talker is not None else None
        try:
            per_past, table = self.decode_steps(
                runtime, variant, probe, weights["weight_bytes"], talker, torch_weight_bytes
            )
            report = self.prefill(runtime, variant, talker)
        finally:
            torch.set_num_threads(saved_threads)
        del talker
        report |= self.generation(runtime)
        reference = per_past[f"past_{self.settings.bench_reference_past}"]
        report |= self.headline(reference, per_past, table, weights, probe)
        if "torch_p50_ms" in reference:
            report |= {
                "torch_decode_p50_ms": reference["torch_p50_ms"],
                "torch_decode_1thread_p50_ms": reference["torch_1thread_p50_ms"],
                "torch_decode_best_p50_ms": reference["torch_best_p50_ms"],
                "torch_decode_best_threads": reference["torch_best_threads"],
                "decode_speedup_vs_torch": reference["speedup_vs_torch"],
                "torch_decode_floor_multiple": reference["torch_floor_multiple"],
                "torch_weight_bytes_per_step": torch_weight_bytes,
            }
        return report

    def decode_steps(
        self,
        runtime: OnnxTalker,
        variant: str,
        probe: BandwidthProbe,
        weight_bytes: int,
        talker: Any,
        torch_weight_bytes: int | None,
    ) -> tuple[dict[str, dict[str, float]], list[dict[str, Any]]]:
        """One decode step after a cache of each length: IO binding, plain run, floor, torch."""
        timing, batch = self.timing, self.timing.batch
        warmup, iterations = timing.warmup, timing.iterations
        pasts = sorted({*timing.lengths["talker_kv"], self.settings.bench_reference_past})
        per_past: dict[str, dict[str, float]] = {}
        table: list[dict[str, Any]] = []
        for past in pasts:
            inputs = step_inputs(self.configs, batch, 1, past, seed=past)
            log.info("%s: decode step at past %d", variant, past)
            before = probe.measure()["read_bytes_per_s"]
            bound = time_calls(BoundRun(runtime.session, inputs), warmup, iterations)
            # The fastest read around the timing: the floor is a lower bound on the step.
            read_bw = max(before, probe.measure()["read_bytes_per_s"])
            plain = time_calls(lambda i=inputs: runtime.session.run(None, i), warmup, iterations)
            cache_bytes = kv_bytes(self.configs, batch, past)
            floor_s = (weight_bytes + cache_bytes) / read_bw
            row: dict[str, float] = {
                "p50_ms": bound["p50_ms"],
                "p95_ms": bound["p95_ms"],
                "session_run_p50_ms": plain["p50_ms"],
                "floor_ms": floor_s * 1e3,
                "floor_multiple": bound["p50_ms"] / (floor_s * 1e3),
                "kv_bytes": cache_bytes,
                "memory_read_gb_s": read_bw / 1e9,
            }
            if talker is not None and torch_weight_bytes is not None:
                eager = time_torch(talker, inputs, timing.threads, warmup, iterations)
                torch_floor_ms = (torch_weight_bytes + cache_bytes) / read_bw * 1e3
                row |= eager | {
                    "speedup_vs_torch": eager["torch_best_p50_ms"] / bound["p50_ms"],
                    "torch_floor_multiple": eager["torch_best_p50_ms"] / torch_floor_ms,
                }
            per_past[f"past_{past}"] = row
            table.append({"past_sequence_length": past, "variant": variant} | row)
        return per_past, table

    def prefill(self, runtime: OnnxTalker, variant: str, talker: Any) -> dict[str, Any]:
        """The prompt in one call (positions 0 .. length-1), beside PyTorch eager."""
        batch, length = self.timing.batch, self.settings.bench_prefill_length
        inputs = step_inputs(
            self.configs,
            batch,
            length,
            0,
            seed=PREFILL_SEED,
            codec_ids=prompt_codec_ids(batch, length),
        )
        iterations = max(3, self.timing.iterations // 4)
        log.info("%s: prefill of %d positions", variant, length)
        prefill = time_calls(BoundRun(runtime.session, inputs), 1, iterations)
        report: dict[str, Any] = {
            "prefill_length": length,
            "prefill_p50_ms": prefill["p50_ms"],
            "prefill_p95_ms": prefill["p95_ms"],
        }
        if talker is not None:
            eager = time_torch(talker, inputs, self.timing.threads, 1, iterations)
            report["torch_prefill_p50_ms"] = eager["torch_p50_ms"]
            report["torch_prefill_best_p50_ms"] = eager["torch_best_p50_ms"]
            report["prefill_speedup_vs_torch"] = eager["torch_best_p50_ms"] / prefill["p50_ms"]
        return report

    def generation(self, runtime: OnnxTalker) -> dict[str, Any]:
        """The whole loop as the pipeline runs it: prefill, then one code per step."""
        from omniforge.sources.token2wav import from_config

        batch, steps = self.timing.batch, self.settings.bench_generation_steps
        prompt, reply = generation_inputs(
            self.configs,
            batch,
            self.settings.prompt_length,
            self.settings.reply_length,
            GENERATION_SEED,
        )
        config = GenerationConfig(
            max_new_tokens=steps,
            min_new_tokens=steps,
            code_limit=from_config(self.configs.token2wav).num_embeds,
        )
        runtime.generate(prompt, reply, GenerationConfig(max_new_tokens=2))  # warm-up
        durations = []
        for _ in range(GENERATION_REPEATS):
            started = time.perf_counter()
            runtime.generate(prompt, reply, config)
            durations.append(time.perf_counter() - started)
        seconds = float(np.median(durations))
        return {
            "generation_steps": steps,
            "generation_prompt_length": self.settings.prompt_length,
            "generation_s": seconds,
            "generation_codes_per_s": batch * steps / seconds,
            "generation_real_time_factor": seconds / steps * CODES_PER_SECOND,
        }

    def headline(
        self,
        reference: dict[str, float],
        per_past: dict[str, dict[str, float]],
        table: list[dict[str, Any]],
        weights: dict[str, int],
        probe: BandwidthProbe,
    ) -> dict[str, Any]:
        """The decode figures at the reference cache length, and the per-length detail."""
        batch = self.timing.batch
        seconds_per_code = reference["p50_ms"] / 1e3
        return {
            "decode_threads": self.timing.threads,
            "decode_batch": batch,
            "decode_reference_past": self.settings.bench_reference_past,
            "decode_p50_ms": reference["p50_ms"],
            "decode_p95_ms": reference["p95_ms"],
            "decode_session_run_p50_ms": reference["session_run_p50_ms"],
            "decode_tokens_per_s": batch / seconds_per_code,
            # Seconds of compute per second of audio: below 1 is faster than real time.
            "decode_real_time_factor": seconds_per_code * CODES_PER_SECOND,
            "decode_floor_ms": reference["floor_ms"],
            "decode_floor_multiple": reference["floor_multiple"],
            "decode": per_past,
            "decode_table": table,
            "weight_bytes_per_step": weights["weight_bytes"],
            # The row's own bandwidth gives its floor; these are the best over the whole run.
            "memory_read_gb_s": reference["memory_read_gb_s"],
            "memory_best_read_gb_s": probe.best["read_bytes_per_s"] / 1e9,
            "memory_best_sum_read_gb_s": probe.best["sum_read_bytes_per_s"] / 1e9,
            "memory_best_gemv_read_gb_s": probe.best["gemv_read_bytes_per_s"] / 1e9,
            "memory_best_copy_gb_s": probe.best["copy_bytes_per_s"] / 1e9,
        }
