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

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from omniforge.components.base import (
    THINKER_HIDDEN,
    BenchmarkCase,
    Component,
    DynamicAxes,
    Inputs,
    unequal_mrope_rows,
)
from omniforge.components.talker_kv import TalkerWithCache, step_inputs
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


class TalkerFused(Component):
    name = "talker_fused"
    graph_kind = "kv-cache"
    logits_output = "logits"
    length_name = "past_sequence_length"
    consumes: ClassVar[dict[str, str]] = {"inputs_embeds": THINKER_HIDDEN}
    exporter = "fuse"
    simplify = False
    baseline = "talker_kv"

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        axes: dict[str, DynamicAxes] = {
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "codec_ids": {0: "batch_size", 1: "sequence_length"},
            "position_ids": {1: "batch_size", 2: "sequence_length"},
            SEQLENS: {0: "batch_size"},
            TOTAL_LENGTH: {},
        }
        for name in past_names(configs.talker.num_hidden_layers):
            axes[name] = {0: "batch_size", 2: "past_sequence_length"}
        return axes

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        axes: dict[str, DynamicAxes] = {"logits": {0: "batch_size", 1: "sequence_length"}}
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

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        return {
            "inputs_embeds": configs.talker.embedding_size,
            "logits": configs.talker.vocab_size,
        }

    def benchmark_cases(
        self, configs: ModelConfigs, batch: int, lengths: list[int], seed: int
    ) -> list[BenchmarkCase]:
        return [
            BenchmarkCase(f"past={n}", n, with_lengths(step_inputs(configs, batch, 1, n, seed + n)))
            for n in lengths
        ]

    def torch_dynamic_shapes(self, configs: ModelConfigs) -> Any:
        raise NotImplementedError("talker_fused is written by the fuse pass, not traced")
