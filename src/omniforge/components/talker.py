"""The talker as a full-sequence graph: thinker hidden states in, codec logits out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from omniforge.components.base import (
    DynamicAxes,
    Inputs,
    TalkerGraph,
    seeded_normal,
    text_positions,
)

if TYPE_CHECKING:
    from omniforge.sources.base import ModelConfigs, ModelSource


class TalkerFullSequence(nn.Module):
    """Stateless wrapper: explicit mrope positions, no cache, no in-place edits of the input.

    With ``position_ids`` given, the transformers talker neither adds the bos/pad codec
    embeddings to ``inputs_embeds`` in place nor keeps ``rope_deltas`` on itself.
    """

    def __init__(self, talker: nn.Module) -> None:
        super().__init__()
        self.talker = talker

    def forward(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.talker(inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=False)
        return out.logits


class Talker(TalkerGraph):
    name = "talker"
    graph_kind = "full-sequence"

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {
            "inputs_embeds": {0: "batch_size", 1: "sequence_length"},
            "position_ids": {1: "batch_size", 2: "sequence_length"},
        }

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {"logits": {0: "batch_size", 1: "sequence_length"}}

    def build_module(self, source: ModelSource) -> nn.Module:
        return TalkerFullSequence(source.talker()).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        hidden = configs.talker.embedding_size
        return {
            "inputs_embeds": seeded_normal(seed, (batch, length, hidden)),
            "position_ids": text_positions(batch, length),
        }
