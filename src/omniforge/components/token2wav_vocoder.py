"""Token2Wav's vocoder (BigVGAN): a mel spectrogram to a 24 kHz waveform, 240 samples a frame."""

from __future__ import annotations

from typing import TYPE_CHECKING

from omniforge.components.base import Component, DynamicAxes, Inputs, seeded_normal

if TYPE_CHECKING:
    from torch import nn

    from omniforge.sources.base import ModelConfigs, ModelSource


class Token2WavVocoder(Component):
    name = "token2wav_vocoder"
    # Published inside the token2wav artifact (components/token2wav.py), not alone.
    published = False
    length_name = "frames"
    # BigVGAN is all convolutions: ~1.1x faster as 2-D ones (passes/conv2d.py).
    convs_as_2d = True

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {"mel": {0: "batch", 2: "frames"}}

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        # 240 x frames samples: the exporter names that dim itself.
        return {"waveform": {0: "batch"}}

    def build_module(self, source: ModelSource) -> nn.Module:
        from omniforge.sources.token2wav_graphs import Vocoder

        return Vocoder(source.token2wav().code2wav_bigvgan_model).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        # Log-mel magnitudes around where the DiT writes them.
        mel_dim = configs.token2wav.bigvgan_config.mel_dim
        return {"mel": seeded_normal(seed, (batch, mel_dim, length), scale=2.0) - 2.0}

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        return {}
