"""onnxruntime sessions for artifact directories: numpy and onnxruntime only, no torch.

What a voice pipeline imports to run published artifacts, and what the benchmark's
onnxruntime children import, so their peak RSS is not inflated by torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omniforge.errors import ArtifactError
from omniforge.onnx_io import MODEL_FILENAME


def open_session(model: str | Path, threads: int | None = 1) -> Any:
    """An onnxruntime CPU session for an artifact directory (or a ``.onnx`` file).

    One thread by default: reductions split over threads round differently, and parity
    figures should not depend on the machine's core count. Benchmarks pass their own;
    None leaves onnxruntime's default.
    """
    import onnxruntime as ort

    path = Path(model)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no ONNX graph here")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own untyped errors
        raise ArtifactError(f"{path}: onnxruntime cannot load this graph: {err}") from err
