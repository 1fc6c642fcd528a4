"""The conv2d pass: 1-D convolutions as 2-D ones, same values, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from omniforge.artifacts import model_path
from omniforge.passes.conv2d import convs_as_2d

CHANNELS = 16
FRAMES = 37


def run(model: onnx.ModelProto, signal: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"signal": signal})[0]


def chain_model(rng: np.random.Generator) -> onnx.ModelProto:
    """BigVGAN's pattern: a dense dilated conv, a depthwise 2x upsampling by ConvTranspose,
    a depthwise strided downsampling reading the same filter, a grouped conv with a bias,
    and a ConvTranspose the pass must leave alone (it has pads)."""

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        # Scaled by the taps a weight's output row sums (its fan-in for a Conv), so values
        # stay near 1 through the chain: at unit weights they
        # reach thousands, and an output near 0 is a cancellation whose float32 rounding
        # differs between CPUs (AVX2 and AVX-512 kernels sum in other orders).
        values = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        return numpy_helper.from_array(values.astype(np.float32), name)

    nodes = [
        helper.make_node(
            "Conv", ["signal", "dense"], ["a"], kernel_shape=[3], pads=[3, 3], dilations=[3]
        ),
        helper.make_node("ConvTranspose", ["a", "filter"], ["b"], group=CHANNELS, strides=[2]),
        helper.make_node("Conv", ["b", "filter"], ["c"], group=CHANNELS, strides=[2]),
        helper.make_node("Conv", ["c", "grouped", "bias"], ["d"], group=4, kernel_shape=[5]),
        helper.make_node("ConvTranspose", ["d", "padded"], ["out"], strides=[2], pads=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, ["batch", CHANNELS, "t"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8, "out_t"])],
        [
            weight("dense", (CHANNELS, CHANNELS, 3)),
            weight("filter", (CHANNELS, 1, 12)),
            weight("grouped", (CHANNELS, CHANNELS // 4, 5)),
            weight("bias", (CHANNELS,)),
            weight("padded", (CHANNELS, 8, 4)),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_same_values_as_2d_convs_and_polyphase() -> None:
    rng = np.random.default_rng(0)
    model = chain_model(rng)
    signal = rng.standard_normal((2, CHANNELS, FRAMES)).astype(np.float32)
    expected = run(model, signal)

    assert convs_as_2d(model) == 4
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run(model, signal), expected, rtol=1e-4, atol=1e-4)
    for frames in (5, 6, 64):  # any length: the interleave reads the length from the data
        other = rng.standard_normal((1, CHANNELS, frames)).astype(np.float32)
        before = run(chain_model(np.random.default_rng(0)), other)
        np.testing.assert_allclose(run(model, other), before, rtol=1e-4, atol=1e-4)

    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 4
    assert all(len(kernel) == 2 for kernel in conv_kernels(model))
    transposes = [node for node in model.graph.node if node.op_type == "ConvTranspose"]
    assert [node.input[1] for node in transposes] == ["padded"]
    # No weight kept twice: the 1-D originals are gone, the shared filter converted once.
    names = [tensor.name for tensor in model.graph.initializer]
    assert "dense" not in names and "filter" not in names and "padded" in names
    assert len(names) == len(set(names))
    assert sum(name.startswith("filter") for name in names) == 2  # 2-D copy + polyphase


def test_a_graph_without_1d_convs_is_untouched() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["signal"], ["out"])],
        "plain",
        [helper.make_tensor_value_info("signal", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, ir_version=10)
    before = model.SerializeToString()
    assert convs_as_2d(model) == 0
    assert model.SerializeToString() == before


def conv_kernels(model: onnx.ModelProto, op_type: str = "Conv") -> list[list[int]]:
    return [
        helper.get_attribute_value(attribute)
        for node in model.graph.node
        if node.op_type == op_type
        for attribute in node.attribute
        if attribute.name == "kernel_shape"
    ]


def test_the_pipeline_vocoder_runs_2d_convs(tiny_root: Path) -> None:
    """The simplify pass rewrites BigVGAN (the vocoder asks for it), and nothing else."""

    def load(name: str) -> onnx.ModelProto:
        directory = tiny_root / "variants" / name / "fp32"
        return onnx.load(model_path(directory), load_external_data=False)

    vocoder = load("token2wav_vocoder")
    assert conv_kernels(vocoder) and all(len(k) == 2 for k in conv_kernels(vocoder))
    # What remains of ConvTranspose is BigVGAN's dense upsampling (one group).
    for node in vocoder.graph.node:
        if node.op_type == "ConvTranspose":
            assert all(a.i == 1 for a in node.attribute if a.name == "group"), node.name
    # The speaker encoder (ECAPA's 1-D convs) does not ask: it stays as exported.
    ecapa_kernels = conv_kernels(load("token2wav_conditioning"))
    assert ecapa_kernels and all(len(k) == 1 for k in ecapa_kernels)
