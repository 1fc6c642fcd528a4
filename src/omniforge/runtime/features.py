"""Whisper log-mel features in numpy: what Qwen2.5-Omni's audio encoder reads, without torch.

The same numbers as transformers' ``WhisperFeatureExtractor`` (128 slaney mel bins, 25 ms
periodic-Hann frames every 10 ms at 16 kHz, log10 power floored 8 decades below the loudest
bin, then ``(x + 4) / 4``) as Qwen2.5-Omni's processor calls it: the utterance is padded
with silence to 30 s and the encoder keeps the frames its ``feature_attention_mask``
selects, ``ceil(samples / HOP)`` of them. This module returns just those frames, computed
from the utterance and as much silence as they reach. (The encoder turns every 4 of
them, 40 ms, into one audio token.)
"""

from __future__ import annotations

import functools

import numpy as np

from omniforge.errors import OmniforgeError

SAMPLE_RATE = 16_000
MEL_BINS = 128
HOP = 160
N_FFT = 400
# Qwen2.5-Omni's processor pads every utterance with zeros to 30 s (and cuts longer ones).
PADDED_SAMPLES = 30 * SAMPLE_RATE
# Log-mel floor: 1e-10 power, then at most 8 decades below the loudest bin.
LOG_FLOOR, DYNAMIC_RANGE = 1e-10, 8.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear to 1 kHz, logarithmic above (librosa's ``htk=False``)."""
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    return np.where(
        log_region, 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4), mel
    )


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), hz)


@functools.cache
def mel_filters() -> np.ndarray:
    """Slaney-normalised triangular filters [N_FFT // 2 + 1, MEL_BINS], 0 to 8 kHz.

    Computed once (float64, as transformers' ``mel_filter_bank(norm="slaney",
    mel_scale="slaney")``) and returned read-only, since every call shares it.
    """
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(8000.0)), MEL_BINS + 2)
    )
    bins = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    slopes = edges[None, :] - bins[:, None]
    falling = -slopes[:, :-2] / np.diff(edges)[:-1]
    rising = slopes[:, 2:] / np.diff(edges)[1:]
    filters = np.maximum(0.0, np.minimum(falling, rising))
    # Slaney: each filter scaled to constant area (energy per band, not peak).
    filters *= 2.0 / (edges[2:] - edges[:-2])
    filters.flags.writeable = False
    return filters


@functools.cache
def _window() -> np.ndarray:
    """Periodic Hann of N_FFT samples (torch.hann_window's default, as Whisper uses)."""
    window = np.hanning(N_FFT + 1)[:-1]
    window.flags.writeable = False
    return window


def feature_frames(samples: int) -> int:
    """Frames the encoder reads for ``samples`` at 16 kHz: one per started hop, as the
    processor's attention mask counts them (``ceil(samples / HOP)``)."""
    return -(-samples // HOP)


def log_mel_features(waveform: np.ndarray) -> np.ndarray:
    """Log-mel features float32 [MEL_BINS, frames] of one mono utterance at 16 kHz.

    ``frames`` is :func:`feature_frames` of the waveform's length. The values are what
    Qwen2.5-Omni's processor gives for the same utterance up to 30 s (to one float32 step
    of transformers' numpy path; its default torch path, float32 throughout, differs by
    up to ~5e-5). Longer input is not cut here, as the processor cuts it, but padded with
    the same silence. An OmniforgeError names input that is not 1-D float, empty, or
    holds NaN or infinite samples.
    """
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise OmniforgeError(
            f"audio features need one mono waveform (1-D), got shape {list(waveform.shape)}"
        )
    if not np.issubdtype(waveform.dtype, np.floating):
        raise OmniforgeError(f"audio features need float samples in [-1, 1], got {waveform.dtype}")
    if waveform.size == 0:
        raise OmniforgeError("audio features need at least one sample: the waveform is empty")
    bad = ~np.isfinite(waveform)
    if bad.any():
        raise OmniforgeError(
            f"the waveform holds {int(bad.sum())} NaN or infinite samples (first at sample "
            f"{int(np.argmax(bad))}): no features computed"
        )
    frames = feature_frames(waveform.size)
    # The processor feeds float32 samples; pad them with the silence the processor's 30 s
    # padding puts after them, as far as the kept frames (and the next two, which may
    # still hold the loudest bin) reach, and no further than those 30 s.
    length = frames * HOP + N_FFT
    if waveform.size <= PADDED_SAMPLES:
        length = min(length, PADDED_SAMPLES)
    padded = np.zeros(length, np.float64)
    padded[: waveform.size] = waveform.astype(np.float32)
    # Centred frames (reflect-padded as torch.stft does); the last one is dropped, as
    # transformers drops it: ``length // HOP`` frames.
    padded = np.pad(padded, N_FFT // 2, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][: length // HOP]
    power = np.abs(np.fft.rfft(windows * _window(), axis=-1)) ** 2
    log_spec = np.log10(np.maximum(mel_filters().T @ power.T, LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec[:, :frames] + 4.0) / 4.0).astype(np.float32)
