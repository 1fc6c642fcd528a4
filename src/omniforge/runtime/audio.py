"""Log-mel spectrograms in numpy: what audio figures and plots compare (no audio library)."""

from __future__ import annotations

import functools

import numpy as np

from omniforge.runtime.token2wav import SAMPLE_RATE

# The log-mel every figure and plot here uses: 80 bands up to 12 kHz, 1024-point frames
# every 256 samples (about 43 ms and 11 ms at 24 kHz).
N_FFT, HOP, MEL_BANDS = 1024, 256, 80


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


@functools.cache
def mel_filterbank(rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular mel filters [MEL_BANDS, N_FFT // 2 + 1] (HTK mel scale)."""
    edges_mel = np.linspace(0.0, _hz_to_mel(np.array(rate / 2)), MEL_BANDS + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    bins = np.linspace(0, rate / 2, N_FFT // 2 + 1)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (centre - low)
    falling = (high - bins) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_db(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Log-mel power in dB, [MEL_BANDS, frames]."""
    samples = np.asarray(samples, np.float64)
    padded = np.pad(samples, (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = 1 + (padded.size - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[index] * np.hanning(N_FFT), axis=1)
    power = mel_filterbank(rate) @ (np.abs(spectrum) ** 2).T
    return 10.0 * np.log10(np.maximum(power, 1e-10))
