"""The compute floor of a prefill: the graphs' weight multiply-adds and the int8 GEMM probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from omniforge.benchmark.compute import (
    PROBE_DEPTH,
    Fp32GemmProbe,
    GemmProbe,
    Int8GemmProbe,
    weight_multiply_adds,
)
from omniforge.components import get_component
from omniforge.sources.synthetic import SyntheticSource


def linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("component", ["talker_kv", "talker_fused", "projection"])
def test_every_variant_multiplies_each_row_by_every_linear_weight_of_the_module(
    component: str, tiny_source: SyntheticSource, tiny_variants: dict[str, dict[str, Path]]
) -> None:
    # Plain or fused (q/k/v and gate/up packed), fp32, int8 or int4: the same weights.
    expected = linear_weights(get_component(component).build_module(tiny_source))
    counted = {
        variant: weight_multiply_adds(directory / "model.onnx")
        for variant, directory in tiny_variants[component].items()
    }
    assert counted == dict.fromkeys(counted, expected)


@pytest.mark.parametrize("probe_kind", [Int8GemmProbe, Fp32GemmProbe])
def test_a_gemm_probe_measures_a_rate_and_keeps_the_best(probe_kind: type[GemmProbe]) -> None:
    probe = probe_kind(threads=1, rows=16)
    assert probe.multiply_adds == 16 * PROBE_DEPTH * probe_kind.width
    rates = [probe.measure(repeats=2) for _ in range(3)]
    assert min(rates) > 0
    assert probe.best == max(rates)


def test_the_dits_per_row_time_mlp_is_not_counted_per_frame(tiny_variants: dict) -> None:
    """The DiT's time embedding and AdaLN modulation run once per row: a per-frame floor
    that counted them would overstate the work (and stop being a lower bound)."""
    from omniforge.benchmark.compute import weight_multiply_adds

    for variant in ("fp32", "int8", "int4"):
        graph = tiny_variants["token2wav_dit"][variant] / "model.onnx"
        per_frame = weight_multiply_adds(graph, ("rows",))
        assert 0 < per_frame < weight_multiply_adds(graph)
    fp32, int4 = (
        weight_multiply_adds(tiny_variants["token2wav_dit"][v] / "model.onnx", ("rows",))
        for v in ("fp32", "int4")
    )
    assert fp32 == int4


def test_the_vocoders_convolutions_cost_what_torch_counts_per_frame(
    tiny_source: SyntheticSource, tiny_variants: dict
) -> None:
    """The vocoder's floor counts its graph's convolutions: as many multiply-adds per frame
    as torch's FLOP counter finds in transformers' BigVGAN (the 2-D rewrite adds none)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from omniforge.benchmark.compute import conv_multiply_adds_per_frame

    vocoder = get_component("token2wav_vocoder").build_module(tiny_source)

    def multiply_adds(frames: int) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            vocoder(torch.randn(1, 80, frames))
        return counter.get_total_flops() // 2

    expected = (multiply_adds(200) - multiply_adds(100)) // 100
    graph = tiny_variants["token2wav_vocoder"]["fp32"] / "model.onnx"
    assert conv_multiply_adds_per_frame(graph) == expected > 0
