"""The audio encoder: host chunking, the exported graph, and the whole path against transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_omni import audio_tower

from omniforge.artifacts import MODEL
from omniforge.components import get_component
from omniforge.components.audio_encoder import chunk_frames
from omniforge.errors import ContractError
from omniforge.runtime.audio_encoder import (
    ENCODER_FILENAME,
    AudioEncoder,
    EncoderLimits,
    cut_chunks,
    encoded_frames,
    gather_states,
)
from omniforge.runtime.session import open_unverified_session
from omniforge.sources.pretrained import PretrainedSource
from omniforge.sources.synthetic import SyntheticSource
from omniforge.validate.encoder import EncoderCheck, transformers_states, utterance_frames

LIMITS = EncoderLimits(mel_bins=4, chunk_frames=10)


def features(frames: int, seed: int = 0, bins: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((bins, frames)).astype(np.float32)


def test_utterances_are_cut_as_transformers_cuts_them() -> None:
    chunks = cut_chunks([features(23), features(10, 1), features(3, 2)], LIMITS)
    assert chunks.lengths.tolist() == [10, 10, 3, 10, 3]
    assert chunks.per_utterance == [3, 1, 1]
    assert chunks.features.shape == (5, 4, 10)
    # Each piece in place, zeros after its length.
    np.testing.assert_array_equal(chunks.features[2, :, :3], features(23)[:, 20:])
    assert not chunks.features[2, :, 3:].any()


def test_states_are_gathered_back_per_utterance() -> None:
    chunks = cut_chunks([features(23), features(3, 1)], LIMITS)
    positions = 5
    states = np.arange(len(chunks.lengths) * positions, dtype=np.float32).reshape(-1, positions, 1)
    first, second = gather_states(states, chunks)
    # 10 frames -> 5 states, 3 -> 2: chunk rows 0, 1, 2 then 3.
    assert first[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert second[:, 0].tolist() == [15, 16]
    assert [len(first), len(second)] == [encoded_frames(23, 10), encoded_frames(3, 10)]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ([features(5, bins=3)], r"shape \(3, 5\), expected \[4, frames\]"),
        ([features(0)], "no feature frames"),
        ([np.full((4, 5), np.nan, dtype=np.float32)], "non-finite"),
        ([], "no utterances"),
    ],
)
def test_bad_features_are_named(given: list[np.ndarray], named: str) -> None:
    with pytest.raises(ContractError, match=named):
        cut_chunks(given, LIMITS)


def test_malformed_limits_are_named() -> None:
    from omniforge.errors import ArtifactError

    with pytest.raises(ArtifactError, match="x.json: not an audio encoder's limits"):
        EncoderLimits.from_bytes(b'{"mel_bins": 4}', "x.json")
    assert EncoderLimits.from_bytes(LIMITS.to_bytes(), "x") == LIMITS


def test_inputs_past_a_chunk_are_one_chunk(tiny_source: SyntheticSource) -> None:
    """The graph never takes more than a chunk: a longer length (a benchmark's) is clamped."""
    component, configs = get_component("audio_encoder"), tiny_source.configs
    chunk = chunk_frames(configs.audio)
    longer = component.make_inputs(configs, batch=3, length=chunk + 57, seed=4)
    exact = component.make_inputs(configs, batch=3, length=chunk, seed=4)
    assert longer["input_features"].shape == (3, configs.audio.num_mel_bins, chunk)
    assert longer["chunk_lengths"].tolist() == exact["chunk_lengths"].tolist()
    assert longer["chunk_lengths"][0] == chunk
    np.testing.assert_array_equal(longer["input_features"], exact["input_features"])
    shorter = component.make_inputs(configs, batch=2, length=8, seed=4)
    assert shorter["input_features"].shape[2] == 8


def test_exported_encoder_equals_transformers_on_utterances_of_many_chunks(
    tiny_variants: dict, tiny_source: SyntheticSource
) -> None:
    """Utterances past two chunks, of one, and short, encoded together through the graph,
    equal what transformers' encoder writes before pooling."""
    fp32 = tiny_variants["audio_encoder"]["fp32"]
    figures = EncoderCheck(tiny_source, seed=3).check("fp32", {MODEL: fp32})
    assert figures["chunked_utterance_frames"] == utterance_frames(200)
    assert figures["chunked_cosine"] > 0.999999
    assert figures["chunked_max_abs_error"] < 1e-4
    int8 = EncoderCheck(tiny_source, seed=3).check(
        "int8", {MODEL: tiny_variants["audio_encoder"]["int8"]}
    )
    assert 0.9 < int8["chunked_cosine"] < figures["chunked_cosine"]


def test_encoder_of_a_checkpoint_is_its_tower(
    omni: torch.nn.Module, checkpoint: Path, tmp_path: Path
) -> None:
    """The checkpoint's own tower (16-frame chunks) through an exported graph."""
    from omniforge.components import get_component
    from omniforge.params import ExportParams
    from omniforge.passes.export import export_component

    source = PretrainedSource(checkpoint)
    exported = export_component(get_component("audio_encoder"), source, tmp_path, ExportParams())
    limits = EncoderLimits.from_bytes((exported / ENCODER_FILENAME).read_bytes(), "limits")
    assert limits == EncoderLimits(mel_bins=128, chunk_frames=16)
    utterances = [features(n, seed=n, bins=128) for n in (41, 16, 5)]
    states = AudioEncoder(open_unverified_session(exported), limits).encode(utterances)
    expected = transformers_states(audio_tower(omni).float(), utterances)
    for got, want in zip(states, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
