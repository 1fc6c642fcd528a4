"""The Qwen2.5-Omni audio tower up to what the projection reads, as one static graph per chunk.

transformers' ``Qwen2_5OmniAudioEncoder.forward`` cuts each utterance's features into chunks
of ``2 * n_window`` frames, pads them, and attends within each chunk only (``cu_seqlens``),
with Python loops over ``.tolist()`` lengths that no exporter can trace. The same arithmetic
on a padded batch of chunks is static: the host cuts the chunks (``runtime/audio_encoder.py``),
this module runs them as rows with a key mask, and the host gathers the valid frames.
"""

from __future__ import annotations

import torch
from torch import nn


class AudioEncoderChunks(nn.Module):
    """The tower's own convs, positions and layers over a batch of chunks.

    ``forward`` takes features [chunks, mel_bins, frames] (each chunk right-padded) and
    ``chunk_lengths`` [chunks] (valid frames of each) and returns encoder states
    [chunks, (frames + 1) // 2, d_model], zero past each chunk's valid length: what the
    tower's last layer writes for those frames before pooling.
    """

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.conv1 = tower.conv1
        self.conv2 = tower.conv2
        self.positional_embedding = tower.positional_embedding
        self.layers = tower.layers

    def forward(self, input_features: torch.Tensor, chunk_lengths: torch.Tensor) -> torch.Tensor:
        frames = input_features.shape[2]
        # As the tower does: conv1's output is zeroed past each chunk's length, so conv2 at
        # the last valid frame reads the zeros the tower's own padding would give.
        feature_mask = torch.arange(frames) < chunk_lengths.unsqueeze(1)
        hidden = nn.functional.gelu(self.conv1(input_features)) * feature_mask.unsqueeze(1)
        hidden = nn.functional.gelu(self.conv2(hidden)).transpose(1, 2)
        positions = hidden.shape[1]
        hidden = hidden + self.positional_embedding.positional_embedding[:positions].unsqueeze(0)
        valid = torch.arange(positions) < ((chunk_lengths - 1) // 2 + 1).unsqueeze(1)
        # Additive key mask [chunks, 1, 1, positions]: a chunk attends to its own frames only.
        key_bias = torch.where(valid, 0.0, torch.finfo(hidden.dtype).min)[:, None, None, :]
        for layer in self.layers:
            hidden = _layer(layer, hidden, key_bias)
        return hidden * valid.unsqueeze(-1)


def _layer(layer: nn.Module, hidden: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
    """``Qwen2_5OmniAudioEncoderLayer.forward`` on padded rows: its modules, its order."""
    residual = hidden
    hidden = residual + _attention(layer.self_attn, layer.self_attn_layer_norm(hidden), key_bias)
    residual = hidden
    hidden = layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden))))
    return residual + hidden


def _attention(attn: nn.Module, hidden: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
    """``Qwen2_5OmniAudioAttention`` (eager) with the chunk boundaries as a key mask."""
    chunks, positions, _ = hidden.shape

    def heads(states: torch.Tensor) -> torch.Tensor:
        return states.reshape(chunks, positions, attn.num_heads, -1).transpose(1, 2)

    query, key, value = (
        heads(attn.q_proj(hidden)),
        heads(attn.k_proj(hidden)),
        heads(attn.v_proj(hidden)),
    )
    weights = torch.matmul(query, key.transpose(2, 3)) * attn.scaling + key_bias
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.matmul(weights, value).transpose(1, 2).reshape(chunks, positions, -1)
    return attn.out_proj(output)
