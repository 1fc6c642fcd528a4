"""The dozen figures a person reads per candidate: what `dvc metrics show` prints, one row each.

Everything else (per shape, per cache length, per step) stays in metrics/validate.json and
metrics/benchmark/, for plots and for digging. Timings and ratios keep two significant
digits: run-to-run noise on a shared machine is 5-10 %, and a diff should show changes that
mean something. Figures that are exact (size: four digits; parity on one thread) keep more.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omniforge.artifacts import atomic_directory, write_json

# The order a reader meets them in; absent figures do not apply to the candidate.
HEADLINE_KEYS: tuple[str, ...] = (
    "size_mb",
    "load_s",
    "latency_ms",
    "prefill_ms",
    "first_code_ms",
    "speedup_vs_torch",
    "speedup_vs_baseline",
    "speedup_vs_reference",
    "real_time_factor",
    "first_audio_ms",
    "cosine",
    "snr_db",
    "top1",
    "first_divergence",
    "published",
    "refused_by",
)


def significant(value: float | None, digits: int = 2) -> float | None:
    """``value`` rounded to ``digits`` significant digits (None stays None)."""
    if value is None or value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def headline(
    parity: dict[str, Any],
    benchmark: dict[str, Any],
    published: bool,
    refused_by: list[str],
) -> dict[str, Any]:
    """The headline of one candidate from its validate and benchmark figures."""
    kv = "decode_p50_ms" in benchmark
    latency = benchmark.get("decode_p50_ms", benchmark.get("largest_case_p50_ms"))
    largest = benchmark.get("largest_case")
    if kv:
        speedup_vs_torch = benchmark.get("decode_speedup_vs_torch")
        real_time_factor = benchmark.get("decode_real_time_factor")
    elif "stream_real_time_factor" in benchmark:  # Token2Wav, at transformers' defaults
        speedup_vs_torch = benchmark.get("synthesis_speedup_vs_torch")
        real_time_factor = benchmark.get("stream_real_time_factor")
    else:
        speedup_vs_torch = benchmark.get("speedup_vs_torch", {}).get(largest)
        real_time_factor = (
            benchmark.get("rates", {}).get(largest, {}).get("full_pass_real_time_factor")
        )
    size = benchmark.get("size", {}).get("total_bytes")
    cosine = parity.get("cosine", parity.get("generation_forced_min_cosine"))
    top1 = parity.get("top1_agreement", parity.get("generation_forced_top1_agreement"))
    figures = {
        "size_mb": significant(size / 1e6, 4) if size is not None else None,
        "load_s": significant(benchmark.get("load_s")),
        "latency_ms": significant(latency),
        "prefill_ms": significant(benchmark.get("prefill_p50_ms")),
        "first_code_ms": significant(benchmark.get("time_to_first_code_ms")),
        "speedup_vs_torch": significant(speedup_vs_torch),
        "speedup_vs_baseline": significant(benchmark.get("decode_speedup_vs_baseline")),
        "speedup_vs_reference": significant(benchmark.get("decode_speedup_vs_reference")),
        "real_time_factor": significant(real_time_factor),
        "first_audio_ms": significant(benchmark.get("time_to_first_audio_ms")),
        "cosine": round(cosine, 5) if cosine is not None else None,
        "top1": round(top1, 3) if top1 is not None else None,
        "snr_db": significant(parity.get("synthesis_snr_db"), 3),
        "first_divergence": parity.get("generation_first_divergence_step"),
        "published": published,
        "refused_by": ", ".join(refused_by),
    }
    return {key: figures[key] for key in HEADLINE_KEYS if figures[key] is not None}


def write_headlines(directory: Path, headlines: dict[str, dict[str, Any]]) -> None:
    """One JSON file per candidate (``<component>-<variant>.json``), the folder replaced whole
    so a candidate no longer built leaves no stale row."""
    with atomic_directory(Path(directory)) as tmp:
        for key, figures in headlines.items():
            write_json(tmp / f"{key}.json", figures)
