"""The speakers Token2Wav can speak as, and the limits of its graphs, as one hashed data file.

A checkpoint ships its speakers in ``spk_dict.pt`` (torch): per name a reference mel
``ref_mel`` [1, frames, 80], the speaker vector ``cond`` [1, 192] and the talker's
``bos_token``. The conditioning artifact carries them as ``speakers.safetensors`` (numpy,
no torch; byte-identical for the same speakers), with the limits a caller must respect:
the code vocabulary and the longest utterance the DiT's positions allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from omniforge.errors import ArtifactError

SPEAKERS_FILENAME = "speakers.safetensors"
# Fields of one speaker: <name>.<field> in the file.
REFERENCE_MEL, COND, BOS_TOKEN = "ref_mel", "cond", "bos_token"
# The graph limits, in the file's metadata.
LIMITS = ("num_embeds", "max_position_embeddings")


@dataclass(frozen=True)
class Speaker:
    """One voice: the reference mel [frames, mel_dim], ``cond`` [cond_dim], the talker's bos."""

    reference_mel: np.ndarray
    cond: np.ndarray
    bos_token: int


@dataclass(frozen=True)
class SpeakerFile:
    """What ``speakers.safetensors`` holds: the voices by name, and the graph limits."""

    speakers: dict[str, Speaker]
    num_embeds: int
    max_position_embeddings: int


def encode_speakers(file: SpeakerFile) -> bytes:
    """The file's bytes: the same speakers and limits give the same bytes."""
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    for name, speaker in file.speakers.items():
        tensors[f"{name}.{REFERENCE_MEL}"] = np.ascontiguousarray(speaker.reference_mel, np.float32)
        tensors[f"{name}.{COND}"] = np.ascontiguousarray(speaker.cond, np.float32)
        tensors[f"{name}.{BOS_TOKEN}"] = np.asarray(speaker.bos_token, np.int64)
    # Sorted: safetensors writes metadata in the order given.
    metadata = {key: str(getattr(file, key)) for key in sorted(LIMITS)}
    return save(tensors, metadata=metadata)


def decode_speakers(data: bytes, origin: str) -> SpeakerFile:
    """Parse ``data`` (the bytes that were hashed); an ArtifactError names what is wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError, OSError) as err:
        raise ArtifactError(f"{origin}: not a speakers file ({err})") from None
    limits = {}
    for key in LIMITS:
        raw = metadata.get(key)
        if raw is None or not raw.isdigit() or int(raw) < 1:
            raise ArtifactError(f"{origin}: metadata {key} is {raw!r}, not a positive integer")
        limits[key] = int(raw)
    fields: dict[str, dict[str, np.ndarray]] = {}
    for key, array in tensors.items():
        name, _, field = key.rpartition(".")
        if not name or field not in (REFERENCE_MEL, COND, BOS_TOKEN):
            raise ArtifactError(f"{origin}: tensor {key!r} is not <speaker>.ref_mel|cond|bos_token")
        fields.setdefault(name, {})[field] = array
    if not fields:
        raise ArtifactError(f"{origin}: holds no speaker")
    speakers = {name: _speaker(name, found, origin) for name, found in sorted(fields.items())}
    return SpeakerFile(speakers, **limits)


def _metadata(data: bytes) -> dict[str, str]:
    import json

    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    return header.get("__metadata__") or {}


def _speaker(name: str, found: Mapping[str, np.ndarray], origin: str) -> Speaker:
    missing = [f for f in (REFERENCE_MEL, COND, BOS_TOKEN) if f not in found]
    if missing:
        raise ArtifactError(f"{origin}: speaker {name!r} has no {', '.join(missing)}")
    mel, cond, bos = found[REFERENCE_MEL], found[COND], found[BOS_TOKEN]
    if mel.ndim != 2 or mel.dtype != np.float32 or cond.ndim != 1 or cond.dtype != np.float32:
        raise ArtifactError(
            f"{origin}: speaker {name!r}: ref_mel must be float32 [frames, mel] and cond "
            f"float32 [dim], got {mel.dtype} {list(mel.shape)} and {cond.dtype} {list(cond.shape)}"
        )
    if bos.shape != () or not np.issubdtype(bos.dtype, np.integer):
        raise ArtifactError(f"{origin}: speaker {name!r}: bos_token must be one integer")
    if not (np.isfinite(mel).all() and np.isfinite(cond).all()):
        raise ArtifactError(f"{origin}: speaker {name!r} holds NaN or infinite values")
    return Speaker(mel, cond, int(bos))


def speaker_from_arrays(reference_mel: Any, cond: Any, bos_token: int = 0) -> Speaker:
    """A voice of one's own: a reference mel [frames, mel] and ``cond`` [dim]."""
    return Speaker(np.asarray(reference_mel), np.asarray(cond), int(bos_token))
