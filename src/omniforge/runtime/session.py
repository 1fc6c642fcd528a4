"""onnxruntime sessions for artifact directories, and runs through IO binding."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from omniforge.artifacts import MODEL_FILENAME
from omniforge.errors import ArtifactError, WorkspaceError

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
# The only execution provider omniforge runs: every figure it publishes is a CPU figure.
CPU_PROVIDERS = ["CPUExecutionProvider"]


class _Process:
    """What this process told onnxruntime: its global pool's threads, whether a session exists."""

    shared_pool_threads: int | None = None
    opened_a_session = False


def share_thread_pool(threads: int) -> None:
    """Run every session this process opens on one pool of ``threads`` intra-op threads.

    Sessions with a pool each, timed side by side in one process, slow each other down
    (their idle threads spin) and skew the ratio between them; one pool does not (measured
    in docs/runs/2026-12-04-qwen2.5-omni-7b-epyc-zen4-vnni). onnxruntime creates the pool
    with its environment, at the first session, and cannot replace it afterwards.
    """
    if _Process.opened_a_session or _Process.shared_pool_threads is not None:
        raise WorkspaceError(
            "share_thread_pool must come before this process opens its first onnxruntime "
            "session, and only once"
        )
    ort_state.set_global_thread_pool_sizes(threads, 1)
    _Process.shared_pool_threads = threads


def open_unverified_session(model: str | Path, threads: int | None = 1) -> Any:
    """An onnxruntime CPU session for a graph on disk (an artifact directory or a ``.onnx``),
    opened by path and checked against nothing here.

    The build stages open variants not vetted yet with it (validate and benchmark record
    the hashes of what they open), and the loader opens the private copy it has just
    hashed. A voice pipeline loads published artifacts with ``load_session``,
    ``load_talker`` and ``load_token2wav``, which verify them first.

    One thread by default: reductions split over threads round differently, and parity
    figures should not depend on the machine's core count. Benchmarks pass their own;
    None leaves onnxruntime's default. After :func:`share_thread_pool` the session runs on
    the process's pool, whose size ``threads`` must then be (or None).
    """
    path = Path(model)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ArtifactError(f"{path}: no ONNX graph here")
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads, str(path)), providers=CPU_PROVIDERS
        )
    except ORT_ERRORS as err:
        raise ArtifactError(f"{path}: onnxruntime cannot load this graph: {err}") from err


def session_options(threads: int | None, what: str) -> Any:
    """Options for a session about to be opened (``what`` names it in errors): ``threads``
    intra-op threads of its own, or this process's shared pool (see
    :func:`open_unverified_session`)."""
    shared = _Process.shared_pool_threads
    if shared is not None and threads not in (None, shared):
        raise WorkspaceError(
            f"{what}: asked for {threads} threads, but this process runs every session on "
            f"its shared pool of {shared}"
        )
    _Process.opened_a_session = True
    options = ort.SessionOptions()
    if shared is not None:
        options.use_per_session_threads = False
    else:
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


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
