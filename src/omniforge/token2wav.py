"""Token2Wav metadata: the contract the talker's generated codec ids must satisfy.

Token2Wav (DiT + BigVGAN) is not exported; its code embedding accepts ids in
``[0, num_embeds)``, so the talker vocabulary must cover that range and the codec control
ids (pad/bos/eos/mask) must lie outside it, to be stripped before synthesis.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omniforge.errors import ContractError, SourceError

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniToken2WavConfig


@dataclass(frozen=True)
class Token2WavMetadata:
    num_embeds: int  # codes 0 .. num_embeds - 1
    mel_dim: int = 80
    repeats: int = 2  # mel frames per code
    origin: str = "config"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive_int(value: Any, field: str, origin: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SourceError(f"{origin}: token2wav field '{field}' must be a positive integer, got {value!r}")
    return value


def from_config(config: Qwen2_5OmniToken2WavConfig, origin: str = "model config") -> Token2WavMetadata:
    dit = config.dit_config
    get = dit.get if isinstance(dit, dict) else lambda key, default=None: getattr(dit, key, default)
    if dit is None or get("num_embeds") is None:
        raise SourceError(f"{origin}: token2wav dit_config.num_embeds is missing")
    return Token2WavMetadata(
        num_embeds=_positive_int(get("num_embeds"), "dit_config.num_embeds", origin),
        mel_dim=_positive_int(get("mel_dim", 80), "dit_config.mel_dim", origin),
        repeats=_positive_int(get("repeats", 2), "dit_config.repeats", origin),
        origin=origin,
    )


def from_json(path: str | Path) -> Token2WavMetadata:
    """Read ``{"num_embeds": ..., "mel_dim": ..., "repeats": ...}`` (or a token2wav config)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"token2wav.metadata: file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SourceError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise SourceError(f"{path}: expected a JSON object")
    raw = raw.get("dit_config", raw)
    unknown = set(raw) - {"num_embeds", "mel_dim", "repeats"}
    if "num_embeds" not in raw:
        raise SourceError(f"{path}: token2wav field 'num_embeds' is missing")
    origin = str(path)
    if unknown and "dit_config" not in json.loads(path.read_text()):
        raise SourceError(f"{path}: unknown token2wav fields {sorted(unknown)}")
    return Token2WavMetadata(
        num_embeds=_positive_int(raw["num_embeds"], "num_embeds", origin),
        mel_dim=_positive_int(raw.get("mel_dim", 80), "mel_dim", origin),
        repeats=_positive_int(raw.get("repeats", 2), "repeats", origin),
        origin=origin,
    )


def check_codec_contract(
    metadata: Token2WavMetadata, talker_vocab: int, control_ids: dict[str, int]
) -> dict[str, Any]:
    """Token2Wav's code range fits the talker vocabulary; control ids lie outside it.

    Raises ContractError naming both sides; returns the checked facts for the metrics.
    """
    if metadata.num_embeds > talker_vocab:
        raise ContractError(
            f"Token2Wav codes [0, {metadata.num_embeds}) ({metadata.origin}) do not fit the "
            f"talker vocabulary of {talker_vocab} logits"
        )
    for name, token_id in control_ids.items():
        if 0 <= token_id < metadata.num_embeds:
            raise ContractError(
                f"codec control id {name}={token_id} lies inside Token2Wav's code range "
                f"[0, {metadata.num_embeds}) ({metadata.origin}): it would be synthesised as audio"
            )
        if not 0 <= token_id < talker_vocab:
            raise ContractError(
                f"codec control id {name}={token_id} lies outside the talker vocabulary "
                f"[0, {talker_vocab}): the talker could never emit it"
            )
    return {
        "token2wav_num_embeds": metadata.num_embeds,
        "talker_vocab": talker_vocab,
        "control_ids": dict(control_ids),
    }
