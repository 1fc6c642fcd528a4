"""onnxruntime sessions for artifact directories, and runs through IO binding."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from omniforge.artifacts import MODEL_FILENAME
from omniforge.errors import ArtifactError

# What onnxruntime raises for a graph it cannot load or run (none derives from another).
ORT_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)


def open_session(model: str | Path, threads: int | None = 1) -> Any:
    """An onnxruntime CPU session for an artifact directory (or a ``.onnx`` file).

    One thread by default: reductions split over threads round differently, and parity
    figures should not depend on the machine's core count. Benchmarks pass their own;
    None leaves onnxruntime's default.
    """
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
    except ORT_ERRORS as err:
        raise ArtifactError(f"{path}: onnxruntime cannot load this graph: {err}") from err


class BoundRun:
    """One run of a session on given inputs through IO binding; outputs stay in onnxruntime.

    Inputs may be numpy arrays or OrtValues (a cache from an earlier run): nothing is copied
    back to numpy unless asked. ``outputs`` binds named outputs to given OrtValues (a fused
    talker's present is its past's own buffer); the others are allocated by onnxruntime.
    Calling it again reruns on the same inputs. ``keep``: anything the bound values alias.
    """

    def __init__(
        self,
        session: Any,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any] | None = None,
        keep: Any = None,
    ) -> None:
        self.session = session
        self.binding = session.io_binding()
        self.keep = keep
        # The OrtValues must outlive the binding, which holds only pointers to them.
        self._values = {name: as_ortvalue(value) for name, value in inputs.items()}
        self._outputs = dict(outputs or {})
        for name, value in self._values.items():
            self.binding.bind_ortvalue_input(name, value)
        for output in session.get_outputs():
            if output.name in self._outputs:
                self.binding.bind_ortvalue_output(output.name, self._outputs[output.name])
            else:
                self.binding.bind_output(output.name, "cpu")

    def __call__(self) -> None:
        self.session.run_with_iobinding(self.binding)

    def outputs(self) -> list[Any]:
        """The last run's outputs as OrtValues, in graph order."""
        return self.binding.get_outputs()


def as_ortvalue(value: Any) -> Any:
    if isinstance(value, ort.OrtValue):
        return value
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
