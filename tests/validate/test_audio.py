"""Audio figures: what they say about close and far waveforms, and no figure where none exists."""

from __future__ import annotations

import numpy as np

from omniforge.validate.audio import stoi


def test_stoi_of_close_audio_is_near_one_and_of_too_short_audio_is_none() -> None:
    speechlike = np.random.default_rng(0).standard_normal(2 * 24_000).astype(np.float32) * 0.1
    assert stoi(speechlike, speechlike * 1.01) > 0.99
    # 0.1 s: fewer frames than pystoi needs (it would warn and return 1e-5, a false figure).
    assert stoi(speechlike[:2_400], speechlike[:2_400]) is None
