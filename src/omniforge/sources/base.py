"""What every model source provides: configs, the talker, the audio tower, Token2Wav, a record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from torch import nn
    from transformers import (
        Qwen2_5OmniAudioEncoderConfig,
        Qwen2_5OmniTalkerConfig,
        Qwen2_5OmniTalkerForConditionalGeneration,
        Qwen2_5OmniToken2WavConfig,
        Qwen2_5OmniToken2WavModel,
    )
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    from omniforge.runtime.speakers import SpeakerFile
    from omniforge.sources.audio_head import AudioHead
    from omniforge.sources.token2wav import Token2WavMetadata

ModuleT = TypeVar("ModuleT", bound="nn.Module")


@dataclass(frozen=True)
class ModelConfigs:
    talker: Qwen2_5OmniTalkerConfig
    audio: Qwen2_5OmniAudioEncoderConfig
    token2wav: Qwen2_5OmniToken2WavConfig


class ModelSource(Protocol):
    configs: ModelConfigs

    def talker(self) -> Qwen2_5OmniTalkerForConditionalGeneration: ...

    def audio_head(self) -> AudioHead: ...

    def audio_tower(self) -> Qwen2_5OmniAudioEncoder: ...

    def token2wav(self) -> Qwen2_5OmniToken2WavModel: ...

    def record(self) -> dict[str, Any]: ...

    def token2wav_metadata(self) -> Token2WavMetadata: ...

    def speakers(self) -> SpeakerFile: ...


def frozen_fp32(module: ModuleT) -> ModuleT:
    """The module in fp32 and eval mode, with no parameter requiring gradients."""
    module.float().eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
