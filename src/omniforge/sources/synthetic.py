"""A synthetic model source: the real architecture at a preset's dims, weights from a seed."""

from __future__ import annotations

import copy
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
from omniforge.sources.speakers import synthetic_speakers
from omniforge.sources.token2wav import Token2WavMetadata, from_config

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniTalkerForConditionalGeneration, Qwen2_5OmniToken2WavModel
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    from omniforge.runtime.speakers import SpeakerFile

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
ENCODER_RESIDUAL_OUTPUTS = ("out_proj.weight", "fc2.weight")


def init_like_a_checkpoint(
    module: nn.Module,
    layers: int = 0,
    residual_outputs: tuple[str, ...] = RESIDUAL_OUTPUT_WEIGHTS,
) -> None:
    """Norm scales, biases and residual outputs drawn like a trained checkpoint's.

    Every 1-D ``weight`` is a norm scale here (the talker and audio tower have no other); every
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
            elif name.endswith(residual_outputs):
                parameter.mul_(residual_scale)


# Token2Wav's weights in the shape a trained checkpoint gives them. transformers' init draws
# every matrix at std 0.02 (activations vanish at small widths) and leaves SnakeBeta's
# log-scale alpha and beta at 0; here matrices get std 1/sqrt(fan_in), SnakeBeta a spread,
# the code embedding unit variance, and BigVGAN's last conv is scaled so the waveform lies
# mostly inside its [-1, 1] clamp (else most samples would clip and any vocoder would match).
SNAKE_LOG_STD = 0.2
WAVEFORM_STD = 0.25
# The scale comes from a float32 forward whose last bits differ between CPUs (oneDNN sums in
# another order on AVX-512 than on AVX2): rounded, the weights' bytes are the same on every
# CPU unless the scale lies within that noise (~1e-7) of a rounding boundary (odds ~1e-5).
WAVEFORM_SCALE_DIGITS = 2
DIT_RESIDUAL_OUTPUTS = ("attn.to_out.0.weight", "ff.ff.3.weight")


def init_token2wav_like_a_checkpoint(model: nn.Module) -> None:
    """Token2Wav (DiT + BigVGAN) weights drawn like a trained checkpoint's, from the torch seed."""
    layers = model.config.dit_config.num_hidden_layers
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith((".alpha", ".beta")):
                parameter.normal_(0.0, SNAKE_LOG_STD)
            elif name.endswith("bias"):
                parameter.normal_(0.0, BIAS_STD)
            elif name.endswith("codec_embed.weight"):
                parameter.normal_(0.0, 1.0)
            elif name.endswith("weight") and parameter.ndim == 1:
                parameter.normal_(NORM_SCALE_MEAN, NORM_SCALE_STD)
            elif parameter.ndim >= 2:
                # A transposed conv [in, out, k] with stride ~ k/2 sums about 2 * in taps.
                fan_in = 2 * parameter.shape[0] if ".ups." in name else parameter[0].numel()
                std = 1 / math.sqrt(fan_in)
                if name.endswith(DIT_RESIDUAL_OUTPUTS):
                    std /= math.sqrt(2 * layers)
                parameter.normal_(0.0, std)
        vocoder = model.code2wav_bigvgan_model
        captured: dict[str, torch.Tensor] = {}
        hook = vocoder.conv_post.register_forward_hook(
            lambda _module, _inputs, output: captured.setdefault("waveform", output)
        )
        # A mel in the range the DiT writes (log-magnitudes around -2).
        vocoder(torch.randn(1, vocoder.config.mel_dim, 48) * 2.0 - 2.0)
        hook.remove()
        scale = WAVEFORM_STD / captured["waveform"].std().item()
        vocoder.conv_post.weight.mul_(float(f"{scale:.{WAVEFORM_SCALE_DIGITS}g}"))


@dataclass(frozen=True)
class _HeadTower:
    """A tower built without its encoder layers, for its tail."""

    tower: Qwen2_5OmniAudioEncoder

    def head(self) -> AudioHead:
        return AudioHead(self.tower.ln_post, self.tower.avg_pooler, self.tower.proj)


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
            token2wav=Qwen2_5OmniToken2WavConfig(**token2wav_config_kwargs(self.preset)),
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
        log.info("building synthetic audio head (preset %s, seed %d)", self.preset, self.seed)
        return frozen_fp32(self._head_tower().head())

    def audio_tower(self) -> Qwen2_5OmniAudioEncoder:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        log.info("building synthetic audio encoder (preset %s, seed %d)", self.preset, self.seed)
        layers = self.configs.audio.encoder_layers
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + 4)
            tower = Qwen2_5OmniAudioEncoder(self.configs.audio)
            init_like_a_checkpoint(tower, layers=layers, residual_outputs=ENCODER_RESIDUAL_OUTPUTS)
        # The tail is audio_head()'s, drawn from its own seed: the projection's bytes do not
        # depend on the encoder's depth, and the encoder and projection are one tower.
        head = self._head_tower().head()
        tower.ln_post, tower.proj = head.ln_post, head.proj
        return frozen_fp32(tower)

    def _head_tower(self) -> _HeadTower:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
            Qwen2_5OmniAudioEncoder,
        )

        config = copy.deepcopy(self.configs.audio)
        config.encoder_layers = 0  # only the tail is needed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + 2)
            tower = Qwen2_5OmniAudioEncoder(config)
            head = _HeadTower(tower)
            init_like_a_checkpoint(head.head())
        return head

    def token2wav(self) -> Qwen2_5OmniToken2WavModel:
        from transformers import Qwen2_5OmniToken2WavModel

        log.info("building synthetic Token2Wav (preset %s, seed %d)", self.preset, self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + 3)
            model = Qwen2_5OmniToken2WavModel(self.configs.token2wav)
            init_token2wav_like_a_checkpoint(model)
        return frozen_fp32(model)

    def record(self) -> dict[str, Any]:
        return {"kind": "synthetic", "preset": self.preset, "seed": self.seed}

    def token2wav_metadata(self) -> Token2WavMetadata:
        return from_config(self.configs.token2wav, f"preset {self.preset} token2wav config")

    def speakers(self) -> SpeakerFile:
        return synthetic_speakers(self.configs, self.seed)
