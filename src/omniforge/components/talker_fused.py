"""The talker KV-cache graph emitted as onnxruntime's fused CPU ops (``passes/fuse.py``).

Same job and I/O as ``talker_kv``, plus what GroupQueryAttention needs: ``seqlens_k``
(int32 [batch], cache length after the call minus one) and ``total_sequence_length``
(int32 scalar). Past and present may be one preallocated buffer per layer; the runtime binds
them so (``OnnxTalker``). Not exported by tracing: the fuse pass writes the graph from the
weights, and onnxsim does not touch it.

onnxruntime's GroupQueryAttention takes several new positions after a non-empty cache only
for batch 1: a prompt that continues a cache is refused for larger batches by the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from omniforge.components.base import (
    BenchmarkCase,
    DynamicAxes,
    Inputs,
    unequal_mrope_rows,
)
from omniforge.components.talker_kv import TalkerKV, TalkerWithCache, step_inputs
from omniforge.talker_io import past_names, present_names

if TYPE_CHECKING:
    from omniforge.sources.base import ModelConfigs, ModelSource

SEQLENS, TOTAL_LENGTH = "seqlens_k", "total_sequence_length"


class FusedTalkerReference(nn.Module):
    """The PyTorch talker with the fused graph's inputs: GQA's lengths follow from the past."""

    def __init__(self, talker: nn.Module) -> None:
        super().__init__()
        self.inner = TalkerWithCache(talker)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        codec_ids: torch.Tensor,
        position_ids: torch.Tensor,
        seqlens_k: torch.Tensor,
        total_sequence_length: torch.Tensor,
        **past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.inner(inputs_embeds, codec_ids, position_ids, **past)


def with_lengths(inputs: Inputs) -> Inputs:
    """Add GQA's length inputs for a call whose past is as long as its arrays say."""
    batch, seq = inputs["codec_ids"].shape
    past = inputs[past_names(1)[0]].shape[2]
    total = past + seq
    return {
        **inputs,
        SEQLENS: np.full(batch, total - 1, dtype=np.int32),
        TOTAL_LENGTH: np.array(total, dtype=np.int32),
    }


class TalkerFused(TalkerKV):
    name = "talker_fused"
    exporter = "fuse"
    simplify = False
    baseline = "talker_kv"

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        """The plain graph's inputs with GroupQueryAttention's lengths before the past."""
        plain = super().input_axes(configs)
        fixed = {name: plain.pop(name) for name in self.fixed_inputs}
        return {**fixed, SEQLENS: {0: "batch_size"}, TOTAL_LENGTH: {}, **plain}

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        """The present is as long as the buffer bound to it: a dynamic dim of its own."""
        axes = super().output_axes(configs)
        for name in present_names(configs.talker.num_hidden_layers):
            axes[name] = {0: "batch_size", 2: "present_sequence_length"}
        return axes

    def build_module(self, source: ModelSource) -> nn.Module:
        return FusedTalkerReference(source.talker()).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        """A decode step (one position) after a cache of ``length``, three unequal mrope rows."""
        return unequal_mrope_rows(with_lengths(step_inputs(configs, batch, 1, length, seed)), seed)

    def parity_cases(
        self, configs: ModelConfigs, batch: int, length: int, seed: int
    ) -> dict[str, Inputs]:
        """A prompt of ``length`` positions (empty cache) and a decode step after it, each with
        equal and with unequal mrope rows."""
        prefill = with_lengths(step_inputs(configs, batch, length, 0, seed))
        decode = with_lengths(step_inputs(configs, batch, 1, length, seed + 1))
        return {
            "prefill": prefill,
            "prefill_unequal_mrope_rows": unequal_mrope_rows(prefill, seed),
            "decode": decode,
            "decode_unequal_mrope_rows": unequal_mrope_rows(decode, seed + 1),
        }

    def benchmark_cases(
        self, configs: ModelConfigs, batch: int, lengths: list[int], seed: int
    ) -> list[BenchmarkCase]:
        """One decode step after a cache of each length, with GQA's length inputs."""
        plain = super().benchmark_cases(configs, batch, lengths, seed)
        return [BenchmarkCase(c.label, c.length, with_lengths(c.inputs)) for c in plain]

    def torch_dynamic_shapes(self, configs: ModelConfigs) -> Any:
        raise NotImplementedError("talker_fused is written by the fuse pass, not traced")
