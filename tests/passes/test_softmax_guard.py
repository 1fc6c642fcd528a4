"""The softmax-guard pass: torch's NaN guard after an attention softmax dropped, same values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from omniforge.artifacts import model_path
from omniforge.passes.softmax_guard import drop_softmax_nan_guards

FRAMES = 12


def attention_model() -> onnx.ModelProto:
    """Two guarded softmaxes as torch exports them: the first guard's output feeds the values'
    product, the second's is a graph output (kept), and a third IsNaN reads a softmax whose
    guard is dropped (so that IsNaN stays)."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Add", ["scores", "mask"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["p_nan"]),
        helper.make_node("Where", ["p_nan", "zero", "p"], ["p_safe"]),
        helper.make_node("MatMul", ["p_safe", "values"], ["out"]),
        helper.make_node("Cast", ["p_nan"], ["nan_count"], to=f),
        helper.make_node("Softmax", ["scores"], ["q"], axis=-1),
        helper.make_node("IsNaN", ["q"], ["q_nan"]),
        helper.make_node("Where", ["q_nan", "zero", "q"], ["q_safe"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [
            helper.make_tensor_value_info("scores", f, ["rows", FRAMES, FRAMES]),
            helper.make_tensor_value_info("values", f, ["rows", FRAMES, 4]),
        ],
        [
            helper.make_tensor_value_info("out", f, ["rows", FRAMES, 4]),
            helper.make_tensor_value_info("nan_count", f, ["rows", FRAMES, FRAMES]),
            helper.make_tensor_value_info("q_safe", f, ["rows", FRAMES, FRAMES]),
        ],
        [
            # A block mask of the dtype's finite minimum: every row keeps its diagonal.
            numpy_helper.from_array(
                np.where(
                    np.eye(FRAMES, k=3) + np.eye(FRAMES) > 0, 0, np.finfo(np.float32).min
                ).astype(np.float32)[None],
                "mask",
            ),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        ],
        value_info=[helper.make_tensor_value_info("p_safe", f, ["rows", FRAMES, FRAMES])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_the_guard_goes_and_the_values_stay() -> None:
    rng = np.random.default_rng(0)
    feeds = {
        "scores": rng.standard_normal((3, FRAMES, FRAMES)).astype(np.float32) * 30,
        "values": rng.standard_normal((3, FRAMES, 4)).astype(np.float32),
    }
    model = attention_model()
    expected = run(model, feeds)
    assert drop_softmax_nan_guards(model) == 1
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    # The feeding guard's Where is gone; its IsNaN stays (something else reads it); the
    # guard that writes a graph output stays whole.
    assert ops.count("Where") == 1 and ops.count("IsNaN") == 2
    assert "p_safe" not in {value.name for value in model.graph.value_info}
    for got, want in zip(run(model, feeds), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert drop_softmax_nan_guards(model) == 0


def test_the_pipeline_dit_has_no_guard_and_the_others_keep_theirs(tiny_root: Path) -> None:
    """The DiT asks for the pass; its export had a guard per layer, its fp32 variant has none.
    The conditioning graph does not ask, and keeps what it was exported with."""

    def ops(stage: str, name: str) -> list[str]:
        directory = tiny_root / stage / name
        if stage == "variants":
            directory = directory / "fp32"
        graph = onnx.load(model_path(directory), load_external_data=False).graph
        return [node.op_type for node in graph.node]

    assert ops("export", "token2wav_dit").count("IsNaN") > 0
    assert ops("variants", "token2wav_dit").count("IsNaN") == 0
    assert ops("variants", "talker_kv").count("IsNaN") == ops("export", "talker_kv").count("IsNaN")
