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
# Tensors of the file: speaker.<name>.<field> and limit.<name> (int64 scalars). Not
# safetensors' metadata: it is written in hash-map order, and the bytes must reproduce.
SPEAKER, LIMIT = "speaker", "limit"
REFERENCE_MEL, COND, BOS_TOKEN = "ref_mel", "cond", "bos_token"
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

    tensors = {f"{LIMIT}.{key}": np.asarray(getattr(file, key), np.int64) for key in LIMITS}
    for name, speaker in file.speakers.items():
        prefix = f"{SPEAKER}.{name}"
        tensors[f"{prefix}.{REFERENCE_MEL}"] = np.ascontiguousarray(
            speaker.reference_mel, np.float32
        )
        tensors[f"{prefix}.{COND}"] = np.ascontiguousarray(speaker.cond, np.float32)
        tensors[f"{prefix}.{BOS_TOKEN}"] = np.asarray(speaker.bos_token, np.int64)
    return save(tensors)


def decode_speakers(data: bytes, origin: str) -> SpeakerFile:
    """Parse ``data`` (the bytes that were hashed); an ArtifactError names what is wrong."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError, KeyError, TypeError) as err:
        # KeyError: a dtype numpy has no type for (bf16).
        raise ArtifactError(f"{origin}: not a speakers file ({err!r})") from None
    limits = {}
    for key in LIMITS:
        value = tensors.pop(f"{LIMIT}.{key}", None)
        if value is None or value.shape != () or not np.issubdtype(value.dtype, np.integer):
            raise ArtifactError(f"{origin}: no limit.{key} (an integer)")
        if int(value) < 1:
            raise ArtifactError(f"{origin}: limit.{key} is {int(value)}, not positive")
        limits[key] = int(value)
    fields: dict[str, dict[str, np.ndarray]] = {}
    for key, array in tensors.items():
        kind, _, rest = key.partition(".")
        name, _, field = rest.rpartition(".")
        if kind != SPEAKER or not name or field not in (REFERENCE_MEL, COND, BOS_TOKEN):
            raise ArtifactError(
                f"{origin}: tensor {key!r} is not speaker.<name>.ref_mel|cond|bos_token"
            )
        fields.setdefault(name, {})[field] = array
    if not fields:
        raise ArtifactError(f"{origin}: holds no speaker")
    speakers = {name: _speaker(name, found, origin) for name, found in sorted(fields.items())}
    return SpeakerFile(speakers, **limits)


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
