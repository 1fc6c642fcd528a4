"""The quantize pass: every weight matmul and every embedding table, one weight at a time.

A scheme (``quantize.<name>`` in params.yaml) rewrites, in any graph:

- ``MatMul`` with a constant 2-D weight, with the constant-bias ``Add`` that may follow it,
  and ``Gemm`` with a constant weight and bias (what onnxsim makes of a biased Linear):
  ``int8`` → ``DynamicQuantizeMatMul`` (int8 weights per column, activations quantized at
  run time), ``int4`` → ``MatMulNBits`` (4-bit blocks, bias inside the op);
- ``Gather`` from a constant 2-D table (the codec embedding) → ``GatherBlockQuantized``
  (8 or 4 bits per block along the embedding dim).

The graph is read with its weights memory-mapped and written tensor by tensor, so peak
memory stays near the largest weight plus the quantized model, never several copies of the
fp32 one (``quantize_dynamic`` needed three). The same graph and scheme give the same bytes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omniforge.artifacts import (
    atomic_directory,
    check_artifact,
    copy_data_files,
    model_path,
    save_ir_model,
)
from omniforge.errors import ParamsError
from omniforge.params import Int4Params, Int8Params, QuantizeParams

log = logging.getLogger(__name__)

CONTRIB = "com.microsoft"


@dataclass(frozen=True)
class Weight:
    """A constant weight as a MatMul reads it: [K, N] float32, with an optional bias [N]."""

    matrix: np.ndarray
    bias: np.ndarray | None
    # Initializer names: a weight used by several nodes is stored once.
    key: str


def _float_constant(value: object, rank: int) -> np.ndarray | None:
    tensor = getattr(value, "const_value", None)
    if tensor is None:
        return None
    array = tensor.numpy()
    if array.dtype != np.float32 or array.ndim != rank:
        return None
    return array


# --- how each scheme stores a weight ------------------------------------------------------------


def int8_columns(matrix: np.ndarray, reduce_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per column: (weights int8 [K, N], scales [N]).

    ``reduce_range``: 7-bit weights (|q| <= 63). On AVX2 without VNNI the u8 x s8 kernels
    add pairs of products in int16 and saturate with full-range weights (3-9 % error seen).
    """
    limit = 63.0 if reduce_range else 127.0
    absmax = np.abs(matrix).max(axis=0)
    scales = np.where(absmax > 0, absmax / limit, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(matrix / scales), -limit, limit).astype(np.int8)
    return quantized, scales


