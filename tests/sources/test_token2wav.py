"""Token2Wav metadata from a config, a JSON file and a PyTorch file, and their agreement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from omniforge.errors import ContractError, SourceError
from omniforge.sources.token2wav import (
    Token2WavMetadata,
    from_config,
    from_json,
    from_torch,
    load_metadata,
    reconcile,
    resolve_metadata,
)

EMBED_KEY = "code2wav_dit_model.text_embed.codec_embed.weight"
PROJ_OUT_KEY = "code2wav_dit_model.proj_out.weight"


def tiny_token2wav_config(num_embeds: int = 8193, mel_dim: int = 80) -> Any:
    from tiny_omni import tiny_token2wav_config_dict
    from transformers import Qwen2_5OmniToken2WavConfig

    return Qwen2_5OmniToken2WavConfig(**tiny_token2wav_config_dict(num_embeds, mel_dim))


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload))
    return path


# -- from a config -------------------------------------------------------------------------


def test_from_config_object() -> None:
    metadata = from_config(tiny_token2wav_config(num_embeds=8193, mel_dim=80))
    assert (metadata.num_embeds, metadata.mel_dim, metadata.repeats) == (8193, 80, 2)
    assert metadata.origin == "model config"


def test_from_config_dict_states_only_what_it_holds() -> None:
    metadata = from_config({"dit_config": {"num_embeds": 8193}}, "ckpt/config.json")
    assert metadata.stated == ("num_embeds",)
    assert (metadata.mel_dim, metadata.repeats) == (80, 2)  # defaults, not stated


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "no 'dit_config'"),
        ({"dit_config": {"mel_dim": 80}}, "dit_config.num_embeds' is missing"),
        ({"dit_config": {"num_embeds": 0}}, "dit_config.num_embeds' must be a positive integer"),
        ({"dit_config": {"num_embeds": 8193, "repeats": True}}, "dit_config.repeats"),
    ],
)
def test_from_config_rejects(config: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        from_config(config)


# -- from a JSON file ----------------------------------------------------------------------


def test_from_json_fields(tmp_path: Path) -> None:
    path = write_json(tmp_path / "t2w.json", {"num_embeds": 8193, "mel_dim": 80, "repeats": 2})
    metadata = from_json(path)
    assert metadata == Token2WavMetadata(8193, 80, 2, origin=str(path))
    assert metadata.as_dict() == {
        "num_embeds": 8193,
        "mel_dim": 80,
        "repeats": 2,
        "origin": str(path),
    }


def test_from_json_token2wav_config_and_whole_model_config(tmp_path: Path) -> None:
    dit = tiny_token2wav_config(num_embeds=4097).to_dict()
    assert from_json(write_json(tmp_path / "t2w.json", dit)).num_embeds == 4097
    whole = {"model_type": "qwen2_5_omni", "token2wav_config": dit}
    assert from_json(write_json(tmp_path / "config.json", whole)).num_embeds == 4097


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"num_embeds": 8193, "n_mels": 80}, r"unknown token2wav fields \['n_mels'\]"),
        ({"mel_dim": 80}, "'num_embeds' is missing"),
        ({"num_embeds": "8193"}, "'num_embeds' must be a positive integer"),
        ([8193], "expected a JSON object"),
    ],
)
def test_from_json_rejects(tmp_path: Path, payload: Any, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        from_json(write_json(tmp_path / "t2w.json", payload))


def test_from_json_unreadable(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file not found"):
        from_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{num_embeds: 1")
    with pytest.raises(SourceError, match="not valid JSON"):
        from_json(tmp_path / "bad.json")


# -- from a PyTorch file -------------------------------------------------------------------


def test_from_torch_real_token2wav_state_dict(tmp_path: Path) -> None:
    # The real transformers module: its DiT code embedding has num_embeds + 1 rows.
    from transformers import Qwen2_5OmniToken2WavModel

    model = Qwen2_5OmniToken2WavModel(tiny_token2wav_config(num_embeds=8193, mel_dim=80))
    state = model.state_dict()
    assert state[EMBED_KEY].shape[0] == 8194
    path = tmp_path / "token2wav.pt"
    torch.save(state, path)
    metadata = from_torch(path)
    assert (metadata.num_embeds, metadata.mel_dim) == (8193, 80)
    assert metadata.stated == ("num_embeds", "mel_dim")  # repeats is not in the weights


def test_from_torch_int8_embedding_under_state_dict(tmp_path: Path) -> None:
    # A quantized file: the int8 embedding keeps its shape.
    path = tmp_path / "token2wav_int8.pt"
    embed = torch.zeros(8194, 16, dtype=torch.int8)
    torch.save({"state_dict": {f"token2wav.{EMBED_KEY}": embed}}, path)
    assert from_torch(path).num_embeds == 8193


def test_from_torch_explicit_metadata(tmp_path: Path) -> None:
    path = tmp_path / "token2wav_int8.pt"
    torch.save({"metadata": {"num_embeds": 8193, "mel_dim": 80, "repeats": 2}}, path)
    metadata = from_torch(path)
    assert (metadata.num_embeds, metadata.mel_dim, metadata.repeats) == (8193, 80, 2)
    assert str(path) in metadata.origin


def test_from_torch_metadata_disagreeing_with_its_weights(tmp_path: Path) -> None:
    path = tmp_path / "token2wav_int8.pt"
    torch.save({"metadata": {"num_embeds": 8193}, EMBED_KEY: torch.zeros(4097, 4)}, path)
    with pytest.raises(ContractError) as err:
        from_torch(path)
    message = str(err.value)
    assert "8193" in message and "4096" in message
    assert "(metadata)" in message and "(weights)" in message


def test_from_torch_without_metadata_or_embedding(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"something.weight": torch.zeros(3)}, path)
    with pytest.raises(SourceError, match="cannot tell num_embeds"):
        from_torch(path)


class NotAllowed:
    """Not a tensor or plain container: weights_only=True refuses to unpickle it."""


def test_from_torch_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"metadata": NotAllowed()}, path)
    with pytest.raises(SourceError, match="weights_only=True"):
        from_torch(path)


def test_load_metadata_by_suffix(tmp_path: Path) -> None:
    torch.save({EMBED_KEY: torch.zeros(8194, 4)}, tmp_path / "t2w.pt")
    write_json(tmp_path / "t2w.json", {"num_embeds": 8193})
    assert load_metadata(tmp_path / "t2w.pt").num_embeds == 8193
    assert load_metadata(tmp_path / "t2w.json").num_embeds == 8193
    with pytest.raises(SourceError, match="unknown file type '.yaml'"):
        load_metadata(tmp_path / "t2w.yaml")


# -- several sources -----------------------------------------------------------------------


def test_reconcile_agreeing_sources_fills_unstated_fields(tmp_path: Path) -> None:
    config = from_config({"dit_config": {"num_embeds": 8193, "repeats": 2}}, "config.json")
    torch.save(
        {EMBED_KEY: torch.zeros(8194, 4), PROJ_OUT_KEY: torch.zeros(100, 4)}, tmp_path / "a.pt"
    )
    merged = reconcile([config, from_torch(tmp_path / "a.pt")])
    assert (merged.num_embeds, merged.mel_dim, merged.repeats) == (8193, 100, 2)
    assert "config.json" in merged.origin and "a.pt" in merged.origin


def test_reconcile_names_both_sources_and_values(tmp_path: Path) -> None:
    config = from_config(
        tiny_token2wav_config(num_embeds=8193), "ckpt/config.json token2wav_config"
    )
    torch.save({EMBED_KEY: torch.zeros(6562, 4)}, tmp_path / "token2wav_int8.pt")
    with pytest.raises(ContractError) as err:
        reconcile([config, from_torch(tmp_path / "token2wav_int8.pt")])
    message = str(err.value)
    assert "num_embeds" in message
    assert "8193" in message and "ckpt/config.json token2wav_config" in message
    assert "6561" in message and "token2wav_int8.pt" in message


def test_reconcile_ignores_fields_a_source_does_not_state(tmp_path: Path) -> None:
    # The .pt file cannot know `repeats`: its default must not count as a disagreement.
    config = from_config({"dit_config": {"num_embeds": 8193, "repeats": 3}}, "config.json")
    torch.save({EMBED_KEY: torch.zeros(8194, 4)}, tmp_path / "a.pt")
    assert reconcile([config, from_torch(tmp_path / "a.pt")]).repeats == 3


def test_resolve_metadata_for_validate(tmp_path: Path) -> None:
    config = tiny_token2wav_config(num_embeds=8193)
    assert resolve_metadata(config, None).num_embeds == 8193
    write_json(tmp_path / "t2w.json", {"num_embeds": 8193, "mel_dim": 80})
    assert resolve_metadata(config, tmp_path / "t2w.json").num_embeds == 8193
    write_json(tmp_path / "other.json", {"num_embeds": 4096})
    with pytest.raises(ContractError, match="4096"):
        resolve_metadata(config, tmp_path / "other.json")
    assert resolve_metadata(None, tmp_path / "other.json").num_embeds == 4096


def test_resolve_metadata_takes_a_sources_own_metadata(tmp_path: Path) -> None:
    own = Token2WavMetadata(8193, origin="ckpt/config.json token2wav_config")
    torch.save({EMBED_KEY: torch.zeros(8194, 4)}, tmp_path / "token2wav_int8.pt")
    merged = resolve_metadata(own, tmp_path / "token2wav_int8.pt")
    assert merged.num_embeds == 8193 and "token2wav_int8.pt" in merged.origin
