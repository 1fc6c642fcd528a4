"""The audio encoder without torch: the host cuts features into chunks, one graph runs them.

transformers' encoder cuts each utterance's Whisper features into chunks of ``2 * n_window``
frames (2 s), attends within each chunk only, and concatenates every chunk's valid frames
(one per two feature frames). The exported graph runs a padded batch of chunks; this module
does the cutting and the gathering, for any number of utterances of any lengths at once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from omniforge.errors import ArtifactError, ContractError

# What the artifact carries beside its graph: the limits the host chunking needs.
ENCODER_FILENAME = "audio_encoder.json"


@dataclass(frozen=True)
class EncoderLimits:
    mel_bins: int
    # Feature frames per chunk (transformers' 2 * n_window): 200, two seconds.
    chunk_frames: int

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> EncoderLimits:
        try:
            raw = json.loads(data)
            limits = cls(mel_bins=int(raw["mel_bins"]), chunk_frames=int(raw["chunk_frames"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ArtifactError(f"{where}: not an audio encoder's limits ({err})") from None
        if limits.mel_bins < 1 or limits.chunk_frames < 2:
            raise ArtifactError(f"{where}: limits out of range: {limits}")
        return limits


def encoded_frames(feature_frames: int, chunk_frames: int) -> int:
    """How many encoder states an utterance of ``feature_frames`` gives: each chunk's
    stride-2 conv keeps (length - 1) // 2 + 1 frames."""
    full, tail = divmod(feature_frames, chunk_frames)
    return full * ((chunk_frames - 1) // 2 + 1) + ((tail - 1) // 2 + 1 if tail else 0)


@dataclass(frozen=True)
class Chunks:
    """A padded batch of chunks and how to put their outputs back into utterances."""

    features: np.ndarray  # [chunks, mel_bins, longest chunk]
    lengths: np.ndarray  # [chunks] int64: valid frames of each
    per_utterance: list[int]  # how many chunks each utterance has, in order


def cut_chunks(utterances: list[np.ndarray], limits: EncoderLimits) -> Chunks:
    """Each utterance's features [mel_bins, frames] cut into chunks of ``chunk_frames`` (the
    last one shorter), all right-padded with zeros to the longest: transformers' cutting."""
    if not utterances:
        raise ContractError("audio encoder: no utterances to encode")
    pieces: list[np.ndarray] = []
    per_utterance = []
    for index, features in enumerate(utterances):
        if features.ndim != 2 or features.shape[0] != limits.mel_bins:
            raise ContractError(
                f"audio encoder: utterance {index} has features of shape {features.shape}, "
                f"expected [{limits.mel_bins}, frames]"
            )
        if features.shape[1] == 0:
            raise ContractError(f"audio encoder: utterance {index} has no feature frames")
        if not np.isfinite(features).all():
            raise ContractError(f"audio encoder: utterance {index} has non-finite features")
        starts = range(0, features.shape[1], limits.chunk_frames)
        pieces += [features[:, start : start + limits.chunk_frames] for start in starts]
        per_utterance.append(len(starts))
    longest = max(piece.shape[1] for piece in pieces)
    padded = np.zeros((len(pieces), limits.mel_bins, longest), dtype=np.float32)
    for row, piece in enumerate(pieces):
        padded[row, :, : piece.shape[1]] = piece
    lengths = np.array([piece.shape[1] for piece in pieces], dtype=np.int64)
    return Chunks(padded, lengths, per_utterance)


def gather_states(states: np.ndarray, chunks: Chunks) -> list[np.ndarray]:
    """The graph's per-chunk states [chunks, positions, d_model] back into utterances, valid
    frames only, in order: [encoded frames, d_model] each."""
    valid = (chunks.lengths - 1) // 2 + 1
    rows = [states[row, :count] for row, count in enumerate(valid)]
    out, start = [], 0
    for count in chunks.per_utterance:
        out.append(np.concatenate(rows[start : start + count], axis=0))
        start += count
    return out


class AudioEncoder:
    """Whisper features in, the encoder states the projection reads out, per utterance."""

    def __init__(self, session: Any, limits: EncoderLimits) -> None:
        self.session = session
        self.limits = limits

    def encode(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        """States [encoded frames, d_model] for each utterance's features [mel_bins, frames]."""
        chunks = cut_chunks(utterances, self.limits)
        (states,) = self.session.run(
            None, {"input_features": chunks.features, "chunk_lengths": chunks.lengths}
        )
        return gather_states(states, chunks)
