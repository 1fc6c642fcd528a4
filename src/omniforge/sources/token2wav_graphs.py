"""Token2Wav cut into the graphs a host-side ODE solve runs: transformers' modules, nothing else.

transformers' ``Qwen2_5OmniToken2WavDiTModel.sample`` recomputes the code embedding and the
ECAPA speaker embedding of the reference mel at each of its 36 evaluations, though neither
changes during a solve; its RK4 loop and ``torch.randn`` cannot live in a graph. So:

- :class:`Conditioning`: codes, reference mel and ``cond`` -> what stays constant through a
  solve, as the rows classifier-free guidance needs (the conditioned rows, then the null
  rows, each built exactly as ``DiTInputEmbedding(apply_cfg=True)`` builds them);
- :class:`DiTStep`: one DiT evaluation of a batch of rows given those constants, the noisy
  mel and each row's time; the host runs the solve, doubling rows for guidance;
- :class:`Vocoder`: BigVGAN, returning ``[batch, 1, samples]`` (its ``.squeeze()`` drops the
  batch dim of one row).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class Given(nn.Module):
    """Stands in for a submodule whose output becomes a graph input."""

    def forward(self, value: torch.Tensor, drop_code: bool = False) -> torch.Tensor:
        return value


def _with_given(module: nn.Module, **replaced: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` sharing every parameter, with some submodules replaced."""
    view = copy.copy(module)
    view._modules = {**module._modules, **replaced}
    return view


class Conditioning(nn.Module):
    """codes [B, N], reference_mel [B, F, 80], cond [B, 192] -> the solve's constant rows.

    Returns ``code_embed`` [2B, 2N, emb] (code -> its embedding repeated per frame; the null
    rows drop the code), ``speaker_embed`` [2B, enc_dim] (ECAPA of the reference mel; of zeros
    for the null rows) and ``speaker_cond`` [2B, 192] (``cond``; zeros for the null rows).
    """

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self.text_embed = dit.text_embed
        self.spk_encoder = dit.input_embed.spk_encoder

    def forward(
        self, codes: torch.Tensor, reference_mel: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        code_embed = torch.cat(
            [self.text_embed(codes, drop_code=False), self.text_embed(codes, drop_code=True)]
        )
        speaker_embed = self.spk_encoder(
            torch.cat([reference_mel, torch.zeros_like(reference_mel)])
        )
        return code_embed, speaker_embed, torch.cat([cond, torch.zeros_like(cond)])


class DiTStep(nn.Module):
    """One DiT evaluation: mel [R, F, 80] at times [R], given the constant rows -> velocity.

    The real ``Qwen2_5OmniToken2WavDiTModel.forward`` (``apply_cfg=False``) with its code
    embedding and speaker encoder replaced by what :class:`Conditioning` computed once.
    """

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        input_embed = _with_given(dit.input_embed, spk_encoder=Given())
        self.dit = _with_given(dit, text_embed=Given(), input_embed=input_embed)

    def forward(
        self,
        noisy_mel: torch.Tensor,
        time: torch.Tensor,
        code_embed: torch.Tensor,
        speaker_embed: torch.Tensor,
        speaker_cond: torch.Tensor,
    ) -> torch.Tensor:
        frames = noisy_mel.shape[1]
        return self.dit(
            hidden_states=noisy_mel,
            condition_vector=speaker_embed,
            speaker_embedding=speaker_cond.unsqueeze(1).repeat(1, frames, 1),  # as sample() does
            quantized_code=code_embed,
            time_step=time,
            apply_cfg=False,
        )


class Vocoder(nn.Module):
    """BigVGAN: mel [B, 80, F] -> waveform [B, 1, 240 F] in [-1, 1]."""

    def __init__(self, bigvgan: nn.Module) -> None:
        super().__init__()
        self.bigvgan = bigvgan

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.bigvgan(mel).reshape(mel.shape[0], 1, -1)


@contextlib.contextmanager
def symbolic_ecapa_batch() -> Iterator[None]:
    """While exporting: ECAPA's pooling mask keeps the batch dim symbolic.

    ``AttentiveStatisticsPooling._length_to_mask`` expands its mask by ``len(length)``, a
    Python int, so torch.export bakes the example's batch into the graph. This patch, equal
    in value, expands by ``length.shape[0]``.
    """
    from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as omni

    pooling = omni.AttentiveStatisticsPooling
    original = pooling._length_to_mask

    def length_to_mask(
        self: Any, length: torch.Tensor, max_len: Any = None, dtype: Any = None, device: Any = None
    ) -> torch.Tensor:
        if max_len is None:
            max_len = length.max().long().item()
        positions = torch.arange(max_len, device=length.device, dtype=length.dtype)
        mask = positions.expand(length.shape[0], max_len) < length.unsqueeze(1)
        return torch.as_tensor(mask, dtype=dtype, device=device)

    pooling._length_to_mask = length_to_mask
    try:
        yield
    finally:
        pooling._length_to_mask = original
