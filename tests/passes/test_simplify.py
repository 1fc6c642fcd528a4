"""The simplify pass: onnxsim in a child process, its result loaded and saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from omniforge.artifacts import DATA_FILENAME, MODEL_FILENAME, save_model
from omniforge.children import run_in_child
from omniforge.components import get_component
from omniforge.errors import ArtifactError, OmniforgeError
from omniforge.params import SimplifyParams
from omniforge.passes import simplify
from omniforge.passes.simplify import simplify_artifact

WIDTH = 64


def exported(directory: Path) -> Path:
    """``y = x @ (a + b)``: onnxsim folds the sum of the two weights into one."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) for _ in range(2))
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "sum_of_weights",
        [helper.make_tensor_value_info("x", f, ["rows", WIDTH])],
        [helper.make_tensor_value_info("y", f, ["rows", WIDTH])],
        [numpy_helper.from_array(a, "a"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    directory.mkdir(parents=True)
    save_model(model, directory)
    return directory


def run(directory: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(directory / MODEL_FILENAME))
    return session.run(None, {"x": x})[0]


def test_onnxsim_folds_in_a_child_and_leaves_only_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    def recorded(what: str, function: Any, *args: Any) -> dict[str, Any]:
        started.append(function.__qualname__)
        return run_in_child(what, function, *args)

    monkeypatch.setattr(simplify, "run_in_child", recorded)
    source = exported(tmp_path / "export")
    out = simplify_artifact(
        source, tmp_path / "fp32", SimplifyParams(), get_component("projection")
    )
    assert started == ["onnxsim_into"]
    model = onnx.load(str(out / MODEL_FILENAME))
    assert [node.op_type for node in model.graph.node] == ["MatMul"]
    # The child's scratch file is gone: the artifact is the graph and its external data.
    assert sorted(p.name for p in out.iterdir()) == [MODEL_FILENAME, DATA_FILENAME]
    x = np.random.default_rng(1).standard_normal((3, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(run(out, x), run(source, x), rtol=1e-5, atol=1e-5)


def test_a_failed_onnxsim_is_named_and_keeps_the_last_output(tmp_path: Path) -> None:
    good = simplify_artifact(
        exported(tmp_path / "export"),
        tmp_path / "fp32",
        SimplifyParams(),
        get_component("projection"),
    )
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_FILENAME).write_bytes(b"not a protobuf")
    (broken / DATA_FILENAME).write_bytes(b"")
    with pytest.raises(OmniforgeError, match=r"onnxsim of .*broken.*the child process failed"):
        simplify_artifact(broken, good, SimplifyParams(), get_component("projection"))
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "export", "fp32"]


def test_a_failed_onnxsim_check_is_named_and_keeps_the_last_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = exported(tmp_path / "export")
    good = simplify_artifact(
        source, tmp_path / "fp32", SimplifyParams(), get_component("projection")
    )
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    monkeypatch.setattr(simplify, "run_in_child", lambda *args: {"ok": False})
    with pytest.raises(ArtifactError, match=r"export.*onnxsim's check of the simplified graph"):
        simplify_artifact(source, good, SimplifyParams(check_n=1), get_component("projection"))
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "fp32"]
