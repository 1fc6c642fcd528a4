"""Generation parity of the tiny KV-cache talker: every variant against PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest

from omniforge.params import TalkerKVParams
from omniforge.sources.synthetic import SyntheticSource
from omniforge.validate.generation import GenerationCheck, first_divergence


@pytest.fixture(scope="module")
def check(tiny_source: SyntheticSource) -> GenerationCheck:
    settings = TalkerKVParams(validate_steps=32, prompt_length=6)
    return GenerationCheck(tiny_source, settings, tiny_source.token2wav_metadata(), seed=1234)


@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_generation_through_each_variant(
    kv_variants: dict[str, Path], check: GenerationCheck, variant: str
) -> None:
    figures = check.check(variant, kv_variants[variant])
    assert figures["generation_steps"] == 32
    assert figures["generation_token2wav_contract_ok"] is True
    assert len(figures["generation_logits_max_abs_error_per_step"]) == 32
    if variant == "fp32":
        assert figures["generation_first_divergence_step"] == -1
        assert figures["generation_equal_code_share"] == 1.0
        assert figures["generation_forced_top1_agreement"] == 1.0
        assert figures["generation_logits_max_abs_error"] < 1e-3
    else:
        assert 0.0 <= figures["generation_equal_code_share"] <= 1.0
        assert figures["generation_forced_min_cosine"] > 0.9


def test_first_divergence() -> None:
    import numpy as np

    same = np.array([[1, 2, 3], [4, 5, 6]])
    assert first_divergence(same, same.copy()) == -1
    other = same.copy()
    other[1, 2] = 9
    assert first_divergence(same, other) == 2
    assert first_divergence(same, same[:, :2]) == 2
