"""Generation parity and decode benchmarks of the talker KV-cache graph (``talker_kv``'s hooks).

Validation runs the same greedy generation in PyTorch (the transformers talker and its own
cache) and through a variant's graph, then scores the PyTorch codes through the graph with
teacher forcing, so logits are compared on the same context at every step even after the
free-running sequences part.

The benchmark times one decode step per cache length, the prefill and a whole generation,
beside PyTorch eager in the same process, against the memory-bandwidth floor of a decode step:
(bytes of weights + KV cache read) / read bandwidth measured around each timing.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.bench import CODES_PER_SECOND, time_calls
from omniforge.components.base import Inputs, seeded_normal
from omniforge.components.talker_kv import step_inputs
from omniforge.errors import ContractError
from omniforge.generation import (
    CONTROL_IDS,
    GenerationConfig,
    GenerationResult,
    OnnxTalker,
    past_names,
    prompt_codec_ids,
    strip_control_ids,
    torch_generate_codes,
)

if TYPE_CHECKING:
    from omniforge.components.talker_kv import TalkerKVOptions
    from omniforge.sources import ModelConfigs, ModelSource

log = logging.getLogger(__name__)

FLOAT32_BYTES = 4
# The last PyTorch reference generation, keyed by source, options and seed.
_REFERENCE: dict[str, GenerationResult] = {}


def generation_inputs(
    configs: ModelConfigs, batch: int, prompt_length: int, reply_length: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded thinker-side prompt [batch, T, E] and reply states [batch, R, E]."""
    hidden = configs.talker.embedding_size
    return (
        seeded_normal(seed + 101, (batch, prompt_length, hidden)),
        seeded_normal(seed + 202, (batch, reply_length, hidden)),
    )


# --- validation --------------------------------------------------------------------------------


def first_divergence(reference: np.ndarray, candidate: np.ndarray) -> int:
    """First step at which any row's codes differ; -1 when none (over the common length)."""
    steps = min(reference.shape[1], candidate.shape[1])
    differs = (reference[:, :steps] != candidate[:, :steps]).any(axis=0)
    if differs.any():
        return int(differs.argmax())
    return -1 if reference.shape[1] == candidate.shape[1] else steps


def compare_generation(
    reference: GenerationResult, candidate: GenerationResult, forced_logits: np.ndarray
) -> dict[str, Any]:
    """Free-running agreement of two generations, and teacher-forced logits error per step.

    ``forced_logits``: the candidate's logits on the reference codes ([batch, steps, vocab]).
    """
    assert reference.logits is not None
    ref_logits = reference.logits.astype(np.float64)
    cand_logits = forced_logits.astype(np.float64)
    steps = min(reference.steps, candidate.steps)
    error = np.abs(ref_logits - cand_logits).max(axis=(0, 2))
    dot = (ref_logits * cand_logits).sum(axis=-1)
    norms = np.linalg.norm(ref_logits, axis=-1) * np.linalg.norm(cand_logits, axis=-1)
    cosine = np.where(norms > 0, dot / np.maximum(norms, 1e-300), 1.0)
    return {
        "generation_steps": reference.steps,
        "generation_batch": int(reference.codes.shape[0]),
        "generation_first_divergence_step": first_divergence(reference.codes, candidate.codes),
        "generation_equal_code_share": float(
            np.mean(reference.codes[:, :steps] == candidate.codes[:, :steps])
        ),
        "generation_forced_top1_agreement": float(
            np.mean(ref_logits.argmax(axis=-1) == cand_logits.argmax(axis=-1))
        ),
        "generation_forced_min_cosine": float(cosine.min()),
        "generation_logits_max_abs_error": float(error.max()),
        # The median over steps of each step's largest error.
        "generation_logits_median_step_max_abs_error": float(np.median(error)),
        "generation_logits_first_step_abs_error": float(error[0]),
        "generation_logits_last_step_abs_error": float(error[-1]),
        "generation_logits_max_abs_error_per_step": [float(e) for e in error],
    }


def check_token2wav_codes(codes: np.ndarray, num_embeds: int, where: str) -> int:
    """ContractError if an id, control ids stripped, lies outside Token2Wav's code range."""
    kept = strip_control_ids(codes)
    bad = np.unique(kept[(kept < 0) | (kept >= num_embeds)])
    if bad.size:
        raise ContractError(
            f"{where}: generated codec ids {bad[:10].tolist()} lie outside Token2Wav's code range "
            f"[0, {num_embeds}) after stripping control ids {list(CONTROL_IDS)}"
        )
    return int(kept.size)


