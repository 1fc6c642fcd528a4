"""The fused talker graph in the runtime: one cache buffer per layer, written in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import thinker_states

from omniforge.reference import torch_generate_codes
from omniforge.runtime import GenerationConfig, OnnxTalker
from omniforge.runtime.talker import open_unverified_talker
from omniforge.sources.synthetic import SyntheticSource
from omniforge.talker_io import step_inputs


@pytest.fixture(scope="module")
def talker(tiny_source: SyntheticSource) -> torch.nn.Module:
    return tiny_source.talker()


@pytest.fixture(scope="module")
def fused(tiny_variants: dict) -> OnnxTalker:
    return open_unverified_talker(tiny_variants["talker_fused"]["fp32"], threads=1)


def test_greedy_codes_equal_pytorchs_through_a_shared_buffer(
    fused: OnnxTalker, talker: torch.nn.Module
) -> None:
    assert fused.layout.fused
    prompt, reply = thinker_states(batch=2, prompt=7, reply=5, seed=4)
    config = GenerationConfig(max_new_tokens=40, min_new_tokens=40, code_limit=8193)
    ours = fused.generate(prompt, reply, config, return_logits=True)
    reference = torch_generate_codes(talker, prompt, reply, config, return_logits=True)
    np.testing.assert_array_equal(ours.codes, reference.codes)
    np.testing.assert_allclose(ours.logits, reference.logits, atol=1e-4)
    forced = fused.score(prompt, reply, reference.codes)
    np.testing.assert_allclose(forced, reference.logits, atol=1e-4)


def test_a_decode_step_writes_the_buffer_in_place(fused: OnnxTalker) -> None:
    prompt, reply = thinker_states(batch=1, prompt=4, reply=2, seed=1)
    cache = fused.empty_cache(1, capacity=8)
    buffers = [b.ctypes.data for b in cache.buffers]
    _, cache = fused.forward(prompt, np.full((1, 4), -1), cache)
    _, cache = fused.forward(reply[:, :1], np.array([[17]]), cache)
    assert cache.length == 5 and cache.capacity == 8
    assert [b.ctypes.data for b in cache.buffers] == buffers, "no copy, no new buffer"
    assert np.abs(cache.buffers[0][:, :, :5]).sum() > 0
    assert not cache.buffers[0][:, :, 5:].any(), "positions past the cache stay untouched"
    keys = cache.numpy()[0][0]
    assert keys.shape == (1, 2, 5, 8)


def test_a_generation_longer_than_the_cache_limit_is_refused(tiny_variants: dict) -> None:
    small = open_unverified_talker(
        tiny_variants["talker_fused"]["fp32"], threads=1, max_cache_length=16
    )
    prompt, reply = thinker_states(batch=1, prompt=6, reply=2)
    with pytest.raises(
        ValueError, match="would need 26 positions, more than this talker's max_cache_length of 16"
    ):
        small.generate(prompt, reply, GenerationConfig(max_new_tokens=20))
    assert small.generate(prompt, reply, GenerationConfig(max_new_tokens=10)).steps <= 10


def test_a_prompt_continuing_a_cache_needs_batch_one(fused: OnnxTalker) -> None:
    prompt, _ = thinker_states(batch=2, prompt=4, reply=2)
    first = fused.empty_cache(2, capacity=12)
    _, first = fused.forward(prompt, np.full((2, 4), -1), first)
    with pytest.raises(ValueError, match="needs batch 1 in a fused graph"):
        fused.forward(prompt, np.full((2, 4), -1), first)


def test_a_prefill_and_a_decode_graph_generate_as_one_talker(
    tiny_variants: dict, talker: torch.nn.Module
) -> None:
    variants = tiny_variants["talker_fused"]
    pair = open_unverified_talker(variants["int4"], threads=1, prefill=variants["int8"])
    prompt, reply = thinker_states(batch=2, prompt=6, reply=3, seed=2)
    config = GenerationConfig(max_new_tokens=24, min_new_tokens=24, code_limit=8193)
    codes = pair.generate(prompt, reply, config).codes
    reference = torch_generate_codes(talker, prompt, reply, config).codes
    assert codes.shape == reference.shape
    assert (codes == reference).mean() > 0.5  # int8 prompt, int4 codes: close, not equal


@pytest.mark.parametrize("component", ["talker_kv", "talker_fused"])
def test_a_pair_times_a_prompt_on_its_prefill_graph_and_a_step_on_its_decode_graph(
    tiny_variants: dict, component: str
) -> None:
    variants = tiny_variants[component]
    pair = open_unverified_talker(variants["int4"], threads=1, prefill=variants["int8"])
    prompt = step_inputs(pair.layout.dims, 1, 8, 0, seed=3)
    step = step_inputs(pair.layout.dims, 1, 1, 8, seed=4)
    assert pair.timed_step(prompt).session is pair.prefill_session
    assert pair.timed_step(step).session is pair.session


def test_a_pair_must_share_one_cache_layout(tiny_variants: dict) -> None:
    from omniforge.errors import ContractError

    with pytest.raises(ContractError, match="do not share one cache layout"):
        open_unverified_talker(
            tiny_variants["talker_fused"]["int4"], prefill=tiny_variants["talker_kv"]["int8"]
        )


def test_a_plain_past_moves_into_a_buffer(fused: OnnxTalker, kv_variants: dict[str, Path]) -> None:
    """A cache from a plain graph (or numpy) continues in a fused graph's buffer."""
    plain = open_unverified_talker(kv_variants["fp32"], threads=1)
    prompt, reply = thinker_states(batch=1, prompt=5, reply=4, seed=9)
    _, past = plain.forward(prompt, np.full((1, 5), -1), plain.empty_cache(1))
    config = GenerationConfig(max_new_tokens=6, min_new_tokens=6)
    via_fused = fused.generate(prompt, reply, config, past=past.numpy()).codes
    via_plain = plain.generate(prompt, reply, config, past=past).codes
    np.testing.assert_array_equal(via_fused, via_plain)
