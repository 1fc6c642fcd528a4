"""Speakers: a checkpoint's ``spk_dict.pt`` read safely and checked; synthetic voices seeded;
both become ``speakers.safetensors`` byte for byte the same from the same input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_omni import tiny_speakers

from omniforge.errors import ArtifactError, SourceError
from omniforge.runtime.speakers import decode_speakers, encode_speakers
from omniforge.sources.pretrained import PretrainedSource
from omniforge.sources.synthetic import SyntheticSource


def test_a_checkpoints_speakers_are_read_as_it_ships_them(
    omni: torch.nn.Module, checkpoint: Path
) -> None:
    source = PretrainedSource(checkpoint)
    read = source.speakers()
    shipped = tiny_speakers(omni)
    assert sorted(read.speakers) == ["Chelsie", "Ethan"]
    for name, voice in read.speakers.items():
        np.testing.assert_array_equal(voice.cond, shipped[name]["cond"][0].numpy())
        np.testing.assert_array_equal(voice.reference_mel, shipped[name]["ref_mel"][0].numpy())
        assert voice.bos_token == shipped[name]["bos_token"]
    assert read.num_embeds == 8193 and read.max_position_embeddings == 32768
    # The record hashes the speaker file with the weights.
    assert source.record()["speakers"]["name"] == "spk_dict.pt"
    again = decode_speakers(encode_speakers(read), "again")
    assert encode_speakers(again) == encode_speakers(read)


def test_synthetic_voices_are_seeded_and_reproduce_byte_for_byte() -> None:
    first = encode_speakers(SyntheticSource("tiny", seed=0).speakers())
    assert first == encode_speakers(SyntheticSource("tiny", seed=0).speakers())
    assert first != encode_speakers(SyntheticSource("tiny", seed=1).speakers())


class NotATensor:
    pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no spk_dict.pt: a checkpoint with audio output ships its speakers there"),
        ([1, 2], "expected a dict of speakers by name, got list"),
        ({"Chelsie": {"cond": torch.zeros(1, 16), "bos_token": 1}}, "ref_mel must be a float"),
        (
            {
                "Chelsie": {
                    "cond": torch.zeros(1, 15),
                    "ref_mel": torch.zeros(1, 9, 80),
                    "bos_token": 1,
                }
            },
            r"cond must be \[1, 16\], got \[1, 15\]",
        ),
        (
            {
                "Chelsie": {
                    "cond": torch.zeros(1, 16),
                    "ref_mel": torch.zeros(9, 80),
                    "bos_token": 1,
                }
            },
            r"ref_mel must be \[1, frames, 80\], got \[9, 80\]",
        ),
        (
            {
                "Chelsie": {
                    "cond": torch.zeros(1, 16),
                    "ref_mel": torch.zeros(1, 9, 80),
                    "bos_token": "x",
                }
            },
            "bos_token must be an integer",
        ),
        (
            {
                "Che.lsie": {
                    "cond": torch.zeros(1, 16),
                    "ref_mel": torch.zeros(1, 9, 80),
                    "bos_token": 1,
                }
            },
            "without '.'",
        ),
        (
            {
                "Chelsie": {
                    "cond": torch.full((1, 16), float("nan")),
                    "ref_mel": torch.zeros(1, 9, 80),
                    "bos_token": 1,
                }
            },
            "cond holds NaN or infinite values",
        ),
        ({"Chelsie": NotATensor()}, "not a speaker file torch loads safely"),
        (b"not a torch file", "not a speaker file torch loads safely"),
    ],
)
def test_a_speaker_file_that_is_not_what_a_checkpoint_ships_is_named(
    checkpoint: Path, tmp_path: Path, content: object, message: str
) -> None:
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for item in checkpoint.iterdir():
        if item.name != "spk_dict.pt":
            os.symlink(item, copy / item.name)
    if isinstance(content, bytes):
        (copy / "spk_dict.pt").write_bytes(content)
    elif content is not None:
        torch.save(content, copy / "spk_dict.pt")
    with pytest.raises(SourceError, match=message):
        PretrainedSource(copy).speakers()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda data: data[:40], "not a speakers file"),
        (lambda data: b"\x00" * len(data), "not a speakers file"),
    ],
)
def test_a_damaged_speakers_file_is_named(mutate, message: str) -> None:
    data = encode_speakers(SyntheticSource("tiny", seed=0).speakers())
    with pytest.raises(ArtifactError, match=message):
        decode_speakers(mutate(data), "speakers.safetensors")


def test_a_speakers_file_of_a_dtype_numpy_lacks_is_named() -> None:
    from safetensors.torch import save

    data = save({"speaker.Chelsie.cond": torch.zeros(16, dtype=torch.bfloat16)})
    with pytest.raises(ArtifactError, match="not a speakers file"):
        decode_speakers(data, "speakers.safetensors")
