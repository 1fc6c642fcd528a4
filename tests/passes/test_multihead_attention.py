"""The multi-head attention pass: the DiT's exported attention as fused ops, same values."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from omniforge.artifacts import model_path
from omniforge.components.token2wav_dit import Token2WavDiT
from omniforge.params import SimplifyParams
from omniforge.passes.multihead_attention import fuse_multihead_attention
from omniforge.passes.simplify import simplify_artifact


class UnfusedDiT(Token2WavDiT):
    fuse_multihead_attention = False


def ops(directory: Path) -> Counter[str]:
    graph = onnx.load(model_path(directory), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


@pytest.fixture(scope="module")
def unfused(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny DiT simplified as before the pass: guards dropped, attention op by op."""
    out = tmp_path_factory.mktemp("unfused") / "fp32"
    return simplify_artifact(
        tiny_root / "export" / "token2wav_dit", out, SimplifyParams(), UnfusedDiT()
    )


def test_the_pipeline_dit_runs_fused_attention(
    tiny_variants: dict[str, dict[str, Path]], unfused: Path
) -> None:
    before = ops(unfused)
    for variant, directory in tiny_variants["token2wav_dit"].items():
        after = ops(directory)
        # One fused op per layer; the head transposes and the first head's scatter are gone.
        assert after["MultiHeadAttention"] == before["Softmax"] == 4, variant
        assert after["ScatterND"] == after["Softmax"] == after["Transpose"] == 0, variant
        # Tiny has one layer without look-back or look-ahead: its q, k and v go in blocks.
        assert after["Pad"] == 3, variant


def test_quantize_leaves_the_rotation_exact(tiny_variants: dict[str, dict[str, Path]]) -> None:
    """The permutations that de-interleave the first head are products with 0/1 matrices;
    quantized, they would round the rotated head to 8 bits."""
    for variant in ("int8", "int4"):
        graph = onnx.load(
            model_path(tiny_variants["token2wav_dit"][variant]), load_external_data=False
        ).graph
        permutations = [n for n in graph.node if n.op_type == "MatMul" and "mha_" in n.input[1]]
        assert len(permutations) == 4 * 2 * 2, variant
        quantized = [n for n in graph.node if n.op_type in ("DynamicQuantizeMatMul", "MatMulNBits")]
        assert not any("mha_" in name for n in quantized for name in n.input), variant


@pytest.mark.parametrize(("rows", "frames"), [(2, 61), (1, 48), (2, 5)])
def test_the_values_stay(
    tiny_variants: dict[str, dict[str, Path]], unfused: Path, rows: int, frames: int
) -> None:
    """61 frames pad the last 24-frame block, 48 fill two, 5 are less than one block; one row
    is a synthesis without guidance."""
    rng = np.random.default_rng(frames)
    expected_session = ort.InferenceSession(
        str(model_path(unfused)), providers=["CPUExecutionProvider"]
    )
    fused_session = ort.InferenceSession(
        str(model_path(tiny_variants["token2wav_dit"]["fp32"])), providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for value in expected_session.get_inputs():
        shape = [rows if d == "rows" else frames if d == "frames" else d for d in value.shape]
        feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    feeds["time"] = rng.random(rows).astype(np.float32)
    (expected,) = expected_session.run(None, feeds)
    (got,) = fused_session.run(None, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 0.1


def test_other_attentions_are_left_alone(tiny_root: Path) -> None:
    """The talker's attention (RoPE on every head, grouped keys) is not the DiT's: no match."""
    model = onnx.load(
        model_path(tiny_root / "variants" / "talker_kv" / "fp32"), load_external_data=False
    )
    nodes = len(model.graph.node)
    assert fuse_multihead_attention(model) == 0
    assert len(model.graph.node) == nodes