def validate_generation(
    source: ModelSource, model_dir: Path, options: TalkerKVOptions, seed: int
) -> dict[str, Any]:
    """Greedy generation in PyTorch and through ``model_dir``'s graph from the same inputs."""
    from omniforge.token2wav import from_config

    configs = source.configs
    num_embeds = from_config(configs.token2wav).num_embeds
    prompt, reply = generation_inputs(
        configs, options.validate_batch, options.prompt_length, options.reply_length, seed
    )
    steps = options.validate_steps
    # Stop ids held back for every step: the check always covers `steps` codes. Ids above
    # Token2Wav's range are suppressed, as the voice pipeline generates.
    config = GenerationConfig(max_new_tokens=steps, min_new_tokens=steps, code_limit=num_embeds)

    # Every variant is checked against the same PyTorch run: compute it once per process.
    key = json.dumps([source.record(), options.as_dict(), seed], sort_keys=True, default=str)
    reference = _REFERENCE.get(key)
    if reference is None:
        talker = source.talker()
        started = time.perf_counter()
        reference = torch_generate_codes(talker, prompt, reply, config, return_logits=True)
        del talker
        log.info("torch generation: %d steps in %.1fs", steps, time.perf_counter() - started)
        _REFERENCE.clear()
        _REFERENCE[key] = reference

    started = time.perf_counter()
    runtime = OnnxTalker.load(model_dir, threads=options.validate_threads)
    generated = runtime.generate(prompt, reply, config)
    forced = runtime.score(prompt, reply, reference.codes)
    log.info("onnx generation + scoring: %d steps in %.1fs", steps, time.perf_counter() - started)

    figures = compare_generation(reference, generated, forced)
    check_token2wav_codes(reference.codes, num_embeds, "PyTorch")
    # Audio codes of this variant checked against Token2Wav's range (control ids stripped).
    figures["generation_codes_checked"] = check_token2wav_codes(
        generated.codes, num_embeds, f"{model_dir}"
    )
    figures["generation_token2wav_contract_ok"] = True
    figures["generation_token2wav_num_embeds"] = num_embeds
    # Without the code limit, how often would the greedy choice fall outside Token2Wav's
    # codes (control ids aside)? Near 0 for real weights; random weights spread evenly.
    raw = reference.logits.argmax(axis=-1) if reference.logits is not None else np.empty(0)
    outside = (raw >= num_embeds) & ~np.isin(raw, CONTROL_IDS)
    figures["generation_unlimited_outside_code_share"] = float(outside.mean()) if raw.size else 0.0
    figures["generation_threads"] = options.validate_threads
    return figures


# --- benchmark ---------------------------------------------------------------------------------


