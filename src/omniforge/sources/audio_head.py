"""The tail of the Qwen2.5-Omni audio tower that the projection component exports."""

from __future__ import annotations

import torch
from torch import nn


class AudioHead(nn.Module):
    """Stride-2 average pooling, ln_post, proj: the tower's own modules, nothing else.

    ``forward`` takes encoder states [batch, frames, d_model] and returns thinker-space
    embeddings [batch, frames // 2, output_dim], as the tower does.
    """

    def __init__(self, ln_post: nn.LayerNorm, avg_pooler: nn.AvgPool1d, proj: nn.Linear) -> None:
        super().__init__()
        self.ln_post = ln_post
        self.avg_pooler = avg_pooler
        self.proj = proj

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        pooled = self.avg_pooler(audio_features.transpose(1, 2)).transpose(1, 2)
        return self.proj(self.ln_post(pooled))
