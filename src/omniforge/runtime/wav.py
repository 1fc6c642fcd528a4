"""WAV files without an audio library: 32-bit float (IEEE) or 16-bit PCM, mono.

Written through a temporary file renamed into place: an interrupted write leaves no
half-written WAV under the final name.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from omniforge.artifacts import write_atomic

PCM, IEEE_FLOAT = 1, 3


def wav_bytes(samples: np.ndarray, rate: int, pcm16: bool = False) -> bytes:
    """A mono WAV of ``samples`` (float, nominally in [-1, 1]) at ``rate`` Hz.

    Float WAVs keep the samples bit for bit; ``pcm16`` rounds them to 16 bits, clipping at
    full scale.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(
            f"a mono waveform is a 1-D float array, got {samples.dtype} {samples.shape}"
        )
    if not np.isfinite(samples).all():
        raise ValueError("the waveform holds NaN or infinite samples: nothing written")
    if pcm16:
        data = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        fmt = struct.pack("<HHIIHH", PCM, 1, rate, rate * 2, 2, 16)
        chunks = [(b"fmt ", fmt)]
    else:
        data = samples.astype("<f4").tobytes()
        # Non-PCM formats carry cbSize and a fact chunk (the number of samples).
        fmt = struct.pack("<HHIIHHH", IEEE_FLOAT, 1, rate, rate * 4, 4, 32, 0)
        chunks = [(b"fmt ", fmt), (b"fact", struct.pack("<I", samples.size))]
    chunks.append((b"data", data))
    body = b"WAVE" + b"".join(
        tag + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) % 2)
        for tag, payload in chunks
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path: Path, samples: np.ndarray, rate: int, pcm16: bool = False) -> None:
    """Write a mono WAV atomically (see :func:`wav_bytes`)."""
    write_atomic(Path(path), wav_bytes(samples, rate, pcm16))
