"""The fuse pass: the talker as GroupQueryAttention, RotaryEmbedding and fused norms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from omniforge.components import get_component
from omniforge.runtime.session import open_unverified_session
from omniforge.sources.synthetic import SyntheticSource
from omniforge.validate.parity import compare, run_onnx, run_torch


def op_counts(directory: Path) -> Counter[str]:
    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def test_the_fused_graph_is_made_of_fused_ops(tiny_variants: dict) -> None:
    ops = op_counts(tiny_variants["talker_fused"]["fp32"])
    layers = 2
    assert ops["GroupQueryAttention"] == layers
    assert ops["RotaryEmbedding"] == 2 * layers  # queries and keys
    assert ops["SkipSimplifiedLayerNormalization"] == 2 * layers  # residual + norm, final norm
    assert ops["RMSNormalization"] == 1  # the first norm has no residual to add yet
    # Weight matmuls: packed q/k/v, o, packed gate/up, down per layer; input and head.
    assert ops["MatMul"] == 4 * layers + 2
    # None of what the plain export spends a third of a step on.
    for op in ("Expand", "Transpose", "Pow", "ReduceMean", "Sqrt", "Softmax"):
        assert ops[op] == 0, op
    plain = op_counts(tiny_variants["talker_kv"]["fp32"])
    assert sum(ops.values()) < sum(plain.values()) / 2


@pytest.mark.parametrize(("batch", "length"), [(2, 16), (3, 7), (1, 5)])
def test_fp32_matches_pytorch_with_equal_and_unequal_mrope_rows(
    tiny_variants: dict, tiny_source: SyntheticSource, batch: int, length: int
) -> None:
    component = get_component("talker_fused")
    names = list(component.output_axes(tiny_source.configs))
    module = component.build_module(tiny_source)
    session = open_unverified_session(tiny_variants["talker_fused"]["fp32"])
    cases = component.parity_cases(tiny_source.configs, batch, length, seed=5)
    assert set(cases) == {
        "prefill",
        "prefill_unequal_mrope_rows",
        "decode",
        "decode_unequal_mrope_rows",
    }
    for label, inputs in cases.items():
        reference = run_torch(module, inputs, names)
        outputs = run_onnx(session, inputs)
        for name in names:
            assert compare(reference[name], outputs[name], False)["max_abs_error"] < 2e-6, (
                label,
                name,
            )


def test_unequal_mrope_rows_change_the_result(
    tiny_variants: dict, tiny_source: SyntheticSource
) -> None:
    """The rows really reach their frequency sections (not one row for all): the change is
    small on the tiny preset (flat attention, low frequencies) but far above fp32 noise."""
    component = get_component("talker_fused")
    cases = component.parity_cases(tiny_source.configs, 2, 6, seed=1)
    session = open_unverified_session(tiny_variants["talker_fused"]["fp32"])
    equal = run_onnx(session, cases["prefill"])["logits"]
    unequal = run_onnx(session, cases["prefill_unequal_mrope_rows"])["logits"]
    assert np.abs(equal - unequal).max() > 1e-5


def test_the_fused_graph_equals_the_plain_one(
    tiny_variants: dict, tiny_source: SyntheticSource
) -> None:
    from omniforge.components.talker_fused import with_lengths

    inputs = get_component("talker_kv").make_inputs(tiny_source.configs, 2, 6, seed=2)
    plain_session = open_unverified_session(tiny_variants["talker_kv"]["fp32"])
    fused_session = open_unverified_session(tiny_variants["talker_fused"]["fp32"])
    # Several new positions after a past: onnxruntime's GQA takes that for batch 1 only (the
    # runtime refuses larger batches), so each row goes on its own.
    for row in range(2):
        single = {
            name: value[:, row : row + 1] if name == "position_ids" else value[row : row + 1]
            for name, value in inputs.items()
        }
        plain = run_onnx(plain_session, single)
        fused = run_onnx(fused_session, with_lengths(single))
        np.testing.assert_allclose(fused["logits"], plain["logits"], atol=1e-5)
        np.testing.assert_allclose(fused["present.1.value"], plain["present.1.value"], atol=1e-6)


def test_the_builder_frees_the_modules_weights_as_it_goes(tiny_source: SyntheticSource) -> None:
    from omniforge.passes.fuse import build_fused_talker

    talker = tiny_source.talker()
    build_fused_talker(talker)
    assert all(p.numel() == 0 for p in talker.model.layers.parameters())
    assert isinstance(talker.codec_head.weight, torch.Tensor)
