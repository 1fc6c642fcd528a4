"""The audio encoder: Whisper features of 2 s chunks in, the states the projection reads out.

One graph runs a padded batch of chunks, each attending only to itself, as transformers'
``Qwen2_5OmniAudioEncoder`` does; the host cuts utterances into chunks and gathers the valid
frames back (``runtime/audio_encoder.py``). Validate holds that whole path against
transformers' encoder on utterances longer than a chunk, of different lengths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np

from omniforge.components.base import AUDIO_STATES, Component, DynamicAxes, Inputs, seeded_normal

if TYPE_CHECKING:
    from torch import nn
    from transformers import Qwen2_5OmniAudioEncoderConfig

    from omniforge.sources.base import ModelConfigs, ModelSource


def chunk_frames(audio: Qwen2_5OmniAudioEncoderConfig) -> int:
    """Feature frames per chunk, the most the graph ever takes: transformers' ``2 * n_window``
    (200, two seconds)."""
    return 2 * audio.n_window


def chunk_lengths(batch: int, length: int) -> np.ndarray:
    """Valid frames of ``batch`` chunks padded to ``length``: the first full, the others
    shorter, each by a different amount (every row's mask is exercised)."""
    step = max(1, length // (batch + 1))
    return np.array([max(1, length - row * step) for row in range(batch)], dtype=np.int64)


class AudioEncoder(Component):
    name = "audio_encoder"
    graph_kind = "audio-encoder"
    length_name = "feature_frames"
    produces: ClassVar[dict[str, str]] = {"audio_states": AUDIO_STATES}

    def input_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        return {"input_features": {0: "chunks", 2: "frames"}, "chunk_lengths": {0: "chunks"}}

    def output_axes(self, configs: ModelConfigs) -> dict[str, DynamicAxes]:
        # (frames + 1) // 2 positions: the exporter names that dim itself.
        return {"audio_states": {0: "chunks"}}

    def build_module(self, source: ModelSource) -> nn.Module:
        from omniforge.sources.audio_encoder import AudioEncoderChunks

        return AudioEncoderChunks(source.audio_tower()).eval()

    def make_inputs(self, configs: ModelConfigs, batch: int, length: int, seed: int) -> Inputs:
        # The host cuts longer audio into chunks: a longer input is one the graph never sees.
        frames = min(length, chunk_frames(configs.audio))
        return {
            "input_features": seeded_normal(seed, (batch, configs.audio.num_mel_bins, frames)),
            "chunk_lengths": chunk_lengths(batch, frames),
        }

    def extra_files(self, source: ModelSource) -> dict[str, bytes]:
        """The chunking the host must do, read by the runtime from the hashed artifact."""
        from omniforge.runtime.audio_encoder import ENCODER_FILENAME, EncoderLimits

        audio = source.configs.audio
        limits = EncoderLimits(mel_bins=audio.num_mel_bins, chunk_frames=chunk_frames(audio))
        return {ENCODER_FILENAME: limits.to_bytes()}

    def interface(self, configs: ModelConfigs) -> dict[str, int]:
        # input_features is [chunks, mel_bins, frames]: its last dim is dynamic.
        return {"audio_states": configs.audio.d_model}
