"""The audio encoder's whole path against transformers': host chunking, the graph, gathering.

Parity holds the graph against its own torch module on padded chunks; this check holds what a
user runs (``runtime.audio_encoder.AudioEncoder``) against transformers'
``Qwen2_5OmniAudioEncoder.forward`` on utterances longer than a chunk, of different lengths,
encoded together: the states its last layer writes, before pooling (the projection's input).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from omniforge.artifacts import MODEL
from omniforge.components.audio_encoder import chunk_frames
from omniforge.errors import ContractError
from omniforge.runtime.audio_encoder import (
    ENCODER_FILENAME,
    AudioEncoder,
    EncoderLimits,
    encoded_frames,
)
from omniforge.runtime.session import ORT_ERRORS, open_unverified_session
from omniforge.talker_io import seeded_normal
from omniforge.validate.parity import compare

if TYPE_CHECKING:
    from torch import nn

    from omniforge.sources.base import ModelSource

log = logging.getLogger(__name__)


def utterance_frames(chunk_frames: int) -> list[int]:
    """Feature frames of the utterances checked together: past two chunks with an odd tail,
    exactly one chunk, and less than half of one."""
    return [2 * chunk_frames + chunk_frames // 3 + 1, chunk_frames, chunk_frames // 3 + 2]


def transformers_states(tower: nn.Module, utterances: list[np.ndarray]) -> list[np.ndarray]:
    """What transformers' encoder writes before pooling, per utterance: its last layer's
    output over every utterance's valid frames, split back by utterance."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured["states"] = output[0] if isinstance(output, tuple) else output

    hook = tower.layers[-1].register_forward_hook(keep)
    try:
        with torch.inference_mode():
            tower(
                input_features=torch.from_numpy(np.concatenate(utterances, axis=1)),
                feature_lens=torch.tensor([u.shape[1] for u in utterances]),
            )
    finally:
        hook.remove()
    states = captured["states"].float().numpy()
    counts = [encoded_frames(u.shape[1], chunk_frames(tower.config)) for u in utterances]
    return np.split(states, np.cumsum(counts)[:-1])


class EncoderCheck:
    """Every variant's encoder, run as a user runs it, against transformers' encoder."""

    def __init__(self, source: ModelSource, seed: int) -> None:
        audio = source.configs.audio
        frames = utterance_frames(chunk_frames(audio))
        self.utterances = [
            seeded_normal(seed + index, (audio.num_mel_bins, count))
            for index, count in enumerate(frames)
        ]
        tower = source.audio_tower()
        if tower.config.encoder_layers == 0:
            raise ContractError("audio_encoder: the source's audio tower has no encoder layers")
        self.references = transformers_states(tower, self.utterances)

    def check(self, variant: str, graphs: dict[str, Path]) -> dict[str, Any]:
        directory = graphs[MODEL]
        where = f"audio_encoder-{variant}"
        limits_path = directory / ENCODER_FILENAME
        limits = EncoderLimits.from_bytes(limits_path.read_bytes(), str(limits_path))
        encoder = AudioEncoder(open_unverified_session(directory), limits)
        try:
            states = encoder.encode(self.utterances)
        except ORT_ERRORS as err:
            raise ContractError(f"{where}: the chunked encoder does not run: {err}") from err
        figures = [compare(r, c, False) for r, c in zip(self.references, states, strict=True)]
        log.info("%s: %d utterances against transformers' encoder", where, len(states))
        return {
            "chunked_cosine": min(f["cosine"] for f in figures),
            "chunked_max_abs_error": max(f["max_abs_error"] for f in figures),
            "chunked_utterance_frames": [u.shape[1] for u in self.utterances],
        }
