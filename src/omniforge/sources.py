"""Where the weights come from: a seeded synthetic preset or a local Qwen2.5-Omni checkpoint.

A source hands out the real transformers modules each component wraps, the configs the
contracts are checked against, and a record of itself for the manifest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from omniforge.errors import SourceError
from omniforge.params import ModelParams
from omniforge.presets import (
    audio_config_kwargs,
    preset_dims,
    talker_config_kwargs,
    token2wav_config_kwargs,
)
from omniforge.token2wav import Token2WavMetadata, from_config

if TYPE_CHECKING:
    from transformers import (
        Qwen2_5OmniAudioEncoderConfig,
        Qwen2_5OmniTalkerConfig,
        Qwen2_5OmniTalkerForConditionalGeneration,
        Qwen2_5OmniToken2WavConfig,
    )

log = logging.getLogger(__name__)


class AudioHead(nn.Module):
    """The tail of the Qwen2.5-Omni audio tower: stride-2 average pooling, ln_post, proj.

    Holds the tower's own modules; ``forward`` takes encoder states [batch, frames, d_model]
    and returns thinker-space embeddings [batch, frames // 2, output_dim], as the tower does.
    """

    def __init__(self, ln_post: nn.LayerNorm, avg_pooler: nn.AvgPool1d, proj: nn.Linear) -> None:
        super().__init__()
        self.ln_post = ln_post
        self.avg_pooler = avg_pooler
        self.proj = proj

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        pooled = self.avg_pooler(audio_features.transpose(1, 2)).transpose(1, 2)
        return self.proj(self.ln_post(pooled))


@dataclass(frozen=True)
class ModelConfigs:
    talker: Qwen2_5OmniTalkerConfig
    audio: Qwen2_5OmniAudioEncoderConfig
    token2wav: Qwen2_5OmniToken2WavConfig


class ModelSource(Protocol):
    configs: ModelConfigs

    def talker(self) -> Qwen2_5OmniTalkerForConditionalGeneration: ...

    def audio_head(self) -> AudioHead: ...

    def record(self) -> dict[str, Any]: ...

    def token2wav_metadata(self) -> Token2WavMetadata: ...


def _eval_fp32(module: nn.Module) -> nn.Module:
    module.float().eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


@dataclass
class SyntheticSource:
    """The real architecture at a preset's dims, weights drawn from a fixed seed."""

    preset: str
    seed: int
    configs: ModelConfigs = field(init=False)

    def __post_init__(self) -> None:
        from transformers import (
            Qwen2_5OmniAudioEncoderConfig,
            Qwen2_5OmniTalkerConfig,
            Qwen2_5OmniToken2WavConfig,
        )

        dims = preset_dims(self.preset)
        self.configs = ModelConfigs(
            talker=Qwen2_5OmniTalkerConfig(**talker_config_kwargs(dims)),
            audio=Qwen2_5OmniAudioEncoderConfig(**audio_config_kwargs(dims)),
            token2wav=Qwen2_5OmniToken2WavConfig(**token2wav_config_kwargs()),
        )

    def talker(self) -> Qwen2_5OmniTalkerForConditionalGeneration:
        from transformers import Qwen2_5OmniTalkerForConditionalGeneration

        log.info("building synthetic talker (preset %s, seed %d)", self.preset, self.seed)
        # Each module draws from its own seeded stream, so the talker's weights do not
        # depend on whether the projection was built first.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + 1)
            model = Qwen2_5OmniTalkerForConditionalGeneration(self.configs.talker)
        return _eval_fp32(model)

    def audio_head(self) -> AudioHead:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        log.info("building synthetic audio head (preset %s, seed %d)", self.preset, self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + 2)
            tower = Qwen2_5OmniAudioEncoder(self.configs.audio)
            # Random LayerNorm affine params, so the export is checked on a non-trivial norm.
            nn.init.normal_(tower.ln_post.weight, mean=1.0, std=0.1)
            nn.init.normal_(tower.ln_post.bias, std=0.1)
        return _eval_fp32(AudioHead(tower.ln_post, tower.avg_pooler, tower.proj))

    def record(self) -> dict[str, Any]:
        return {"kind": "synthetic", "preset": self.preset, "seed": self.seed}

    def token2wav_metadata(self) -> Token2WavMetadata:
        return from_config(self.configs.token2wav, f"preset {self.preset} token2wav config")


def open_source(params: ModelParams) -> ModelSource:
    """The model source that params describe."""
    if params.source == "synthetic":
        return SyntheticSource(params.preset, params.seed)
    if params.source == "pretrained":
        from omniforge.checkpoint import PretrainedSource, check_dvc_dependency

        source = PretrainedSource.open(params)  # config and index only
        # Before any weights are read: DVC must hash the checkpoint, or new weights
        # would pass unnoticed with the old artifacts reported up to date.
        check_dvc_dependency(params, params.dvc_dep)
        return source
    raise SourceError(f"model.source '{params.source}': unknown source")
