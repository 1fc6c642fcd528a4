"""Compute floors: the multiply-adds a graph needs, and how fast this machine's onnxruntime
runs them, measured in the same run as the latency they bound.

A prompt of 128 positions multiplies every weight matrix by 128 rows: it is bound by
arithmetic, not by reading the weights. Its floor is (weight multiply-adds x rows) over the
rate of onnxruntime's int8 GEMM (``DynamicQuantizeMatMul``, the fastest CPU matmul it has:
on AMX tiles, VNNI or AVX2, whichever the CPU has), measured at the prompt's row count. A
graph of fp32 convolutions (Token2Wav's vocoder) is bounded by its convolutions'
multiply-adds over the rate of onnxruntime's fp32 GEMM (``MatMul``), which its convolutions
run on. The probes' weights (8 MiB) fit these CPUs' last-level cache and, at the rows they run
(the graph's positions or frames), both GEMMs are bound by arithmetic: a graph's own products,
of less regular shapes, are not expected to run faster, so the floors are lower bounds in
practice (measured, not proved).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# Nodes of our graphs (fp32, int8 by quantize_dynamic) that multiply by a weight initializer,
# their input 1; MatMulNBits (int4) states its K x N.
WEIGHT_MATMULS = {"MatMul", "Gemm", "DynamicQuantizeMatMul"}
# The probes' weight is [depth, the probe's width], wide enough to keep both cores busy.
PROBE_DEPTH = 1024
CONVOLUTIONS = {"Conv", "ConvTranspose"}


def weight_multiply_adds(model_file: Path, skip_leading: tuple[str, ...] = ()) -> int:
    """Multiply-adds one row (position) of input costs in the graph's weight matmuls.

    ``MatMulNBits`` states its K x N; the others' weight is an initializer (input 1), as the
    passes write them. The attention's own products (queries by the cache) are left out:
    they are not weights. ``skip_leading``: leave out matmuls whose input's leading dims are
    exactly these symbols (the DiT's per-row time MLP, ``("rows",)``, runs once per row, not
    once per frame).
    """
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    leading = {
        value.name: tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)[:-1]
        for value in [*graph.value_info, *graph.input]
    }
    total = 0
    for node in graph.node:
        if skip_leading and leading.get(node.input[0]) == skip_leading:
            continue
        if node.op_type == "MatMulNBits":
            attributes = {a.name: a.i for a in node.attribute}
            total += attributes["K"] * attributes["N"]
        elif node.op_type in WEIGHT_MATMULS and len(shapes.get(node.input[1], ())) == 2:
            total += int(np.prod(shapes[node.input[1]]))
    return total


def conv_multiply_adds_per_frame(model_file: Path, frames_axis: int = -1) -> int:
    """Multiply-adds one more frame of input costs in the graph's convolutions.

    Shapes are inferred at two lengths of the input's ``frames_axis`` (batch 1), and the
    difference is taken: the padding at the edges cancels out. A convolution costs its
    output's elements times its kernel's ``in/groups x taps``; a transposed one its input's
    elements times ``out/groups x taps``.
    """
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    kernels = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    inputs = [value.name for value in model.graph.input if value.name not in kernels]
    if len(inputs) != 1:
        raise ValueError(
            f"{model_file}: convolutions are counted per frame of one input, not {inputs}"
        )

    def multiply_adds(frames: int) -> int:
        sized = onnx.ModelProto()
        sized.CopyFrom(model)
        sized.graph.ClearField("value_info")  # the export's symbolic shapes: inferred anew
        (value,) = [value for value in sized.graph.input if value.name == inputs[0]]
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_value = 1
        dims[frames_axis].dim_value = frames
        inferred = onnx.shape_inference.infer_shapes(sized, strict_mode=True, data_prop=True)
        shapes = {
            info.name: [
                d.dim_value if d.HasField("dim_value") else None
                for d in info.type.tensor_type.shape.dim
            ]
            for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
        }
        total = 0
        for node in inferred.graph.node:
            if node.op_type not in CONVOLUTIONS:
                continue
            if node.input[1] not in kernels:
                raise ValueError(f"{model_file}: {node.name}'s kernel is computed, not a weight")
            positions = shapes.get(node.output[0] if node.op_type == "Conv" else node.input[0])
            if not positions or None in positions:
                raise ValueError(f"{model_file}: the shape around {node.name} is not inferred")
            total += int(np.prod(positions)) * int(np.prod(kernels[node.input[1]][1:]))
        return total

    return (multiply_adds(200) - multiply_adds(100)) // 100


class GemmProbe:
    """Multiply-adds per second of one of onnxruntime's GEMMs at ``rows`` rows of [rows,
    depth] fp32 by a seeded [depth, ``width``] weight, best of a few runs, on ``threads``
    threads (the process's shared pool, if it has one)."""

    name: ClassVar[str]
    width: ClassVar[int]

    def __init__(self, threads: int, rows: int) -> None:
        import onnxruntime as ort

        from omniforge.runtime.session import CPU_PROVIDERS, session_options

        self.session: Any = ort.InferenceSession(
            self.model(rows),
            sess_options=session_options(threads, self.name),
            providers=CPU_PROVIDERS,
        )
        self.feeds = {
            "x": np.random.default_rng(1).standard_normal((rows, PROBE_DEPTH), np.float32)
        }
        self.multiply_adds = rows * PROBE_DEPTH * self.width
        self.best = 0.0
        self.session.run(None, self.feeds)  # prepacks the weight

    def model(self, rows: int) -> bytes:
        raise NotImplementedError

    def measure(self, repeats: int = 5) -> float:
        """This measurement's rate; ``self.best`` keeps the best of every measurement."""
        fastest = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            self.session.run(None, self.feeds)
            fastest = min(fastest, time.perf_counter() - started)
        rate = self.multiply_adds / fastest
        self.best = max(self.best, rate)
        return rate

    def _model(self, node: Any, rows: int, weights: list[Any], opsets: list[Any]) -> bytes:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [node],
            self.name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, PROBE_DEPTH])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, self.width])],
            weights,
        )
        model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
        return model.SerializeToString()


class Int8GemmProbe(GemmProbe):
    """``DynamicQuantizeMatMul``, int8 weights: the fastest matmul onnxruntime has on a CPU."""

    name = "the int8 GEMM probe"
    width = 8192  # 8 MiB of int8

    def model(self, rows: int) -> bytes:
        from onnx import helper, numpy_helper

        rng = np.random.default_rng(0)
        weight = rng.integers(-127, 128, size=(PROBE_DEPTH, self.width), dtype=np.int8)
        scale = np.full(self.width, 1e-3, dtype=np.float32)
        node = helper.make_node(
            "DynamicQuantizeMatMul", ["x", "weight", "scale"], ["y"], domain="com.microsoft"
        )
        weights = [
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(scale, "scale"),
        ]
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
        return self._model(node, rows, weights, opsets)


class Fp32GemmProbe(GemmProbe):
    """``MatMul``, fp32 weights: the GEMM fp32 convolutions run on."""

    name = "the fp32 GEMM probe"
    width = 2048  # 8 MiB of fp32

    def model(self, rows: int) -> bytes:
        from onnx import helper, numpy_helper

        weight = np.random.default_rng(0).standard_normal((PROBE_DEPTH, self.width), np.float32)
        node = helper.make_node("MatMul", ["x", "weight"], ["y"])
        weights = [numpy_helper.from_array(weight, "weight")]
        return self._model(node, rows, weights, [helper.make_opsetid("", 17)])
