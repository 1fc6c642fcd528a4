"""The talker as a voice pipeline runs it: one KV-cache graph for prefill and decode steps.

Graph I/O (``L`` layers, ``H`` KV heads, ``D`` head_dim, ``E`` thinker hidden, ``V`` codec vocab)::

    inputs_embeds            float32 [batch, seq, E]      thinker-side states (no codec part)
    codec_ids                int64   [batch, seq]         codec id per position, < 0 = none
    position_ids             int64   [3, batch, seq]      explicit mrope rows (past .. past+seq-1)
    past_key_values.{i}.key|value  float32 [batch, H, past, D]   (past may be 0: prefill)
      ->
    logits                   float32 [batch, seq, V]
    present.{i}.key|value    float32 [batch, H, past + seq, D]

The codec embedding (``embed_tokens``, ``Embedding(V, E)`` in the thinker space) is inside the
graph: it reads only ``batch * seq`` rows per call, and keeping it here makes the talker one
self-contained artifact (one session, one run per code; validate and publish see one directory).
``codec_ids < 0`` means "no codec embedding", which is what a prompt position gets in
transformers (only its last two positions carry the codec pad/bos). A decode step is then
``inputs_embeds = thinker_reply_part[:, t:t+1]``, ``codec_ids = last code``, exactly
``embed_tokens(code) + thinker_reply_part[:, :1]`` of ``Qwen2_5OmniTalkerForConditionalGeneration``.

The graph is stateless: positions come in explicitly, the cache goes in and out as tensors
(wrapped in a transformers ``DynamicCache`` inside the torch module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from omniforge import talker_io
from omniforge.components.base import (
    BenchmarkCase,
    DynamicAxes,
    Inputs,
    TalkerGraph,
    talker_dims,
)
from omniforge.talker_io import NO_CODEC, past_names, present_names

if TYPE_CHECKING:
    from collections.abc import Mapping

    from transformers import DynamicCache

    from omniforge.sources.base import ModelConfigs, ModelSource


def add_codec_embeddings(
    talker: nn.Module, inputs_embeds: torch.Tensor, codec_ids: torch.Tensor
) -> torch.Tensor:
    """``inputs_embeds + embed_tokens(codec_ids)``, adding nothing where ``codec_ids < 0``."""
    present = (codec_ids >= 0).unsqueeze(-1)
    codec = talker.get_input_embeddings()(codec_ids.clamp(min=0))
    # masked_fill, not a multiply: an exact zero where there is no codec id.
    return inputs_embeds + codec.masked_fill(~present, 0.0)


def talker_step(
    talker: nn.Module,
    inputs_embeds: torch.Tensor,
    codec_ids: torch.Tensor,
    position_ids: torch.Tensor,
    cache: DynamicCache,
) -> torch.Tensor:
    """What one call of the graph computes: logits of the new positions; ``cache`` grows.

    The export wrapper, the PyTorch reference generation and the eager benchmark all call
    this, so each feeds the talker what the transformers talker computes in place.
    """
    out = talker(
        inputs_embeds=add_codec_embeddings(talker, inputs_embeds, codec_ids),
        position_ids=position_ids,
        past_key_values=cache,
        use_cache=True,
    )
    return out.logits


class TalkerWithCache(nn.Module):
    """Stateless talker call: embeds, codec ids, positions and past in; logits and present out.

    ``forward`` takes the past either positionally (``*past``, in ``past_names`` order: how
    it is exported, since torch.export mishandles a ``**kwargs`` signature) or by graph
    input name as keywords (how parity checks call it with ``make_inputs``).
    """

    def __init__(self, talker: nn.Module) -> None:
        super().__init__()
        self.talker = talker
        self.num_layers: int = talker.config.num_hidden_layers
        self._past_names = past_names(self.num_layers)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        codec_ids: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
        **named_past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        if named_past:
            if past or set(named_past) != set(self._past_names):
                raise ValueError(
                    f"expected the past as {self._past_names}, got {sorted(named_past)}"
                )
            past = tuple(named_past[name] for name in self._past_names)
        if len(past) != 2 * self.num_layers:
            raise ValueError(f"expected {2 * self.num_layers} past tensors, got {len(past)}")
        cache = DynamicCache(
            ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)],
            config=self.talker.config,
        )
        logits = talker_step(self.talker, inputs_embeds, codec_ids, position_ids, cache)
        flat = [logits]
        for layer in cache.layers:
            flat += [layer.keys, layer.values]
        return tuple(flat)


class TalkerKV(TalkerGraph):
    """The talker with its KV cache: one graph serves the prefill (past 0) and decode steps."""

    name = "talker_kv"
    graph_kind = "kv-cache"
    # benchmark_cases are decode steps: the plot's x axis is the cache length.
    length_name = "past_sequence_length"
    fixed_inputs: ClassVar[tuple[str, ...]] = ("inputs_embeds", "codec_ids", "position_ids")

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        axes: dict[str, DynamicAxes] = {
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "codec_ids": {0: "batch_size", 1: "sequence_length"},
            "position_ids": {1: "batch_size", 2: "sequence_length"},
        }
        for name in past_names(configs.talker.num_hidden_layers):
            axes[name] = {0: "batch_size", 2: "past_sequence_length"}
        return axes

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        # The present length is past + seq: the exporter names that dim itself.
        axes: dict[str, DynamicAxes] = {"logits": {0: "batch_size", 1: "sequence_length"}}
        for name in present_names(configs.talker.num_hidden_layers):
            axes[name] = {0: "batch_size"}
        return axes

    def torch_dynamic_shapes(self, configs: ModelConfigs) -> Any:
        # Keyed by the forward's parameters: the past is the var-positional ``past``, a tuple.
        dims = {
            label: torch.export.Dim(label)
            for label in ("batch_size", "sequence_length", "past_sequence_length")
        }
        axes = self.input_axes(configs)
        spec = {name: {a: dims[label] for a, label in axes[name].items()} for name in axes}
        past = tuple(spec[name] for name in past_names(configs.talker.num_hidden_layers))
        return {**{name: spec[name] for name in self.fixed_inputs}, "past": past}

    def export_args(
        self, example: Mapping[str, torch.Tensor]
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """Positional export arguments in graph input order (the past as ``*past``)."""
        layers = sum(1 for name in example if name.startswith("past_key_values.")) // 2
        order = [*self.fixed_inputs, *past_names(layers)]
        return tuple(example[name] for name in order), {}

    def build_module(self, source: ModelSource) -> nn.Module:
        return TalkerWithCache(source.talker()).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        """``length`` new positions after a cache of ``length // 2 + 2``: both dims non-trivial.

        The first half of the new positions carries no codec id (a prompt), the rest do.
        """
        inputs = step_inputs(configs, batch, length, length // 2 + 2, seed)
        inputs["codec_ids"][:, : length // 2] = NO_CODEC
        return inputs

    def benchmark_cases(
        self, configs: ModelConfigs, batch: int, lengths: list[int], seed: int
    ) -> list[BenchmarkCase]:
        """One decode step (one new code) after a cache of each length."""
        return [
            BenchmarkCase(f"past={n}", n, step_inputs(configs, batch, 1, n, seed + n))
            for n in lengths
        ]


def step_inputs(
    configs: ModelConfigs,
    batch: int,
    seq: int,
    past: int,
    seed: int,
    codec_ids: np.ndarray | None = None,
) -> Inputs:
    """Seeded inputs of one call at this model's dims (see ``talker_io.step_inputs``)."""
    return talker_io.step_inputs(talker_dims(configs), batch, seq, past, seed, codec_ids)
