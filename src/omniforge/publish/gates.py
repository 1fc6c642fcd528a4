"""The gates a variant must pass to be published: thresholds on validate and benchmark figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omniforge.params import Gate


@dataclass(frozen=True)
class Refusal:
    gate: str  # the publish.gates key that refused, or "publish.gates" when none is set
    reason: str


# (gate field, figure, where the figure is, at least or at most)
THRESHOLDS: tuple[tuple[str, str, str, bool], ...] = (
    ("min_cosine", "cosine", "parity", True),
    ("max_abs_error", "max_abs_error", "parity", False),
    # The audio encoder as a user runs it (host chunking), against transformers' encoder.
    ("min_cosine", "chunked_cosine", "parity", True),
    ("max_abs_error", "chunked_max_abs_error", "parity", False),
    ("min_top1_agreement", "top1_agreement", "parity", True),
    ("min_forced_cosine", "generation_forced_min_cosine", "parity", True),
    ("min_forced_top1_agreement", "generation_forced_top1_agreement", "parity", True),
    ("max_decode_real_time_factor", "decode_real_time_factor", "benchmark", False),
    ("min_synthesis_snr_db", "synthesis_snr_db", "parity", True),
    ("min_stream_snr_db", "synthesis_stream_snr_db", "parity", True),
    ("max_log_mel_distance_db", "synthesis_log_mel_distance_db", "parity", False),
)


def refusals(
    variant: str, parity: dict[str, Any], benchmark: dict[str, Any], gate: Gate | None
) -> list[Refusal]:
    """Why a variant fails its gate; empty when it passes. A figure a component does not
    report (e.g. top-1 for the projection) is not checked."""
    if gate is None:
        return [
            Refusal(
                "publish.gates", f"no gate is configured for variant '{variant}' in publish.gates"
            )
        ]
    figures = {"parity": parity, "benchmark": benchmark}
    out = []
    for field, key, where, at_least in THRESHOLDS:
        bound = getattr(gate, field)
        if bound is None or key not in figures[where]:
            continue
        value = figures[where][key]
        if (value < bound) if at_least else (value > bound):
            sign = ">=" if at_least else "<="
            out.append(Refusal(field, f"{key} {value:.6g} fails the gate ({sign} {bound:g})"))
    if gate.min_steps_before_divergence is not None and "generation_steps" in parity:
        # Equal position rows (audio, text) and unequal ones (images, video) alike.
        for prefix, rows in (("generation_", "equal"), ("generation_mrope_", "unequal")):
            first = parity.get(f"{prefix}first_divergence_step")
            if first is None:
                continue
            equal_steps = parity["generation_steps"] if first < 0 else first
            if equal_steps < gate.min_steps_before_divergence:
                out.append(
                    Refusal(
                        "min_steps_before_divergence",
                        f"greedy codes ({rows} mrope rows) equal PyTorch's for {equal_steps} of "
                        f"{parity['generation_steps']} steps, the gate asks "
                        f"{gate.min_steps_before_divergence}",
                    )
                )
    if gate.max_p50_ms is not None:
        p50 = benchmark.get("largest_case_p50_ms", benchmark.get("decode_p50_ms"))
        if p50 is None:
            out.append(Refusal("max_p50_ms", "no benchmark latency to check against max_p50_ms"))
        elif p50 > gate.max_p50_ms:
            out.append(
                Refusal(
                    "max_p50_ms",
                    f"p50 latency {p50:.3f} ms exceeds the budget of {gate.max_p50_ms:g} ms",
                )
            )
    return out
