"""The quantize pass: every weight matmul and embedding table, Gemm with bias included."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from omniforge.artifacts import artifact_bytes, artifact_files
from omniforge.errors import ParamsError
from omniforge.params import Int4Params, Int8Params, QuantizeParams, parse_params
from omniforge.passes.quantize import embedding_block, int8_columns, quantize_artifact
from omniforge.runtime.session import open_unverified_session

WEIGHT_OPS = {"MatMul", "Gemm", "Gather"}
QUANTIZED = ("int8", "int4", "int4-exact")


def op_counts(directory: Path) -> Counter[str]:
    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)


def float_weights_read_by_weight_ops(directory: Path, min_elements: int = 64) -> list[str]:
    """Float initializers of more than ``min_elements`` read by MatMul, Gemm or Gather."""
    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    sizes = {
        t.name: int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
    }
    return sorted(
        f"{node.op_type}:{name}"
        for node in model.graph.node
        if node.op_type in WEIGHT_OPS
        for name in node.input
        if sizes.get(name, 0) > min_elements
    )


@pytest.mark.parametrize("component", ["talker", "talker_kv", "talker_fused", "projection"])
@pytest.mark.parametrize("variant", QUANTIZED)
def test_no_weight_matmul_or_table_stays_fp32(
    tiny_variants: dict, component: str, variant: str
) -> None:
    assert float_weights_read_by_weight_ops(tiny_variants[component][variant]) == []


def test_biased_linears_become_gemm_and_are_quantized_with_their_bias(tiny_variants: dict) -> None:
    """The synthetic talker has q/k/v and input-projection biases, as a checkpoint has: onnxsim
    makes those Linears Gemm, which quantize covers too."""
    fp32 = op_counts(tiny_variants["talker_kv"]["fp32"])
    assert fp32["Gemm"] == 7  # q, k, v of two layers + thinker_to_talker_proj
    weights = fp32["Gemm"] + fp32["MatMul"] - 4  # 4 MatMuls multiply activations (attention)
    assert op_counts(tiny_variants["talker_kv"]["int4"])["MatMulNBits"] == weights
    assert op_counts(tiny_variants["talker_kv"]["int8"])["DynamicQuantizeMatMul"] == weights
    assert op_counts(tiny_variants["talker_kv"]["int4"])["GatherBlockQuantized"] == 1


@pytest.mark.parametrize("component", ["talker", "talker_kv", "talker_fused"])
def test_int4_is_the_smallest_artifact(tiny_variants: dict, component: str) -> None:
    sizes = {v: artifact_bytes(d)["total_bytes"] for v, d in tiny_variants[component].items()}
    assert sizes["int4"] < sizes["int8"] < sizes["fp32"]
    assert sizes["int4"] < 0.35 * sizes["fp32"]


def test_accuracy_level_is_the_only_difference_of_int4_exact(tiny_variants: dict) -> None:
    def levels(directory: Path) -> set[int]:
        model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
        return {
            a.i
            for n in model.graph.node
            if n.op_type == "MatMulNBits"
            for a in n.attribute
            if a.name == "accuracy_level"
        }

    variants = tiny_variants["talker_kv"]
    assert levels(variants["int4"]) == {4} and levels(variants["int4-exact"]) == {1}
    data = {d: (variants[d] / "model.onnx.data").read_bytes() for d in ("int4", "int4-exact")}
    assert data["int4"] == data["int4-exact"]


def test_quantizing_twice_gives_the_same_bytes(tmp_path: Path, tiny_variants: dict) -> None:
    again = quantize_artifact(
        tiny_variants["talker_kv"]["fp32"], tmp_path / "int4", "int4", QuantizeParams()
    )
    assert artifact_files(again) == artifact_files(tiny_variants["talker_kv"]["int4"])


def test_reduce_range_keeps_int8_weights_within_7_bits() -> None:
    weights = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    quantized, scales = int8_columns(weights, reduce_range=True)
    assert np.abs(quantized).max() == 63
    np.testing.assert_allclose(quantized * scales, weights, atol=scales.max())
    assert np.abs(int8_columns(weights, reduce_range=False)[0]).max() == 127


def test_embedding_blocks_divide_the_width() -> None:
    assert embedding_block(3584, 128) == 128
    assert embedding_block(64, 128) == 64
    assert embedding_block(24, 32) is None


@pytest.mark.parametrize(("scheme", "bits"), [("int8", 8), ("int4", 4)])
def test_a_quantized_embedding_returns_the_tables_rows(
    tmp_path: Path, scheme: str, bits: int
) -> None:
    from onnx import TensorProto, helper

    from omniforge.artifacts import save_model

    table = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", 64])],
        [onnx.numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    (tmp_path / "fp32").mkdir()
    save_model(model, tmp_path / "fp32")
    out = quantize_artifact(tmp_path / "fp32", tmp_path / scheme, scheme, QuantizeParams())
    assert op_counts(out)["GatherBlockQuantized"] == 1
    ids = np.array([0, 7, 299, 7], dtype=np.int64)
    (rows,) = open_unverified_session(out).run(None, {"ids": ids})
    # Within half a quantization step of each row's block maximum.
    step = np.abs(table[ids]).max(axis=1, keepdims=True) / (2 ** (bits - 1) - 1)
    assert np.all(np.abs(rows - table[ids]) <= step / 2 + 1e-6)


def test_scheme_params_are_typed_and_named() -> None:
    raw = {
        "quantize": {"int4": {"block_size": 64}, "q8": {"method": "int8"}},
        "talker_kv": {"hybrid_prefill": "q8", "hybrid_decode": "int4"},
    }
    params = parse_params(raw)
    assert isinstance(params.quantize["int4"], Int4Params)
    assert isinstance(params.quantize["q8"], Int8Params)
    assert params.variants == ("fp32", "int4", "q8")
    with pytest.raises(ParamsError, match="talker_kv.hybrid_prefill: 'int8' is not a built"):
        parse_params({"quantize": {"int4": {}}})