class BandwidthProbe:
    """Memory bandwidth (bytes/s) on this machine, best of a few runs, three ways.

    A parallel sum over ``threads`` threads (numpy releases the GIL), an fp32 matrix-vector
    product through numpy's BLAS (the decode step's own access pattern) and a copy (read +
    write bytes), over a buffer far larger than any cache. The floor uses the fastest read.
    On a shared machine the bandwidth moves: probe right before and after what is timed.
    """

    def __init__(self, threads: int, nbytes: int) -> None:
        self.threads = threads
        self.source = np.ones(nbytes // 8, dtype=np.float64)
        self.target = np.empty_like(self.source)
        self.matrix = self.source.view(np.float32).reshape(-1, 4096)
        self.vector = np.ones(4096, dtype=np.float32)
        self.chunks = list(
            zip(
                np.array_split(self.source, threads),
                np.array_split(self.target, threads),
                strict=True,
            )
        )
        self.best: dict[str, float] = {}

    def measure(self, repeats: int = 3) -> dict[str, float]:
        """This measurement's figures; ``self.best`` keeps the best of every measurement."""
        seconds = {"sum": float("inf"), "gemv": float("inf"), "copy": float("inf")}
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for _ in range(repeats):
                started = time.perf_counter()
                list(pool.map(lambda pair: float(pair[0].sum()), self.chunks))
                seconds["sum"] = min(seconds["sum"], time.perf_counter() - started)
                started = time.perf_counter()
                self.matrix @ self.vector
                seconds["gemv"] = min(seconds["gemv"], time.perf_counter() - started)
                started = time.perf_counter()
                list(pool.map(lambda pair: np.copyto(pair[1], pair[0]), self.chunks))
                seconds["copy"] = min(seconds["copy"], time.perf_counter() - started)
        nbytes = self.source.nbytes
        figures = {
            "sum_read_bytes_per_s": nbytes / seconds["sum"],
            "gemv_read_bytes_per_s": nbytes / seconds["gemv"],
            "copy_bytes_per_s": 2 * nbytes / seconds["copy"],
        }
        figures["read_bytes_per_s"] = max(
            figures["sum_read_bytes_per_s"], figures["gemv_read_bytes_per_s"]
        )
        for key, value in figures.items():
            self.best[key] = max(self.best.get(key, 0.0), value)
        return figures


def decode_weight_bytes(model_file: Path, rows: int) -> dict[str, int]:
    """Bytes of initializers one decode step reads: all of them, except that a table read
    through a Gather (the codec embedding) costs only the ``rows`` rows it returns."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(model_file), load_external_data=False)
    gathered = {node.input[0] for node in model.graph.node if node.op_type == "Gather"}
    total = gathered_bytes = 0
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            size = int(ExternalDataInfo(tensor).length or 0)
        elif tensor.raw_data:
            size = len(tensor.raw_data)
        else:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            size = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
        if tensor.name in gathered and len(tensor.dims) == 2 and tensor.dims[0] > 0:
            gathered_bytes += size
            size = min(size, rows * (size // int(tensor.dims[0])))
        total += size
    return {"weight_bytes": total, "gather_table_bytes": gathered_bytes}


def _torch_decode_bytes(talker: Any, rows: int) -> int:
    """Bytes of fp32 parameters one PyTorch decode step reads (embedding: ``rows`` rows)."""
    embedding = talker.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in talker.parameters())
    row_bytes = embedding.shape[1] * embedding.element_size()
    return int(total - embedding.numel() * embedding.element_size() + rows * row_bytes)


def kv_bytes(configs: ModelConfigs, batch: int, past: int) -> int:
    talker = configs.talker
    per_layer = 2 * batch * talker.num_key_value_heads * past * talker.head_dim * FLOAT32_BYTES
    return talker.num_hidden_layers * per_layer


def _onnx_timer(runtime: OnnxTalker, inputs: Inputs) -> Any:
    """A call that runs the graph on fixed inputs through IO binding (outputs left in ORT)."""
    import onnxruntime as ort

    session = runtime.session
    binding = session.io_binding()
    keep = []  # OrtValues must outlive the binding
    for name, array in inputs.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array))
        keep.append(value)
        binding.bind_ortvalue_input(name, value)
    for output in session.get_outputs():
        binding.bind_output(output.name, "cpu")

    def call(binding: Any = binding, keep: list[Any] = keep) -> None:
        session.run_with_iobinding(binding)

    return call


def _torch_timer(talker: Any, inputs: Inputs) -> Any:
    """A PyTorch eager call on the same inputs with a DynamicCache, cropped back after each call."""
    import torch
    from transformers import DynamicCache

    from omniforge.components.talker_kv import add_codec_embeddings

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
            talker(
                inputs_embeds=add_codec_embeddings(talker, embeds, codec_ids),
                position_ids=positions,
                past_key_values=step_cache,
                use_cache=True,
            )
        if cache is not None:
            # Back to `past` positions: every timed call sees the same cache length.
            cache.crop(-seq)

    return call


def _time_torch(
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
        timings[count] = time_calls(_torch_timer(talker, inputs), warmup, iterations)
    torch.set_num_threads(threads)
    best = min(timings, key=lambda count: timings[count]["p50_ms"])
    return {
        "torch_p50_ms": timings[threads]["p50_ms"],
        "torch_p95_ms": timings[threads]["p95_ms"],
        "torch_1thread_p50_ms": timings[1]["p50_ms"],
        "torch_best_p50_ms": timings[best]["p50_ms"],
        "torch_best_threads": best,
    }


def benchmark_decode(
    source: ModelSource, model_dir: Path, variant: str, threads: int, options: TalkerKVOptions
) -> dict[str, Any]:
    """Decode-step latency per cache length, prefill and generation, vs PyTorch and the floor."""
    import torch

    from omniforge.token2wav import from_config

    configs = source.configs
    batch = options.bench_batch
    warmup, iterations = options.bench_warmup, options.bench_iterations
    model_file = Path(model_dir) / "model.onnx"
    probe = BandwidthProbe(threads, options.bandwidth_mib << 20)
    weights = decode_weight_bytes(model_file, rows=batch)
    runtime = OnnxTalker.load(model_dir, threads=threads)
    talker = None
    torch_threads = torch.get_num_threads()
    if options.bench_compare_torch:
        torch.set_num_threads(threads)
        talker = source.talker()
    torch_weight_bytes = _torch_decode_bytes(talker, batch) if talker is not None else None

    pasts = sorted({*options.bench_past_lengths, options.bench_reference_past})
    per_past: dict[str, dict[str, float]] = {}
    table: list[dict[str, Any]] = []
    try:
        for past in pasts:
            inputs = step_inputs(configs, batch, 1, past, seed=past)
            log.info("%s: decode step at past %d", variant, past)
            before = probe.measure()["read_bytes_per_s"]
            bound = time_calls(_onnx_timer(runtime, inputs), warmup, iterations)
            # The fastest read around the timing: the floor is a lower bound on the step.
            read_bw = max(before, probe.measure()["read_bytes_per_s"])
            plain = time_calls(lambda i=inputs: runtime.session.run(None, i), warmup, iterations)
            floor_s = (weights["weight_bytes"] + kv_bytes(configs, batch, past)) / read_bw
            row: dict[str, float] = {
                "p50_ms": bound["p50_ms"],
                "p95_ms": bound["p95_ms"],
                "session_run_p50_ms": plain["p50_ms"],
                "floor_ms": floor_s * 1e3,
                "floor_multiple": bound["p50_ms"] / (floor_s * 1e3),
                "kv_bytes": kv_bytes(configs, batch, past),
                "memory_read_gb_s": read_bw / 1e9,
            }
            if talker is not None and torch_weight_bytes is not None:
                eager = _time_torch(talker, inputs, threads, warmup, iterations)
                torch_floor_ms = (
                    (torch_weight_bytes + kv_bytes(configs, batch, past)) / read_bw * 1e3
                )
                row |= eager | {
                    "speedup_vs_torch": eager["torch_best_p50_ms"] / bound["p50_ms"],
                    "torch_floor_multiple": eager["torch_best_p50_ms"] / torch_floor_ms,
                }
            per_past[f"past_{past}"] = row
            table.append({"past_sequence_length": past, "variant": variant} | row)

        length = options.bench_prefill_length
        prefill_inputs = step_inputs(
            configs, batch, length, 0, seed=7, codec_ids=prompt_codec_ids(batch, length)
        )
        prefill_iterations = max(3, iterations // 4)
        log.info("%s: prefill of %d positions", variant, options.bench_prefill_length)
        prefill = time_calls(_onnx_timer(runtime, prefill_inputs), 1, prefill_iterations)
        report: dict[str, Any] = {
            "prefill_length": options.bench_prefill_length,
            "prefill_p50_ms": prefill["p50_ms"],
            "prefill_p95_ms": prefill["p95_ms"],
        }
        if talker is not None:
            eager = _time_torch(talker, prefill_inputs, threads, 1, prefill_iterations)
            report["torch_prefill_p50_ms"] = eager["torch_p50_ms"]
            report["torch_prefill_best_p50_ms"] = eager["torch_best_p50_ms"]
            report["prefill_speedup_vs_torch"] = eager["torch_best_p50_ms"] / prefill["p50_ms"]
    finally:
        torch.set_num_threads(torch_threads)
    del talker

    # The whole loop as the pipeline runs it: prefill, then one code per step.
    steps = options.bench_generation_steps
    prompt, reply = generation_inputs(
        configs, batch, options.prompt_length, options.reply_length, 3
    )
    config = GenerationConfig(
        max_new_tokens=steps,
        min_new_tokens=steps,
        code_limit=from_config(configs.token2wav).num_embeds,
    )
    runtime.generate(prompt, reply, GenerationConfig(max_new_tokens=2))  # warm-up
    durations = []
    for _ in range(5):
        started = time.perf_counter()
        runtime.generate(prompt, reply, config)
        durations.append(time.perf_counter() - started)
    generation_s = float(np.median(durations))

    reference = per_past[f"past_{options.bench_reference_past}"]
    seconds_per_code = reference["p50_ms"] / 1e3
    report |= {
        "decode_threads": threads,
        "decode_batch": batch,
        "decode_reference_past": options.bench_reference_past,
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
        "generation_steps": steps,
        "generation_prompt_length": options.prompt_length,
        "generation_s": generation_s,
        "generation_codes_per_s": batch * steps / generation_s,
        "generation_real_time_factor": generation_s / steps * CODES_PER_SECOND,
    }
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
