"""The audio projection: audio-encoder states in, thinker-space embeddings out (frames / 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from omniforge.components.base import (
    AUDIO_STATES,
    THINKER_HIDDEN,
    Component,
    DynamicAxes,
    Inputs,
    seeded_normal,
)

if TYPE_CHECKING:
    from torch import nn

    from omniforge.sources.base import ModelConfigs, ModelSource


class Projection(Component):
    name = "projection"
    graph_kind = "full-sequence"
    length_name = "frames"
    consumes: ClassVar[dict[str, str]] = {"audio_features": AUDIO_STATES}
    produces: ClassVar[dict[str, str]] = {"audio_embeds": THINKER_HIDDEN}

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {"audio_features": {0: "batch_size", 1: "frames"}}

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        # The output length is floor(frames / 2): the exporter names that dim itself.
        return {"audio_embeds": {0: "batch_size"}}

    def build_module(self, source: ModelSource) -> nn.Module:
        return source.audio_head().eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        return {"audio_features": seeded_normal(seed, (batch, length, configs.audio.d_model))}

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        return {"audio_features": configs.audio.d_model, "audio_embeds": configs.audio.output_dim}
