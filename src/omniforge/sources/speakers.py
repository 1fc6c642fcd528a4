"""The speakers of a model source: a checkpoint's ``spk_dict.pt``, or seeded synthetic voices.

Either way they become the conditioning artifact's ``speakers.safetensors``
(:mod:`omniforge.runtime.speakers`), with the Token2Wav limits of the source's config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from omniforge.errors import SourceError
from omniforge.runtime.speakers import Speaker, SpeakerFile

if TYPE_CHECKING:
    from omniforge.sources.base import ModelConfigs

SPEAKER_DICT = "spk_dict.pt"
# The voices a Qwen2.5-Omni checkpoint ships; synthetic sources get seeded ones by these names.
SYNTHETIC_SPEAKERS = ("Chelsie", "Ethan")
# A reference mel of about 3 s: log-mel magnitudes around where a real one lies.
SYNTHETIC_REFERENCE_FRAMES = 300
SYNTHETIC_MEL_MEAN = -4.0


def speaker_file(configs: ModelConfigs, speakers: dict[str, Speaker]) -> SpeakerFile:
    dit = configs.token2wav.dit_config
    return SpeakerFile(
        speakers=speakers,
        num_embeds=int(dit.num_embeds),
        max_position_embeddings=int(dit.max_position_embeddings),
    )


def synthetic_speakers(configs: ModelConfigs, seed: int) -> SpeakerFile:
    """Seeded voices, one stream each, so adding a name keeps the others' bytes."""
    dit = configs.token2wav.dit_config
    speakers = {}
    for index, name in enumerate(SYNTHETIC_SPEAKERS):
        rng = np.random.default_rng([seed, 4, index])
        shape = (SYNTHETIC_REFERENCE_FRAMES, dit.mel_dim)
        speakers[name] = Speaker(
            reference_mel=rng.standard_normal(shape, dtype=np.float32) + SYNTHETIC_MEL_MEAN,
            cond=rng.standard_normal(dit.enc_emb_dim, dtype=np.float32),
            bos_token=int(configs.talker.tts_text_start_token_id),
        )
    return speaker_file(configs, speakers)


def read_speaker_dict(path: Path, configs: ModelConfigs) -> SpeakerFile:
    """A checkpoint's ``spk_dict.pt``, read with ``weights_only=True``, checked against the
    source's config: per name ``ref_mel`` [1, frames, mel_dim], ``cond`` [1, enc_emb_dim] and
    an integer ``bos_token``. Anything else is a SourceError naming the key."""
    import pickle

    import torch

    if not path.is_file():
        raise SourceError(
            f"{path}: no {SPEAKER_DICT}: a checkpoint with audio output ships its speakers there"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SourceError(f"{path}: not a speaker file torch loads safely ({first})") from None
    if not isinstance(raw, Mapping) or not raw:
        raise SourceError(f"{path}: expected a dict of speakers by name, got {type(raw).__name__}")
    dit = configs.token2wav.dit_config
    speakers = {}
    for name, entry in raw.items():
        where = f"{path}: speaker {name!r}"
        if not isinstance(name, str) or not name or "." in name:
            raise SourceError(f"{where}: a speaker's name must be a non-empty string without '.'")
        if not isinstance(entry, Mapping):
            raise SourceError(f"{where}: expected a dict, got {type(entry).__name__}")
        mel = _tensor(entry, "ref_mel", where, (1, None, dit.mel_dim))
        cond = _tensor(entry, "cond", where, (1, dit.enc_emb_dim))
        bos = entry.get("bos_token")
        if isinstance(bos, torch.Tensor) and bos.numel() == 1:
            bos = bos.item()
        if isinstance(bos, bool) or not isinstance(bos, int):
            raise SourceError(f"{where}: bos_token must be an integer, got {bos!r}")
        speakers[name] = Speaker(mel[0], cond[0], bos)
    return speaker_file(configs, speakers)


def _tensor(
    entry: Mapping[str, Any], key: str, where: str, shape: tuple[int | None, ...]
) -> np.ndarray:
    import torch

    value = entry.get(key)
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise SourceError(f"{where}: {key} must be a float tensor, got {type(value).__name__}")
    fits = value.dim() == len(shape) and all(
        want is None or got == want for got, want in zip(value.shape, shape, strict=True)
    )
    expected = "[" + ", ".join("frames" if d is None else str(d) for d in shape) + "]"
    if not fits or value.numel() == 0:
        raise SourceError(f"{where}: {key} must be {expected}, got {list(value.shape)}")
    array = value.detach().float().numpy()
    if not np.isfinite(array).all():
        raise SourceError(f"{where}: {key} holds NaN or infinite values")
    return np.ascontiguousarray(array)
