"""Synthetic model presets: full Qwen2.5-Omni configs, built with the real transformers classes.

transformers' ``Qwen2_5OmniTalkerConfig()`` defaults are not the checkpoint's talker (they
default to hidden 3584 and 28 layers), so every preset sets every field explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omniforge.errors import SourceError
from omniforge.talker_io import (
    CODEC_BOS_ID,
    CODEC_EOS_ID,
    CODEC_MASK_ID,
    CODEC_PAD_ID,
    CODEC_VOCAB,
    TOKEN2WAV_NUM_EMBEDS,
)


@dataclass(frozen=True)
class PresetDims:
    thinker_hidden: int  # talker input E, projection output
    talker_hidden: int
    talker_layers: int
    talker_heads: int
    talker_kv_heads: int
    talker_head_dim: int
    talker_intermediate: int
    mrope_section: tuple[int, int, int]
    audio_d_model: int
    audio_mel_bins: int = 128
    audio_heads: int = 20
    audio_ffn: int = 5120
    audio_layers: int = 32


PRESETS: dict[str, PresetDims] = {
    # Every interface dim of the 7B model, depth cut to 2 so `dvc repro` takes minutes on 2 cores.
    "lite": PresetDims(3584, 896, 2, 12, 4, 128, 18944, (16, 24, 24), 1280, audio_layers=2),
    "qwen2.5-omni-7b": PresetDims(3584, 896, 24, 12, 4, 128, 18944, (16, 24, 24), 1280),
    # The 3B talker body dims are not confirmed; they are taken equal to the 7B's.
    "qwen2.5-omni-3b": PresetDims(2048, 896, 24, 12, 4, 128, 18944, (16, 24, 24), 1280),
    # For tests: small everywhere, but the real codec vocabulary and control ids.
    "tiny": PresetDims(
        64, 32, 2, 4, 2, 8, 64, (2, 1, 1), 32, audio_heads=4, audio_ffn=64, audio_layers=2
    ),
}


def preset_dims(name: str) -> PresetDims:
    try:
        return PRESETS[name]
    except KeyError:
        raise SourceError(
            f"model.preset '{name}': unknown preset (known: {sorted(PRESETS)})"
        ) from None


def talker_config_kwargs(dims: PresetDims) -> dict[str, Any]:
    return {
        "vocab_size": CODEC_VOCAB,
        "embedding_size": dims.thinker_hidden,
        "hidden_size": dims.talker_hidden,
        "intermediate_size": dims.talker_intermediate,
        "num_hidden_layers": dims.talker_layers,
        "num_attention_heads": dims.talker_heads,
        "num_key_value_heads": dims.talker_kv_heads,
        "head_dim": dims.talker_head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32768,
        "max_window_layers": dims.talker_layers,
        "use_sliding_window": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": list(dims.mrope_section),
        },
        "tts_codec_start_token_id": CODEC_BOS_ID,
        "tts_codec_end_token_id": CODEC_EOS_ID,
        "tts_codec_pad_token_id": CODEC_PAD_ID,
        "tts_codec_mask_token_id": CODEC_MASK_ID,
        "tie_word_embeddings": False,
    }


def audio_config_kwargs(dims: PresetDims) -> dict[str, Any]:
    return {
        "d_model": dims.audio_d_model,
        "output_dim": dims.thinker_hidden,
        "num_mel_bins": dims.audio_mel_bins,
        "encoder_attention_heads": dims.audio_heads,
        "encoder_ffn_dim": dims.audio_ffn,
        "encoder_layers": dims.audio_layers,
    }


# Token2Wav per preset: transformers' defaults are the checkpoint's (DiT hidden 1024, 22 layers,
# BigVGAN 1536 channels); a preset overrides only what it cuts. Every interface dim stays the
# checkpoint's (mel_dim 80, num_embeds 8193, two frames per code, 240 samples per frame,
# cond 192): only widths inside a graph and depth change.
TOKEN2WAV_DIT: dict[str, dict[str, Any]] = {
    # 4 of 22 layers, keeping one of each kind: look-back (0, 3) and look-ahead (2).
    "lite": {"num_hidden_layers": 4, "look_backward_layers": [0, 3], "look_ahead_layers": [2]},
    "qwen2.5-omni-7b": {},
    "qwen2.5-omni-3b": {},
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "head_dim": 16,
        "emb_dim": 32,
        "look_backward_layers": [0, 3],
        "look_ahead_layers": [2],
        "enc_dim": 16,
        "enc_channels": [32, 32, 32, 32, 96],
        "enc_attention_channels": 16,
        "enc_se_channels": 16,
    },
}
TOKEN2WAV_BIGVGAN: dict[str, dict[str, Any]] = {
    # One residual block per upsampling (of three): every width and rate of the checkpoint.
    "lite": {"resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]]},
    "qwen2.5-omni-7b": {},
    "qwen2.5-omni-3b": {},
    # Six upsamplings halve the channels: 64 is the least that keeps one at the end.
    "tiny": {
        "upsample_initial_channel": 64,
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1, 3, 5]],
    },
}


def token2wav_config_kwargs(preset: str = "qwen2.5-omni-7b") -> dict[str, Any]:
    return {
        "dit_config": {
            "num_embeds": TOKEN2WAV_NUM_EMBEDS,
            "mel_dim": 80,
            "repeats": 2,
            **TOKEN2WAV_DIT[preset],
        },
        "bigvgan_config": {"mel_dim": 80, **TOKEN2WAV_BIGVGAN[preset]},
    }