def nbits_blocks(
    matrix: np.ndarray, bits: int, block_size: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MatMulNBits layout of a [K, N] weight: packed [N, blocks, bytes], scales, zero points.

    onnxruntime's own packer fills the arrays (low bits first along K within a block).
    """
    from onnxruntime.capi import _pybind_state as ort_c

    rows, columns = matrix.shape
    blocks = -(-rows // block_size)
    padded = np.zeros((blocks * block_size, columns), dtype=np.float32)
    padded[:rows] = matrix
    packed = np.zeros((columns, blocks, block_size * bits // 8), dtype=np.uint8)
    scales = np.zeros((columns, blocks), dtype=np.float32)
    zero_points = np.zeros((columns, -(-blocks * bits // 8)), dtype=np.uint8)
    packer = {4: ort_c.quantize_matmul_4bits, 8: ort_c.quantize_matmul_8bits}[bits]
    packer(packed, padded, scales, zero_points, block_size, columns, rows, symmetric)
    # Symmetric: the op's default zero point (2^(bits-1)) is the one the packer assumed.
    return packed, scales, None if symmetric else zero_points


def embedding_block(width: int, preferred: int) -> int | None:
    """The block size for a table of ``width``: ``preferred``, or the largest power of two
    below it that divides the width (GatherBlockQuantized takes 16 and up)."""
    block = preferred
    while block >= 16:
        if width % block == 0:
            return block
        block //= 2
    return None


# --- the rewrite --------------------------------------------------------------------------------


class Rewriter:
    """Replaces weight matmuls and embedding lookups of one graph, node by node."""

    def __init__(self, graph: object, scheme: Int8Params | Int4Params) -> None:
        import onnx_ir as ir

        self.ir = ir
        self.graph = graph
        self.scheme = scheme
        self.count = {"matmul": 0, "gather": 0}
        # Quantized inputs per weight name: a weight read by two nodes is stored once.
        self.done: dict[str, list[object]] = {}

    def constant(self, array: np.ndarray, name: str) -> object:
        value = self.ir.Value(
            name=name,
            shape=self.ir.Shape(array.shape),
            type=self.ir.TensorType(self.ir.DataType.from_numpy(array.dtype)),
            const_value=self.ir.tensor(array, name=name),
        )
        self.graph.register_initializer(value)
        return value

    def replace(self, old_nodes: list[object], new_node: object, output: object) -> None:
        """Put ``new_node`` where the last of ``old_nodes`` was; its output takes over,
        graph outputs and the value's name included."""
        self.graph.insert_after(old_nodes[-1], new_node)
        name = output.name
        new_node.outputs[0].type = output.type
        new_node.outputs[0].shape = output.shape
        output.replace_all_uses_with(new_node.outputs[0], replace_graph_outputs=True)
        for node in reversed(old_nodes):
            self.graph.remove(node, safe=True)
        new_node.outputs[0].name = name

    def weight_of(self, node: object) -> tuple[Weight, list[object], object] | None:
        """The constant weight a MatMul/Gemm applies, the nodes it spans, and their output."""
        if node.op_type == "MatMul" and node.domain == "":
            matrix = _float_constant(node.inputs[1], rank=2)
            if matrix is None:
                return None
            output, spanned, bias = node.outputs[0], [node], None
            consumers = list(output.consumers())
            if (
                len(consumers) == 1
                and consumers[0].op_type == "Add"
                and not output.is_graph_output()
            ):
                add = consumers[0]
                other = add.inputs[1] if add.inputs[0] is output else add.inputs[0]
                candidate = _float_constant(other, rank=1)
                if candidate is not None and candidate.shape == (matrix.shape[1],):
                    output, spanned, bias = add.outputs[0], [node, add], candidate
                    return (
                        Weight(matrix, bias, f"{node.inputs[1].name}+{other.name}"),
                        spanned,
                        output,
                    )
            return Weight(matrix, bias, node.inputs[1].name), spanned, output
        if node.op_type == "Gemm" and node.domain == "":
            attrs = {name: attr.value for name, attr in node.attributes.items()}
            matrix = _float_constant(node.inputs[1], rank=2)
            if matrix is None or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
                return None
            if attrs.get("transB", 0):
                matrix = np.ascontiguousarray(matrix.T)
            bias, key = None, node.inputs[1].name
            if len(node.inputs) > 2 and node.inputs[2] is not None:
                bias = _float_constant(node.inputs[2], rank=1)
                if bias is None or attrs.get("beta", 1.0) != 1.0:
                    return None
                key = f"{key}+{node.inputs[2].name}"
            return Weight(matrix, bias, key), [node], node.outputs[0]
        return None

    def matmul(self, node: object) -> bool:
        found = self.weight_of(node)
        if found is None:
            return False
        weight, spanned, output = found
        rows, columns = weight.matrix.shape
        stored = self.done.get(weight.key) or self.store_weight(weight, weight.key)
        self.done[weight.key] = stored
        if isinstance(self.scheme, Int8Params):
            quantized, scales, bias = stored
            inputs = [node.inputs[0], quantized, scales, None, bias]  # zero points: symmetric
            new = self.ir.Node(CONTRIB, "DynamicQuantizeMatMul", inputs, num_outputs=1)
        else:
            packed, scales, zp, bias = stored
            inputs = [node.inputs[0], packed, scales, zp, None, bias]  # None: g_idx
            attributes = {
                "K": rows,
                "N": columns,
                "bits": 4,
                "block_size": self.scheme.block_size,
                "accuracy_level": self.scheme.accuracy_level,
            }
            new = self.ir.Node(
                CONTRIB,
                "MatMulNBits",
                inputs,
                attributes=self.ir.convenience.convert_attributes(attributes),
                num_outputs=1,
            )
        self.replace(spanned, new, output)
        self.count["matmul"] += 1
        return True

    def store_weight(self, weight: Weight, name: str) -> list[object]:
        """The initializers one weight becomes under this scheme (bias last)."""
        bias = self.constant(weight.bias, f"{name}_bias") if weight.bias is not None else None
        if isinstance(self.scheme, Int8Params):
            quantized, scales = int8_columns(weight.matrix, self.scheme.reduce_range)
            return [
                self.constant(quantized, f"{name}_int8"),
                self.constant(scales, f"{name}_scale"),
                bias,
            ]
        packed, scales, zero_points = nbits_blocks(
            weight.matrix, 4, self.scheme.block_size, self.scheme.symmetric
        )
        zp = self.constant(zero_points, f"{name}_zp") if zero_points is not None else None
        return [
            self.constant(packed, f"{name}_q4"),
            self.constant(scales, f"{name}_scales"),
            zp,
            bias,
        ]

    def gather(self, node: object) -> bool:
        if node.op_type != "Gather" or node.domain != "":
            return False
        table = _float_constant(node.inputs[0], rank=2)
        axis = node.attributes.get("axis")
        if table is None or (axis is not None and axis.value != 0):
            return False
        bits = 8 if isinstance(self.scheme, Int8Params) else 4
        rows, width = table.shape
        block = embedding_block(width, self.scheme.embedding_block_size)
        if block is None:
            log.warning("%s: width %d has no block size >= 16: left fp32", node.name, width)
            return False
        name = node.inputs[0].name
        key = f"gather:{name}"
        if key not in self.done:  # a table read by two Gathers is stored once
            # The table read as a MatMul weight [width, rows]: blocks run along the embedding.
            packed, scales, _ = nbits_blocks(np.ascontiguousarray(table.T), bits, block, True)
            self.done[key] = [
                self.constant(packed.reshape(rows, -1), f"{name}_q{bits}"),
                self.constant(scales, f"{name}_scales"),
            ]
        quantized, scales_value = self.done[key]
        inputs = [quantized, node.inputs[1], scales_value]
        attributes = {"bits": bits, "block_size": block, "gather_axis": 0, "quantize_axis": 1}
        new = self.ir.Node(
            CONTRIB,
            "GatherBlockQuantized",
            inputs,
            attributes=self.ir.convenience.convert_attributes(attributes),
            num_outputs=1,
        )
        self.replace([node], new, node.outputs[0])
        self.count["gather"] += 1
        return True

    def run(self) -> dict[str, int]:
        for node in list(self.graph):
            if node.graph is None:  # removed as part of an earlier match
                continue
            self.matmul(node) or self.gather(node)
        # Weights no node reads any more (their fp32 bytes) are dropped.
        for name, value in list(self.graph.initializers.items()):
            if not value.uses():
                del self.graph.initializers[name]
        self.graph.opset_imports.setdefault(CONTRIB, 1)
        return self.count


def quantize_artifact(src_dir: Path, out_dir: Path, scheme: str, params: QuantizeParams) -> Path:
    """Quantize ``src_dir``'s graph with ``scheme`` into ``out_dir`` (replaced atomically)."""
    import onnx_ir as ir

    if scheme not in params.schemes():
        raise ParamsError(f"unknown quantization scheme '{scheme}' (known: {params.schemes()})")
    source = model_path(src_dir)
    started = time.perf_counter()
    log.info("quantizing %s with %s", source, scheme)
    model = ir.load(source)
    counts = Rewriter(model.graph, params.root[scheme]).run()
    log.info("%s: %d weight matmuls, %d embedding tables quantized", scheme, *counts.values())
    with atomic_directory(out_dir) as tmp:
        save_ir_model(model, tmp)
        check_artifact(tmp)
        copy_data_files(src_dir, tmp)
    log.info("quantized %s with %s in %.1fs", source, scheme, time.perf_counter() - started)
    return Path(out_dir)
