"""Numpy-only facts of the talker graphs: codec control ids, cache names, mrope positions.

Everything here is shared by the exporter (graph I/O names), the runtime (numpy and
onnxruntime only) and the PyTorch reference, so it imports nothing but numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Codec control ids of the Qwen2.5-Omni talker: they sit above Token2Wav's code range.
CODEC_PAD_ID = 8292
CODEC_BOS_ID = 8293
CODEC_EOS_ID = 8294
CODEC_MASK_ID = 8296
CONTROL_IDS: tuple[int, ...] = (CODEC_PAD_ID, CODEC_BOS_ID, CODEC_EOS_ID, CODEC_MASK_ID)
CODEC_VOCAB = 8448
# Token2Wav's code embedding takes ids 0 .. num_embeds - 1 (checkpoint default).
TOKEN2WAV_NUM_EMBEDS = 8193
# Qwen2.5-Omni's codec runs at 50 codes per second of audio (two mel frames per code,
# 240 samples per frame at 24 kHz).
CODES_PER_SECOND = 50

# A codec_ids value below 0: no codec embedding at that position (prompt positions).
NO_CODEC = -1

PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."


def past_names(num_layers: int) -> list[str]:
    """Cache inputs in graph order: per layer its key, then its value."""
    return [f"{PAST_PREFIX}{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def present_names(num_layers: int) -> list[str]:
    """Cache outputs in graph order, matching :func:`past_names`."""
    return [f"{PRESENT_PREFIX}{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def mrope_positions(batch: int, length: int, start: int) -> np.ndarray:
    """[3, batch, length] positions ``start ..``: audio/text-only input has three equal rows."""
    row = np.arange(start, start + length, dtype=np.int64)
    return np.ascontiguousarray(np.broadcast_to(row, (3, batch, length)))


def prompt_codec_ids(batch: int, length: int) -> np.ndarray:
    """No codec id on the prompt except codec pad, bos on its last two positions."""
    ids = np.full((batch, length), NO_CODEC, dtype=np.int64)
    ids[:, -2] = CODEC_PAD_ID
    ids[:, -1] = CODEC_BOS_ID
    return ids


def strip_control_ids(codes: np.ndarray) -> np.ndarray:
    """The codes without codec control ids (pad/bos/eos/mask), flattened."""
    flat = np.asarray(codes).ravel()
    return flat[~np.isin(flat, CONTROL_IDS)]


@dataclass(frozen=True)
class TalkerDims:
    """The dims a talker graph's inputs need: from a model config or from the graph itself."""

    layers: int
    hidden: int  # E, the thinker's hidden size the talker reads
    kv_heads: int
    head_dim: int
    vocab: int


def seeded_normal(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def step_inputs(
    dims: TalkerDims,
    batch: int,
    seq: int,
    past: int,
    seed: int,
    codec_ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs of one call: ``seq`` new positions after a cache of ``past`` positions.

    Codec ids default to random audio codes; pass ``prompt_codec_ids`` for a prefill.
    """
    if codec_ids is None:
        rng = np.random.default_rng(seed + 17)
        codec_ids = rng.integers(0, dims.vocab, size=(batch, seq), dtype=np.int64)
    inputs = {
        "inputs_embeds": seeded_normal(seed, (batch, seq, dims.hidden)),
        "codec_ids": codec_ids,
        "position_ids": mrope_positions(batch, seq, past),
    }
    shape = (batch, dims.kv_heads, past, dims.head_dim)
    for index, name in enumerate(past_names(dims.layers)):
        inputs[name] = seeded_normal(seed + 1 + index, shape)
    return inputs


def generation_inputs(
    dims: TalkerDims, batch: int, prompt_length: int, reply_length: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded thinker-side prompt [batch, T, E] and reply states [batch, R, E]."""
    return (
        seeded_normal(seed + 101, (batch, prompt_length, dims.hidden)),
        seeded_normal(seed + 202, (batch, reply_length, dims.hidden)),
    )
