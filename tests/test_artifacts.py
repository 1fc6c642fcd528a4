from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from omniforge.artifacts import (
    DATA_FILENAME,
    MODEL_FILENAME,
    artifact_bytes,
    artifact_files,
    atomic_directory,
    check_artifact,
    graph_signature,
    save_model,
)
from omniforge.errors import ArtifactError


def _small_model() -> onnx.ModelProto:
    import numpy as np

    weight = numpy_helper.from_array(np.arange(64 * 32, dtype=np.float32).reshape(64, 32), "weight")
    node = helper.make_node("MatMul", ["x", "weight"], ["y"], name="mm")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_atomic_directory_replaces_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "artifact"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (final / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("half-written")
        raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_save_model_puts_weights_in_external_data(tmp_path: Path) -> None:
    save_model(_small_model(), tmp_path)
    sizes = artifact_bytes(tmp_path)
    assert (tmp_path / DATA_FILENAME).stat().st_size == 64 * 32 * 4
    assert sizes["total_bytes"] == sizes["graph_bytes"] + sizes["external_data_bytes"]
    assert sizes["external_data_bytes"] >= 64 * 32 * 4
    assert [r.name for r in artifact_files(tmp_path)] == [MODEL_FILENAME, DATA_FILENAME]
    check_artifact(tmp_path)


def test_save_model_refuses_to_append_to_existing_data(tmp_path: Path) -> None:
    (tmp_path / DATA_FILENAME).write_bytes(b"old")
    with pytest.raises(ArtifactError, match="append"):
        save_model(_small_model(), tmp_path)


def test_check_artifact_catches_truncated_data(tmp_path: Path) -> None:
    save_model(_small_model(), tmp_path)
    data = tmp_path / DATA_FILENAME
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="truncated"):
        check_artifact(tmp_path)


def test_check_artifact_catches_missing_data(tmp_path: Path) -> None:
    save_model(_small_model(), tmp_path)
    (tmp_path / DATA_FILENAME).unlink()
    with pytest.raises(ArtifactError, match="model.onnx.data"):
        check_artifact(tmp_path)


def test_graph_signature_reads_symbolic_shapes(tmp_path: Path) -> None:
    save_model(_small_model(), tmp_path)
    signature = graph_signature(tmp_path)
    assert signature["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 64]}]
    assert signature["outputs"][0]["shape"] == ["batch", 32]
