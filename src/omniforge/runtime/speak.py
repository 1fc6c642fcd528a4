"""Codes from a file to timed speech: what ``omniforge synthesize`` runs.

Codes come from ``.npy`` (integers, [N] or [1, N]) or ``.json`` (a list of integers, or a
list holding one); explicit noise from ``.npy`` ([2N, 80] or [1, 2N, 80]), so that the
output can be held against another implementation's from the same noise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omniforge.errors import ArtifactError
from omniforge.runtime.speakers import Speaker
from omniforge.runtime.token2wav import (
    MEL_FRAMES_PER_CODE,
    SAMPLE_RATE,
    StreamSettings,
    SynthesisConfig,
    Token2Wav,
    Token2WavStream,
)


@dataclass(frozen=True)
class Spoken:
    """A synthesised waveform and what it cost."""

    waveform: np.ndarray
    seconds: float
    # From the first code handed over to the first audio returned.
    first_audio_seconds: float
    chunks: int

    @property
    def audio_seconds(self) -> float:
        return self.waveform.size / SAMPLE_RATE

    @property
    def real_time_factor(self) -> float:
        return self.seconds / self.audio_seconds


def read_codes(path: Path) -> np.ndarray:
    """One utterance's codes [1, N] from ``.npy`` or ``.json``; an ArtifactError names a
    file that holds something else."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            raw: Any = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            raw = json.loads(path.read_text())
        else:
            raise ArtifactError(f"{path}: codes are read from .npy or .json, not {path.suffix!r}")
    except (ValueError, UnicodeDecodeError, EOFError) as err:
        raise ArtifactError(f"{path}: not readable as {path.suffix} ({err})") from None
    try:
        codes = None if isinstance(raw, dict) else np.asarray(raw)
    except ValueError:  # a ragged list
        codes = None
    if codes is None or codes.dtype == object:
        raise ArtifactError(f"{path}: expected a list of integer codes (one row)")
    if codes.ndim == 2 and codes.shape[0] == 1:
        codes = codes[0]
    if codes.ndim != 1 or codes.size == 0:
        raise ArtifactError(
            f"{path}: expected one utterance's codes ([N] or [1, N], N >= 1), got shape "
            f"{list(codes.shape)}"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise ArtifactError(f"{path}: codes must be integers, got {codes.dtype}")
    return codes.astype(np.int64)[None]


def read_noise(path: Path, codes: int, mel_dim: int) -> np.ndarray:
    """The initial noise [1, 2 codes, mel_dim] from ``.npy``, or an ArtifactError."""
    path = Path(path)
    try:
        noise = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise ArtifactError(f"{path}: not a .npy array ({err})") from None
    frames = MEL_FRAMES_PER_CODE * codes
    if noise.ndim == 2:
        noise = noise[None]
    if noise.shape != (1, frames, mel_dim) or not np.issubdtype(noise.dtype, np.floating):
        raise ArtifactError(
            f"{path}: noise for {codes} codes must be float [{frames}, {mel_dim}] or "
            f"[1, {frames}, {mel_dim}], got {noise.dtype} {list(noise.shape)}"
        )
    return noise.astype(np.float32)


def speak(
    token2wav: Token2Wav,
    codes: np.ndarray,
    speaker: str | Speaker | None = None,
    config: SynthesisConfig | None = None,
    noise: np.ndarray | None = None,
    stream: StreamSettings | None = None,
) -> Spoken:
    """Synthesise one utterance [1, N], offline or (``stream``) as a talker would hand the
    codes over, one at a time; timed from the first code."""
    started = time.perf_counter()
    if stream is None:
        waveform = token2wav.synthesize(codes, speaker, config, noise)[0]
        seconds = time.perf_counter() - started
        return Spoken(waveform, seconds, seconds, 1)
    streaming = Token2WavStream(token2wav, speaker, config, stream, noise)
    chunks: list[np.ndarray] = []
    first = None
    for code in codes[0]:
        chunks += streaming.push([code])
        if chunks and first is None:
            first = time.perf_counter() - started
    chunks += streaming.finish()
    seconds = time.perf_counter() - started
    return Spoken(np.concatenate(chunks), seconds, seconds if first is None else first, len(chunks))
