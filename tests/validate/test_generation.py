"""Generation parity of the tiny KV-cache talker: every variant against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from omniforge.params import TalkerKVParams
from omniforge.sources.synthetic import SyntheticSource
from omniforge.validate.generation import GenerationCheck, first_divergence


@pytest.fixture(scope="module")
def check(tiny_source: SyntheticSource) -> GenerationCheck:
    settings = TalkerKVParams(validate_steps=32, prompt_length=6)
    return GenerationCheck(tiny_source, settings, tiny_source.token2wav_metadata(), seed=1234)


@pytest.mark.parametrize("component", ["talker_kv", "talker_fused"])
@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_generation_through_each_variant(
    tiny_variants: dict, check: GenerationCheck, component: str, variant: str
) -> None:
    figures = check.check(variant, {"model": tiny_variants[component][variant]})
    assert figures["generation_steps"] == 32
    assert figures["generation_token2wav_contract_ok"] is True
    assert len(figures["generation_logits_max_abs_error_per_step"]) == 32
    if variant == "fp32":
        # Greedy codes equal PyTorch's with equal and with unequal (video) position rows.
        assert figures["generation_first_divergence_step"] == -1
        assert figures["generation_mrope_first_divergence_step"] == -1
        assert figures["generation_mrope_forced_min_cosine"] > 0.99999
        assert figures["generation_equal_code_share"] == 1.0
        assert figures["generation_forced_top1_agreement"] == 1.0
        assert figures["generation_logits_max_abs_error"] < 1e-3
    else:
        assert 0.0 <= figures["generation_equal_code_share"] <= 1.0
        assert figures["generation_forced_min_cosine"] > 0.9


def test_first_divergence() -> None:
    same = np.array([[1, 2, 3], [4, 5, 6]])
    assert first_divergence(same, same.copy()) == -1
    other = same.copy()
    other[1, 2] = 9
    assert first_divergence(same, other) == 2
    assert first_divergence(same, same[:, :2]) == 2


def test_a_hybrid_pair_is_checked_as_one_talker(
    tiny_variants: dict, check: GenerationCheck
) -> None:
    variants = tiny_variants["talker_fused"]
    figures = check.check("hybrid", {"prefill": variants["int8"], "decode": variants["int4"]})
    assert figures["generation_steps"] == 32
    assert figures["generation_forced_min_cosine"] > 0.9


def test_video_positions_differ_per_row_and_fit_the_prompt() -> None:
    from omniforge.validate.generation import video_positions

    rows = video_positions(2, 16)
    assert rows.shape == (3, 2, 16)
    assert not np.array_equal(rows[0], rows[1]) and not np.array_equal(rows[1], rows[2])
