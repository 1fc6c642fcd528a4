"""The talker KV-cache graph (tiny preset): I/O, dynamic dims, prefill and decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import thinker_states

from omniforge.artifacts import graph_signature
from omniforge.components import get_component
from omniforge.components.talker_kv import add_codec_embeddings
from omniforge.runtime.session import open_unverified_session
from omniforge.runtime.talker import open_unverified_talker
from omniforge.sources.synthetic import SyntheticSource
from omniforge.talker_io import NO_CODEC, mrope_positions, past_names, prompt_codec_ids
from omniforge.validate.parity import compare, run_onnx, run_torch


@pytest.fixture(scope="module")
def talker(tiny_source: SyntheticSource) -> torch.nn.Module:
    return tiny_source.talker()


def test_io_names_and_dynamic_axes(
    kv_variants: dict[str, Path], tiny_source: SyntheticSource
) -> None:
    component = get_component("talker_kv")
    assert component.graph_kind == "kv-cache"
    configs = tiny_source.configs
    signature = graph_signature(kv_variants["fp32"])
    inputs = {v["name"]: v["shape"] for v in signature["inputs"]}
    outputs = {v["name"]: v["shape"] for v in signature["outputs"]}
    assert list(inputs) == list(component.input_axes(configs))
    assert list(outputs) == list(component.output_axes(configs))
    assert list(outputs)[1:] == [
        "present.0.key",
        "present.0.value",
        "present.1.key",
        "present.1.value",
    ]
    for name, axes in component.input_axes(configs).items():
        for axis in axes:
            assert isinstance(inputs[name][axis], str), (name, inputs[name])
    assert inputs["past_key_values.0.key"][1:] == [2, "past_sequence_length", 8]
    assert inputs["inputs_embeds"][-1] == 64
    assert outputs["logits"][-1] == 8448


@pytest.mark.parametrize(("batch", "length"), [(2, 16), (3, 7), (1, 2)])
def test_make_inputs_parity(
    kv_variants: dict[str, Path], tiny_source: SyntheticSource, batch: int, length: int
) -> None:
    """What validate's generic parity does, on shapes that differ in every dynamic dim."""
    component = get_component("talker_kv")
    inputs = component.make_inputs(tiny_source.configs, batch, length, seed=3)
    names = list(component.output_axes(tiny_source.configs))
    reference = run_torch(component.build_module(tiny_source), inputs, names)
    outputs = run_onnx(open_unverified_session(kv_variants["fp32"]), inputs)
    past = length // 2 + 2
    assert outputs["present.1.value"].shape == (batch, 2, past + length, 8)
    for name in names:
        figures = compare(reference[name], outputs[name], name == "logits")
        assert figures["max_abs_error"] < 1e-4, (name, figures)


def test_prefill_with_empty_past_then_decode_steps_match_torch(
    kv_variants: dict[str, Path], talker: torch.nn.Module
) -> None:
    """Past 0 for the prefill, seq 1 and batch 1 for decode: sizes the export never saw."""
    runtime = open_unverified_talker(kv_variants["fp32"], threads=1)
    prompt, reply = thinker_states(batch=1, prompt=5, reply=3, seed=1)
    codes = np.array([[17], [4242], [8000]])

    full_embeds = np.concatenate([prompt, reply], axis=1)
    full_ids = np.concatenate([prompt_codec_ids(1, 5), codes.T], axis=1)
    with torch.inference_mode():
        embeds = add_codec_embeddings(
            talker, torch.from_numpy(full_embeds), torch.from_numpy(full_ids)
        )
        # The transformers talker over the whole sequence, no cache: what the steps must rebuild.
        expected = talker(
            inputs_embeds=embeds,
            position_ids=torch.from_numpy(mrope_positions(1, 8, 0)),
            use_cache=False,
        ).logits.numpy()

    logits, cache = runtime.forward(prompt, prompt_codec_ids(1, 5), runtime.empty_cache(1))
    assert cache.length == 5
    np.testing.assert_allclose(logits, expected[:, :5], atol=1e-4)
    for step in range(3):
        logits, cache = runtime.forward(reply[:, step : step + 1], codes[step][None], cache)
        np.testing.assert_allclose(logits[:, 0], expected[:, 5 + step], atol=1e-4)
    assert cache.length == 8
    keys = cache.numpy()[1][0]
    assert keys.shape == (1, 2, 8, 8)


def test_no_codec_positions_add_nothing(
    kv_variants: dict[str, Path], tiny_source: SyntheticSource
) -> None:
    """codec_ids < 0 is "no codec embedding": the same as the full-sequence talker's input."""
    component = get_component("talker_kv")
    inputs = component.make_inputs(tiny_source.configs, 2, 4, seed=0)
    inputs["codec_ids"][:] = NO_CODEC
    module = component.build_module(tiny_source)
    with torch.inference_mode():
        logits = module(**{k: torch.from_numpy(v) for k, v in inputs.items()})[0].numpy()
        names = past_names(2)
        plain = module(
            torch.from_numpy(inputs["inputs_embeds"]),
            torch.full((2, 4), -7),
            torch.from_numpy(inputs["position_ids"]),
            *(torch.from_numpy(inputs[n]) for n in names),
        )[0].numpy()
    np.testing.assert_array_equal(logits, plain)
    outputs = run_onnx(open_unverified_session(kv_variants["fp32"]), inputs)
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)


def test_benchmark_cases_are_decode_steps(tiny_source: SyntheticSource) -> None:
    cases = get_component("talker_kv").benchmark_cases(tiny_source.configs, 1, [4, 32], seed=0)
    assert [c.label for c in cases] == ["past=4", "past=32"]
    assert cases[1].inputs["inputs_embeds"].shape == (1, 1, 64)
    assert cases[1].inputs["past_key_values.1.value"].shape == (1, 2, 32, 8)
    assert cases[1].inputs["position_ids"].tolist() == [[[32]]] * 3
