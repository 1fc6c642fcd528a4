"""One evaluation of Token2Wav's DiT: the velocity of a noisy mel, per row, at its time.

The host runs the ODE solve (``omniforge.runtime.token2wav``): four evaluations per step
(RK4, 3/8 rule), each of 2B rows with classifier-free guidance (the conditioned rows and the
null rows of :mod:`token2wav_conditioning`), B rows without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from omniforge.components.base import Component, DynamicAxes, Inputs, seeded_normal
from omniforge.components.token2wav_conditioning import (
    CODE_EMBEDDING,
    SPEAKER_COND,
    SPEAKER_EMBEDDING,
)

if TYPE_CHECKING:
    from torch import nn

    from omniforge.sources.base import ModelConfigs, ModelSource


class Token2WavDiT(Component):
    name = "token2wav_dit"
    # Published inside the token2wav artifact (components/token2wav.py), not alone.
    published = False
    length_name = "frames"
    # Every frame attends to its own block (transformers' block mask keeps block_diff 0), so
    # no softmax row is fully masked: torch's NaN guard after it never fires.
    drop_softmax_nan_guards = True
    # Its attentions, RoPE on the first head and all, as fused ops; the 19 of 22 layers
    # without look-ahead or look-back attend one 24-frame block at a time (1.10x per
    # full-size int8 evaluation, bit-identical).
    fuse_multihead_attention = True
    consumes: ClassVar[dict[str, str]] = {
        "code_embed": CODE_EMBEDDING,
        "speaker_embed": SPEAKER_EMBEDDING,
        "speaker_cond": SPEAKER_COND,
    }

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        rows = {0: "rows"}
        return {
            "noisy_mel": {0: "rows", 1: "frames"},
            "time": rows,
            "code_embed": {0: "rows", 1: "frames"},
            "speaker_embed": rows,
            "speaker_cond": rows,
        }

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {"velocity": {0: "rows", 1: "frames"}}

    def build_module(self, source: ModelSource) -> nn.Module:
        from omniforge.sources.token2wav_graphs import DiTStep

        return DiTStep(source.token2wav().code2wav_dit_model).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        dit = configs.token2wav.dit_config
        return {
            "noisy_mel": seeded_normal(seed, (batch, length, dit.mel_dim)),
            "time": np.random.default_rng(seed + 1).random(batch, dtype=np.float32),
            "code_embed": seeded_normal(seed + 2, (batch, length, dit.emb_dim)),
            "speaker_embed": seeded_normal(seed + 3, (batch, dit.enc_dim)),
            "speaker_cond": seeded_normal(seed + 4, (batch, dit.enc_emb_dim)),
        }

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        dit = configs.token2wav.dit_config
        return {
            "noisy_mel": dit.mel_dim,
            "code_embed": dit.emb_dim,
            "speaker_embed": dit.enc_dim,
            "speaker_cond": dit.enc_emb_dim,
            "velocity": dit.mel_dim,
        }
