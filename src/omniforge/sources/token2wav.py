"""Token2Wav metadata: what the talker's generated codec ids must satisfy.

Token2Wav (DiT + BigVGAN) is not exported; its code embedding accepts ids in
``[0, num_embeds)``. This module reads that metadata from wherever a source states it.

The metadata comes from one or more places, each validated on its own:

- a model's ``token2wav_config`` (:func:`from_config`),
- a JSON file: the three fields, a Token2Wav config, or a whole Qwen2.5-Omni ``config.json``
  (:func:`from_json`),
- a PyTorch file such as ``token2wav_int8.pt`` (:func:`from_torch`), read with
  ``weights_only=True``: an explicit ``metadata`` entry, else the shape of the DiT code
  embedding, which has ``num_embeds + 1`` rows.

:func:`reconcile` checks that several of them agree and names both sides when they do not.
The contract itself (codes fit the talker vocabulary) is checked by validate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniforge.errors import ContractError, SourceError

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniToken2WavConfig

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = ("num_embeds", "mel_dim", "repeats")
DEFAULTS: dict[str, int] = {"mel_dim": 80, "repeats": 2}

# Where the DiT code embedding (transformers' ``DiTCodecEmbedding.codec_embed``, an
# ``nn.Embedding(num_embeds + 1, emb_dim)``) sits in a state dict, by what the dict holds:
# the whole Qwen2.5-Omni model, the Token2Wav model, or the DiT alone.
CODEC_EMBED_KEYS: tuple[str, ...] = (
    "token2wav.code2wav_dit_model.text_embed.codec_embed.weight",
    "code2wav_dit_model.text_embed.codec_embed.weight",
    "text_embed.codec_embed.weight",
)
# The DiT's output layer ``proj_out = nn.Linear(hidden, mel_dim)``: its rows are mel_dim.
PROJ_OUT_KEYS: tuple[str, ...] = tuple(
    key.replace("text_embed.codec_embed.weight", "proj_out.weight") for key in CODEC_EMBED_KEYS
)
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin")


@dataclass(frozen=True)
class Token2WavMetadata:
    num_embeds: int  # codes 0 .. num_embeds - 1
    mel_dim: int = 80
    repeats: int = 2  # mel frames per code
    origin: str = "config"
    # The fields this source really states; the others are defaults. Only stated fields
    # are compared by reconcile(): a file that cannot know `repeats` does not disagree.
    stated: tuple[str, ...] = field(default=FIELDS, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "num_embeds": self.num_embeds,
            "mel_dim": self.mel_dim,
            "repeats": self.repeats,
            "origin": self.origin,
        }


def _positive_int(value: Any, field_name: str, origin: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SourceError(
            f"{origin}: token2wav field '{field_name}' must be a positive integer, got {value!r}"
        )
    return value


def _from_fields(values: Mapping[str, Any], origin: str, prefix: str = "") -> Token2WavMetadata:
    """Metadata from a mapping holding ``num_embeds`` and optionally ``mel_dim``/``repeats``."""
    if values.get("num_embeds") is None:
        raise SourceError(f"{origin}: token2wav field '{prefix}num_embeds' is missing")
    stated = tuple(name for name in FIELDS if values.get(name) is not None)
    checked = {
        name: _positive_int(values.get(name, DEFAULTS.get(name)), prefix + name, origin)
        for name in FIELDS
        if name in stated or name in DEFAULTS
    }
    return Token2WavMetadata(**checked, origin=origin, stated=stated)


def from_config(
    config: Qwen2_5OmniToken2WavConfig | Mapping[str, Any],
    origin: str = "model config",
) -> Token2WavMetadata:
    """Metadata from a Token2Wav config (object or dict): its ``dit_config`` fields."""
    dit = config.get("dit_config") if isinstance(config, Mapping) else config.dit_config
    if dit is None:
        raise SourceError(f"{origin}: token2wav_config has no 'dit_config'")
    values = (
        dit if isinstance(dit, Mapping) else {name: getattr(dit, name, None) for name in FIELDS}
    )
    return _from_fields(values, origin, prefix="dit_config.")


def from_mapping(raw: Mapping[str, Any], origin: str) -> Token2WavMetadata:
    """Metadata from parsed JSON: a Qwen2.5-Omni config, a Token2Wav config, or the fields."""
    if "token2wav_config" in raw:
        section = raw["token2wav_config"]
        if not isinstance(section, Mapping):
            raise SourceError(f"{origin}: 'token2wav_config' must be an object")
        return from_config(section, origin)
    if "dit_config" in raw:
        # A Token2Wav config: the DiT config holds many other fields, all ignored here.
        return from_config(raw, origin)
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise SourceError(f"{origin}: unknown token2wav fields {sorted(unknown)} (known: {FIELDS})")
    return _from_fields(raw, origin)


def from_json(path: str | Path) -> Token2WavMetadata:
    """Read ``{"num_embeds": ..., "mel_dim": ..., "repeats": ...}`` or a (token2wav) config."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"token2wav.metadata: file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{path}: expected a JSON object")
    return from_mapping(raw, str(path))


def _first_dim(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) >= 1 else None


