"""One thread pool for every session of a process (benchmark children), and its misuse.

onnxruntime's global pool belongs to the process: each case runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper


@pytest.fixture()
def graph(tmp_path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "neg", [x], [y]),
        opset_imports=[helper.make_opsetid("", 20)],
        ir_version=10,
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_sessions_run_on_the_shared_pool(graph: Path) -> None:
    result = run_python(f"""
        import numpy as np
        from omniforge.errors import WorkspaceError
        from omniforge.runtime.session import open_unverified_session, share_thread_pool
        share_thread_pool(1)
        sessions = [
            open_unverified_session({str(graph)!r}, 1),
            open_unverified_session({str(graph)!r}, None),
        ]
        for session in sessions:
            assert session.get_session_options().use_per_session_threads is False
            (y,) = session.run(None, {{"x": np.array([1.0, -2.0], dtype=np.float32)}})
            assert y.tolist() == [-1.0, 2.0]
        try:
            open_unverified_session({str(graph)!r}, 2)
        except WorkspaceError as err:
            print("refused:", err)
        try:
            share_thread_pool(1)
        except WorkspaceError as err:
            print("refused:", err)
    """)
    assert result.returncode == 0, result.stderr
    refusals = [line for line in result.stdout.splitlines() if line.startswith("refused:")]
    assert len(refusals) == 2
    assert "asked for 2 threads" in refusals[0] and "shared pool of 1" in refusals[0]
    assert "only once" in refusals[1]


def test_sharing_after_a_session_is_refused(graph: Path) -> None:
    result = run_python(f"""
        from omniforge.errors import WorkspaceError
        from omniforge.runtime.session import open_unverified_session, share_thread_pool
        session = open_unverified_session({str(graph)!r})
        assert session.get_session_options().use_per_session_threads is True
        try:
            share_thread_pool(1)
        except WorkspaceError as err:
            print("refused:", err)
    """)
    assert result.returncode == 0, result.stderr
    assert "before this process opens its first onnxruntime session" in result.stdout
