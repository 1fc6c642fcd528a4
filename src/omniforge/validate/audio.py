"""How far one waveform is from another: SNR, log-mel distance, PESQ and STOI.

Held against a reference made from the same noise, these say what a variant or a shortcut
costs. PESQ (ITU-T P.862.2, wide band) runs at 16 kHz, so 24 kHz audio is resampled for it;
STOI resamples to 10 kHz itself. Both come from their PyPI packages (``pesq``, ``pystoi``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from omniforge.runtime.audio import log_mel_db
from omniforge.runtime.token2wav import SAMPLE_RATE, snr_db

log = logging.getLogger(__name__)

# Bins quieter than this below the reference's loudest are floored: silence would otherwise
# weigh as much as speech.
DYNAMIC_RANGE_DB = 80.0
PESQ_RATE = 16_000
# An SNR this high means equal to float precision (and keeps the figure finite in JSON).
MAX_SNR_DB = 200.0


def log_mel_distance_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean absolute difference of the two log-mels, in dB, both floored
    :data:`DYNAMIC_RANGE_DB` below the reference's loudest bin."""
    ref, cand = log_mel_db(reference), log_mel_db(candidate)
    floor = ref.max() - DYNAMIC_RANGE_DB
    return float(np.mean(np.abs(np.maximum(ref, floor) - np.maximum(cand, floor))))


def pesq_wb(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Wide-band PESQ (MOS-LQO, 1.04 to 4.64); None when PESQ finds no speech-like signal."""
    from pesq import PesqError, pesq
    from scipy.signal import resample_poly

    ratio = PESQ_RATE // 8000, SAMPLE_RATE // 8000  # 24 kHz -> 16 kHz: up 2, down 3
    try:
        return float(
            pesq(
                PESQ_RATE,
                resample_poly(np.asarray(reference, np.float64), *ratio),
                resample_poly(np.asarray(candidate, np.float64), *ratio),
                "wb",
            )
        )
    except PesqError as err:
        log.warning("PESQ gives no figure: %s", err)
        return None


def stoi(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Short-time objective intelligibility (0 to 1); None when pystoi has no figure (audio
    shorter than its 384 ms of speech frames, or silent: it warns and returns 1e-5)."""
    import warnings

    from pystoi import stoi as pystoi

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            return float(pystoi(np.asarray(reference), np.asarray(candidate), SAMPLE_RATE))
        except (RuntimeWarning, ValueError) as err:
            log.warning("STOI gives no figure: %s", err)
            return None


def audio_distance(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Every figure of ``candidate`` against ``reference`` (same length, 24 kHz)."""
    if reference.shape != candidate.shape:
        raise ValueError(f"waveforms differ in length: {reference.shape} vs {candidate.shape}")
    return {
        "snr_db": min(snr_db(reference, candidate), MAX_SNR_DB),
        "log_mel_distance_db": log_mel_distance_db(reference, candidate),
        "pesq_wb": pesq_wb(reference, candidate),
        "stoi": stoi(reference, candidate),
    }
