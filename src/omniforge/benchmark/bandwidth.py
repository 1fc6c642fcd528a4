"""The memory-bandwidth floor of a decode step: bytes a step must read, and how fast this
machine reads them, measured in the same run as the latency it bounds."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from omniforge.talker_io import TalkerDims

FLOAT32_BYTES = 4


class BandwidthProbe:
    """Memory bandwidth (bytes/s) on this machine, best of a few runs, three ways.

    A parallel sum over ``threads`` threads (numpy releases the GIL), an fp32 matrix-vector
    product through numpy's BLAS (the decode step's own access pattern) and a copy (read +
    write bytes), over a buffer far larger than any cache. The floor uses the fastest read.
    On a shared machine the bandwidth moves: probe right before and after what is timed.
    """

    def __init__(self, threads: int, nbytes: int) -> None:
        self.threads = threads
        self.source = np.ones(nbytes // 8, dtype=np.float64)
        self.target = np.empty_like(self.source)
        self.matrix = self.source.view(np.float32).reshape(-1, 4096)
        self.vector = np.ones(4096, dtype=np.float32)
        self.chunks = list(
            zip(
                np.array_split(self.source, threads),
                np.array_split(self.target, threads),
                strict=True,
            )
        )
        self.best: dict[str, float] = {}

    def measure(self, repeats: int = 3) -> dict[str, float]:
        """This measurement's figures; ``self.best`` keeps the best of every measurement."""
        seconds = {"sum": float("inf"), "gemv": float("inf"), "copy": float("inf")}
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for _ in range(repeats):
                started = time.perf_counter()
                list(pool.map(lambda pair: float(pair[0].sum()), self.chunks))
                seconds["sum"] = min(seconds["sum"], time.perf_counter() - started)
                started = time.perf_counter()
                self.matrix @ self.vector
                seconds["gemv"] = min(seconds["gemv"], time.perf_counter() - started)
                started = time.perf_counter()
                list(pool.map(lambda pair: np.copyto(pair[1], pair[0]), self.chunks))
                seconds["copy"] = min(seconds["copy"], time.perf_counter() - started)
        nbytes = self.source.nbytes
        figures = {
            "sum_read_bytes_per_s": nbytes / seconds["sum"],
            "gemv_read_bytes_per_s": nbytes / seconds["gemv"],
            "copy_bytes_per_s": 2 * nbytes / seconds["copy"],
        }
        figures["read_bytes_per_s"] = max(
            figures["sum_read_bytes_per_s"], figures["gemv_read_bytes_per_s"]
        )
        for key, value in figures.items():
            self.best[key] = max(self.best.get(key, 0.0), value)
        return figures


def decode_weight_bytes(model_file: Path, rows: int) -> dict[str, int]:
    """Bytes of initializers one decode step reads: all of them, except that a table read
    through a Gather (the codec embedding) costs only the ``rows`` rows it returns."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(model_file), load_external_data=False)
    gathered = {node.input[0] for node in model.graph.node if node.op_type == "Gather"}
    total = gathered_bytes = 0
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            size = int(ExternalDataInfo(tensor).length or 0)
        elif tensor.raw_data:
            size = len(tensor.raw_data)
        else:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
            size = int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
        if tensor.name in gathered and len(tensor.dims) == 2 and tensor.dims[0] > 0:
            gathered_bytes += size
            size = min(size, rows * (size // int(tensor.dims[0])))
        total += size
    return {"weight_bytes": total, "gather_table_bytes": gathered_bytes}


def torch_decode_bytes(talker: Any, rows: int) -> int:
    """Bytes of fp32 parameters one PyTorch decode step reads (embedding: ``rows`` rows)."""
    embedding = talker.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in talker.parameters())
    row_bytes = embedding.shape[1] * embedding.element_size()
    return int(total - embedding.numel() * embedding.element_size() + rows * row_bytes)


def kv_bytes(dims: TalkerDims, batch: int, past: int) -> int:
    """Bytes of KV cache one decode step reads after ``past`` positions."""
    per_layer = 2 * batch * dims.kv_heads * past * dims.head_dim * FLOAT32_BYTES
    return dims.layers * per_layer
