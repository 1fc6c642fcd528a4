"""A synthetic model source: the real architecture at a preset's dims, weights from a seed."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from omniforge.sources.audio_head import AudioHead
from omniforge.sources.base import ModelConfigs, frozen_fp32
from omniforge.sources.presets import (
    audio_config_kwargs,
    preset_dims,
    talker_config_kwargs,
    token2wav_config_kwargs,
)
from omniforge.sources.token2wav import Token2WavMetadata, from_config

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniTalkerForConditionalGeneration

log = logging.getLogger(__name__)

# Statistics of the parameters transformers' init leaves trivial (norm scales at one, biases
# at zero): a trained checkpoint's are not, and the exporter folds trivial ones away, so a
# synthetic model initialised like transformers exports a graph with fewer nodes.
NORM_SCALE_MEAN, NORM_SCALE_STD = 1.0, 0.2
BIAS_STD = 0.1
# The projections that write into the residual stream. A trained decoder's layers each add a
# small update to the stream, so rounding error does not compound with depth; transformers'
# init gives every layer an update as large as the stream itself. Scaled by 1/sqrt(2 * layers),
# as GPT-2 and Megatron initialise them, 24 synthetic layers keep the int4 logits cosine of two
# (0.99 in a torch fake-quant probe; 0.93 unscaled, where the gates refused every int4 variant).
RESIDUAL_OUTPUT_WEIGHTS = ("o_proj.weight", "down_proj.weight")


def init_like_a_checkpoint(module: nn.Module, layers: int = 0) -> None:
    """Norm scales, biases and residual outputs drawn like a trained checkpoint's.

    Every 1-D ``weight`` is a norm scale here (the talker and audio head have no other); every
    ``bias`` gets a spread around zero, from the current torch seed. With ``layers``, the
    residual output projections are scaled down by depth. Other matrices keep transformers'
    initialisation.
    """
    residual_scale = 1 / math.sqrt(2 * layers) if layers else 1.0
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0.0, BIAS_STD)
            elif name.endswith("weight") and parameter.ndim == 1:
                parameter.normal_(NORM_SCALE_MEAN, NORM_SCALE_STD)
            elif name.endswith(RESIDUAL_OUTPUT_WEIGHTS):
                parameter.mul_(residual_scale)


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
            init_like_a_checkpoint(model, layers=self.configs.talker.num_hidden_layers)
        return frozen_fp32(model)

    def audio_head(self) -> AudioHead:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        log.info("building synthetic audio head (preset %s, seed %d)", self.preset, self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + 2)
            tower = Qwen2_5OmniAudioEncoder(self.configs.audio)
            head = AudioHead(tower.ln_post, tower.avg_pooler, tower.proj)
            init_like_a_checkpoint(head)
        return frozen_fp32(head)

    def record(self) -> dict[str, Any]:
        return {"kind": "synthetic", "preset": self.preset, "seed": self.seed}

    def token2wav_metadata(self) -> Token2WavMetadata:
        return from_config(self.configs.token2wav, f"preset {self.preset} token2wav config")