def from_state_dict(state: Mapping[str, Any], origin: str) -> Token2WavMetadata:
    """Metadata from a loaded PyTorch file: an explicit ``metadata`` entry or the DiT weights.

    With both, they must agree. The code embedding has ``num_embeds + 1`` rows (the extra row
    is the "dropped code" of classifier-free guidance), the DiT's ``proj_out`` has ``mel_dim``.
    """
    explicit = state.get("metadata")
    if explicit is not None and not isinstance(explicit, Mapping):
        raise SourceError(f"{origin}: 'metadata' must be a mapping, got {type(explicit).__name__}")
    weights = state.get("state_dict", state)
    if not isinstance(weights, Mapping):
        raise SourceError(f"{origin}: 'state_dict' must be a mapping of tensors")
    found: dict[str, int] = {}
    for key in CODEC_EMBED_KEYS:
        rows = _first_dim(weights.get(key))
        if rows is not None:
            if rows < 2:
                raise SourceError(f"{origin}: {key} has {rows} rows, expected num_embeds + 1")
            found["num_embeds"] = rows - 1
            log.debug("%s: num_embeds %d from %s rows", origin, rows - 1, key)
            break
    for key in PROJ_OUT_KEYS:
        rows = _first_dim(weights.get(key))
        if rows is not None:
            found["mel_dim"] = rows
            break

    if explicit is not None:
        metadata = from_mapping(explicit, f"{origin} (metadata)")
        if found:
            # The entry and the weights are two sources in one file: they must agree.
            reconcile([metadata, _from_fields(found, f"{origin} (weights)")])
        return metadata
    if "num_embeds" not in found:
        raise SourceError(
            f"{origin}: no 'metadata' entry and no DiT code embedding "
            f"(looked for {', '.join(CODEC_EMBED_KEYS)}): cannot tell num_embeds"
        )
    return _from_fields(found, origin)


def from_torch(path: str | Path) -> Token2WavMetadata:
    """Read a PyTorch file (e.g. ``token2wav_int8.pt``) with ``weights_only=True``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"token2wav.metadata: file not found: {path}")
    try:
        # mmap: a Token2Wav state dict is hundreds of MB, and only two shapes are needed.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise SourceError(f"{path}: cannot be read with weights_only=True: {err}") from None
        # Files from torch.save's legacy (non-zip) format cannot be memory-mapped.
        state = _load_unmapped(path)
    except Exception as err:  # pickle and zip errors: a broken or untrusted file
        raise SourceError(f"{path}: cannot be read with weights_only=True: {err}") from None
    if not isinstance(state, Mapping):
        raise SourceError(f"{path}: expected a dict (state dict), got {type(state).__name__}")
    return from_state_dict(state, str(path))


def _load_unmapped(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise SourceError(f"{path}: cannot be read with weights_only=True: {err}") from None


def load_metadata(path: str | Path) -> Token2WavMetadata:
    """Metadata from a file, by its suffix: JSON, or a PyTorch file (.pt/.pth/.bin)."""
    path = Path(path)
    if path.suffix == ".json":
        return from_json(path)
    if path.suffix in TORCH_SUFFIXES:
        return from_torch(path)
    raise SourceError(
        f"token2wav.metadata: {path}: unknown file type '{path.suffix}' "
        f"(expected .json or one of {', '.join(TORCH_SUFFIXES)})"
    )


def reconcile(sources: Sequence[Token2WavMetadata]) -> Token2WavMetadata:
    """The first source, once every other source agrees with it on the fields both state.

    Raises ContractError naming the field, both sources and both values.
    """
    if not sources:
        raise SourceError("token2wav: no metadata source given")
    first = sources[0]
    for other in sources[1:]:
        for name in FIELDS:
            if name not in first.stated or name not in other.stated:
                continue
            mine, theirs = getattr(first, name), getattr(other, name)
            if mine != theirs:
                raise ContractError(
                    f"Token2Wav {name} disagrees: {mine} from {first.origin} "
                    f"but {theirs} from {other.origin}"
                )
    # A field only a later source states is taken from it (e.g. mel_dim from the weights).
    merged = {name: getattr(first, name) for name in FIELDS}
    stated = list(first.stated)
    for other in sources[1:]:
        for name in other.stated:
            if name not in stated:
                merged[name] = getattr(other, name)
                stated.append(name)
    origin = " = ".join(s.origin for s in sources)
    return Token2WavMetadata(**merged, origin=origin, stated=tuple(stated))


def resolve_metadata(
    own: Token2WavMetadata | Qwen2_5OmniToken2WavConfig | Mapping[str, Any] | None,
    path: str | Path | None,
    config_origin: str = "model config",
) -> Token2WavMetadata:
    """The Token2Wav metadata for validate: the model's own and/or a file's, reconciled.

    ``own`` is the source's metadata (``PretrainedSource.token2wav_metadata()`` is already
    checked against the stored code embedding) or its Token2Wav config; ``path`` is
    ``token2wav.metadata`` from params (JSON or a PyTorch file).
    """
    sources = []
    if isinstance(own, Token2WavMetadata):
        sources.append(own)
    elif own is not None:
        sources.append(from_config(own, config_origin))
    if path is not None:
        sources.append(load_metadata(path))
    return reconcile(sources)
