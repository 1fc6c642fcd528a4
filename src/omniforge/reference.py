"""The PyTorch reference: the transformers talker with its own cache, through the same loop,
and the voice chain (encoder, talker, Token2Wav) as transformers' modules run it.

validate compares every graph against these; they match transformers' own
``talker.generate`` (a test shows it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from omniforge.components.talker_kv import talker_step
from omniforge.runtime.generation import (
    GenerationConfig,
    GenerationResult,
    StepFn,
    check_generation_inputs,
    decode_loop,
    teacher_forced_logits,
)


def torch_stepper(talker: nn.Module) -> StepFn:
    """One talker call per step with a DynamicCache that grows, fed what the graph is fed."""
    from transformers import DynamicCache

    cache = DynamicCache(config=talker.config)

    def step(embeds: np.ndarray, codec_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = talker_step(
                talker,
                torch.from_numpy(embeds),
                torch.from_numpy(np.asarray(codec_ids)),
                torch.from_numpy(np.ascontiguousarray(positions)),
                cache,
            )
        return logits.float().numpy()

    return step


def torch_generate_codes(
    talker: nn.Module,
    prompt_embeds: np.ndarray,
    reply_embeds: np.ndarray,
    config: GenerationConfig | None = None,
    *,
    return_logits: bool = False,
    prompt_positions: np.ndarray | None = None,
) -> GenerationResult:
    """Codec generation with a transformers ``Qwen2_5OmniTalkerForConditionalGeneration``."""
    config = config or GenerationConfig()
    prompt, reply = check_generation_inputs(
        prompt_embeds, reply_embeds, talker.config.embedding_size
    )
    vocab = talker.config.vocab_size
    step = torch_stepper(talker)
    return decode_loop(
        step, prompt, reply, 0, config, vocab, return_logits, prompt_positions=prompt_positions
    )


def torch_score_codes(
    talker: nn.Module,
    prompt_embeds: np.ndarray,
    reply_embeds: np.ndarray,
    codes: Any,
    prompt_positions: np.ndarray | None = None,
) -> np.ndarray:
    """Teacher-forced logits [batch, steps, vocab] of ``codes`` with the transformers talker."""
    prompt, reply = check_generation_inputs(
        prompt_embeds, reply_embeds, talker.config.embedding_size
    )
    vocab = talker.config.vocab_size
    step = torch_stepper(talker)
    return teacher_forced_logits(step, prompt, reply, codes, vocab, prompt_positions)


def torch_reply(
    tower: nn.Module,
    talker: nn.Module,
    token2wav: nn.Module,
    features: np.ndarray,
    voice: Any,
    config: GenerationConfig,
    synthesis: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voice team's chain in PyTorch: Whisper features [mel_bins, frames] through
    transformers' audio encoder (projection included), its states as the talker's prompt and
    reply, greedy codes, then transformers' Token2Wav with ``voice`` (a runtime Speaker).

    Returns the codes [N] (stop id left out), the waveform, and the noise Token2Wav drew
    (torch.randn from ``synthesis.seed``), so a runtime can synthesise from the same noise.
    """
    with torch.inference_mode():
        embeds = tower(
            input_features=torch.from_numpy(features),
            feature_lens=torch.tensor([features.shape[1]]),
        ).last_hidden_state
    states = embeds.float().numpy()[None]
    result = torch_generate_codes(talker, states, states, config)
    codes = result.codes[:, : int(result.lengths[0])]
    waveform, noise = torch_synthesis(token2wav, codes, voice, synthesis)
    return codes[0], waveform, noise


def torch_synthesis(
    token2wav: nn.Module, codes: np.ndarray, voice: Any, synthesis: Any
) -> tuple[np.ndarray, np.ndarray]:
    """transformers' Token2Wav on ``codes`` [1, N] with ``voice`` (a runtime Speaker) and a
    runtime SynthesisConfig: the waveform, and the noise it drew (torch.randn from
    ``synthesis.seed``: its sample() draws the noise first), for a runtime to reuse."""
    torch.manual_seed(synthesis.seed)
    noise = torch.randn([1, 2 * codes.shape[1], voice.reference_mel.shape[1]]).numpy()
    torch.manual_seed(synthesis.seed)
    with torch.inference_mode():
        waveform = token2wav(
            torch.from_numpy(codes),
            torch.from_numpy(voice.cond)[None],
            torch.from_numpy(voice.reference_mel)[None],
            num_steps=synthesis.num_steps,
            guidance_scale=synthesis.guidance_scale,
            sway_coefficient=synthesis.sway_coefficient,
        )
    return waveform.float().numpy().reshape(-1), noise
