"""Tiny Qwen2.5-Omni checkpoints for tests: the real transformers classes, saved sharded.

Everything is small (hidden 32-64, 2 layers) except the talker's codec vocabulary, which
keeps the real 8448 so codec ids and control ids are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omniforge.sources.synthetic import init_token2wav_like_a_checkpoint

THINKER_HIDDEN = 64  # E: the talker's input and the projection's output
AUDIO_D_MODEL = 32
CODEC_VOCAB = 8448
TOKEN2WAV_NUM_EMBEDS = 8193
MROPE = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 1, 1]}


def tiny_token2wav_config_dict(
    num_embeds: int = TOKEN2WAV_NUM_EMBEDS, mel_dim: int = 80
) -> dict[str, Any]:
    """kwargs for ``Qwen2_5OmniToken2WavConfig``: a tiny DiT and BigVGAN, real code range."""
    return {
        "dit_config": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "head_dim": 16,
            "emb_dim": 16,
            "enc_emb_dim": 16,
            "enc_dim": 16,
            "enc_channels": [16, 16, 16, 16, 48],
            "enc_attention_channels": 8,
            "enc_se_channels": 8,
            "look_ahead_layers": [0],
            "look_backward_layers": [0],
            "num_embeds": num_embeds,
            "mel_dim": mel_dim,
        },
        # Every rate of the checkpoint (240 samples a frame: audio metrics need real lengths);
        # six upsamplings halve the channels, so 64 is the least that keeps one at the end.
        "bigvgan_config": {
            "mel_dim": mel_dim,
            "upsample_initial_channel": 64,
            "resblock_kernel_sizes": [3],
            "resblock_dilation_sizes": [[1, 3, 5]],
        },
    }


def tiny_omni_config_dict(text_vocab: int = 512, text_intermediate: int = 96) -> dict[str, Any]:
    """kwargs for ``Qwen2_5OmniConfig``; ``text_vocab`` sizes the thinker's (big) tensors."""
    return {
        "thinker_config": {
            "text_config": {
                "vocab_size": text_vocab,
                "hidden_size": THINKER_HIDDEN,
                "intermediate_size": text_intermediate,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "rope_parameters": dict(MROPE),
            },
            "audio_config": {
                "d_model": AUDIO_D_MODEL,
                "encoder_layers": 2,
                "encoder_attention_heads": 4,
                "encoder_ffn_dim": 64,
                "num_mel_bins": 128,  # Whisper features: what the runtime computes
                "output_dim": THINKER_HIDDEN,
                "max_source_positions": 128,  # >= the 100 positions of a 200-frame parity input
                "n_window": 8,
            },
            "vision_config": {
                "depth": 1,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_heads": 2,
                "out_hidden_size": THINKER_HIDDEN,
                "fullatt_block_indexes": [0],
            },
        },
        "talker_config": {
            "vocab_size": CODEC_VOCAB,
            "embedding_size": THINKER_HIDDEN,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "max_window_layers": 2,
            "rope_parameters": dict(MROPE),
        },
        "token2wav_config": tiny_token2wav_config_dict(),
    }


def build_tiny_omni(seed: int = 0, **config_kwargs: Any) -> torch.nn.Module:
    """A full ``Qwen2_5OmniForConditionalGeneration`` with seeded random weights, in eval mode."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration
    from transformers.utils import logging as hf_logging

    # The talker config's text-token ids exceed its codec vocabulary by design: quiet the warning.
    hf_logging.set_verbosity_error()
    config = Qwen2_5OmniConfig(**tiny_omni_config_dict(**config_kwargs))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5OmniForConditionalGeneration(config)
        # LayerNorm affine params away from (1, 0), so the head check is not trivial.
        tower = audio_tower(model)
        torch.nn.init.normal_(tower.ln_post.weight, mean=1.0, std=0.1)
        torch.nn.init.normal_(tower.ln_post.bias, std=0.1)
        # Token2Wav's norms and biases too: a trained checkpoint's are not (1, 0).
        init_token2wav_like_a_checkpoint(model.token2wav)
    return model.eval()


def tiny_speakers(model: torch.nn.Module, seed: int = 0) -> dict[str, dict[str, Any]]:
    """A ``spk_dict.pt`` as a checkpoint ships it: per voice ``cond`` [1, enc_emb_dim],
    ``ref_mel`` [1, frames, mel_dim] and the talker's ``bos_token``."""
    dit = model.config.token2wav_config.dit_config
    generator = torch.Generator().manual_seed(seed)
    return {
        name: {
            "cond": torch.randn(1, dit.enc_emb_dim, generator=generator),
            "ref_mel": torch.randn(1, 40 + 7 * index, dit.mel_dim, generator=generator) - 4,
            "bos_token": 151870 + index,
        }
        for index, name in enumerate(("Chelsie", "Ethan"))
    }


def audio_tower(model: torch.nn.Module) -> torch.nn.Module:
    """The audio encoder inside a full model (saved as ``thinker.audio_tower.*``)."""
    return model.thinker.get_submodule("model.audio_tower")


def save_checkpoint(
    model: torch.nn.Module,
    directory: Path,
    max_shard_size: str = "200KB",
    dtype: torch.dtype | None = None,
) -> Path:
    """``save_pretrained`` sharded (an index and several shards), optionally cast first."""
    if dtype is not None:
        import copy

        model = copy.deepcopy(model).to(dtype)
    model.save_pretrained(directory, max_shard_size=max_shard_size)
    torch.save(tiny_speakers(model), Path(directory) / "spk_dict.pt")
    return Path(directory)


def tower_tail(tower: torch.nn.Module, states: torch.Tensor) -> torch.Tensor:
    """The end of the audio tower's forward: stride-2 mean of frame pairs, ln_post, proj."""
    with torch.no_grad():
        pooled = (states[:, 0::2] + states[:, 1::2]) / 2
        return tower.proj(tower.ln_post(pooled))
