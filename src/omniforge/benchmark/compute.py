"""The compute floor of a prefill: multiply-adds the prompt needs, and how fast this
machine's onnxruntime runs them, measured in the same run as the latency it bounds.

A prompt of 128 positions multiplies every weight matrix by 128 rows: it is bound by
arithmetic, not by reading the weights. Its floor is (weight multiply-adds x rows) over the
rate of onnxruntime's int8 GEMM (``DynamicQuantizeMatMul``, the fastest CPU matmul it has:
on AMX tiles, VNNI or AVX2, whichever the CPU has), measured at the prompt's row count. The
probe's weight fits a large last-level cache, so its rate is, if anything, higher than the
prompt's matmuls reach: the floor stays a lower bound.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

# Nodes of our graphs (fp32, int8 by quantize_dynamic) that multiply by a weight initializer,
# their input 1; MatMulNBits (int4) states its K x N.
WEIGHT_MATMULS = {"MatMul", "Gemm", "DynamicQuantizeMatMul"}
# The probe's weight: [depth, width] int8 (8 MiB), wide enough to keep both cores busy.
PROBE_DEPTH, PROBE_WIDTH = 1024, 8192


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


def int8_gemm_graph(rows: int) -> bytes:
    """One ``DynamicQuantizeMatMul`` of [rows, depth] fp32 by a seeded int8 weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-127, 128, size=(PROBE_DEPTH, PROBE_WIDTH), dtype=np.int8)
    scale = np.full(PROBE_WIDTH, 1e-3, dtype=np.float32)
    node = helper.make_node(
        "DynamicQuantizeMatMul", ["x", "weight", "scale"], ["y"], domain="com.microsoft"
    )
    graph = helper.make_graph(
        [node],
        "int8_gemm_probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, PROBE_DEPTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, PROBE_WIDTH])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(scale, "scale")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10).SerializeToString()


class Int8GemmProbe:
    """Multiply-adds per second of onnxruntime's int8 GEMM at ``rows`` rows, best of a few
    runs, on ``threads`` threads (the process's shared pool, if it has one)."""

    def __init__(self, threads: int, rows: int) -> None:
        import onnxruntime as ort

        from omniforge.runtime.session import CPU_PROVIDERS, session_options

        self.session: Any = ort.InferenceSession(
            int8_gemm_graph(rows),
            sess_options=session_options(threads, "the int8 GEMM probe"),
            providers=CPU_PROVIDERS,
        )
        self.feeds = {
            "x": np.random.default_rng(1).standard_normal((rows, PROBE_DEPTH), np.float32)
        }
        self.multiply_adds = rows * PROBE_DEPTH * PROBE_WIDTH
        self.best = 0.0
        self.session.run(None, self.feeds)  # prepacks the weight

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
