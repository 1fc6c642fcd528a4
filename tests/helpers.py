"""Helpers shared by several test modules (importable: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import numpy as np

HIDDEN = 64  # the tiny preset's thinker hidden size
# The graphs Token2Wav is cut into, one component each.
TOKEN2WAV_COMPONENTS = ("token2wav_conditioning", "token2wav_dit", "token2wav_vocoder")


def thinker_states(
    batch: int, prompt: int, reply: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((batch, prompt, HIDDEN)).astype(np.float32),
        rng.standard_normal((batch, reply, HIDDEN)).astype(np.float32),
    )
